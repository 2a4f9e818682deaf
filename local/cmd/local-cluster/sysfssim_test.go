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
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/local/sysfssim"
)

func TestSysfsSimConfig(t *testing.T) {
	cfg, err := sysfsSimConfig("128Mi", []string{"region0=0x10000000000:0x400000000:1", "region1=1116691496960:17179869184:2"})
	require.NoError(t, err)
	assert.Equal(t, sysfssim.Config{BlockSize: 128 << 20, Regions: []sysfssim.Region{
		{Name: "region0", Start: 1 << 40, Size: 16 << 30, NUMANode: 1},
		{Name: "region1", Start: 1116691496960, Size: 16 << 30, NUMANode: 2},
	}}, cfg)

	for flag, want := range map[string]string{
		"region0=0x0:0x40000000":     `--region="region0=0x0:0x40000000": want regionN=START:SIZE:NUMA-NODE`,
		"region0=zero:0x40000000:1":  `--region="region0=zero:0x40000000:1": "zero" is not a number`,
		"dax0.0=0x0:0x40000000:1":    `regions[0].name "dax0.0": must be regionN`,
		"region0=0x100:0x40000000:1": "must be multiples of the block size",
	} {
		_, err := sysfsSimConfig("128Mi", []string{flag})
		assert.ErrorContains(t, err, want, flag)
	}
	_, err = sysfsSimConfig("lots", nil)
	assert.ErrorContains(t, err, `--block-size="lots"`)
}
