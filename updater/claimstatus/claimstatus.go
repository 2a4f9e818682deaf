/*
Copyright The kube-dynamic-memory Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package claimstatus writes the state of a claim's pool memory into the
// ResourceClaim, as device conditions in status.devices: Online when the node agent
// has onlined it, ProvisioningFailed when it could not. With binding conditions
// (the DRA plugin's --binding-conditions mode) the scheduler waits for these before
// it binds the pod; otherwise they are for people (kubectl describe).
//
// The writer watches no claims: ResourceClaims have no field selector for a node, so
// an informer on every node would be sent every change of every claim in the cluster.
// It reads only the claims the agent reports on, by the namespace and name the memory
// service's online command gives, and writes one only if its UID is the reported one
// (a claim deleted and created again under the same name is another claim) and it is
// allocated on this node. Only devices of the driver dcd.dynamicmemory.io in this
// node's DRA pool (the pool is named after the node) are written, through the
// resourceclaims/status subresource with server-side apply, so other drivers' entries
// are left alone.
package claimstatus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

// FieldManager owns the conditions the agent writes.
const FieldManager = "dynamicmemory.io/node-agent"

// Claim names the ResourceClaim a report is about.
type Claim struct {
	Namespace string
	Name      string
	UID       string
}

// errNotAllocated marks a claim that is not allocated yet: it is read again later.
var errNotAllocated = errors.New("not allocated yet")

// Writer keeps the device conditions of the claims on its node as the agent last
// reported them. A report for a claim not allocated yet is kept and the claim read
// again (with the queue's rate limiting) until it is allocated or forgotten.
type Writer struct {
	client kubernetes.Interface
	node   string
	clock  clock.Clock
	queue  workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	desired map[string]report
}

// report is the state last reported for a claim.
type report struct {
	claim Claim
	state dra.DeviceState
}

// New returns a writer for the claims allocated on node. Run starts it.
func New(client kubernetes.Interface, node string, clk clock.WithTicker) *Writer {
	return &Writer{
		client: client,
		node:   node,
		clock:  clk,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "claim-status", Clock: clk}),
		desired: map[string]report{},
	}
}

// Run writes conditions until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for w.next(ctx) {
	}
}

// Online records that the claim's memory is online.
func (w *Writer) Online(claim Claim, message string) {
	w.set(claim, dra.DeviceState{Online: true, Reason: "MemoryOnline", Message: message})
}

// Failed records that onlining the claim's memory failed.
func (w *Writer) Failed(claim Claim, message string) {
	w.set(claim, dra.DeviceState{Reason: "OnlineFailed", Message: message})
}

// Forget stops reporting on a claim (its memory is offline or it is gone); a claim
// waiting to be allocated is read no more.
func (w *Writer) Forget(claimUID string) {
	w.mu.Lock()
	delete(w.desired, claimUID)
	w.mu.Unlock()
	w.queue.Forget(claimUID)
}

func (w *Writer) set(claim Claim, d dra.DeviceState) {
	d.Since = w.clock.Now()
	w.mu.Lock()
	w.desired[claim.UID] = report{claim: claim, state: d}
	w.mu.Unlock()
	w.queue.Add(claim.UID)
}

func (w *Writer) next(ctx context.Context) bool {
	uid, shutdown := w.queue.Get()
	if shutdown {
		return false
	}
	defer w.queue.Done(uid)
	err := w.sync(ctx, uid)
	switch {
	case errors.Is(err, errNotAllocated):
		klog.FromContext(ctx).V(4).Info("Claim not allocated yet, reading it again later", "claimUID", uid)
		w.queue.AddRateLimited(uid)
	case err != nil:
		utilruntime.HandleErrorWithContext(ctx, err, "Writing claim device conditions failed, will retry", "claimUID", uid)
		w.queue.AddRateLimited(uid)
	default:
		w.queue.Forget(uid)
	}
	return true
}

// sync writes the reported conditions of one claim, if it is the reported claim
// and allocated on this node.
func (w *Writer) sync(ctx context.Context, uid string) error {
	w.mu.Lock()
	r, wanted := w.desired[uid]
	w.mu.Unlock()
	if !wanted {
		return nil
	}
	logger := klog.FromContext(ctx).WithValues("claimUID", uid)
	if r.claim.Namespace == "" || r.claim.Name == "" {
		logger.Error(nil, "Not writing claim device conditions: the online command did not name the claim (a memory service older than this node agent); upgrade the memory service")
		return nil
	}
	claim, err := w.client.ResourceV1().ResourceClaims(r.claim.Namespace).Get(ctx, r.claim.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		logger.V(3).Info("Claim is gone, no device conditions to write", "claim", klog.KRef(r.claim.Namespace, r.claim.Name))
		return nil
	}
	if err != nil {
		return fmt.Errorf("read claim %s/%s: %w", r.claim.Namespace, r.claim.Name, err)
	}
	if string(claim.UID) != uid {
		logger.Info("Not writing claim device conditions: the named claim is another one (deleted and created again?)", "claim", klog.KObj(claim), "namedUID", claim.UID)
		return nil
	}
	devices := dra.Devices(claim, w.node)
	if len(devices) == 0 {
		if claim.Status.Allocation == nil {
			return errNotAllocated
		}
		logger.Info("Not writing claim device conditions: the claim is not allocated on this node", "claim", klog.KObj(claim), "node", w.node)
		return nil
	}
	if dra.HasDeviceState(claim, devices, r.state) {
		return nil
	}
	apply := dra.ApplyDeviceState(claim, devices, r.state)
	if _, err := w.client.ResourceV1().ResourceClaims(claim.Namespace).ApplyStatus(ctx, apply, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("write device conditions of claim %s/%s (%s): %w", claim.Namespace, claim.Name, uid, err)
	}
	logger.V(3).Info("Wrote claim device conditions", "claim", klog.KObj(claim), "online", r.state.Online, "reason", r.state.Reason)
	return nil
}
