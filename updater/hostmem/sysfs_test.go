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
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// newTestSysfs gives the tree two CXL regions of 16 blocks: region0 from block 8,
// pool-a's by name, and region1 from block 32, pool-b's by address.
func newTestSysfs(t *testing.T, k *fakeKernel, clk *testingclock.FakeClock) *Sysfs {
	t.Helper()
	k.addCXLRegion("region0", 8*fakeBlockSize, 16*fakeBlockSize, "dc")
	k.addCXLRegion("region1", 32*fakeBlockSize, 16*fakeBlockSize, "dc")
	s, err := NewSysfs(SysfsConfig{
		FS:              k,
		Regions:         map[string]string{"pool-a": "region0"},
		RegionBases:     map[string]int64{"pool-b": 32 * fakeBlockSize},
		Clock:           clk,
		AppearTimeout:   5 * time.Second,
		OfflineAttempts: 3,
	})
	require.NoError(t, err)
	return s
}

// twoBlocks is an extent of two blocks at offset 0 of pool-a's region: blocks 8 and 9.
var twoBlocks = Request{ClaimUID: "uid-1", Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 0, Length: 2 * fakeBlockSize}}}

func TestSysfsOnlineMakesBlocksOnlineMovable(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8, 9, 10)
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	var steps []int
	res, err := s.Online(context.Background(), twoBlocks, func(p Step) {
		assert.Equal(t, 2, p.Total)
		steps = append(steps, p.Done)
	})
	require.NoError(t, err)
	assert.Equal(t, Result{Blocks: []int{8, 9}, NUMANodes: []int32{0}, Bytes: 2 * fakeBlockSize}, res)
	assert.Equal(t, []int{1, 2}, steps)
	assert.Equal(t, []string{
		"/sys/devices/system/memory/memory8/state=online_movable",
		"/sys/devices/system/memory/memory9/state=online_movable",
	}, k.written())
	assert.Equal(t, stateOnline, k.state(8))
	assert.Equal(t, stateOffline, k.state(10), "a block outside the extent is untouched")

	checked, err := s.Check(context.Background(), twoBlocks)
	require.NoError(t, err)
	assert.Equal(t, res, checked)
}

// A block online already may be another claim's memory or the host's own: Online
// takes it only when the request resumes the claim's own onlining.
func TestSysfsOnlineRefusesBlocksOnlineAlreadyUnlessResuming(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8)
	k.addBlock(9, stateOnline, 1)
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	_, err := s.Online(context.Background(), twoBlocks, nil)
	require.ErrorIs(t, err, ErrOnlineNotOurs)
	assert.Contains(t, err.Error(), "claim uid-1: memory block(s) [9] of pool pool-a are online already")
	assert.Empty(t, k.written(), "no block is onlined, not even the offline one")
	assert.Equal(t, stateOffline, k.state(8))

	resume := twoBlocks
	resume.Resume = true
	res, err := s.Online(context.Background(), resume, nil)
	require.NoError(t, err)
	assert.Equal(t, []int32{0, 1}, res.NUMANodes)
	assert.Equal(t, []string{"/sys/devices/system/memory/memory8/state=online_movable"}, k.written(), "the online block is not written again")

	_, err = s.Online(context.Background(), resume, nil)
	require.NoError(t, err, "resuming memory that is all online is idempotent")
	assert.Len(t, k.written(), 1)
}

func TestSysfsOfflinedTellsWhetherAnyBlockIsOnline(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8) // block 9 is absent
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	require.NoError(t, s.Offlined(context.Background(), twoBlocks), "offline and absent blocks")

	k.addBlock(9, stateOnline, 0)
	err := s.Offlined(context.Background(), twoBlocks)
	require.ErrorIs(t, err, ErrStillOnline)
	assert.Contains(t, err.Error(), "claim uid-1: memory block(s) [9] of pool pool-a are online")
	assert.Empty(t, k.written(), "Offlined touches nothing")
}

func TestSysfsOnlineUsesPoolRegionBase(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 33)
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	res, err := s.Online(context.Background(), Request{ClaimUID: "uid-2", Pool: "pool-b", Extents: []v1alpha1.Extent{{Offset: fakeBlockSize, Length: fakeBlockSize}}}, nil)
	require.NoError(t, err)
	assert.Equal(t, []int{33}, res.Blocks)
}

func TestSysfsOnlineWaitsForBlocksToAppear(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8)
	clk := testingclock.NewFakeClock(time.Now())
	s := newTestSysfs(t, k, clk)
	err := runWithClock(t, clk, 100*time.Millisecond, func() error {
		_, err := s.Online(context.Background(), twoBlocks, func(Step) {})
		return err
	})
	require.Error(t, err, "block 9 never appears")
	assert.Contains(t, err.Error(), "memory block 9 (host address 0x48000000) did not appear within 5s")
	assert.Empty(t, k.written(), "nothing is onlined when part of the extent is missing")

	// When the kernel adds the block while the agent waits, onlining goes on.
	// The kernel adds a block's directory with all its files at once: build it
	// aside and rename it into place.
	staged := newFakeKernel(t, fakeBlockSize, 9)
	added := make(chan struct{})
	go func() {
		defer close(added)
		for !clk.HasWaiters() {
			time.Sleep(100 * time.Microsecond)
		}
		assert.NoError(t, os.Rename(staged.path(blockDir(9)), k.path(blockDir(9))))
	}()
	err = runWithClock(t, clk, 100*time.Millisecond, func() error {
		_, err := s.Online(context.Background(), twoBlocks, nil)
		return err
	})
	<-added
	require.NoError(t, err)
	assert.Equal(t, stateOnline, k.state(9))
}

