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

package reconciler_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/reconciler"
)

const gi = int64(1) << 30

type releases struct {
	mu   sync.Mutex
	l    *ledger.Ledger
	uids []string
	// deleted holds the claims released as deleted for good.
	deleted []string
}

func (r *releases) Release(uid string, claimDeleted bool) {
	r.mu.Lock()
	r.uids = append(r.uids, uid)
	if claimDeleted {
		r.deleted = append(r.deleted, uid)
	}
	r.mu.Unlock()
	r.l.BeginRelease(uid)
}

func (r *releases) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.uids...)
}

func (r *releases) gotDeleted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.deleted...)
}

func resourceClaim(name, uid string, allocated bool, reservedFor bool) *resourcev1.ResourceClaim {
	c := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(uid)}}
	if allocated {
		c.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{
			Results: []resourcev1.DeviceRequestAllocationResult{{Request: "mem", Driver: dra.DriverName, Pool: "cxl-a", Device: "cxl-a"}},
		}}
	}
	if reservedFor {
		c.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: "pod", UID: "p"}}
	}
	return c
}

type env struct {
	ledger *ledger.Ledger
	clock  *clocktesting.FakeClock
	rel    *releases
	rec    *reconciler.Reconciler
	client *fake.Clientset
}

func newEnv(t *testing.T, claims ...*resourcev1.ResourceClaim) *env {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := ledger.New(clk, ledger.Options{ReservationTTL: time.Minute})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "cxl-a", Capacity: 16 * gi, BlockSize: gi, HostWindow: 16 * gi, Nodes: []string{"n1"}}))
	l.SetPoolReady("cxl-a", true, "")
	e := &env{ledger: l, clock: clk, rel: &releases{l: l}}
	e.client = fake.NewClientset()
	for _, c := range claims {
		_, err := e.client.ResourceV1().ResourceClaims(c.Namespace).Create(context.Background(), c, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	e.rec = reconciler.New(reconciler.Config{Client: e.client, Ledger: l, Releaser: e.rel, Clock: clk, ProvisionGracePeriod: 5 * time.Minute})
	return e
}

// run runs rec until the test ends, and checks that it then returns no error.
func run(t *testing.T, rec *reconciler.Reconciler) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	return ctx
}

// runSwept runs e's reconciler until the test ends and waits for its first sweep.
func (e *env) runSwept(t *testing.T) context.Context {
	t.Helper()
	ctx := run(t, e.rec)
	require.Eventually(t, func() bool { return e.clock.HasWaiters() }, 5*time.Second, time.Millisecond, "the reconciler runs its first sweep")
	return ctx
}

// assertNoLiveReads checks that no ResourceClaim was read from the API server.
func (e *env) assertNoLiveReads(t *testing.T) {
	t.Helper()
	for _, a := range e.client.Actions() {
		assert.False(t, a.Matches("get", "resourceclaims"), "no claim is read live: %v", a)
	}
}

func (e *env) provision(t *testing.T, name, uid string, online bool) {
	t.Helper()
	_, _, err := e.ledger.Provision(ledger.Request{Claim: ledger.ClaimRef{UID: uid, Namespace: "default", Name: name}, Node: "n1", Bytes: gi})
	require.NoError(t, err)
	if online {
		_, err = e.ledger.MarkOnline(uid, nil)
		require.NoError(t, err)
	}
}

