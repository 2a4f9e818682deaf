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

// Package reconciler keeps the memory in step with the ResourceClaims of the
// dcd.dynamicmemory.io driver. When a claim with memory is deallocated or deleted,
// its memory is released (the node agent offlines it, the device takes the extents
// back, the record's finalizer goes). A claim that a scheduler allocated without a
// reservation (one without the DynamicMemory plugin) is provisioned on the node and
// pool of its allocation, or told why not (adopt.go). It also expires Reserved
// entries after their TTL, and releases provisioned claims that no pod was reserved
// for within a grace period (the scheduler died while binding).
package reconciler

import (
	"context"
	"fmt"
	"slices"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	resourcelisters "k8s.io/client-go/listers/resource/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
)

// Releaser releases a claim's memory (provision.Manager).
type Releaser interface {
	// Release starts the release; claimDeleted says the ResourceClaim is deleted for
	// good, so that nothing can need the memory again.
	Release(uid string, claimDeleted bool)
}

// DefaultProvisionGracePeriod is the default Config.ProvisionGracePeriod.
const DefaultProvisionGracePeriod = 5 * time.Minute

// Config wires a Reconciler.
type Config struct {
	Client   kubernetes.Interface
	Ledger   *ledger.Ledger
	Releaser Releaser
	// Provisioner provisions claims allocated without a reservation; nil: they are
	// left alone.
	Provisioner Provisioner
	// Events records events on the ResourceClaims it provisions or refuses (may be nil).
	Events  record.EventRecorder
	Metrics *metrics.Metrics
	Clock   clock.WithTicker
	// ProvisionGracePeriod: a provisioned claim that no pod is reserved for this long
	// after it was provisioned is released (default DefaultProvisionGracePeriod).
	ProvisionGracePeriod time.Duration
	// SweepInterval is how often every reservation is checked (default 10s).
	SweepInterval time.Duration
	// ExpireInterval is how often Reserved entries are checked for expiry (default 1s).
	ExpireInterval time.Duration
	// RefusalRetryInterval is how long after refusing a claim allocated without a
	// reservation the service tries again, if the claim is still allocated (default
	// DefaultRefusalRetryInterval).
	RefusalRetryInterval time.Duration
}

// DefaultRefusalRetryInterval is the default Config.RefusalRetryInterval.
const DefaultRefusalRetryInterval = 30 * time.Second

// Reconciler keeps the ledger in step with the ResourceClaims.
type Reconciler struct {
	cfg       Config
	adoptions workqueue.TypedRateLimitingInterface[adoptKey] // nil without a Provisioner
	// conditions holds the claims whose device conditions are to be written (UIDs).
	conditions workqueue.TypedRateLimitingInterface[string]
	// claims is the informer's cache of ResourceClaims (set by Run).
	claims resourcelisters.ResourceClaimLister
}

// New makes a reconciler.
func New(cfg Config) *Reconciler {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.ProvisionGracePeriod <= 0 {
		cfg.ProvisionGracePeriod = DefaultProvisionGracePeriod
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 10 * time.Second
	}
	if cfg.ExpireInterval <= 0 {
		cfg.ExpireInterval = time.Second
	}
	if cfg.RefusalRetryInterval <= 0 {
		cfg.RefusalRetryInterval = DefaultRefusalRetryInterval
	}
	r := &Reconciler{cfg: cfg, conditions: newConditionsQueue()}
	if cfg.Provisioner != nil {
		r.adoptions = newAdoptionQueue()
	}
	return r
}

// Run watches claims and sweeps until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("reconciler")
	ctx = klog.NewContext(ctx, logger)
	factory := informers.NewSharedInformerFactory(r.cfg.Client, 0)
	inf := factory.Resource().V1().ResourceClaims().Informer()
	r.claims = factory.Resource().V1().ResourceClaims().Lister()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if c, ok := obj.(*resourcev1.ResourceClaim); ok && ours(c) {
				r.notice(c)
				r.noticeSettled(c)
			}
		},
		UpdateFunc: func(_, obj any) {
			c, ok := obj.(*resourcev1.ResourceClaim)
			switch {
			case !ok:
			case c.DeletionTimestamp != nil:
				r.check(ctx, string(c.UID), false)
			case !ours(c):
				r.checkDeallocated(ctx, string(c.UID))
			default:
				r.notice(c)
				r.noticeSettled(c)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if c, ok := obj.(*resourcev1.ResourceClaim); ok {
				r.check(ctx, string(c.UID), true)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch ResourceClaims: %w", err)
	}
	if r.adoptions != nil {
		defer r.adoptions.ShutDown()
		go work(ctx, r.adoptions, r.adopt, "Provisioning a claim allocated without a reservation",
			func(k adoptKey) []any { return []any{"claim", klog.KRef(k.namespace, k.name)} })
	}
	defer r.conditions.ShutDown()
	go work(ctx, r.conditions, r.writeConditions, "Writing device conditions",
		func(uid string) []any { return []any{"claimUID", uid} })
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil // ctx ended: stopping before the first sweep is no error
	}
	logger.V(2).Info("Watching ResourceClaims", "driver", dra.DriverName)

	sweep := r.cfg.Clock.NewTicker(r.cfg.SweepInterval)
	defer sweep.Stop()
	expire := r.cfg.Clock.NewTicker(r.cfg.ExpireInterval)
	defer expire.Stop()
	r.Sweep(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C():
			r.Sweep(ctx)
		case <-expire.C():
			r.Expire(ctx)
		}
	}
}

