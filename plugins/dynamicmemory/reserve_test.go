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

package dynamicmemory

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fwk "k8s.io/kube-scheduler/framework"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

func TestReservePermitUnreserve(t *testing.T) {
	tests := []struct {
		name       string
		claim      *resourceapi.ResourceClaim
		pending    *resourceapi.AllocationResult // DynamicResources' allocation
		held       []held
		reserveErr error
		node       string
		// wantReject is the start of Permit's rejection; empty: the pod is allowed.
		wantReject string
		wantCalls  []string
		// wantInflight is the pool of the in-flight reservation Reserve records.
		wantInflight string
	}{
		{
			name: "reserves from the pool DynamicResources allocated", claim: memClaim("c1", "4Gi"), pending: allocation("n1", "pool-b"), node: "n1",
			wantCalls: []string{"Reserve c1-uid n1 pool-b 4294967296"}, wantInflight: "pool-b",
		},
		{
			name: "without an allocation the plugin's own pick is reserved", claim: memClaim("c1", "4Gi"), node: "n1",
			wantCalls: []string{"Reserve c1-uid n1 pool-a 4294967296"}, wantInflight: "pool-a",
		},
		{
			name: "allocated claim reserves nothing new", claim: allocated(memClaim("c1", "4Gi"), "n1", "pool-a"), node: "n1",
		},
		{
			name: "stale reservation of an unallocated claim is released and retried", claim: memClaim("c1", "4Gi"), pending: allocation("n1", "pool-a"), node: "n1",
			held:      []held{{"c1-uid", "n2", "pool-a", 4 * gi}},
			wantCalls: []string{"Reserve c1-uid n1 pool-a 4294967296", "RemoveMemory c1-uid", "Reserve c1-uid n1 pool-a 4294967296"}, wantInflight: "pool-a",
		},
		{
			name: "pool exhausted: rejected with the numbers", claim: memClaim("c1", "4Gi"), pending: allocation("n1", "pool-a"), node: "n1",
			reserveErr: status.Error(codes.ResourceExhausted, "pool pool-a has 2Gi free"),
			wantReject: "reject: the memory service has no room for 4Gi for claim default/c1 on node n1 from pool pool-a (the scheduler's pool view was behind; retrying): pool pool-a has 2Gi free",
			wantCalls:  []string{"Reserve c1-uid n1 pool-a 4294967296"}, wantInflight: "pool-a",
		},
		{
			name: "memory service unavailable", claim: memClaim("c1", "4Gi"), pending: allocation("n1", "pool-a"), node: "n1",
			reserveErr: status.Error(codes.Unavailable, "connection refused"),
			wantReject: "reject: reserve 4Gi for claim default/c1 on node n1 from pool pool-a: the memory service did not answer within 5s",
			wantCalls:  []string{"Reserve c1-uid n1 pool-a 4294967296"}, wantInflight: "pool-a",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			pools := twoPools()
			pools[1].nodes = append(pools[1].nodes, "n1") // n1 is in both pools
			fs := newFakeService(t, pools...)
			gate := make(chan struct{})
			fs.change(func() {
				for _, r := range tc.held {
					fs.reservations[r.uid] = &memservicev1.Reservation{Claim: &memservicev1.ClaimRef{Uid: r.uid}, Node: r.node, Pool: r.pool, Bytes: r.bytes, RequestedBytes: r.bytes}
				}
				fs.reserveErr = tc.reserveErr
				fs.reserveGate = gate
				fs.pools["pool-a"].capacity = 16 * gi // pool-a is the fuller one: MostAllocated picks it
			})
			pod := memPod("p", tc.claim.Name)
			h := newFakeHandle(t, ctx, pod)
			h.dra.claims.set(tc.claim)
			if tc.pending != nil {
				h.dra.claims.pending[tc.claim.UID] = tc.pending
			}
			pl := newTestPlugin(t, ctx, fs, h, nil)
			waitRevision(t, pl, fs)
			cs, _, st := preFilter(t, ctx, pl, pod)
			require.True(t, st.IsSuccess(), "PreFilter: %v", st)
			callsBefore := len(fs.callLog())

			fs.hold() // keep the snapshot that shows the reservation back
			require.True(t, pl.Reserve(ctx, cs, pod, tc.node).IsSuccess(), "Reserve does not wait for the memory service")
			if tc.wantInflight != "" {
				assert.Equal(t, 4*gi, pl.cache.view().nodeUsed[poolNode{tc.wantInflight, tc.node}],
					"the next pods' Filter subtracts the reservation before the memory service answered")
			}

			st, timeout := pl.Permit(ctx, cs, pod, tc.node)
			if tc.wantCalls == nil {
				assert.True(t, st.IsSuccess(), "nothing to wait for: %v", st)
			} else {
				require.Equal(t, fwk.Wait, st.Code(), "Permit holds the pod until the memory service answered: %v", st)
				assert.Equal(t, 20*time.Second, timeout, "bounded by what the calls may take")
				waiting := h.wait(pod)
				close(gate)
				answer := <-waiting.answer
				if tc.wantReject == "" {
					assert.Equal(t, "allow", answer)
				} else {
					assert.True(t, strings.HasPrefix(answer, tc.wantReject), "answer %q should start with %q", answer, tc.wantReject)
				}
			}
			assert.Equal(t, tc.wantCalls, nilIfEmpty(fs.callLog()[callsBefore:]))
			if tc.wantInflight != "" && tc.wantReject == "" {
				assert.Equal(t, 4*gi, pl.cache.view().nodeUsed[poolNode{tc.wantInflight, tc.node}], "granted: in flight until a snapshot shows it")
			}

			// Unreserve releases what this cycle reserved, and only that.
			callsBefore = len(fs.callLog())
			pl.Unreserve(ctx, cs, pod, tc.node)
			var wantRelease []string
			if tc.claim.Status.Allocation == nil {
				// Also after a refusal: a call that timed out may have reserved.
				wantRelease = []string{"RemoveMemory c1-uid"}
			}
			require.Eventually(t, func() bool { return len(fs.callLog()) == callsBefore+len(wantRelease) }, 5*time.Second, time.Millisecond)
			assert.Equal(t, wantRelease, nilIfEmpty(fs.callLog()[callsBefore:]))
			require.Eventually(t, func() bool { return pl.cache.view().nodeUsed[poolNode{tc.wantInflight, tc.node}] == 0 }, 5*time.Second, time.Millisecond,
				"nothing in flight after Unreserve")
			pl.Unreserve(ctx, cs, pod, tc.node)
			assert.Len(t, fs.callLog(), callsBefore+len(wantRelease), "Unreserve is idempotent")
			fs.release()
		})
	}
}