func TestSweepReleasesWhatNoClaimNeeds(t *testing.T) {
	e := newEnv(t,
		resourceClaim("in-use", "u-in-use", true, true),
		resourceClaim("deallocated", "u-deallocated", false, false),
		resourceClaim("recreated", "u-new", true, true),
		resourceClaim("no-pod-yet", "u-no-pod-yet", true, false),
		resourceClaim("no-pod-ever", "u-no-pod-ever", true, false),
		resourceClaim("allocating", "u-allocating", false, false),
	)
	e.provision(t, "in-use", "u-in-use", true)
	e.provision(t, "deallocated", "u-deallocated", true)
	e.provision(t, "deleted", "u-deleted", true)
	e.provision(t, "recreated", "u-old", true)
	e.provision(t, "no-pod-ever", "u-no-pod-ever", true)
	e.clock.Step(4 * time.Minute)
	e.provision(t, "no-pod-yet", "u-no-pod-yet", true)
	e.clock.Step(2 * time.Minute)
	// Provisioned while the scheduler writes its allocation (PreBind runs beside
	// DynamicResources'): not allocated yet is normal for AllocationWait.
	e.provision(t, "allocating", "u-allocating", true)
	e.clock.Step(reconciler.AllocationWait - time.Second)

	e.rec.Sweep(context.Background())
	assert.ElementsMatch(t, []string{"u-deallocated", "u-deleted", "u-old", "u-no-pod-ever"}, e.rel.got())
	assert.ElementsMatch(t, []string{"u-deleted", "u-old"}, e.rel.gotDeleted(),
		"a claim gone, or its name another claim's, is deleted for good; the others may be allocated again")
	for uid, why := range map[string]string{
		"u-deallocated": "is no longer allocated by dcd.dynamicmemory.io",
		"u-deleted":     "ResourceClaim default/deleted was deleted",
		"u-old":         "a new claim of that name has UID u-new",
		"u-no-pod-ever": "no pod was reserved for ResourceClaim default/no-pod-ever within 5m0s",
	} {
		r, ok := e.ledger.Get(uid)
		require.True(t, ok)
		assert.Equal(t, v1alpha1.PhaseReleasing, r.State, uid)
		assert.Contains(t, r.Message, why, uid)
	}
	for _, uid := range []string{"u-in-use", "u-no-pod-yet", "u-allocating"} {
		r, _ := e.ledger.Get(uid)
		assert.Equal(t, v1alpha1.PhaseOnline, r.State, "%s is kept", uid)
	}

	e.clock.Step(time.Second)
	e.rec.Sweep(context.Background())
	r, _ := e.ledger.Get("u-allocating")
	assert.Equal(t, v1alpha1.PhaseReleasing, r.State, "still not allocated AllocationWait after its provisioning")
	assert.Contains(t, r.Message, "is no longer allocated by dcd.dynamicmemory.io")
}

func TestReservedEntriesAreLeftToTheTTL(t *testing.T) {
	e := newEnv(t, resourceClaim("pending", "u-pending", false, false))
	_, err := e.ledger.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: "u-pending", Namespace: "default", Name: "pending"}, Node: "n1", Bytes: gi})
	require.NoError(t, err)
	e.rec.Sweep(context.Background())
	assert.Empty(t, e.rel.got(), "a claim not allocated yet keeps its reservation")

	e.clock.Step(time.Minute)
	e.rec.Expire(context.Background())
	_, ok := e.ledger.Get("u-pending")
	assert.False(t, ok, "the TTL expired it")
	assert.Equal(t, 16*gi, e.ledger.Snapshot().Pools[0].Free)
}

func TestDeletingAClaimReleasesItsMemory(t *testing.T) {
	e := newEnv(t, resourceClaim("c", "u-c", true, true))
	e.provision(t, "c", "u-c", true)
	ctx := run(t, e.rec)
	require.Eventually(t, func() bool { return e.clock.HasWaiters() }, 5*time.Second, time.Millisecond, "the reconciler runs")
	assert.Empty(t, e.rel.got())

	require.NoError(t, e.client.ResourceV1().ResourceClaims("default").Delete(ctx, "c", metav1.DeleteOptions{}))
	// The delete event and the first sweep may both see it (the release is idempotent).
	require.Eventually(t, func() bool { return len(e.rel.got()) > 0 }, 5*time.Second, 5*time.Millisecond)
	for _, uid := range e.rel.got() {
		assert.Equal(t, "u-c", uid)
	}
	r, _ := e.ledger.Get("u-c")
	assert.Equal(t, v1alpha1.PhaseReleasing, r.State)
}

type provisions struct {
	mu   sync.Mutex
	reqs []ledger.Request
}

func (p *provisions) StartProvisioning(req ledger.Request) (ledger.Reservation, <-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, req)
	return ledger.Reservation{Claim: req.Claim, Node: req.Node, Pool: req.Pool, Bytes: req.Bytes, State: v1alpha1.PhaseProvisioning}, nil, nil
}