// work runs do for each item of q until q shuts down. An item do fails for is done
// again with q's rate limiting; what and logged name the work and the item in the log.
func work[T comparable](ctx context.Context, q workqueue.TypedRateLimitingInterface[T], do func(context.Context, T) error,
	what string, logged func(T) []any) {
	for {
		item, shutdown := q.Get()
		if shutdown {
			return
		}
		if err := do(ctx, item); err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, what+" failed, will retry", logged(item)...)
			q.AddRateLimited(item)
		} else {
			q.Forget(item)
		}
		q.Done(item)
	}
}

// ours tells whether a claim not being deleted is allocated with a device of our
// driver: one to provision.
func ours(c *resourcev1.ResourceClaim) bool {
	return c.DeletionTimestamp == nil && allocatedByUs(c)
}

// allocatedByUs tells whether a claim is allocated with a device of our driver.
func allocatedByUs(c *resourcev1.ResourceClaim) bool {
	return c.Status.Allocation != nil && slices.ContainsFunc(c.Status.Allocation.Devices.Results,
		func(d resourcev1.DeviceRequestAllocationResult) bool { return d.Driver == dra.DriverName })
}

// beingDeleted tells whether a claim's deletion is final for its memory: it has a
// deletion timestamp and no pod holds it. A claim deleted while its pod runs (a
// user's delete, or its namespace's while the pod has its grace period) stays,
// allocated and reserved for the pod, until the pod is done (the delete-protection
// finalizer); its memory stays as long.
func beingDeleted(c *resourcev1.ResourceClaim) bool {
	return c.DeletionTimestamp != nil && len(c.Status.ReservedFor) == 0
}

// Expire drops Reserved entries past their TTL.
func (r *Reconciler) Expire(ctx context.Context) {
	for _, e := range r.cfg.Ledger.Expire() {
		klog.FromContext(ctx).V(2).Info("Reservation expired", "claim", e.Claim.UID, "node", e.Node, "pool", e.Pool)
		if r.cfg.Metrics != nil {
			r.cfg.Metrics.ReservationsExpired.Inc()
		}
	}
}

// Sweep checks every provisioned reservation against its claim.
func (r *Reconciler) Sweep(ctx context.Context) {
	for _, res := range r.cfg.Ledger.List() {
		switch res.State {
		case v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline, v1alpha1.PhaseFailed:
			r.check(ctx, res.Claim.UID, false)
		}
	}
}

// DeallocationPause is how long after the informer saw a claim deallocated the
// reconciler checks it. The resourceclaim controller deletes a claim it made from a
// template right after deallocating it, and a deletion is final: seen within the
// pause, the memory is released without reading the claim live. A claim that stays
// (one a user made) is read live after the pause, and released if it still needs
// no memory.
const DeallocationPause = time.Second

// checkDeallocated checks a claim the informer saw deallocated, DeallocationPause
// later.
func (r *Reconciler) checkDeallocated(ctx context.Context, uid string) {
	if res, ok := r.cfg.Ledger.Get(uid); !ok || res.State == v1alpha1.PhaseReleasing || res.State == v1alpha1.PhaseReleased {
		return
	}
	t := r.cfg.Clock.NewTimer(DeallocationPause)
	go func() {
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C():
			r.check(ctx, uid, false)
		}
	}()
}

// check releases a claim's memory if its ResourceClaim no longer needs it; deleted
// says the informer saw the claim of that UID deleted.
func (r *Reconciler) check(ctx context.Context, uid string, deleted bool) {
	res, ok := r.cfg.Ledger.Get(uid)
	if !ok || res.State == v1alpha1.PhaseReleasing || res.State == v1alpha1.PhaseReleased {
		return
	}
	reason, why, err := r.verdict(ctx, res, deleted)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Checking claim", "claim", uid)
		return
	}
	if reason == "" {
		return
	}
	klog.FromContext(ctx).Info("Releasing memory", "claim", uid, "namespace", res.Claim.Namespace, "name", res.Claim.Name, "reason", reason, "why", why)
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.ReconcileReleases.WithLabelValues(reason).Inc()
	}
	r.cfg.Ledger.SetMessage(uid, why)
	r.cfg.Releaser.Release(uid, reason == reasonDeleted)
}

