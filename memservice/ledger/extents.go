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

package ledger

import (
	"fmt"
	"sort"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// freeList is a pool's free device ranges, sorted by offset, never adjacent.
type freeList struct {
	ranges []v1alpha1.Extent
}

func newFreeList(capacity int64) freeList {
	if capacity <= 0 {
		return freeList{}
	}
	return freeList{ranges: []v1alpha1.Extent{{Offset: 0, Length: capacity}}}
}

func (f *freeList) total() int64 { return v1alpha1.SumLength(f.ranges) }

// take allocates n bytes first-fit, in as few extents as the free ranges allow,
// preferring one range that holds all of n. It returns nil if n bytes are not free.
func (f *freeList) take(n int64) []v1alpha1.Extent {
	if n <= 0 || f.total() < n {
		return nil
	}
	for i, r := range f.ranges {
		if r.Length >= n {
			f.cut(i, n)
			return []v1alpha1.Extent{{Offset: r.Offset, Length: n}}
		}
	}
	var out []v1alpha1.Extent
	for n > 0 {
		r := f.ranges[0]
		l := min(r.Length, n)
		f.cut(0, l)
		out = append(out, v1alpha1.Extent{Offset: r.Offset, Length: l})
		n -= l
	}
	return out
}

// cut removes the first l bytes of range i.
func (f *freeList) cut(i int, l int64) {
	if f.ranges[i].Length == l {
		f.ranges = append(f.ranges[:i], f.ranges[i+1:]...)
		return
	}
	f.ranges[i].Offset += l
	f.ranges[i].Length -= l
}

// claim marks the given extents used; they must be free.
func (f *freeList) claim(extents []v1alpha1.Extent) error {
	for _, e := range extents {
		i := sort.Search(len(f.ranges), func(i int) bool { return f.ranges[i].End() > e.Offset })
		if i == len(f.ranges) || f.ranges[i].Offset > e.Offset || f.ranges[i].End() < e.End() {
			return fmt.Errorf("extent %s is not free", e)
		}
		r := f.ranges[i]
		var repl []v1alpha1.Extent
		if r.Offset < e.Offset {
			repl = append(repl, v1alpha1.Extent{Offset: r.Offset, Length: e.Offset - r.Offset})
		}
		if e.End() < r.End() {
			repl = append(repl, v1alpha1.Extent{Offset: e.End(), Length: r.End() - e.End()})
		}
		f.ranges = append(f.ranges[:i], append(repl, f.ranges[i+1:]...)...)
	}
	return nil
}

// put returns extents to the free list, merging neighbours.
func (f *freeList) put(extents []v1alpha1.Extent) {
	for _, e := range extents {
		i := sort.Search(len(f.ranges), func(i int) bool { return f.ranges[i].Offset >= e.Offset })
		f.ranges = append(f.ranges, v1alpha1.Extent{})
		copy(f.ranges[i+1:], f.ranges[i:])
		f.ranges[i] = e
		if i+1 < len(f.ranges) && f.ranges[i].End() == f.ranges[i+1].Offset {
			f.ranges[i].Length += f.ranges[i+1].Length
			f.ranges = append(f.ranges[:i+1], f.ranges[i+2:]...)
		}
		if i > 0 && f.ranges[i-1].End() == f.ranges[i].Offset {
			f.ranges[i-1].Length += f.ranges[i].Length
			f.ranges = append(f.ranges[:i], f.ranges[i+1:]...)
		}
	}
}

// grow extends the region from old to capacity bytes.
func (f *freeList) grow(old, capacity int64) {
	if capacity > old {
		f.put([]v1alpha1.Extent{{Offset: old, Length: capacity - old}})
	}
}

// shrink cuts the region to capacity bytes; the cut part must be free.
func (f *freeList) shrink(old, capacity int64) error {
	if capacity >= old {
		return nil
	}
	return f.claim([]v1alpha1.Extent{{Offset: capacity, Length: old - capacity}})
}

// blockRanges is the union of extents, each rounded out to whole blocks and clipped to
// the region [0, capacity), sorted and merged. Extents read from an untrusted record
// may be misaligned, overlap, or lie outside the region.
func blockRanges(extents []v1alpha1.Extent, block, capacity int64) []v1alpha1.Extent {
	var out []v1alpha1.Extent
	for _, e := range extents {
		if e.Length <= 0 || e.Offset >= capacity {
			continue
		}
		// Offset+Length can overflow for hostile values: compare lengths.
		lo, hi := e.Offset, capacity
		if lo < 0 {
			lo, hi = 0, min(e.Offset+e.Length, capacity) // no overflow: Offset < 0
		} else if e.Length < capacity-e.Offset {
			hi = e.Offset + e.Length
		}
		if hi <= lo {
			continue
		}
		lo -= lo % block
		if r := hi % block; r != 0 {
			hi = min(hi+block-r, capacity)
		}
		if hi > lo {
			out = append(out, v1alpha1.Extent{Offset: lo, Length: hi - lo})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Offset < out[j].Offset })
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && e.Offset <= merged[n-1].End() {
			merged[n-1].Length = max(merged[n-1].End(), e.End()) - merged[n-1].Offset
			continue
		}
		merged = append(merged, e)
	}
	return merged
}

// within is the parts of ranges (sorted, not overlapping) that are free.
func (f *freeList) within(ranges []v1alpha1.Extent) []v1alpha1.Extent {
	var out []v1alpha1.Extent
	for _, r := range ranges {
		for _, fr := range f.ranges {
			lo, hi := max(r.Offset, fr.Offset), min(r.End(), fr.End())
			if lo < hi {
				out = append(out, v1alpha1.Extent{Offset: lo, Length: hi - lo})
			}
		}
	}
	return out
}