func (p *provisions) got() []ledger.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ledger.Request(nil), p.reqs...)
}

// Only a claim allocated for a pod whose memory is not provisioned (no reservation,
// or one the scheduler plugin made) and whose record was not set aside is
// provisioned by the service as soon as it is seen; one it cannot read is refused
// with the reason.
func TestOnlyClaimsAllocatedForAPodWithoutAReservationAreProvisioned(t *testing.T) {
	sized := func(c *resourcev1.ResourceClaim, size string) *resourcev1.ResourceClaim {
		c.Spec.Devices.Requests = []resourcev1.DeviceRequest{{Name: "mem", Exactly: &resourcev1.ExactDeviceRequest{
			DeviceClassName: dra.DeviceClassName,
			Capacity:        &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse(size)}},
		}}}
		if c.Status.Allocation != nil {
			c.Status.Allocation.Devices.Results[0].Pool = "n1" // the node's DRA pool
		}
		return c
	}
	e := newEnv(t,
		sized(resourceClaim("adopted", "u-adopted", true, true), "3Gi"),
		sized(resourceClaim("reserved", "u-reserved", true, true), "1Gi"),
		sized(resourceClaim("reserved-only", "u-reserved-only", true, true), "2Gi"),
		sized(resourceClaim("set-aside", "u-set-aside", true, true), "1Gi"),
		sized(resourceClaim("no-pod", "u-no-pod", true, false), "1Gi"),
		sized(resourceClaim("pending", "u-pending", false, false), "1Gi"),
		sized(resourceClaim("no-size", "u-no-size", true, true), "0"),
	)
	e.provision(t, "reserved", "u-reserved", true)
	_, err := e.ledger.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: "u-reserved-only", Namespace: "default", Name: "reserved-only"}, Node: "n1", Bytes: 2 * gi})
	require.NoError(t, err)
	_, ok := e.ledger.SetAside(ledger.Reservation{Claim: ledger.ClaimRef{UID: "u-set-aside"}, Node: "n1", Pool: "cxl-a", Bytes: gi}, "could not be restored")
	require.True(t, ok)
	prov := &provisions{}
	rec := reconciler.New(reconciler.Config{Client: e.client, Ledger: e.ledger, Releaser: e.rel, Provisioner: prov, Clock: e.clock})
	ctx := run(t, rec)

	require.Eventually(t, func() bool { return len(prov.got()) >= 2 }, 5*time.Second, 5*time.Millisecond)
	assert.ElementsMatch(t, []ledger.Request{{
		Claim: ledger.ClaimRef{UID: "u-adopted", Namespace: "default", Name: "adopted"},
		Pod:   ledger.PodRef{Name: "pod", UID: "p"}, Node: "n1", Pool: "cxl-a", Bytes: 3 * gi,
	}, {
		Claim: ledger.ClaimRef{UID: "u-reserved-only", Namespace: "default", Name: "reserved-only"},
		Pod:   ledger.PodRef{Name: "pod", UID: "p"}, Node: "n1", Pool: "cxl-a", Bytes: 2 * gi,
	}}, prov.got())
	var failed *metav1.Condition
	require.Eventually(t, func() bool {
		c, err := e.client.ResourceV1().ResourceClaims("default").Get(ctx, "no-size", metav1.GetOptions{})
		require.NoError(t, err)
		for _, d := range c.Status.Devices {
			failed = meta.FindStatusCondition(d.Conditions, dra.ConditionProvisioningFailed)
		}
		return failed != nil
	}, 5*time.Second, 5*time.Millisecond, "the claim that asks no size says so")
	assert.Equal(t, reconciler.ReasonInvalidClaim, failed.Reason)
	assert.Contains(t, failed.Message, "sets no size")
	require.Eventually(t, func() bool { return e.clock.HasWaiters() }, 5*time.Second, time.Millisecond, "the reconciler runs")
	assert.Len(t, prov.got(), 2, "no other claim is provisioned")
}

