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
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2/ktesting"
	fwk "k8s.io/kube-scheduler/framework"
	testingclock "k8s.io/utils/clock/testing"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

func TestPoolCacheReconnectsAndActivatesWaitingPods(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeService(t, twoPools()...)
	pod := memPod("p", "c1")
	h := newFakeHandle(t, ctx, pod)
	h.dra.claims.set(memClaim("c1", "4Gi"))
	pl := newTestPlugin(t, ctx, fs, h, nil)
	assert.Zero(t, pl.cache.staleness())

	fs.stop()
	waitConnected(t, pl, false)
	_, _, st := preFilter(t, ctx, pl, pod)
	require.Equal(t, fwk.UnschedulableAndUnresolvable, st.Code())
	assert.Contains(t, st.Message(), "the scheduler has no pool state from the memory service (watch pools: ")
	assert.Contains(t, st.Message(), "dynamic-memory pods wait until it is back")
	assert.Positive(t, pl.cache.staleness())
	assert.Empty(t, h.activatedPods())

	fs.start()
	waitConnected(t, pl, true)
	require.Eventually(t, func() bool { return len(h.activatedPods()) > 0 }, 5*time.Second, 5*time.Millisecond,
		"the pod rejected while disconnected is activated when the cache is back")
	assert.Equal(t, []string{"default/p"}, h.activatedPods()[:1])
	_, _, st = preFilter(t, ctx, pl, pod)
	assert.True(t, st.IsSuccess(), "PreFilter after reconnect: %v", st)
}

func TestFreedCapacityActivatesOnlyPodsItCanServe(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeService(t, twoPools()...)
	fs.change(func() {
		fs.reservations["x1"] = &memservicev1.Reservation{Claim: &memservicev1.ClaimRef{Uid: "x1"}, Node: "n1", Pool: "pool-a", Bytes: 16 * gi}
		fs.reservations["x2"] = &memservicev1.Reservation{Claim: &memservicev1.ClaimRef{Uid: "x2"}, Node: "n2", Pool: "pool-a", Bytes: 16 * gi}
		fs.reservations["x3"] = &memservicev1.Reservation{Claim: &memservicev1.ClaimRef{Uid: "x3"}, Node: "n3", Pool: "pool-b", Bytes: 32 * gi}
		fs.reservations["x4"] = &memservicev1.Reservation{Claim: &memservicev1.ClaimRef{Uid: "x4"}, Node: "n4", Pool: "pool-b", Bytes: 32 * gi}
	})
	small, big := memPod("small", "c-small"), memPod("big", "c-big")
	gone := memPod("gone", "c-small") // deleted while waiting: never in the informer
	h := newFakeHandle(t, ctx, small, big)
	h.dra.claims.set(memClaim("c-small", "4Gi"), memClaim("c-big", "24Gi"))
	pl := newTestPlugin(t, ctx, fs, h, nil)
	waitRevision(t, pl, fs)

	for _, pod := range []*v1.Pod{small, big, gone} {
		_, _, st := preFilter(t, ctx, pl, pod)
		require.Equal(t, fwk.UnschedulableAndUnresolvable, st.Code(), "every pool is full: %v", st)
	}
	require.Equal(t, 3, pl.rejected.len())

	// 8Gi come back on n3: enough for the small pod only.
	fs.change(func() { fs.reservations["x3"].Bytes = 24 * gi })
	require.Eventually(t, func() bool { return len(h.activatedPods()) > 0 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"default/small"}, h.activatedPods())
	assert.Equal(t, 2, pl.rejected.len(), "the deleted pod is forgotten, the big one still waits")
}