// verdict says whether (and why) a reservation's memory should be released. The
// informer's copy of the claim answers first: nearly always it says the memory is
// still needed, and reading every provisioned claim live on each sweep made these
// reads the API server's most frequent request of the service. A deletion the
// informer saw is final (the deletion of the claim's UID, its deletion timestamp once
// no pod holds it, or its name held by another UID: a UID is never used again), and
// is acted on as seen.
// Any other release is decided on the claim read live: a cache may lag an
// allocation, and a deallocation can be followed by a new allocation.
func (r *Reconciler) verdict(ctx context.Context, res ledger.Reservation, deleted bool) (reason, why string, err error) {
	if deleted {
		return reasonDeleted, fmt.Sprintf("ResourceClaim %s/%s was deleted", res.Claim.Namespace, res.Claim.Name), nil
	}
	if r.claims != nil {
		if cached, err := r.claims.ResourceClaims(res.Claim.Namespace).Get(res.Claim.Name); err == nil {
			if reason, why := judge(cached, res, r.cfg.Clock, r.cfg.ProvisionGracePeriod); reason == "" || reason == reasonDeleted {
				return reason, why, nil
			}
		}
	}
	claim, err := r.cfg.Client.ResourceV1().ResourceClaims(res.Claim.Namespace).Get(ctx, res.Claim.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return reasonDeleted, fmt.Sprintf("ResourceClaim %s/%s was deleted", res.Claim.Namespace, res.Claim.Name), nil
	case err != nil:
		return "", "", fmt.Errorf("get ResourceClaim %s/%s: %w", res.Claim.Namespace, res.Claim.Name, err)
	}
	reason, why = judge(claim, res, r.cfg.Clock, r.cfg.ProvisionGracePeriod)
	return reason, why, nil
}

// AllocationWait is how long after its provisioning began a claim that is not
// allocated keeps its memory. The scheduler plugin provisions while DynamicResources
// writes the allocation (their PreBinds run in parallel), so the memory may be online
// before the allocation reaches the API server, let alone the informer. A claim still
// not allocated after this (the scheduler died between the two, or the allocation was
// undone) has its memory released; one deleted meanwhile is released at once.
const AllocationWait = 30 * time.Second

// reasonDeleted is the release reason of a claim that was deleted; the only one
// final whatever the claim's later state.
const reasonDeleted = "deleted"

// judge says whether the memory of res is still needed by claim, which exists.
func judge(claim *resourcev1.ResourceClaim, res ledger.Reservation, clk clock.PassiveClock, gracePeriod time.Duration) (reason, why string) {
	switch {
	case string(claim.UID) != res.Claim.UID:
		return reasonDeleted, fmt.Sprintf("ResourceClaim %s/%s was deleted (a new claim of that name has UID %s)", res.Claim.Namespace, res.Claim.Name, claim.UID)
	case beingDeleted(claim):
		return reasonDeleted, fmt.Sprintf("ResourceClaim %s/%s is being deleted", res.Claim.Namespace, res.Claim.Name)
	}
	if res.State == v1alpha1.PhaseReserved {
		return "", "" // not allocated yet is normal: the TTL decides
	}
	if !allocatedByUs(claim) {
		if at := res.ProvisioningAt; !at.IsZero() && clk.Since(at) < AllocationWait {
			return "", "" // its allocation may still be on its way (AllocationWait)
		}
		return "deallocated", fmt.Sprintf("ResourceClaim %s/%s is no longer allocated by %s", res.Claim.Namespace, res.Claim.Name, dra.DriverName)
	}
	// Deallocated and allocated again elsewhere between two looks: the memory is on
	// the old node or pool, the pod will run where the new allocation says.
	if d, _, err := dra.ClaimDemand(claim); err == nil && d.Allocated && (d.Node != "" && d.Node != res.Node || d.Pool != "" && d.Pool != res.Pool) {
		return "reallocated", fmt.Sprintf("ResourceClaim %s/%s is now allocated on node %s, pool %s; its memory is on node %s, pool %s",
			res.Claim.Namespace, res.Claim.Name, d.Node, d.Pool, res.Node, res.Pool)
	}
	since := res.OnlineAt
	if since.IsZero() {
		since = res.ProvisioningAt
	}
	if len(claim.Status.ReservedFor) == 0 && !since.IsZero() && clk.Since(since) >= gracePeriod {
		return "not-reserved-for-pod", fmt.Sprintf("no pod was reserved for ResourceClaim %s/%s within %s of provisioning", res.Claim.Namespace, res.Claim.Name, gracePeriod)
	}
	return "", ""
}