func TestSysfsOnlineRejectsMisalignedExtents(t *testing.T) {
	tests := []struct {
		name    string
		extents []v1alpha1.Extent
		want    string
	}{
		{"offset not on a block boundary", []v1alpha1.Extent{{Offset: 2 << 20, Length: fakeBlockSize}}, "extents[0] = {offset 0x200000, length 0x8000000} at host address 0x40200000 is not aligned to the host memory block size 0x8000000"},
		{"length not a multiple of the block size", []v1alpha1.Extent{{Offset: 0, Length: 64 << 20}}, "set the pool's blockSize to a multiple of 134217728 bytes"},
		{"negative offset", []v1alpha1.Extent{{Offset: -fakeBlockSize, Length: fakeBlockSize}}, "offset must be >= 0 and length > 0"},
		{"no extents", nil, "claim uid-3: no extents"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(t, fakeBlockSize, 8, 9)
			s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
			_, err := s.Online(context.Background(), Request{ClaimUID: "uid-3", Pool: "pool-a", Extents: tc.extents}, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Empty(t, k.written())
		})
	}
}

func TestSysfsOnlineReportsZoneWhenMovableIsRefused(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8, 9)
	k.file(blockDir(8)+"/valid_zones", "Normal\n")
	k.failAlways(blockDir(8)+"/state", syscall.EINVAL)
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	_, err := s.Online(context.Background(), twoBlocks, nil)
	require.ErrorIs(t, err, syscall.EINVAL)
	assert.Contains(t, err.Error(), "claim uid-1: online memory block 8 as movable (valid zones: Normal;")
}

func TestSysfsOfflineRetriesWhileBusy(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	k.addBlock(8, stateOnline, 0)
	k.addBlock(9, stateOnline, 0)
	k.failWrites(blockDir(9)+"/state", syscall.EBUSY, syscall.EBUSY)
	clk := testingclock.NewFakeClock(time.Now())
	s := newTestSysfs(t, k, clk)
	var messages []string
	busy := 0
	err := runWithClock(t, clk, time.Second, func() error {
		return s.Offline(context.Background(), twoBlocks, func(p Step) {
			messages = append(messages, p.Message)
			if p.Busy {
				busy++
			}
		})
	})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"block 9 busy, retry 1/2 in 50ms",
		"block 9 busy, retry 2/2 in 100ms",
		"block 9 offline",
		"block 8 offline",
	}, messages)
	assert.Equal(t, 2, busy)
	assert.Equal(t, stateOffline, k.state(8))
	assert.Equal(t, stateOffline, k.state(9))

	// Offline again: nothing left to do.
	before := len(k.written())
	require.NoError(t, s.Offline(context.Background(), twoBlocks, nil))
	assert.Len(t, k.written(), before)
}

func TestSysfsOfflineGivesUpAndRestoresOnline(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	k.addBlock(8, stateOnline, 0)
	k.addBlock(9, stateOnline, 0)
	k.failAlways(blockDir(8)+"/state", syscall.EBUSY)
	clk := testingclock.NewFakeClock(time.Now())
	s := newTestSysfs(t, k, clk)
	err := runWithClock(t, clk, time.Second, func() error {
		return s.Offline(context.Background(), twoBlocks, nil)
	})
	require.ErrorIs(t, err, syscall.EBUSY)
	require.ErrorIs(t, err, ErrBusy, "a block that stays busy is told apart from other failures")
	assert.Contains(t, err.Error(), "claim uid-1: offline memory block 8: still busy after 3 attempts")
	assert.Equal(t, stateOnline, k.state(9), "the block offlined before the failure is online again")
	assert.Equal(t, stateOnline, k.state(8))
}

func TestSysfsOfflineRestoresInAnyZoneWhenMovableIsRefused(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	k.addBlock(8, stateOnline, 0)
	k.addBlock(9, stateOnline, 0)
	k.failAlways(blockDir(8)+"/state", syscall.EBUSY)
	// Block 9 goes offline, then refuses to come back movable.
	k.failWrites(blockDir(9)+"/state", nil, syscall.EINVAL)
	clk := testingclock.NewFakeClock(time.Now())
	s := newTestSysfs(t, k, clk)
	err := runWithClock(t, clk, time.Second, func() error {
		return s.Offline(context.Background(), twoBlocks, nil)
	})
	require.ErrorIs(t, err, syscall.EBUSY)
	assert.Equal(t, stateOnline, k.state(9))
	assert.Equal(t, []string{
		"/sys/devices/system/memory/memory9/state=offline",
		"/sys/devices/system/memory/memory9/state=online_movable",
		"/sys/devices/system/memory/memory9/state=online",
	}, filterPrefix(k.written(), blockDir(9)))
}

