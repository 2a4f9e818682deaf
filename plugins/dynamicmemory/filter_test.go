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
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	fwk "k8s.io/kube-scheduler/framework"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

// held is a reservation the fake service already holds.
type held struct {
	uid, node, pool string
	bytes           int64
}

func TestFilter(t *testing.T) {
	tests := []struct {
		name     string
		claims   []*resourceapi.ResourceClaim
		held     []held
		inflight []held
		pools    func([]*fakePool)
		node     string
		wantCode fwk.Code
		wantMsg  string
		// notCapacity: the rejection is not about capacity; no pool change helps.
		notCapacity bool
		// wantPreFilter: PreFilter rejects the pod with this message.
		wantPreFilter string
	}{
		{name: "pool and window have room", claims: []*resourceapi.ResourceClaim{memClaim("c1", "16Gi")}, node: "n1"},
		{
			name: "pool too small: the numbers", claims: []*resourceapi.ResourceClaim{memClaim("c1", "16Gi")}, node: "n1",
			held:     []held{{"x1", "n2", "pool-a", 16 * gi}, {"x2", "n1", "pool-a", 13 * gi}},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a has 3Gi free, claim default/c1 needs 16Gi",
		},
		{
			name: "host window full while the pool has room", claims: []*resourceapi.ResourceClaim{memClaim("c1", "8Gi")}, node: "n1",
			held:     []held{{"x1", "n1", "pool-a", 12 * gi}},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a has 4Gi free for this node (host window 16Gi), claim default/c1 needs 8Gi",
		},
		{
			name: "larger than the host window", claims: []*resourceapi.ResourceClaim{memClaim("c1", "17Gi")}, node: "n1",
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a gives a node at most 16Gi, claim default/c1 needs 17Gi",
		},
		{
			name: "requests round up to the block size", claims: []*resourceapi.ResourceClaim{memClaim("c1", "1536Mi")}, node: "n1",
			held:     []held{{"x1", "n1", "pool-a", 15 * gi}},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a has 1Gi free for this node (host window 16Gi), claim default/c1 needs 2Gi",
		},
		{
			name: "in-flight reservations count", claims: []*resourceapi.ResourceClaim{memClaim("c1", "16Gi")}, node: "n2",
			inflight: []held{{"x1", "n1", "pool-a", 16 * gi}, {"x2", "n2", "pool-a", 4 * gi}},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a has 12Gi free, claim default/c1 needs 16Gi",
		},
		{
			name: "two claims of one pod share the window", claims: []*resourceapi.ResourceClaim{memClaim("c1", "10Gi"), memClaim("c2", "10Gi")}, node: "n1",
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a has 6Gi free for this node (host window 16Gi), claim default/c2 needs 10Gi",
		},
		{
			name: "two claims fit a larger window", claims: []*resourceapi.ResourceClaim{memClaim("c1", "10Gi"), memClaim("c2", "10Gi")}, node: "n3",
		},
		{
			name: "node without pool", claims: []*resourceapi.ResourceClaim{memClaim("c1", "1Gi")}, node: "n9",
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "node is not attached to any dynamic memory pool",
		},
		{
			name: "agent not connected", claims: []*resourceapi.ResourceClaim{memClaim("c1", "1Gi")}, node: "n1",
			pools:    func(ps []*fakePool) { ps[0].disconnected = map[string]bool{"n1": true} },
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "the node's dynamic memory agent is not connected to the memory service",
		},
		{
			name: "pool not ready", claims: []*resourceapi.ResourceClaim{memClaim("c1", "1Gi")}, node: "n1",
			pools:    func(ps []*fakePool) { ps[0].notReady = true },
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a is not ready",
		},
		{
			name: "node in two pools: reasons for both", claims: []*resourceapi.ResourceClaim{memClaim("c1", "12Gi")}, node: "n1",
			pools:    func(ps []*fakePool) { ps[1].nodes = append(ps[1].nodes, "n1") },
			held:     []held{{"x1", "n1", "pool-a", 16 * gi}, {"x2", "n2", "pool-a", 16 * gi}, {"x3", "n1", "pool-b", 24 * gi}},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "pool pool-a has 0 free, claim default/c1 needs 12Gi; pool pool-b has 8Gi free for this node (host window 32Gi), claim default/c1 needs 12Gi",
		},
		{
			name: "a claim no pool can serve on any node is rejected before Filter", claims: []*resourceapi.ResourceClaim{memClaim("c1", "20Gi")}, node: "n1",
			held:          []held{{"x1", "n3", "pool-b", 32 * gi}, {"x2", "n4", "pool-b", 20 * gi}},
			wantPreFilter: "no dynamic memory pool can serve claim default/c1, which needs 20Gi: pool pool-a gives a node at most 16Gi; pool pool-b has 12Gi free",
		},
		{
			name: "allocated claim needs no new capacity on its node", claims: []*resourceapi.ResourceClaim{allocated(memClaim("c1", "16Gi"), "n1", "pool-a")}, node: "n1",
			held: []held{{"c1-uid", "n1", "pool-a", 16 * gi}, {"x1", "n2", "pool-a", 16 * gi}},
		},
		{
			name: "allocated claim rejects other nodes", claims: []*resourceapi.ResourceClaim{allocated(memClaim("c1", "16Gi"), "n1", "pool-a")}, node: "n2",
			wantCode: fwk.UnschedulableAndUnresolvable, wantMsg: "ResourceClaim default/c1 is allocated on node n1", notCapacity: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			pools := twoPools()
			if tc.pools != nil {
				tc.pools(pools)
			}
			fs := newFakeService(t, pools...)
			fs.change(func() {
				for _, r := range tc.held {
					fs.reservations[r.uid] = &memservicev1.Reservation{
						Claim: &memservicev1.ClaimRef{Uid: r.uid}, Node: r.node, Pool: r.pool, Bytes: r.bytes, RequestedBytes: r.bytes,
					}
				}
			})
			names := make([]string, 0, len(tc.claims))
			for _, c := range tc.claims {
				names = append(names, c.Name)
			}
			pod := memPod("p", names...)
			h := newFakeHandle(t, ctx, pod)
			h.dra.claims.set(tc.claims...)
			pl := newTestPlugin(t, ctx, fs, h, nil)
			waitRevision(t, pl, fs)
			for _, r := range tc.inflight {
				// Granted at a revision no snapshot has reached yet.
				pl.cache.addInflight(typesUID(r.uid), r.pool, r.node, r.bytes, fs.revision+1)
			}

			cs, _, status := preFilter(t, ctx, pl, pod)
			if tc.wantPreFilter != "" {
				assert.Equal(t, fwk.UnschedulableAndUnresolvable, status.Code(), "status: %v", status)
				assert.Equal(t, tc.wantPreFilter, status.Message())
				assert.Equal(t, 1, pl.rejected.len(), "a rejected pod waits for capacity")
				return
			}
			require.True(t, status.IsSuccess(), "PreFilter: %v", status)
			status = pl.Filter(ctx, cs, pod, nodeInfo(tc.node))
			assert.Equal(t, tc.wantCode, status.Code(), "status: %v", status)
			assert.Equal(t, tc.wantMsg, status.Message())
			assert.Zero(t, pl.rejected.len(), "Filter has no side effects")
			if tc.wantCode != fwk.Success {
				// No node fits: the framework runs PostFilter.
				_, st := pl.PostFilter(ctx, cs, pod, nil)
				assert.Equal(t, fwk.Unschedulable, st.Code(), "PostFilter never makes the pod schedulable")
				if !tc.notCapacity {
					assert.Equal(t, 1, pl.rejected.len(), "a pod rejected for capacity is activated when capacity comes back")
				} else {
					assert.Zero(t, pl.rejected.len(), "a pod rejected for another reason is not activated by capacity")
				}
			}
		})
	}
}

