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

package sysfssim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
)

const mib = int64(1) << 20

// The node agent's sysfs backend, unchanged, drives the simulated tree as it drives
// a host: it finds the pool's CXL region by name, onlines an extent's blocks and
// reads back their NUMA node, refuses memory that is online already, and offlines
// them again.
func TestTheSysfsBackendDrivesTheTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting the FUSE tree needs root")
	}
	dir := t.TempDir()
	server, err := Mount(dir, Config{BlockSize: 128 * mib, Regions: []Region{
		{Name: "region0", Start: 4 << 30, Size: 1 << 30, NUMANode: 1},
		{Name: "region1", Start: 8 << 30, Size: 1 << 30, NUMANode: 2},
	}})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, server.Unmount()) })
	require.NoError(t, server.WaitMount())

	s, err := hostmem.NewSysfs(hostmem.SysfsConfig{FS: hostmem.DirFS{Root: dir}, Regions: map[string]string{"pool-a": "region1"}})
	require.NoError(t, err)
	assert.Equal(t, 128*mib, s.BlockSize())
	ctx := context.Background()
	req := hostmem.Request{ClaimUID: "uid-1", Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 256 * mib, Length: 256 * mib}}}
	res, err := s.Online(ctx, req, nil)
	require.NoError(t, err)
	assert.Equal(t, []int{66, 67}, res.Blocks, "8Gi / 128Mi = 64, then the extent's offset")
	assert.Equal(t, []int32{2}, res.NUMANodes)
	assert.Equal(t, 256*mib, res.Bytes)
	state := func(n string) string {
		data, err := os.ReadFile(filepath.Join(dir, "sys/devices/system/memory", n, "state"))
		require.NoError(t, err)
		return strings.TrimSpace(string(data))
	}
	assert.Equal(t, "online", state("memory66"))
	assert.Equal(t, "offline", state("memory65"))

	_, err = s.Online(ctx, hostmem.Request{ClaimUID: "uid-2", Pool: "pool-a", Extents: req.Extents}, nil)
	require.ErrorIs(t, err, hostmem.ErrOnlineNotOurs, "memory online for another claim is never reported as this one's")

	require.NoError(t, s.Offline(ctx, req, nil))
	assert.Equal(t, "offline", state("memory66"))
	assert.Equal(t, "offline", state("memory67"))
}

// The tree answers writes like the kernel's state_store.
func TestBlockStateTransitions(t *testing.T) {
	b := &block{state: stateOffline}
	assert.EqualValues(t, 0, b.set("online_movable"))
	assert.Equal(t, stateOnline, b.get())
	assert.NotZero(t, b.set("online"), "online again: EINVAL")
	assert.NotZero(t, b.set("going-offline"), "not a word the kernel takes")
	assert.EqualValues(t, 0, b.set("offline"))
	assert.Equal(t, stateOffline, b.get())
}

func TestConfigValidationNamesTheField(t *testing.T) {
	err := Config{BlockSize: 128 * mib, Regions: []Region{
		{Name: "dax0", Start: 0, Size: 1 << 30},
		{Name: "region1", Start: 64 * mib, Size: 1 << 30},
		{Name: "region2", Start: 1 << 40, Size: 1 << 30, NUMANode: -1},
		{Name: "region3", Start: 1 << 29, Size: 1 << 30},
	}}.Validate()
	require.Error(t, err)
	for _, want := range []string{
		`regions[0].name "dax0": must be regionN`,
		"regions[1] region1: start 0x4000000 and size 0x40000000 must be multiples of the block size 0x8000000",
		"regions[2] region2: NUMA node -1 must not be negative",
		"regions[3] region3 overlaps regions[0] dax0",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.ErrorContains(t, Config{BlockSize: 3}.Validate(), "block size 3: must be a power of two")
}