// The sweep reads the claims from the informer's cache: a claim whose memory its
// cached copy says is needed costs the API server nothing. Where the cache says to
// release, the claim is read live first, and a cache that lags (here: the claim was
// allocated again since) releases nothing.
func TestSweepReadsLiveOnlyToConfirmARelease(t *testing.T) {
	e := newEnv(t,
		resourceClaim("in-use", "u-in-use", true, true),
		resourceClaim("lagging", "u-lagging", false, false),
	)
	e.provision(t, "in-use", "u-in-use", true)
	e.provision(t, "lagging", "u-lagging", true)
	e.clock.Step(reconciler.AllocationWait) // no allocation on its way any more
	// Read live, the lagging claim is allocated for its pod.
	e.client.PrependReactor("get", "resourceclaims", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.(k8stesting.GetAction).GetName() == "lagging" {
			return true, resourceClaim("lagging", "u-lagging", true, true), nil
		}
		return false, nil, nil
	})
	e.runSwept(t)

	gets := func() []string {
		var names []string
		for _, a := range e.client.Actions() {
			if a.Matches("get", "resourceclaims") {
				names = append(names, a.(k8stesting.GetAction).GetName())
			}
		}
		return names
	}
	e.clock.Step(10 * time.Second) // the next sweep (the first may still be under way)
	require.Eventually(t, func() bool { return len(gets()) >= 2 }, 5*time.Second, time.Millisecond)
	assert.NotContains(t, gets(), "in-use", "only the claim the cache says to release is read live")
	assert.Empty(t, e.rel.got(), "the live claim needs its memory")
}

// A claim deallocated and allocated again on another node between two looks: its
// memory is on the old node, so it is released (and then provisioned where the claim
// now is).
func TestAClaimAllocatedElsewhereHasItsMemoryReleased(t *testing.T) {
	moved := resourceClaim("moved", "u-moved", true, true)
	moved.Spec.Devices.Requests = []resourcev1.DeviceRequest{{Name: "mem", Exactly: &resourcev1.ExactDeviceRequest{
		DeviceClassName: dra.DeviceClassName,
		Capacity:        &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse("1Gi")}},
	}}}
	moved.Status.Allocation.NodeSelector = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"n2"}}},
	}}}
	stays := moved.DeepCopy()
	stays.Name, stays.UID = "stays", "u-stays"
	stays.Status.Allocation.NodeSelector.NodeSelectorTerms[0].MatchFields[0].Values = []string{"n1"}
	e := newEnv(t, moved, stays)
	e.provision(t, "moved", "u-moved", true)
	e.provision(t, "stays", "u-stays", true)

	e.rec.Sweep(context.Background())
	assert.Equal(t, []string{"u-moved"}, e.rel.got())
	r, _ := e.ledger.Get("u-moved")
	assert.Contains(t, r.Message, "ResourceClaim default/moved is now allocated on node n2, pool cxl-a; its memory is on node n1, pool cxl-a")
}

// A deletion is final: a claim the informer saw deleted, or saw with a deletion
// timestamp, or whose name it sees held by a claim of another UID, never needs its
// memory again (a UID is never used twice), so its release costs no live read.
// A deallocation may be undone, and is still confirmed live
// (TestSweepReadsLiveOnlyToConfirmARelease).
func TestADeletionTheInformerSawIsReleasedWithoutALiveRead(t *testing.T) {
	e := newEnv(t,
		resourceClaim("deleted", "u-deleted", true, true),
		resourceClaim("terminating", "u-terminating", true, true),
		resourceClaim("recreated", "u-recreated", true, true),
	)
	for _, c := range []string{"deleted", "terminating", "recreated"} {
		e.provision(t, c, "u-"+c, true)
	}
	ctx := e.runSwept(t)
	require.Empty(t, e.rel.got())

	claims := e.client.ResourceV1().ResourceClaims("default")
	require.NoError(t, claims.Delete(ctx, "deleted", metav1.DeleteOptions{}))
	terminating := resourceClaim("terminating", "u-terminating", true, false) // its pod is done
	terminating.DeletionTimestamp = &metav1.Time{Time: e.clock.Now()}
	_, err := claims.Update(ctx, terminating, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, claims.Delete(ctx, "recreated", metav1.DeleteOptions{}))
	_, err = claims.Create(ctx, resourceClaim("recreated", "u-recreated-2", true, true), metav1.CreateOptions{})
	require.NoError(t, err)

	// Two events may both see a deletion (the release is idempotent): the claims
	// released count once each.
	released := func() []string { return slices.Compact(slices.Sorted(slices.Values(e.rel.got()))) }
	require.Eventually(t, func() bool { return len(released()) >= 3 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"u-deleted", "u-recreated", "u-terminating"}, released())
	e.assertNoLiveReads(t)
}

