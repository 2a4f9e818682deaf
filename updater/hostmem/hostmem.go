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

// Package hostmem makes pool memory usable on a Linux host: it turns the device
// ranges (extents) that the memory service added to the host into online memory
// blocks, and takes them back offline before the extents are released.
//
// Two implementations share one method set: Sysfs drives the kernel's memory hotplug
// and DAX interfaces under a configurable root, and Simulated models a host for the
// local cluster and tests, in memory or in a journal file that outlives the process.
package hostmem

import (
	"errors"
	"fmt"
	"slices"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// Request names the memory of one claim on this host.
type Request struct {
	// ClaimUID is the ResourceClaim UID the memory belongs to (for logs and errors).
	ClaimUID string
	// Pool is the DynamicMemoryPool the extents come from; it selects the region
	// base address.
	Pool string
	// Extents are the region ranges that make up the memory.
	Extents []v1alpha1.Extent
	// Resume says that the blocks of the extents that are online already are this
	// claim's: the caller's records show that it started onlining exactly this
	// memory for this claim (a command that failed half way, or was cut short by a
	// restart). Online leaves such blocks online and onlines the rest. Without
	// Resume, Online refuses a request any of whose blocks is online already
	// (ErrOnlineNotOurs) and onlines none of them: that memory is another claim's or
	// the host's own, and taking it would report it as this claim's and offline it
	// when the claim ends.
	Resume bool
}

// Bytes is the total length of the request's extents.
func (r Request) Bytes() int64 { return v1alpha1.SumLength(r.Extents) }

// Result describes memory that is online.
type Result struct {
	// Blocks are the memory block numbers (memoryN) of the memory, ascending.
	Blocks []int
	// NUMANodes are the NUMA nodes the blocks belong to, ascending, no duplicates.
	NUMANodes []int32
	// Bytes online.
	Bytes int64
}

// Step is a progress report of a long operation.
type Step struct {
	// Done and Total count memory blocks.
	Done, Total int
	// Message says what happened, for a person.
	Message string
	// Busy is set when the kernel refused to offline a block for now (EBUSY) and
	// the operation will retry.
	Busy bool
}

// Progress is told how an operation advances.
type Progress func(Step)

// ErrNotOnline is returned by Check when some memory of a request is not online.
var ErrNotOnline = errors.New("memory not online")

// ErrOnlineNotOurs is returned by Online when a block of a request without Resume is
// online already; no block was onlined.
var ErrOnlineNotOurs = errors.New("memory online already and not recorded as this claim's")

// ErrStillOnline is returned by Offlined when a block of the request is online.
var ErrStillOnline = errors.New("memory still online")

// ErrBusy is returned by Offline when a memory block stayed busy through every
// attempt: the kernel could not migrate its pages away (pages pinned, or not
// movable). The error names the block; the memory is left online and whole.
var ErrBusy = errors.New("still busy")

// notOurs is Online's refusal of blocks online already; blocks are numbered as the
// backend numbers them.
func notOurs(req Request, blocks []int) error {
	return fmt.Errorf("claim %s: memory block(s) %v of pool %s are online already, and nothing records them as this claim's (another claim's memory or the host's own); nothing was onlined: %w", req.ClaimUID, blocks, req.Pool, ErrOnlineNotOurs)
}

// stillOnline is Offlined's answer when blocks are online.
func stillOnline(req Request, blocks []int) error {
	return fmt.Errorf("claim %s: memory block(s) %v of pool %s are online: %w", req.ClaimUID, blocks, req.Pool, ErrStillOnline)
}

// blockRange turns the extents of a request into memory block numbers, given the
// host physical address of the region and the host's memory block size. Extents
// must be aligned to the block size: a pool whose block size is not a multiple of
// the host's memory block size cannot be onlined block by block.
func blockRange(req Request, base, blockSize int64) ([]int, error) {
	if len(req.Extents) == 0 {
		return nil, fmt.Errorf("claim %s: no extents", req.ClaimUID)
	}
	var blocks []int
	for i, e := range req.Extents {
		if e.Offset < 0 || e.Length <= 0 {
			return nil, fmt.Errorf("claim %s: extents[%d] = {offset %d, length %d}: offset must be >= 0 and length > 0", req.ClaimUID, i, e.Offset, e.Length)
		}
		start := base + e.Offset
		if start%blockSize != 0 || e.Length%blockSize != 0 {
			return nil, fmt.Errorf("claim %s: extents[%d] = {offset %#x, length %#x} at host address %#x is not aligned to the host memory block size %#x: set the pool's blockSize to a multiple of %d bytes", req.ClaimUID, i, e.Offset, e.Length, start, blockSize, blockSize)
		}
		for a := start; a < start+e.Length; a += blockSize {
			blocks = append(blocks, int(a/blockSize))
		}
	}
	slices.Sort(blocks)
	return slices.Compact(blocks), nil
}