func filterPrefix(writes []string, prefix string) []string {
	var out []string
	for _, w := range writes {
		if strings.HasPrefix(w, prefix) {
			out = append(out, w)
		}
	}
	return out
}

func TestSysfsOfflineSkipsMissingBlocks(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	k.addBlock(8, stateOnline, 0)
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	require.NoError(t, s.Offline(context.Background(), twoBlocks, nil))
	assert.Equal(t, stateOffline, k.state(8))

	_, err := s.Check(context.Background(), twoBlocks)
	require.ErrorIs(t, err, ErrNotOnline)
	assert.Contains(t, err.Error(), "memory block 8 is offline")
}

func TestSysfsOfflineFailsOnOtherErrors(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	k.addBlock(8, stateOnline, 0)
	k.addBlock(9, stateOnline, 0)
	k.failWrites(blockDir(9)+"/state", syscall.EPERM)
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	err := s.Offline(context.Background(), twoBlocks, nil)
	require.ErrorIs(t, err, syscall.EPERM)
	assert.NotErrorIs(t, err, ErrBusy)
	assert.Contains(t, err.Error(), "offline memory block 9")
	assert.Equal(t, stateOnline, k.state(8), "no block after the failing one is touched")
}

func TestNewSysfsChecksBlockSize(t *testing.T) {
	tests := []struct {
		name    string
		content *string
		want    string
	}{
		{"missing file", nil, "read memory block size (is memory hotplug enabled in this kernel?"},
		{"not hex", ptr("128M\n"), `block size "128M" is not a hexadecimal number`},
		{"not a power of two", ptr("6000000\n"), "block size 0x6000000 is not a power of two"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := &fakeKernel{DirFS: DirFS{Root: t.TempDir()}, t: t}
			if tc.content != nil {
				k.file(blockSizeFile, *tc.content)
			}
			_, err := NewSysfs(SysfsConfig{FS: k})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseBlockSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"8000000\n", 128 << 20, true},
		{"80000000", 2 << 30, true},
		{"0x8000000", 128 << 20, true},
		{"0", 0, false},
		{"", 0, false},
		{"-8000000", 0, false},
		{"ffffffffffffffffff", 0, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := ParseBlockSize([]byte(tc.in))
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func FuzzParseBlockSize(f *testing.F) {
	for _, s := range []string{"8000000\n", "0x40000000", "", "zz", "3"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseBlockSize(data)
		if err != nil {
			return
		}
		if v <= 0 || v&(v-1) != 0 {
			t.Fatalf("ParseBlockSize(%q) = %d: not a positive power of two", data, v)
		}
	})
}

func TestBlocksListsMemoryBlocks(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 10, 2, 33)
	require.NoError(t, os.MkdirAll(k.path(memoryDir+"/power"), 0o755))
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	blocks, err := s.Blocks()
	require.NoError(t, err)
	assert.Equal(t, []int{2, 10, 33}, blocks)
	_, err = s.Block(11)
	assert.True(t, errors.Is(err, os.ErrNotExist))
}

func ptr[T any](v T) *T { return &v }

// Without a region for its pool (neither --region nor --region-base), nothing is onlined, offlined or checked: the agent cannot tell where the
// pool's memory is, and guessing (address 0 is boot RAM) would touch the wrong blocks.
func TestSysfsFailsClosedForAPoolWithoutARegion(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8, 9)
	k.addBlock(0, stateOnline, 0) // boot RAM
	k.addBlock(1, stateOnline, 0)
	k.addCXLRegion("region0", 8*fakeBlockSize, 2*fakeBlockSize, "dc")
	s, err := NewSysfs(SysfsConfig{
		FS: k, RegionBases: map[string]int64{"pool-b": 8 * fakeBlockSize},
		Clock: testingclock.NewFakeClock(time.Now()), AppearTimeout: time.Second, OfflineAttempts: 1,
	})
	require.NoError(t, err)
	for _, pool := range []string{"pool-a", ""} {
		req := Request{ClaimUID: "uid-1", Pool: pool, Extents: []v1alpha1.Extent{{Offset: 0, Length: 2 * fakeBlockSize}}}
		_, err = s.Online(context.Background(), req, nil)
		require.ErrorContains(t, err, "region")
		err = s.Offline(context.Background(), req, nil)
		require.ErrorContains(t, err, "region")
		_, err = s.Check(context.Background(), req)
		require.ErrorContains(t, err, "region")
		require.ErrorContains(t, s.Offlined(context.Background(), req), "region")
	}
	assert.Empty(t, k.written(), "no block was touched")
	assert.Equal(t, stateOnline, k.state(0), "boot RAM stays online")
}
