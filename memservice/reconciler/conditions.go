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

package reconciler

import (
	"context"
	"fmt"

	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

// Device conditions: the service writes provisioned claims' device conditions from
// its ledger: ProvisioningFailed=True when provisioning failed, and Online=True once
// the memory is online on the claim's node where a scheduler waits for it (binding
// conditions) or where the claim's conditions said otherwise before. A claim that
// DynamicMemory's PreBind provisioned has no binding conditions and gets no write:
// nothing reads it, and its record says Online. It writes from the informer's
// copy of the claim (no read), once that copy shows the claim allocated on the
// reservation's node: a claim whose allocation the scheduler writes while its memory
// is provisioned gets its conditions when the allocation arrives. Conditions the
// claim already has are not written again, so a restarted service, which looks at
// every claim it restored, writes only what its predecessor had not.

// ReasonMemoryOnline is the reason of a device's Online=True condition.
const ReasonMemoryOnline = "MemoryOnline"

// Settled queues a claim whose provisioning ended (Online or Failed) for its device
// conditions (provision.Config.Settled).
func (r *Reconciler) Settled(uid string) {
	r.conditions.Add(uid)
}

// noticeSettled queues a claim of the informer whose provisioning ended.
func (r *Reconciler) noticeSettled(c *resourcev1.ResourceClaim) {
	if res, ok := r.cfg.Ledger.Get(string(c.UID)); ok && (res.State == v1alpha1.PhaseOnline || res.State == v1alpha1.PhaseFailed) {
		r.conditions.Add(string(c.UID))
	}
}

// writeConditions writes the device conditions of one claim as its reservation says.
func (r *Reconciler) writeConditions(ctx context.Context, uid string) error {
	res, ok := r.cfg.Ledger.Get(uid)
	if !ok || r.claims == nil {
		return nil
	}
	var state dra.DeviceState
	switch res.State {
	case v1alpha1.PhaseOnline:
		state = dra.DeviceState{Online: true, Reason: ReasonMemoryOnline, Since: res.OnlineAt,
			Message: fmt.Sprintf("%s of pool %s online on node %s (NUMA %v)", ledger.FormatBytes(res.Bytes), res.Pool, res.Node, res.NUMANodes)}
	case v1alpha1.PhaseFailed:
		state = dra.DeviceState{Reason: ReasonProvisioningFailed, Since: res.UpdatedAt,
			Message: ledger.Cut(res.Message, v1alpha1.ConditionMessageMaxLength)}
	default:
		return nil
	}
	claim, err := r.claims.ResourceClaims(res.Claim.Namespace).Get(res.Claim.Name)
	if err != nil || string(claim.UID) != uid {
		return nil // gone, or not seen yet: the informer's event queues it again
	}
	devices := dra.Devices(claim, res.Node)
	if len(devices) == 0 {
		return nil // not allocated on the node (yet): the allocation's event queues it again
	}
	if dra.HasDeviceState(claim, devices, state) || (state.Online && !dra.AwaitsOnline(devices) && !dra.HasConditions(claim, devices)) {
		return nil
	}
	apply := dra.ApplyDeviceState(claim, devices, state)
	_, err = r.cfg.Client.ResourceV1().ResourceClaims(claim.Namespace).ApplyStatus(ctx, apply, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsInvalid(err) || apierrors.IsConflict(err):
		// The claim changed since the informer's copy (deleted and created again
		// under its name, or deallocated): its event queues it again.
		klog.FromContext(ctx).V(2).Info("Device conditions refused; waiting for the claim's next change", "claim", klog.KObj(claim), "err", err)
		return nil
	case err != nil:
		return fmt.Errorf("write device conditions of ResourceClaim %s/%s: %w", claim.Namespace, claim.Name, err)
	}
	klog.FromContext(ctx).V(3).Info("Wrote device conditions", "claim", klog.KObj(claim), "online", state.Online, "reason", state.Reason)
	return nil
}

func newConditionsQueue() workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "device-conditions"})
}
