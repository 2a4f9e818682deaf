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

// Package simulated is an in-process model of a CXL Dynamic Capacity Device: one
// dynamic capacity region handed out to hosts in extents, with the device's alignment
// and range checks, per-host windows, configurable latency and injected faults
// (fail a share of operations, hang, add only part), deterministic with a seed.
package simulated

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
)

// Config shapes the device.
type Config struct {
	// Capacity of the region, bytes.
	Capacity int64
	// BlockSize every extent is aligned to.
	BlockSize int64
	// HostWindow is the most one host may hold (0: no limit).
	HostWindow int64
	// Faults injected from the start.
	Faults Faults
	// Seed drives the random faults.
	Seed uint64
	// Clock measures latency (default: the real clock).
	Clock clock.Clock
}

// Faults are the device's latency and injected failures.
type Faults struct {
	// AddLatency and ReleaseLatency delay each operation.
	AddLatency     time.Duration
	ReleaseLatency time.Duration
	// FailPercent of add operations fail with ErrInjected, 0 to 100.
	FailPercent int
	// Hang makes add and release block until their context ends.
	Hang bool
	// Partial makes add give the host only the first block of the request and fail
	// with ErrPartial.
	Partial bool
}

// Device is the simulated device. Safe for concurrent use.
type Device struct {
	cfg   Config
	clock clock.Clock

	mu      sync.Mutex
	faults  Faults
	rng     *rand.Rand
	extents []backend.HostExtent // sorted by offset
	adds    int
}

// New makes a device with no extents given out.
func New(cfg Config) (*Device, error) {
	if cfg.BlockSize <= 0 || cfg.Capacity <= 0 || cfg.Capacity%cfg.BlockSize != 0 {
		return nil, fmt.Errorf("simulated device: capacity %d must be a positive multiple of the block size %d", cfg.Capacity, cfg.BlockSize)
	}
	if cfg.Faults.FailPercent < 0 || cfg.Faults.FailPercent > 100 {
		return nil, fmt.Errorf("simulated device: failPercent must be 0 to 100, got %d", cfg.Faults.FailPercent)
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Device{cfg: cfg, clock: clk, faults: cfg.Faults, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}, nil
}

// SetFaults changes latency and injected faults from now on.
func (d *Device) SetFaults(f Faults) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = f
}

// Adds counts add operations attempted.
func (d *Device) Adds() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.adds
}

func (d *Device) wait(ctx context.Context, latency time.Duration, hang bool) error {
	if hang {
		<-ctx.Done()
		return fmt.Errorf("%w: device hangs: %w", backend.ErrUnavailable, ctx.Err())
	}
	if latency <= 0 {
		return ctx.Err()
	}
	select {
	case <-d.clock.After(latency):
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", backend.ErrUnavailable, ctx.Err())
	}
}

// Check reports the region's size and block size.
func (d *Device) Check(context.Context) (backend.Capacity, error) {
	return backend.Capacity{Bytes: d.cfg.Capacity, BlockSize: d.cfg.BlockSize}, nil
}