func TestInflightReservationsLastUntilALaterSnapshot(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	clk := testingclock.NewFakeClock(time.Now())
	c := newPoolCache(nil, clk)
	snap := func(rev uint64, reservedOnN1 int64) *memservicev1.PoolSnapshot {
		return &memservicev1.PoolSnapshot{Revision: rev, LedgerRevision: rev, Pools: []*memservicev1.PoolStatus{{
			Name: "pool-a", CapacityBytes: 32 * gi, BlockSizeBytes: gi, HostWindowBytes: 16 * gi, Ready: true,
			FreeBytes: 32*gi - reservedOnN1,
			Nodes:     []*memservicev1.NodeShare{{Node: "n1", ReservedBytes: reservedOnN1, FreeBytes: 16*gi - reservedOnN1, AgentConnected: true}},
		}}}
	}
	free := func() int64 {
		v := c.view()
		return v.free(v.index.shares["n1"][0], "n1")
	}

	clk.Step(3 * time.Second)
	assert.Equal(t, 3*time.Second, c.staleness(), "stale since start until connected")

	c.update(logger, snap(7, 0))
	assert.Zero(t, c.staleness())
	assert.Equal(t, 16*gi, free())
	c.addInflight("claim-1", "pool-a", "n1", 4*gi, 8)
	assert.Equal(t, 12*gi, free(), "a reservation not in the snapshot yet is subtracted")

	c.update(logger, snap(7, 0)) // the same revision again
	assert.Equal(t, 12*gi, free(), "a snapshot before the reservation's revision does not count it")

	c.update(logger, snap(8, 4*gi))
	assert.Equal(t, 12*gi, free(), "the snapshot at the reservation's revision shows it: counted once")
	assert.Empty(t, c.view().nodeUsed)

	c.addInflight("claim-3", "pool-a", "n1", 4*gi, 8)
	assert.Empty(t, c.view().nodeUsed, "a reservation the cache's snapshot already counts is not in flight")

	c.addInflight("claim-2", "pool-a", "n1", 2*gi, 9)
	c.dropInflight(logger, "claim-2")
	assert.Equal(t, 12*gi, free(), "a released reservation is no longer subtracted")

	c.addInflight("claim-4", "pool-a", "n1", 2*gi, 9)
	c.disconnect(logger, errors.New("restarting"))
	c.update(logger, snap(1, 4*gi)) // a new service instance: its revisions start again
	assert.Empty(t, c.view().nodeUsed, "the first snapshot of a new stream is authoritative")

	c.disconnect(logger, errors.New("stream broke"))
	clk.Step(5 * time.Second)
	assert.Equal(t, 5*time.Second, c.staleness())
	assert.False(t, c.view().connected)
	assert.EqualError(t, c.view().lastErr, "stream broke")
}

// A pod turned down because the nodes' agents were not connected is tried again when
// they connect, even if what is free then is less than it needs: the reason it waits
// with must be the numbers, not an outage that is over (chaos seed 54).
func TestAPodRejectedWhileAgentsWereDownIsTriedAgainWhenTheyConnect(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeService(t, twoPools()...)
	nodes := []string{"n1", "n2", "n3", "n4"}
	fs.change(func() {
		for i, n := range nodes {
			pool := []string{"pool-a", "pool-a", "pool-b", "pool-b"}[i]
			fs.reservations["x-"+n] = &memservicev1.Reservation{Claim: &memservicev1.ClaimRef{Uid: "x-" + n}, Node: n, Pool: pool, Bytes: fs.pools[pool].window - 4*gi}
			if fs.pools[pool].disconnected == nil {
				fs.pools[pool].disconnected = map[string]bool{}
			}
			fs.pools[pool].disconnected[n] = true
		}
	})
	pod := memPod("p", "c1")
	h := newFakeHandle(t, ctx, pod)
	h.dra.claims.set(memClaim("c1", "6Gi"))
	pl := newTestPlugin(t, ctx, fs, h, nil)
	waitRevision(t, pl, fs)

	cs, _, st := preFilter(t, ctx, pl, pod)
	require.True(t, st.IsSuccess(), "PreFilter: %v", st)
	for _, n := range nodes {
		st = pl.Filter(ctx, cs, pod, nodeInfo(n))
		require.Equal(t, "the node's dynamic memory agent is not connected to the memory service", st.Message())
	}
	_, st = pl.PostFilter(ctx, cs, pod, nil)
	require.Equal(t, fwk.Unschedulable, st.Code())
	require.Equal(t, 1, pl.rejected.len())

	fs.change(func() {
		for _, p := range fs.pools {
			p.disconnected = nil
		}
	})
	require.Eventually(t, func() bool { return len(h.activatedPods()) > 0 }, 5*time.Second, 5*time.Millisecond,
		"the pod is tried again once the agents are back (4Gi free a node: it will wait, with the numbers)")
	assert.Equal(t, []string{"default/p"}, h.activatedPods())
}