// TestPermitAfterTheAnswer: when the memory service answered before Permit runs,
// Permit decides at once.
func TestPermitAfterTheAnswer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		reserveErr error
		wantCode   fwk.Code
		wantMsg    string
	}{
		{name: "granted"},
		{
			name: "refused", reserveErr: status.Error(codes.ResourceExhausted, "pool pool-b has 2Gi free"),
			wantCode: fwk.Unschedulable, wantMsg: "the memory service has no room for 4Gi for claim default/c1 on node n3 from pool pool-b",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			fs := newFakeService(t, twoPools()...)
			fs.change(func() { fs.reserveErr = tc.reserveErr })
			pl, h, pod, _, cs := prefilteredPod(t, ctx, fs, nil)
			require.True(t, pl.Reserve(ctx, cs, pod, "n3").IsSuccess())
			s := lookupState(cs)
			<-s.reservation.done

			st, timeout := pl.Permit(ctx, cs, pod, "n3")
			assert.Equal(t, tc.wantCode, st.Code(), "status: %v", st)
			assert.Contains(t, st.Message(), tc.wantMsg)
			assert.Zero(t, timeout)
			assert.Nil(t, h.GetWaitingPod(pod.UID), "the pod was not held")
			if tc.reserveErr != nil {
				assert.Equal(t, 1, pl.rejected.len(), "a refused pod waits for pool capacity")
			}
		})
	}
}

