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

package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sysfsRoot makes a host tree with a memory block size and one CXL region, region0
// at 0x1080000000.
func sysfsRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{
		"sys/devices/system/memory/block_size_bytes": "8000000\n",
		"sys/bus/cxl/devices/region0/resource":       "0x1080000000\n",
		"sys/bus/cxl/devices/region0/size":           "0x400000000\n",
		"sys/bus/cxl/devices/region0/mode":           "ram\n",
	} {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return root
}

func TestTheSysfsHostTakesEachPoolsRegionFromTheHost(t *testing.T) {
	o := newOptions()
	o.sysfsRoot = sysfsRoot(t)
	o.regions = regionNames{"pool-a": "region0"}
	o.regionBases = regionBases{"pool-b": 0x1080000000}
	_, err := newHost(context.Background(), o)
	require.NoError(t, err)
}

func TestTheSysfsHostRefusesToStartWithARegionTheHostDoesNotHave(t *testing.T) {
	tests := []struct {
		name    string
		regions regionNames
		bases   regionBases
		want    string
	}{
		{"a base that starts no region", nil, regionBases{"pool-a": 0x1000000000},
			"--host-backend=sysfs: --region-base pool-a=0x1000000000: no CXL region or DAX device of this host starts at 0x1000000000 (this host has region0 [0x1080000000, 0x1480000000) mode ram); correct the address, or name the region with --region pool-a=NAME"},
		{"a region name the host does not have", regionNames{"pool-a": "region1"}, nil,
			"--host-backend=sysfs: --region pool-a=region1: this host has no CXL region or DAX device region1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newOptions()
			o.sysfsRoot = sysfsRoot(t)
			o.regions, o.regionBases = tc.regions, tc.bases
			_, err := newHost(context.Background(), o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