func TestScore(t *testing.T) {
	// pool-a (32Gi) is half full, pool-b (64Gi) empty; n1 is in pool-a, n3 in pool-b.
	tests := []struct {
		name     string
		strategy config.ScoringStrategyType
		locality int32
		wantBest string
		wantN1   int64
		wantN3   int64
	}{
		// After placing 8Gi: pool-a 24/32 = 75, pool-b 8/64 = 12.
		{name: "MostAllocated packs the fuller pool", strategy: config.MostAllocated, wantBest: "n1", wantN1: 75, wantN3: 12},
		{name: "LeastAllocated spreads to the emptier pool", strategy: config.LeastAllocated, wantBest: "n3", wantN1: 25, wantN3: 88},
		// Locality only: pool-a is high latency (0), pool-b low (100).
		{name: "locality weight prefers low latency", strategy: config.MostAllocated, locality: 100, wantBest: "n3", wantN1: 0, wantN3: 100},
		// Half and half: n1 = (75+0)/2, n3 = (12+100)/2.
		{name: "locality mixed with packing", strategy: config.MostAllocated, locality: 50, wantBest: "n3", wantN1: 37, wantN3: 56},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			fs := newFakeService(t, twoPools()...)
			fs.change(func() {
				fs.reservations["x1"] = &memservicev1.Reservation{Claim: &memservicev1.ClaimRef{Uid: "x1"}, Node: "n2", Pool: "pool-a", Bytes: 16 * gi}
			})
			pod := memPod("p", "c1")
			h := newFakeHandle(t, ctx, pod)
			h.dra.claims.set(memClaim("c1", "8Gi"))
			pl := newTestPlugin(t, ctx, fs, h, func(a *config.DynamicMemoryArgs) {
				a.ScoringStrategy = &config.ScoringStrategy{Type: tc.strategy, LocalityWeight: tc.locality}
			})
			waitRevision(t, pl, fs)
			cs, _, status := preFilter(t, ctx, pl, pod)
			require.True(t, status.IsSuccess())

			scores := fwk.NodeScoreList{}
			for _, n := range []string{"n1", "n3"} {
				s, status := pl.Score(ctx, cs, pod, nodeInfo(n))
				require.True(t, status.IsSuccess())
				scores = append(scores, fwk.NodeScore{Name: n, Score: s})
			}
			assert.Equal(t, fwk.NodeScoreList{{Name: "n1", Score: tc.wantN1}, {Name: "n3", Score: tc.wantN3}}, scores)

			require.True(t, pl.NormalizeScore(ctx, cs, pod, scores).IsSuccess())
			best := scores[0]
			for _, s := range scores {
				assert.LessOrEqual(t, s.Score, fwk.MaxNodeScore)
				if s.Score > best.Score {
					best = s
				}
			}
			assert.Equal(t, tc.wantBest, best.Name)
			assert.Equal(t, fwk.MaxNodeScore, best.Score, "the best node is normalized to the maximum")
		})
	}
}