// TestAPodRefusedForAStaleViewIsTriedAgain: a pod refused because the pool view
// promised room the memory service no longer had is tried again once the view caught
// up, even when no memory is freed (another pool may have room: e2e
// TestDefaultSchedulerProfile waited minutes for the scheduler's periodic flush).
func TestAPodRefusedForAStaleViewIsTriedAgain(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeService(t, twoPools()...)
	fs.change(func() { fs.reserveErr = status.Error(codes.ResourceExhausted, "pool pool-b has 0 free") })
	pl, h, pod, _, cs := prefilteredPod(t, ctx, fs, nil)
	require.True(t, pl.Reserve(ctx, cs, pod, "n3").IsSuccess())
	<-lookupState(cs).reservation.done
	st, _ := pl.Permit(ctx, cs, pod, "n3")
	require.Equal(t, fwk.Unschedulable, st.Code(), "status: %v", st)
	assert.Empty(t, h.activatedPods(), "nothing was freed")
	require.Eventually(t, func() bool { return len(h.activatedPods()) > 0 }, 5*time.Second, 10*time.Millisecond,
		"tried again after %s", staleViewRetry)
	assert.Equal(t, []string{pod.Namespace + "/" + pod.Name}, h.activatedPods())
}

// TestUnreserveWhileReserving: a pod rejected while its Reserve call runs (another
// plugin's Permit, a Permit timeout, a deleted pod) is released once the call
// ended, and a new cycle of the same claim reserves only after that release.
func TestUnreserveWhileReserving(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeService(t, twoPools()...)
	gate := make(chan struct{})
	fs.change(func() { fs.reserveGate = gate })
	pl, h, pod, claim, cs := prefilteredPod(t, ctx, fs, nil)
	h.dra.claims.pending[claim.UID] = allocation("n3", "pool-b")
	require.True(t, pl.Reserve(ctx, cs, pod, "n3").IsSuccess())
	st, _ := pl.Permit(ctx, cs, pod, "n3")
	require.Equal(t, fwk.Wait, st.Code())
	first := lookupState(cs).reservation
	require.Eventually(t, func() bool { return len(fs.callLog()) == 1 }, 5*time.Second, time.Millisecond, "the Reserve call is running")

	pl.Unreserve(ctx, cs, pod, "n3")
	<-first.done
	assert.Error(t, first.err, "Unreserve cancels the running call")

	// The next cycle of the same pod.
	cs, _, st = preFilter(t, ctx, pl, pod)
	require.True(t, st.IsSuccess())
	require.True(t, pl.Reserve(ctx, cs, pod, "n3").IsSuccess())
	close(gate)
	require.NoError(t, lookupState(cs).reservation.outcome(ctx))
	assert.Equal(t, []string{"Reserve c1-uid n3 pool-b 4294967296", "RemoveMemory c1-uid", "Reserve c1-uid n3 pool-b 4294967296"}, fs.callLog(),
		"the release of the first cycle lands before the second cycle's Reserve")
	fs.mu.Lock()
	defer fs.mu.Unlock()
	assert.Contains(t, fs.reservations, "c1-uid", "the second cycle's reservation is held")
}

func TestReserveSkipsPodsWithoutDynamicMemory(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeService(t, twoPools()...)
	pod := memPod("plain")
	pl := newTestPlugin(t, ctx, fs, newFakeHandle(t, ctx, pod), nil)
	cs, _, st := preFilter(t, ctx, pl, pod)
	require.Equal(t, fwk.Skip, st.Code())
	assert.True(t, pl.Reserve(ctx, cs, pod, "n1").IsSuccess())
	pl.Unreserve(ctx, cs, pod, "n1")
	_, st = pl.PreBindPreFlight(ctx, cs, pod, "n1")
	assert.Equal(t, fwk.Skip, st.Code())
	assert.True(t, pl.PreBind(ctx, cs, pod, "n1").IsSuccess())
	assert.Empty(t, fs.callLog(), "no memory service call for a pod without dynamic memory")
}

