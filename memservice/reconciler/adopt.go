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

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

// Adoption: a claim of the driver allocated for a pod is provisioned as soon as the
// service sees the allocation, on the node and pool the allocation names. For a
// claim that a scheduler allocated without the DynamicMemory plugin (the stock
// kube-scheduler, or a profile without the plugin) there is no reservation: the
// service reserves it first, as the plugin would have. For a claim the plugin
// reserved, this starts the provisioning that the plugin's PreBind then waits for
// (with binding conditions, DynamicResources' PreBind waits for the memory before the
// plugin's PreBind runs). The service then sets the device condition Online
// (conditions.go). When
// the pool cannot serve the claim, the service sets ProvisioningFailed with the
// reason: a scheduler waiting on the devices' binding conditions gives the claim up
// and schedules the pod again, and the DRA plugin's Prepare refuses the claim in any
// case. The ledger decides as for every other reservation, so nothing is promised
// twice whichever scheduler asks.

// FieldManager owns the device conditions the memory service writes.
const FieldManager = "dynamicmemory.io/memservice"

// Reasons of the device conditions the service sets on a claim it cannot serve.
const (
	ReasonPoolExhausted      = "PoolExhausted"
	ReasonNotServed          = "NotServed"
	ReasonInvalidClaim       = "InvalidClaim"
	ReasonProvisioningFailed = "ProvisioningFailed"
)

// Event reasons on the ResourceClaim.
const (
	EventAdopted         = "ProvisioningWithoutReservation"
	EventAdoptionRefused = "ProvisioningRefused"
	resultProvisioning   = "provisioning"
	resultRefused        = "refused"
	resultFailed         = "failed"
	claimAPIVersion      = "resource.k8s.io/v1"
	podResource          = "pods"
	unknownSchedulerName = "unknown"
)

// Provisioner starts provisioning a claim (provision.Manager).
type Provisioner interface {
	StartProvisioning(req ledger.Request) (ledger.Reservation, <-chan struct{}, error)
}

// adoptKey names a claim to look at; the UID tells a recreated claim apart.
type adoptKey struct {
	namespace, name string
	uid             types.UID
}

// notice queues an allocated claim of the driver whose memory is not provisioned. A
// claim whose devices say ProvisioningFailed already waits for its scheduler to give
// it up, or for the retry (RefusalRetryInterval): its own status update is not news.
func (r *Reconciler) notice(c *resourcev1.ResourceClaim) {
	if r.adoptions == nil || !needsAdoption(c) || provisioningFailed(c) || !r.unprovisioned(string(c.UID)) {
		return
	}
	r.adoptions.Add(adoptKey{namespace: c.Namespace, name: c.Name, uid: c.UID})
}

// provisioningFailed: a device of the driver carries ProvisioningFailed=True.
func provisioningFailed(c *resourcev1.ResourceClaim) bool {
	for _, d := range c.Status.Devices {
		if d.Driver == dra.DriverName && meta.IsStatusConditionTrue(d.Conditions, dra.ConditionProvisioningFailed) {
			return true
		}
	}
	return false
}

// needsAdoption: allocated by the driver, for a pod.
func needsAdoption(c *resourcev1.ResourceClaim) bool {
	return ours(c) && len(c.Status.ReservedFor) > 0
}

// unprovisioned: the ledger holds no memory for the claim (nothing, or a reservation
// not provisioned yet), and no record of it was set aside.
func (r *Reconciler) unprovisioned(uid string) bool {
	if res, ok := r.cfg.Ledger.Get(uid); ok && res.State != v1alpha1.PhaseReleased && res.State != v1alpha1.PhaseReserved {
		return false
	}
	return !r.cfg.Ledger.IsSetAside(uid)
}

// reserved: the scheduler plugin reserved the claim's memory.
func (r *Reconciler) reserved(uid string) bool {
	res, ok := r.cfg.Ledger.Get(uid)
	return ok && res.State == v1alpha1.PhaseReserved
}

// adopt provisions the memory of one claim allocated without a reservation, or says
// in its device conditions why it cannot.
func (r *Reconciler) adopt(ctx context.Context, key adoptKey) error {
	claim, err := r.claimToAdopt(ctx, key)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get ResourceClaim %s/%s: %w", key.namespace, key.name, err)
	}
	// Only a claim that still is allocated for a pod, its memory still not
	// provisioned, is provisioned.
	if claim.UID != key.uid || !needsAdoption(claim) || !r.unprovisioned(string(claim.UID)) {
		return nil
	}
	how := "reserved by the scheduler"
	reserved := r.reserved(string(claim.UID))
	logger := klog.FromContext(ctx).WithValues("claim", klog.KObj(claim), "claimUID", claim.UID)
	pod := podOf(claim)
	scheduler := ""
	if !reserved {
		scheduler = r.schedulerOf(ctx, claim.Namespace, pod)
		how = fmt.Sprintf("placed by scheduler %q without a reservation", scheduler)
	}
	d, found, err := dra.ClaimDemand(claim)
	if err == nil && !found {
		err = fmt.Errorf("ResourceClaim %s/%s is allocated devices of driver %s without asking DeviceClass %s", claim.Namespace, claim.Name, dra.DriverName, dra.DeviceClassName)
	}
	if err != nil {
		return r.refuse(ctx, claim, ReasonInvalidClaim, err.Error())
	}
	node := d.Node
	if node == "" {
		node = dra.Devices(claim, "")[0].Pool // the driver's DRA pools are named after their node
	}
	req := ledger.Request{
		Claim: ledger.ClaimRef{UID: string(claim.UID), Namespace: claim.Namespace, Name: claim.Name},
		Pod:   pod, Node: node, Pool: d.Pool, Bytes: d.Bytes,
	}
	res, settled, err := r.cfg.Provisioner.StartProvisioning(req)
	if err != nil {
		reason := ReasonNotServed
		if ledger.CodeOf(err) == ledger.CodeExhausted {
			reason = ReasonPoolExhausted
		}
		if err := r.refuse(ctx, claim, reason, fmt.Sprintf("pod %s, %s: %v", pod.Name, how, err)); err != nil {
			return err
		}
		// A pod already bound (or a scheduler that does not wait on binding
		// conditions) keeps its claim: it gets the memory once the pool has room.
		r.adoptions.AddAfter(key, r.cfg.RefusalRetryInterval)
		return nil
	}
	if reserved {
		logger.V(2).Info("Provisioning a reserved claim as soon as it is allocated", "node", res.Node, "pool", res.Pool, "bytes", res.Bytes, "pod", pod.Name)
	} else {
		logger.Info("Provisioning memory for a claim allocated without a reservation", "node", res.Node, "pool", res.Pool, "bytes", res.Bytes, "pod", pod.Name, "scheduler", scheduler)
		r.adopted(resultProvisioning)
		r.event(claim, corev1.EventTypeNormal, EventAdopted, "Provisioning %s of pool %s on node %s for pod %s, %s",
			ledger.FormatBytes(res.Bytes), res.Pool, res.Node, pod.Name, how)
	}
	if settled != nil {
		go r.awaitAdopted(ctx, claim, settled)
	}
	return nil
}

