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
	"cmp"
	"fmt"
	"slices"
	"strings"

	fwk "k8s.io/kube-scheduler/framework"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	v1alpha1 "github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

// placement says where one demand's memory would come from on a node.
type placement struct {
	pool string
	// bytes is the demand rounded up to the pool's block size.
	bytes int64
	// score ranks the placement, 0-100, by the configured strategy.
	score int64
}

// scorer ranks a pool for a placement.
type scorer struct {
	strategy       config.ScoringStrategyType
	localityWeight int64
}

// fitNode places the pod's new demands (those not allocated yet) on pools attached
// to node, largest first, each into the best-scoring pool with room. placements is
// indexed like demands (allocated demands get none). When a demand fits nowhere the
// status says why, with the numbers.
func (v *cacheView) fitNode(node string, demands []demand, sc scorer) ([]placement, *fwk.Status) {
	placements := make([]placement, len(demands))
	order := make([]int, 0, len(demands))
	for i, d := range demands {
		if !d.allocated {
			order = append(order, i)
		}
	}
	if len(order) == 0 {
		return placements, nil
	}
	var shares []share
	if v.index != nil {
		shares = v.index.shares[node]
	}
	if len(shares) == 0 {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, "node is not attached to any dynamic memory pool")
	}
	if !slices.ContainsFunc(shares, func(s share) bool { return s.node.GetAgentConnected() }) {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable,
			"the node's dynamic memory agent is not connected to the memory service")
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(demands[b].bytes, demands[a].bytes) })

	// Bytes placed by earlier demands of this pod, per pool (the pool-wide and the
	// node's share both shrink by them).
	placed := map[string]int64{}
	for _, i := range order {
		d := demands[i]
		var best *placement
		var reasons []string
		for _, s := range shares {
			p, reason := sc.place(v, s, node, d, placed[s.pool.GetName()])
			if p == nil {
				reasons = append(reasons, reason)
				continue
			}
			if best == nil || p.score > best.score {
				best = p
			}
		}
		if best == nil {
			return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, strings.Join(reasons, "; "))
		}
		placed[best.pool] += best.bytes
		placements[i] = *best
	}
	return placements, nil
}

// unservable says why some new demand fits no pool at all, whatever the node: it is
// larger than every ready pool's host window or free capacity (minus reservations in
// flight). "" when each new demand has a pool that could serve it. Pods rejected here
// never reach Filter, where DRA's per-node view would hide the pool-wide reason.
func (v *cacheView) unservable(demands []demand) string {
	var names []string
	if v.index != nil {
		for name := range v.index.pools {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, d := range demands {
		if d.allocated {
			continue
		}
		reasons := []string{}
		for _, name := range names {
			p := v.index.pools[name]
			need := roundUp(d.bytes, p.GetBlockSizeBytes())
			free := p.GetFreeBytes() - v.poolUsed[name]
			switch {
			case !p.GetReady():
				reasons = append(reasons, fmt.Sprintf("pool %s is not ready", name))
			case need > p.GetHostWindowBytes():
				reasons = append(reasons, fmt.Sprintf("pool %s gives a node at most %s", name, formatBytes(p.GetHostWindowBytes())))
			case free < need:
				reasons = append(reasons, fmt.Sprintf("pool %s has %s free", name, formatBytes(max(0, free))))
			default:
				reasons = nil
			}
			if reasons == nil {
				break
			}
		}
		if reasons == nil {
			continue
		}
		if len(names) == 0 {
			reasons = append(reasons, "the memory service has no pools")
		}
		return fmt.Sprintf("no dynamic memory pool can serve claim %s, which needs %s: %s",
			d.claimRef(), formatBytes(d.bytes), strings.Join(reasons, "; "))
	}
	return ""
}

// place checks whether demand d fits the share s of node, given bytes already placed
// there by the same pod; nil and the reason when it does not.
func (sc scorer) place(v *cacheView, s share, node string, d demand, alreadyPlaced int64) (*placement, string) {
	pool := s.pool.GetName()
	if !s.pool.GetReady() {
		return nil, fmt.Sprintf("pool %s is not ready", pool)
	}
	if !s.node.GetAgentConnected() {
		return nil, fmt.Sprintf("the node's agent holds no session for pool %s", pool)
	}
	need := roundUp(d.bytes, s.pool.GetBlockSizeBytes())
	poolFree := s.pool.GetFreeBytes() - v.poolUsed[pool] - alreadyPlaced
	nodeFree := s.node.GetFreeBytes() - v.nodeUsed[poolNode{pool, node}] - alreadyPlaced
	switch {
	case need > s.pool.GetHostWindowBytes():
		return nil, fmt.Sprintf("pool %s gives a node at most %s, claim %s needs %s",
			pool, formatBytes(s.pool.GetHostWindowBytes()), d.claimRef(), formatBytes(need))
	case poolFree < need:
		return nil, fmt.Sprintf("pool %s has %s free, claim %s needs %s",
			pool, formatBytes(max(0, poolFree)), d.claimRef(), formatBytes(need))
	case nodeFree < need:
		return nil, fmt.Sprintf("pool %s has %s free for this node (host window %s), claim %s needs %s",
			pool, formatBytes(max(0, nodeFree)), formatBytes(s.pool.GetHostWindowBytes()), d.claimRef(), formatBytes(need))
	}
	return &placement{pool: pool, bytes: need, score: sc.score(s.pool, poolFree-need)}, ""
}

// score ranks a pool that would have freeAfter bytes free after the placement.
func (sc scorer) score(pool *memservicev1.PoolStatus, freeAfter int64) int64 {
	var capacityScore int64
	if c := pool.GetCapacityBytes(); c > 0 {
		used := min(c, max(0, c-freeAfter))
		capacityScore = used * fwk.MaxNodeScore / c
	}
	if sc.strategy == config.LeastAllocated {
		capacityScore = fwk.MaxNodeScore - capacityScore
	}
	locality := localityScore(pool.GetAttributes()[v1alpha1.AttributeLatencyClass])
	return ((100-sc.localityWeight)*capacityScore + sc.localityWeight*locality) / 100
}

// localityScore ranks latency classes: low is best. A pool without the attribute
// ranks as medium.
func localityScore(latencyClass string) int64 {
	switch latencyClass {
	case "low":
		return fwk.MaxNodeScore
	case "high":
		return 0
	default:
		return fwk.MaxNodeScore / 2
	}
}

func roundUp(n, block int64) int64 {
	if block <= 0 {
		return n
	}
	return (n + block - 1) / block * block
}