func TestPreBind(t *testing.T) {
	hang := func(ctx context.Context, _ *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error) {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	failed := func(_ context.Context, req *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error) {
		return &memservicev1.AddMemoryResponse{Reservation: &memservicev1.Reservation{
			Claim: req.Claim, Node: req.Node, Pool: req.Pool, State: memservicev1.ReservationState_RESERVATION_STATE_FAILED,
			Message: "agent on n1: onlining memory block 42: device busy",
		}}, nil
	}
	broken := func(context.Context, *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error) {
		return nil, errors.New("boom")
	}
	exhausted := func(context.Context, *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error) {
		return nil, status.Error(codes.ResourceExhausted, "pool pool-b has 0 free, claim needs 4Gi")
	}
	tests := []struct {
		name      string
		addMemory func(context.Context, *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error)
		// provisionTimeout overrides the args' 10s.
		provisionTimeout time.Duration
		// allocationInFlight: DynamicResources' PreBind, which runs beside this one,
		// has not written the allocation yet.
		allocationInFlight bool
		wantCode           fwk.Code
		wantMsg            string
		wantEvent          string
		wantCalls          []string
	}{
		{
			name:      "memory comes online from the allocated pool",
			wantCalls: []string{"AddMemory c1-uid n3 pool-b 4294967296"},
		},
		{
			name:               "the allocation not written yet: the pool DynamicResources reserved",
			allocationInFlight: true,
			wantCalls:          []string{"AddMemory c1-uid n3 pool-b 4294967296"},
		},
		{
			name: "timeout: error, event and release", addMemory: hang, provisionTimeout: 100 * time.Millisecond,
			wantCode:  fwk.Error,
			wantMsg:   "provision 4Gi for claim default/c1 on node n3 from pool pool-b: not online within 100ms (provisionTimeout); releasing it and retrying the pod",
			wantEvent: "Warning DynamicMemoryProvisioningFailed provision 4Gi for claim default/c1 on node n3 from pool pool-b: not online within 100ms",
			wantCalls: []string{"AddMemory c1-uid n3 pool-b 4294967296", "RemoveMemory c1-uid"},
		},
		{
			name: "provisioning failed: the service's reason", addMemory: failed,
			wantCode:  fwk.Error,
			wantMsg:   "the memory service reports RESERVATION_STATE_FAILED: agent on n1: onlining memory block 42: device busy",
			wantEvent: "Warning DynamicMemoryProvisioningFailed",
			wantCalls: []string{"AddMemory c1-uid n3 pool-b 4294967296", "RemoveMemory c1-uid"},
		},
		{
			// The claim was allocated in an earlier cycle whose provisioning failed
			// (the chaos suite: the memory service restarted meanwhile), and the pool
			// filled up since: the pod waits for capacity like any rejected pod.
			name: "no capacity left for an allocated claim: unschedulable with the numbers", addMemory: exhausted,
			wantCode:  fwk.Unschedulable,
			wantMsg:   "provision 4Gi for claim default/c1 on node n3 from pool pool-b: pool pool-b has 0 free, claim needs 4Gi",
			wantEvent: "Warning DynamicMemoryProvisioningFailed",
			wantCalls: []string{"AddMemory c1-uid n3 pool-b 4294967296", "RemoveMemory c1-uid"},
		},
		{
			name: "transport error", addMemory: broken,
			wantCode:  fwk.Error,
			wantMsg:   "provision 4Gi for claim default/c1 on node n3 from pool pool-b:",
			wantEvent: "Warning DynamicMemoryProvisioningFailed",
			wantCalls: []string{"AddMemory c1-uid n3 pool-b 4294967296", "RemoveMemory c1-uid"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			fs := newFakeService(t, twoPools()...)
			pl, h, pod, claim, cs := prefilteredPod(t, ctx, fs, func(a *config.DynamicMemoryArgs) {
				a.ProvisionTimeout = &metav1.Duration{Duration: 10 * time.Second}
				if tc.provisionTimeout != 0 {
					a.ProvisionTimeout.Duration = tc.provisionTimeout
				}
			})
			// DynamicResources reserves pool-b on n3, then (PreBind) writes it to the claim.
			h.dra.claims.pending[claim.UID] = allocation("n3", "pool-b")
			require.True(t, pl.Reserve(ctx, cs, pod, "n3").IsSuccess())
			require.NoError(t, lookupState(cs).reservation.outcome(ctx), "the memory service granted the reservation")
			if !tc.allocationInFlight {
				h.dra.claims.set(allocated(claim, "n3", "pool-b"))
			}
			fs.change(func() { fs.calls = nil; fs.addMemory = tc.addMemory })

			result, st := pl.PreBindPreFlight(ctx, cs, pod, "n3")
			require.True(t, st.IsSuccess(), "PreBindPreFlight: %v", st)
			assert.True(t, result.AllowParallel, "PreBind runs beside DynamicResources', which writes the allocation")

			st = pl.PreBind(ctx, cs, pod, "n3")
			assert.Equal(t, tc.wantCode, st.Code(), "status: %v", st)
			assert.Contains(t, st.Message(), tc.wantMsg)
			if !st.IsSuccess() {
				pl.Unreserve(ctx, cs, pod, "n3") // what the framework does after a PreBind failure
			}
			require.Eventually(t, func() bool { return len(fs.callLog()) == len(tc.wantCalls) }, 5*time.Second, time.Millisecond)
			assert.Equal(t, tc.wantCalls, fs.callLog())
			events := h.events()
			if tc.wantEvent == "" {
				assert.Empty(t, events, "a success records no event")
				return
			}
			require.Len(t, events, 1)
			assert.True(t, strings.HasPrefix(events[0], tc.wantEvent), "event %q should start with %q", events[0], tc.wantEvent)
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestPermitHoldBound(t *testing.T) {
	tests := []struct {
		name          string
		claims        int
		permitTimeout time.Duration
		want          time.Duration
	}{
		{name: "one claim: a release, two Reserves and a release", claims: 1, want: 20 * time.Second},
		{name: "two claims: each may take as long", claims: 2, want: 35 * time.Second},
		{name: "permitTimeout set: it bounds the hold whatever the claims", claims: 3, permitTimeout: 7 * time.Second, want: 7 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &reservations{reserveTimeout: 5 * time.Second, releaseTimeout: 5 * time.Second, permitTimeout: tc.permitTimeout}
			assert.Equal(t, tc.want, m.holdBound(tc.claims))
		})
	}
}

// Once PreBind saw the memory online the pod goes to Bind, and a bind the scheduler
// sees fail may have landed (the scheduler stopped while the request was sent: chaos
// seed 67, where the pod then ran without its memory). Unreserve after that leaves
// the memory to the claim; the memory service releases it when the claim goes.
func TestUnreserveAfterTheMemoryWasOnlineReleasesNothing(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeService(t, twoPools()...)
	pl, h, pod, claim, cs := prefilteredPod(t, ctx, fs, nil)
	h.dra.claims.pending[claim.UID] = allocation("n3", "pool-b")
	require.True(t, pl.Reserve(ctx, cs, pod, "n3").IsSuccess())
	require.NoError(t, lookupState(cs).reservation.outcome(ctx))
	h.dra.claims.set(allocated(claim, "n3", "pool-b"))
	require.True(t, pl.PreBind(ctx, cs, pod, "n3").IsSuccess())

	fs.change(func() { fs.calls = nil })
	pl.Unreserve(ctx, cs, pod, "n3") // the framework, after Bind returned an error
	pl.reservations.(*reservations).releases.await(ctx, claim.UID)
	assert.Empty(t, fs.callLog(), "no RemoveMemory")
	assert.Empty(t, pl.cache.view().nodeUsed, "nothing left in flight in the pool cache")
}
