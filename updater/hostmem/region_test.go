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
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

func TestSysfsRegionsListsCXLRegionsAndDAXDevices(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	k.addCXLRegion("region0", 8*fakeBlockSize, 16*fakeBlockSize, "dc")
	k.addCXLRegion("region1", 0, 0, "ram") // created, not sized yet
	k.addDAXDevice("dax3.0", 64*fakeBlockSize, 4*fakeBlockSize, driverDevDAX)
	for _, other := range []string{"mem0", "decoder0.0", "root0", "port1", "regionx"} {
		require.NoError(t, os.MkdirAll(k.path(cxlDevicesDir+"/"+other), 0o755))
	}
	s, err := NewSysfs(SysfsConfig{FS: k})
	require.NoError(t, err)
	regions, err := s.Regions()
	require.NoError(t, err)
	assert.Equal(t, []Region{
		{Name: "dax3.0", Start: 64 * fakeBlockSize, Size: 4 * fakeBlockSize},
		{Name: "region0", Start: 8 * fakeBlockSize, Size: 16 * fakeBlockSize, Mode: "dc"},
		{Name: "region1", Mode: "ram"},
	}, regions)
}

func TestSysfsRegionsOfAHostWithoutCXLOrDAX(t *testing.T) {
	s, err := NewSysfs(SysfsConfig{FS: newFakeKernel(t, fakeBlockSize)})
	require.NoError(t, err)
	regions, err := s.Regions()
	require.NoError(t, err)
	assert.Empty(t, regions)
}

func TestNewSysfsReadsEachPoolsRegionFromTheHost(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	k.addCXLRegion("region0", 8*fakeBlockSize, 16*fakeBlockSize, "dc")
	k.addDAXDevice("dax0.0", 8*fakeBlockSize, 2*fakeBlockSize, driverDevDAX) // in region0
	k.addCXLRegion("region1", 32*fakeBlockSize, 16*fakeBlockSize, "dc")
	k.addDAXDevice("dax3.0", 64*fakeBlockSize, 4*fakeBlockSize, driverDevDAX)
	s, err := NewSysfs(SysfsConfig{FS: k,
		Regions:     map[string]string{"pool-a": "region1"},
		RegionBases: map[string]int64{"pool-b": 64 * fakeBlockSize, "pool-c": 8 * fakeBlockSize},
	})
	require.NoError(t, err)
	assert.Equal(t, map[string]Region{
		"pool-a": {Name: "region1", Start: 32 * fakeBlockSize, Size: 16 * fakeBlockSize, Mode: "dc"},
		"pool-b": {Name: "dax3.0", Start: 64 * fakeBlockSize, Size: 4 * fakeBlockSize},
		"pool-c": {Name: "region0", Start: 8 * fakeBlockSize, Size: 16 * fakeBlockSize, Mode: "dc"}, // not the DAX device in it
	}, s.PoolRegions())
}

// A pool's region comes from the host; configuration that does not match the host
// stops the agent at start, with the flag to fix.
func TestNewSysfsRefusesRegionsTheHostDoesNotHave(t *testing.T) {
	tests := []struct {
		name    string
		regions map[string]string
		bases   map[string]int64
		want    []string
	}{
		{"no region of that name", map[string]string{"pool-a": "region7"}, nil, []string{
			"--region pool-a=region7: this host has no CXL region or DAX device region7 (this host has dax3.0 [0x200000000, 0x220000000), region0 [0x40000000, 0xc0000000) mode dc, region1 (no address range), region2 [0x1c000000, 0x3c000000) mode ram)",
		}},
		{"a region without an address range", map[string]string{"pool-a": "region1"}, nil, []string{
			"--region pool-a=region1: region1 has no address range yet (size 0): create and commit the region first",
		}},
		{"an address inside a region, not its start", nil, map[string]int64{"pool-b": 9 * fakeBlockSize}, []string{
			"--region-base pool-b=0x48000000: no CXL region or DAX device of this host starts at 0x48000000 (this host has dax3.0",
			"correct the address, or name the region with --region pool-b=NAME",
		}},
		{"address 0, boot RAM", nil, map[string]int64{"pool-b": 0}, []string{
			"--region-base pool-b=0x0: no CXL region or DAX device of this host starts at 0x0",
		}},
		{"both a name and an address", map[string]string{"pool-a": "region0"}, map[string]int64{"pool-a": 8 * fakeBlockSize}, []string{
			"pool pool-a has both --region and --region-base: give one",
		}},
		{"a region not aligned to the memory block size", map[string]string{"pool-a": "region2"}, nil, []string{
			"region region2 of pool pool-a starts at 0x1c000000, which is not a multiple of the memory block size 0x8000000",
		}},
		{"every error at once", map[string]string{"pool-a": "region7", "pool-c": "region1"}, map[string]int64{"pool-b": 1}, []string{
			"--region pool-a=region7", "--region pool-c=region1", "--region-base pool-b=0x1",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(t, fakeBlockSize)
			k.addCXLRegion("region0", 8*fakeBlockSize, 16*fakeBlockSize, "dc")
			k.addCXLRegion("region1", 0, 0, "dc")
			k.addCXLRegion("region2", 3.5*fakeBlockSize, 4*fakeBlockSize, "ram")
			k.addDAXDevice("dax3.0", 64*fakeBlockSize, 4*fakeBlockSize, driverDevDAX)
			_, err := NewSysfs(SysfsConfig{FS: k, Regions: tc.regions, RegionBases: tc.bases})
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestNewSysfsWithARegionOnAHostWithoutCXLOrDAX(t *testing.T) {
	_, err := NewSysfs(SysfsConfig{FS: newFakeKernel(t, fakeBlockSize), Regions: map[string]string{"pool-a": "region0"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--region pool-a=region0: this host has no CXL region or DAX device region0 (this host has none: nothing under /sys/bus/cxl/devices/regionN nor /sys/bus/dax/devices)")
}

// Extents past the end of the pool's region are refused before any block is
// touched, online or offline: the blocks there are not the pool's.
func TestSysfsRefusesExtentsPastTheEndOfTheRegion(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8, 22, 23, 24, 25)
	k.addBlock(26, stateOnline, 0)
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now())) // region0: blocks 8 to 23
	past := Request{ClaimUID: "uid-1", Pool: "pool-a", Extents: []v1alpha1.Extent{
		{Offset: 0, Length: fakeBlockSize},
		{Offset: 14 * fakeBlockSize, Length: 4 * fakeBlockSize},
	}}
	want := "claim uid-1: extents[1] = {offset 0x70000000, length 0x20000000} of pool pool-a ends at 0x90000000, past the end of the pool's region region0 (size 0x80000000); nothing was touched"
	_, err := s.Online(context.Background(), past, nil)
	require.ErrorContains(t, err, want)
	past.Extents[1] = v1alpha1.Extent{Offset: 18 * fakeBlockSize, Length: fakeBlockSize}
	require.ErrorContains(t, s.Offline(context.Background(), past, nil), "of pool pool-a ends at 0x98000000, past the end of the pool's region region0")
	_, err = s.Check(context.Background(), past)
	require.ErrorContains(t, err, "past the end of the pool's region region0")
	assert.Empty(t, k.written(), "no block was touched")
	assert.Equal(t, stateOnline, k.state(26))

	last := Request{ClaimUID: "uid-2", Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 14 * fakeBlockSize, Length: 2 * fakeBlockSize}}}
	res, err := s.Online(context.Background(), last, nil)
	require.NoError(t, err, "the last blocks of the region are the pool's")
	assert.Equal(t, []int{22, 23}, res.Blocks)
}
