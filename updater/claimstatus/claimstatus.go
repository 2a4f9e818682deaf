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
// Only devices of the driver dcd.dynamicmemory.io in this node's DRA pool (the pool
// is named after the node) are written, through the resourceclaims/status
// subresource with server-side apply, so other drivers' entries are left alone.
package claimstatus

import (
	"context"
	"fmt"
	"sync"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

const (
	// FieldManager owns the conditions the agent writes.
	FieldManager = "dynamicmemory.io/node-agent"

	uidIndex = "uid"
)

// Writer keeps the device conditions of the claims on its node as the agent last
// reported them. A report for a claim the informer has not seen allocated yet is
// kept and written when the claim shows up.
type Writer struct {
	client   kubernetes.Interface
	node     string
	clock    clock.Clock
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	desired map[string]dra.DeviceState
}

// New returns a writer for the claims allocated on node. Run starts it.
func New(client kubernetes.Interface, node string, clk clock.WithTicker) (*Writer, error) {
	factory := informers.NewSharedInformerFactory(client, 0)
	informer := factory.Resource().V1().ResourceClaims().Informer()
	if err := informer.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		claim, ok := obj.(*resourceapi.ResourceClaim)
		if !ok {
			return nil, nil
		}
		return []string{string(claim.UID)}, nil
	}}); err != nil {
		return nil, fmt.Errorf("index ResourceClaims by UID: %w", err)
	}
	w := &Writer{
		client:   client,
		node:     node,
		clock:    clk,
		factory:  factory,
		informer: informer,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "claim-status", Clock: clk}),
		desired: map[string]dra.DeviceState{},
	}
	enqueue := func(obj any) {
		if claim, ok := obj.(*resourceapi.ResourceClaim); ok {
			w.mu.Lock()
			_, wanted := w.desired[string(claim.UID)]
			w.mu.Unlock()
			if wanted {
				w.queue.Add(string(claim.UID))
			}
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if claim, ok := obj.(*resourceapi.ResourceClaim); ok {
				w.Forget(string(claim.UID))
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watch ResourceClaims: %w", err)
	}
	return w, nil
}

// Run watches claims and writes conditions until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	defer w.queue.ShutDown()
	w.factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
		return
	}
	for w.next(ctx) {
	}
	w.factory.Shutdown()
}

// HasSynced tells whether the claim informer has listed all claims.
func (w *Writer) HasSynced() bool { return w.informer.HasSynced() }

// Online records that the claim's memory is online.
func (w *Writer) Online(claimUID, message string) {
	w.set(claimUID, dra.DeviceState{Online: true, Reason: "MemoryOnline", Message: message})
}

// Failed records that onlining the claim's memory failed.
func (w *Writer) Failed(claimUID, message string) {
	w.set(claimUID, dra.DeviceState{Reason: "OnlineFailed", Message: message})
}

// Forget stops reporting on a claim (its memory is offline or it is gone).
func (w *Writer) Forget(claimUID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.desired, claimUID)
}

func (w *Writer) set(claimUID string, d dra.DeviceState) {
	d.Since = w.clock.Now()
	w.mu.Lock()
	w.desired[claimUID] = d
	w.mu.Unlock()
	w.queue.Add(claimUID)
}

func (w *Writer) next(ctx context.Context) bool {
	uid, shutdown := w.queue.Get()
	if shutdown {
		return false
	}
	defer w.queue.Done(uid)
	if err := w.sync(ctx, uid); err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Writing claim device conditions failed, will retry", "claimUID", uid)
		w.queue.AddRateLimited(uid)
		return true
	}
	w.queue.Forget(uid)
	return true
}

// sync writes the desired conditions of one claim, if it is allocated on this node.
func (w *Writer) sync(ctx context.Context, uid string) error {
	w.mu.Lock()
	d, wanted := w.desired[uid]
	w.mu.Unlock()
	if !wanted {
		return nil
	}
	objs, err := w.informer.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil {
		return fmt.Errorf("look up claim %s: %w", uid, err)
	}
	if len(objs) == 0 {
		return nil // written when the informer sees the claim
	}
	claim := objs[0].(*resourceapi.ResourceClaim)
	devices := dra.Devices(claim, w.node)
	if len(devices) == 0 {
		return nil // not allocated (yet) on this node
	}
	if dra.HasDeviceState(claim, devices, d) {
		return nil
	}
	apply := dra.ApplyDeviceState(claim, devices, d)
	if _, err := w.client.ResourceV1().ResourceClaims(claim.Namespace).ApplyStatus(ctx, apply, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("write device conditions of claim %s/%s (%s): %w", claim.Namespace, claim.Name, uid, err)
	}
	klog.FromContext(ctx).V(3).Info("Wrote claim device conditions", "claim", klog.KObj(claim), "online", d.Online, "reason", d.Reason)
	return nil
}
