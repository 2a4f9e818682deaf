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

package hostmem

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// TestRealMemoryBlockOfflineOnline drives this machine's memory hotplug: it looks,
// from the top of memory down, for one block the kernel lets go offline, onlines it
// movable, then times offline/online cycles of that block through the sysfs
// backend. It needs root and /sys/devices/system/memory; the block is always left
// online.
func TestRealMemoryBlockOfflineOnline(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to write /sys/devices/system/memory/memoryN/state")
	}
	if _, err := os.Stat(memoryDir); err != nil {
		t.Skipf("skipped: this kernel has no memory hotplug interface (%s: %v)", memoryDir, err)
	}
	s, err := NewSysfs(SysfsConfig{FS: DirFS{Root: "/"}, OfflineAttempts: 1})
	require.NoError(t, err)
	blocks, err := s.Blocks()
	require.NoError(t, err)
	require.NotEmpty(t, blocks)
	bs := s.BlockSize()
	// This machine has no CXL region nor DAX device (see HARDWARE.md), so the test,
	// and only the test, sets pool "machine"'s region by hand, in place of the region
	// NewSysfs would read from sysfs: all of the machine's memory, from address 0.
	// Production has no such path: a pool's region is read from the host.
	s.regions = map[string]Region{"machine": {Name: "test-only: all memory of this machine", Start: 0, Size: int64(blocks[len(blocks)-1]+1) * bs}}
	t.Logf("memory block size %d MiB, %d blocks", bs>>20, len(blocks))

	request := func(n int) Request {
		return Request{ClaimUID: "real-test", Pool: "machine", Extents: []v1alpha1.Extent{{Offset: int64(n) * bs, Length: bs}}}
	}
	ctx := context.Background()

	// Find a block whose offline succeeds, one at a time: first blocks already in
	// ZONE_MOVABLE (an earlier run left them there), then from the top of memory down.
	var candidates, movable []int
	for i := len(blocks) - 1; i >= 0; i-- {
		info, err := s.Block(blocks[i])
		if err != nil || info.State != stateOnline || !info.Removable {
			continue
		}
		if len(info.ValidZones) == 1 && info.ValidZones[0] == "Movable" {
			movable = append(movable, blocks[i])
		} else {
			candidates = append(candidates, blocks[i])
		}
	}
	candidates = append(movable, candidates...)
	const maxTries = 192
	block := -1
	var firstOffline time.Duration
	for tries, n := range candidates {
		if tries >= maxTries {
			break
		}
		ensureOnline(t, s, n)
		start := time.Now()
		err = s.Offline(ctx, request(n), nil)
		if errors.Is(err, syscall.EBUSY) {
			continue
		}
		require.NoError(t, err, "offline memory block %d", n)
		firstOffline = time.Since(start)
		block = n
		break
	}
	if block < 0 {
		t.Skipf("skipped: none of the top %d online blocks could be offlined (unmovable pages)", maxTries)
	}
	start := time.Now()
	res, err := s.Online(ctx, request(block), nil)
	firstOnline := time.Since(start)
	require.NoError(t, err, "online memory block %d movable", block)
	info, err := s.Block(block)
	require.NoError(t, err)
	t.Logf("block %d: first offline %s, online_movable %s, valid zones now %v, NUMA nodes %v", block, firstOffline, firstOnline, info.ValidZones, res.NUMANodes)
	assert.Equal(t, stateOnline, info.State)

	// Time cycles now that the block is movable; retries allowed as in production.
	s.cfg.OfflineAttempts = 10
	const cycles = 5
	var offTotal, onTotal time.Duration
	for i := range cycles {
		start := time.Now()
		require.NoError(t, s.Offline(ctx, request(block), nil), "cycle %d: offline block %d", i, block)
		off := time.Since(start)
		start = time.Now()
		_, err := s.Online(ctx, request(block), nil)
		on := time.Since(start)
		require.NoError(t, err, "cycle %d: online block %d", i, block)
		offTotal += off
		onTotal += on
		t.Logf("cycle %d: offline %s, online %s", i, off, on)
	}
	t.Logf("block %d (%d MiB): mean offline %s, mean online %s over %d cycles", block, bs>>20, offTotal/cycles, onTotal/cycles, cycles)
	_, err = s.Check(ctx, request(block))
	assert.NoError(t, err)
}

// TestRealRegionsReadsThisMachine lists the CXL regions and DAX devices of this
// machine through sysfs (this kernel has neither bus, HARDWARE.md: none), and checks
// that a pool configured at address 0, boot RAM, is refused. It needs
// /sys/devices/system/memory.
func TestRealRegionsReadsThisMachine(t *testing.T) {
	if _, err := os.Stat(memoryDir); err != nil {
		t.Skipf("skipped: this kernel has no memory hotplug interface (%s: %v)", memoryDir, err)
	}
	s, err := NewSysfs(SysfsConfig{FS: DirFS{Root: "/"}})
	require.NoError(t, err)
	regions, err := s.Regions()
	require.NoError(t, err)
	t.Logf("regions of this machine: %v", regions)

	_, err = NewSysfs(SysfsConfig{FS: DirFS{Root: "/"}, RegionBases: map[string]int64{"pool-a": 0}})
	require.Error(t, err, "address 0 is boot RAM, not a region")
	assert.Contains(t, err.Error(), "--region-base pool-a=0x0: no CXL region or DAX device of this host starts at 0x0 (this host has ")
}

// ensureOnline puts the block back online when the test ends, whatever happened:
// movable if the kernel allows, as before otherwise.
func ensureOnline(t *testing.T, s *Sysfs, n int) {
	t.Cleanup(func() {
		info, err := s.Block(n)
		if err != nil || info.State == stateOnline {
			return
		}
		state := blockDir(n) + "/state"
		if err := s.cfg.FS.WriteFile(state, []byte(stateOnlineMovable)); err != nil {
			if err := s.cfg.FS.WriteFile(state, []byte(stateOnline)); err != nil {
				t.Errorf("memory block %d is left %s: %v", n, info.State, err)
			}
		}
	})
}