// claimToAdopt reads the claim to provision. A claim the scheduler plugin reserved
// is taken from the informer's cache: the reservation is the scheduler's word that
// the claim is allocated there, and its PreBind provisions it anyway (should the
// cache lag a deallocation, the reconciler's checks release the memory). Any other
// claim is read live: the service provisions it on what the claim says alone.
func (r *Reconciler) claimToAdopt(ctx context.Context, key adoptKey) (*resourcev1.ResourceClaim, error) {
	if r.claims != nil && r.reserved(string(key.uid)) {
		if claim, err := r.claims.ResourceClaims(key.namespace).Get(key.name); err == nil && claim.UID == key.uid {
			return claim, nil
		}
	}
	return r.cfg.Client.ResourceV1().ResourceClaims(key.namespace).Get(ctx, key.name, metav1.GetOptions{})
}

// awaitAdopted counts an adopted claim whose provisioning failed (its device
// conditions say so: Settled).
func (r *Reconciler) awaitAdopted(ctx context.Context, claim *resourcev1.ResourceClaim, settled <-chan struct{}) {
	select {
	case <-settled:
	case <-ctx.Done():
		return
	}
	if res, ok := r.cfg.Ledger.Get(string(claim.UID)); ok && res.State == v1alpha1.PhaseFailed {
		r.adopted(resultFailed)
	}
}

// refuse says on the claim why its memory is not provisioned: device condition
// ProvisioningFailed with the reason, and a Warning event.
func (r *Reconciler) refuse(ctx context.Context, claim *resourcev1.ResourceClaim, reason, message string) error {
	klog.FromContext(ctx).Info("Not provisioning a claim allocated without a reservation", "claim", klog.KObj(claim), "reason", reason, "message", message)
	if err := r.writeFailed(ctx, claim, reason, message); err != nil {
		return err
	}
	r.adopted(resultRefused)
	r.event(claim, corev1.EventTypeWarning, EventAdoptionRefused, "%s: %s", reason, message)
	return nil
}

func (r *Reconciler) writeFailed(ctx context.Context, claim *resourcev1.ResourceClaim, reason, message string) error {
	state := dra.DeviceState{Reason: reason, Message: ledger.Cut(message, v1alpha1.ConditionMessageMaxLength), Since: r.cfg.Clock.Now()}
	devices := dra.Devices(claim, "")
	if dra.HasDeviceState(claim, devices, state) {
		return nil
	}
	apply := dra.ApplyDeviceState(claim, devices, state)
	_, err := r.cfg.Client.ResourceV1().ResourceClaims(claim.Namespace).ApplyStatus(ctx, apply, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("set %s on ResourceClaim %s/%s: %w", dra.ConditionProvisioningFailed, claim.Namespace, claim.Name, err)
	}
	return nil
}

// podOf is the pod a claim is reserved for.
func podOf(claim *resourcev1.ResourceClaim) ledger.PodRef {
	for _, c := range claim.Status.ReservedFor {
		if c.Resource == podResource && c.APIGroup == "" {
			return ledger.PodRef{Name: c.Name, UID: string(c.UID)}
		}
	}
	return ledger.PodRef{}
}

// schedulerOf is the scheduler that placed the pod, as its spec names it.
func (r *Reconciler) schedulerOf(ctx context.Context, namespace string, ref ledger.PodRef) string {
	if ref.Name == "" {
		return unknownSchedulerName
	}
	pod, err := r.cfg.Client.CoreV1().Pods(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil || string(pod.UID) != ref.UID {
		return unknownSchedulerName
	}
	return pod.Spec.SchedulerName
}

func (r *Reconciler) adopted(result string) {
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.ClaimsAdopted.WithLabelValues(result).Inc()
	}
}

func (r *Reconciler) event(claim *resourcev1.ResourceClaim, kind, reason, format string, args ...any) {
	if r.cfg.Events == nil {
		return
	}
	ref := &corev1.ObjectReference{APIVersion: claimAPIVersion, Kind: "ResourceClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID}
	r.cfg.Events.Eventf(ref, kind, reason, format, args...)
}

// newAdoptionQueue is the queue of claims to look at.
func newAdoptionQueue() workqueue.TypedRateLimitingInterface[adoptKey] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[adoptKey](),
		workqueue.TypedRateLimitingQueueConfig[adoptKey]{Name: "adoptions"})
}