// Add gives extents to a host, tagged. Adding extents the host already holds with the
// same tag is a no-op (idempotent); overlapping anything else is ErrInUse.
func (d *Device) Add(ctx context.Context, hostID int32, tag string, extents []v1alpha1.Extent) error {
	d.mu.Lock()
	f := d.faults
	d.adds++
	fail := f.FailPercent > 0 && d.rng.IntN(100) < f.FailPercent
	d.mu.Unlock()
	if err := d.wait(ctx, f.AddLatency, f.Hang); err != nil {
		return err
	}
	if fail {
		return fmt.Errorf("%w: add %d extents to host %d failed", backend.ErrInjected, len(extents), hostID)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	var add []backend.HostExtent
	var total int64
	for _, e := range extents {
		if err := d.checkRange(e); err != nil {
			return err
		}
		held := false
		for _, x := range d.extents {
			if !x.Overlaps(e) {
				continue
			}
			if x.Extent == e && x.HostID == hostID && x.Tag == tag {
				held = true
				continue
			}
			return fmt.Errorf("%w: %s overlaps %s held by host %d (tag %s)", backend.ErrInUse, e, x.Extent, x.HostID, x.Tag)
		}
		if !held {
			add = append(add, backend.HostExtent{HostID: hostID, Tag: tag, Extent: e})
			total += e.Length
		}
	}
	if d.cfg.HostWindow > 0 {
		if held := d.heldBy(hostID); held+total > d.cfg.HostWindow {
			return fmt.Errorf("%w: host %d holds %d bytes, adding %d exceeds %d", backend.ErrHostWindow, hostID, held, total, d.cfg.HostWindow)
		}
	}
	if f.Partial && len(add) > 0 {
		first := add[0]
		first.Length = d.cfg.BlockSize
		d.insert(first)
		return fmt.Errorf("%w: %d of %d bytes added to host %d", backend.ErrPartial, first.Length, total, hostID)
	}
	for _, x := range add {
		d.insert(x)
	}
	return nil
}

func (d *Device) checkRange(e v1alpha1.Extent) error {
	if e.Offset%d.cfg.BlockSize != 0 || e.Length%d.cfg.BlockSize != 0 || e.Length <= 0 {
		return fmt.Errorf("%w: %s, block size %d", backend.ErrMisaligned, e, d.cfg.BlockSize)
	}
	if e.Offset < 0 || e.End() > d.cfg.Capacity {
		return fmt.Errorf("%w: %s, region size %d", backend.ErrOutOfRange, e, d.cfg.Capacity)
	}
	return nil
}

func (d *Device) heldBy(hostID int32) int64 {
	var n int64
	for _, x := range d.extents {
		if x.HostID == hostID {
			n += x.Length
		}
	}
	return n
}

func (d *Device) insert(x backend.HostExtent) {
	i := sort.Search(len(d.extents), func(i int) bool { return d.extents[i].Offset >= x.Offset })
	d.extents = slices.Insert(d.extents, i, x)
}

// Release takes extents back from a host. Extents the host does not hold (already
// released) are skipped; releasing part of an extent releases that part.
func (d *Device) Release(ctx context.Context, hostID int32, tag string, extents []v1alpha1.Extent) error {
	d.mu.Lock()
	f := d.faults
	d.mu.Unlock()
	if err := d.wait(ctx, f.ReleaseLatency, f.Hang); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range extents {
		if err := d.checkRange(e); err != nil {
			return err
		}
	}
	for _, e := range extents {
		var kept []backend.HostExtent
		for _, x := range d.extents {
			if !x.Overlaps(e) {
				kept = append(kept, x)
				continue
			}
			if x.HostID != hostID || x.Tag != tag {
				return fmt.Errorf("%w: %s belongs to host %d (tag %s), not host %d (tag %s)", backend.ErrInUse, x.Extent, x.HostID, x.Tag, hostID, tag)
			}
			if x.Offset < e.Offset {
				kept = append(kept, backend.HostExtent{HostID: x.HostID, Tag: x.Tag, Extent: v1alpha1.Extent{Offset: x.Offset, Length: e.Offset - x.Offset}})
			}
			if e.End() < x.End() {
				kept = append(kept, backend.HostExtent{HostID: x.HostID, Tag: x.Tag, Extent: v1alpha1.Extent{Offset: e.End(), Length: x.End() - e.End()}})
			}
		}
		d.extents = kept
	}
	return nil
}

// List returns every extent given out, sorted by offset.
func (d *Device) List(context.Context) ([]backend.HostExtent, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.extents), nil
}

// Adopt puts back extents the device had given out before the service restarted: the
// simulated device lives in the service's memory, so its state is rebuilt from the
// service's records. Extents already held are skipped.
func (d *Device) Adopt(extents []backend.HostExtent) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, x := range extents {
		if err := d.checkRange(x.Extent); err != nil {
			return err
		}
		held := false
		for _, y := range d.extents {
			if y.Overlaps(x.Extent) {
				if y != x {
					return fmt.Errorf("%w: adopt %s for host %d (tag %s): overlaps %s of host %d (tag %s)", backend.ErrInUse, x.Extent, x.HostID, x.Tag, y.Extent, y.HostID, y.Tag)
				}
				held = true
			}
		}
		if !held {
			d.insert(x)
		}
	}
	return nil
}