// A claim is deleted while its pod still runs: a user deleted it, or its namespace
// is being deleted while the pod has its grace period. The claim stays (the
// delete-protection finalizer) allocated and reserved for the pod until the pod is
// done, and so does its memory; once no pod holds it, the deletion is final and the
// memory is released, without a live read.
func TestAClaimBeingDeletedKeepsItsMemoryWhileAPodHoldsIt(t *testing.T) {
	e := newEnv(t, resourceClaim("held", "u-held", true, true), resourceClaim("sentinel", "u-sentinel", true, true))
	e.provision(t, "held", "u-held", true)
	e.provision(t, "sentinel", "u-sentinel", true)
	e.clock.Step(reconciler.AllocationWait + time.Second) // no allocation on its way
	ctx := e.runSwept(t)

	claims := e.client.ResourceV1().ResourceClaims("default")
	held := resourceClaim("held", "u-held", true, true)
	held.DeletionTimestamp = &metav1.Time{Time: e.clock.Now()}
	_, err := claims.Update(ctx, held, metav1.UpdateOptions{})
	require.NoError(t, err)
	// The informer hands events over in order: once the sentinel's deletion is
	// released, the held claim's update was looked at.
	require.NoError(t, claims.Delete(ctx, "sentinel", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return slices.Contains(e.rel.got(), "u-sentinel") }, 5*time.Second, 5*time.Millisecond)
	e.rec.Sweep(ctx)
	assert.NotContains(t, e.rel.got(), "u-held", "a pod still holds the claim")

	held.Status.ReservedFor = nil // the pod is done
	_, err = claims.UpdateStatus(ctx, held, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return slices.Contains(e.rel.got(), "u-held") }, 5*time.Second, 5*time.Millisecond)
	assert.Contains(t, e.rel.gotDeleted(), "u-held", "deleted for good once no pod holds it")
	e.assertNoLiveReads(t)
}

// The resourceclaim controller deallocates a claim it made from a template and then
// deletes it. The reconciler waits DeallocationPause after a deallocation: the
// deletion that follows is final and needs no live read. A claim that stays
// deallocated is read live after the pause, and its memory released then.
func TestADeallocationIsCheckedAfterAPauseThatADeletionEndsEarly(t *testing.T) {
	e := newEnv(t, resourceClaim("deleted", "u-deleted", true, true), resourceClaim("kept", "u-kept", true, true))
	e.provision(t, "deleted", "u-deleted", true)
	e.provision(t, "kept", "u-kept", true)
	e.clock.Step(reconciler.AllocationWait) // no allocation on its way any more
	ctx := e.runSwept(t)

	claims := e.client.ResourceV1().ResourceClaims("default")
	for _, name := range []string{"deleted", "kept"} {
		_, err := claims.UpdateStatus(ctx, resourceClaim(name, "u-"+name, false, false), metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	require.NoError(t, claims.Delete(ctx, "deleted", metav1.DeleteOptions{}))
	released := func() []string { return slices.Compact(slices.Sorted(slices.Values(e.rel.got()))) } // idempotent: once each
	require.Eventually(t, func() bool { return len(released()) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"u-deleted"}, released(), "the deletion at once; the deallocation waits for the pause")
	gets := func() (n int) {
		for _, a := range e.client.Actions() {
			if a.Matches("get", "resourceclaims") {
				n++
			}
		}
		return n
	}
	assert.Zero(t, gets(), "no claim read live yet")

	e.clock.Step(reconciler.DeallocationPause)
	require.Eventually(t, func() bool { return len(released()) == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"u-deleted", "u-kept"}, released())
	assert.Equal(t, 1, gets(), "the kept claim is read live once, to confirm")
	r, _ := e.ledger.Get("u-kept")
	assert.Contains(t, r.Message, "is no longer allocated")
}
