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

package chaos

import (
	"cmp"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
)

// hostBlock is one memory block of a pool's region on one node.
type hostBlock struct {
	node, pool string
	block      int
}

// hostEntry is a journal entry with the node it happened on.
type hostEntry struct {
	node string
	hostmem.JournalEntry
}

// limits are a pool's capacity and host window, in host memory blocks.
type limits struct {
	capacity, window int
}

// hostState is the memory the simulated hosts have online, replayed from their
// journals: the claim each online block was onlined for.
type hostState struct {
	owner   map[hostBlock]string
	perNode map[[2]string]int // {node, pool} -> blocks online
	perPool map[string]int
}

func newHostState() *hostState {
	return &hostState{owner: map[hostBlock]string{}, perNode: map[[2]string]int{}, perPool: map[string]int{}}
}

// blocksOf are the host blocks of a claim's extents on its node.
func blocksOf(node, pool string, extents []v1alpha1.Extent, blockSize int64) []hostBlock {
	var blocks []hostBlock
	for _, e := range extents {
		for off := e.Offset; off < e.End(); off += blockSize {
			blocks = append(blocks, hostBlock{node: node, pool: pool, block: int(off / blockSize)})
		}
	}
	return blocks
}

// replay applies the entries of every node, in time order, and checks each one:
//   - an online is of a block that is offline (never memory online already, whoever
//     it was onlined for), and keeps the pool within its capacity and the node within
//     its host window;
//   - an offline is of a block onlined for the same claim, and never of a claim whose
//     pod was bound and not being deleted at that moment.
//
// It returns the number of checks made and a description of each violation.
func (h *hostState) replay(entries []hostEntry, pools map[string]limits, obs *observer) (checks int, violations []string) {
	slices.SortStableFunc(entries, func(a, b hostEntry) int { return a.Time.Compare(b.Time) })
	for _, e := range entries {
		b := hostBlock{node: e.node, pool: e.Pool, block: e.Block}
		at := e.Time.Format("15:04:05.000000")
		switch e.Op {
		case hostmem.JournalOnline:
			checks++
			if prev, online := h.owner[b]; online {
				violations = append(violations, fmt.Sprintf("%s node %s: block %d of pool %s onlined for claim %s while online for claim %s", at, e.node, e.Block, e.Pool, e.Claim, prev))
			} else {
				h.perNode[[2]string{e.node, e.Pool}]++
				h.perPool[e.Pool]++
			}
			h.owner[b] = e.Claim
			if l, ok := pools[e.Pool]; ok {
				checks += 2
				if n := h.perNode[[2]string{e.node, e.Pool}]; n > l.window {
					violations = append(violations, fmt.Sprintf("%s node %s: %d blocks of pool %s online, host window %d", at, e.node, n, e.Pool, l.window))
				}
				if n := h.perPool[e.Pool]; n > l.capacity {
					violations = append(violations, fmt.Sprintf("%s pool %s: %d blocks online across nodes, capacity %d", at, e.Pool, n, l.capacity))
				}
			}
		case hostmem.JournalOffline:
			checks += 2
			prev, online := h.owner[b]
			switch {
			case !online:
				violations = append(violations, fmt.Sprintf("%s node %s: block %d of pool %s offlined while offline", at, e.node, e.Block, e.Pool))
			case prev != e.Claim:
				violations = append(violations, fmt.Sprintf("%s node %s: block %d of pool %s offlined for claim %s while online for claim %s", at, e.node, e.Block, e.Pool, e.Claim, prev))
			}
			if pod, running := obs.runningAt(types.UID(e.Claim), e.Time); running {
				violations = append(violations, fmt.Sprintf("%s node %s: block %d of pool %s offlined while pod %s of claim %s was bound and not deleted", at, e.node, e.Block, e.Pool, pod, e.Claim))
			}
			if online {
				delete(h.owner, b)
				h.perNode[[2]string{e.node, e.Pool}]--
				h.perPool[e.Pool]--
			}
		default:
			violations = append(violations, fmt.Sprintf("%s node %s: journal entry with unknown op %q", at, e.node, e.Op))
		}
	}
	return checks, violations
}

// online lists the blocks online, for messages.
func (h *hostState) online() []string {
	var out []string
	for b, claim := range h.owner {
		out = append(out, fmt.Sprintf("node %s pool %s block %d (claim %s)", b.node, b.pool, b.block, claim))
	}
	slices.SortFunc(out, cmp.Compare)
	return out
}
