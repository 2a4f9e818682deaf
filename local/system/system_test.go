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

package system

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A real node's simulated host memory has one CXL region per pool attached to it, in
// the pools' order, contiguous from 1Ti, each its pool's size, on its own NUMA node.
func TestHostRegions(t *testing.T) {
	pools := NewPools([]PoolSpec{
		{Name: "a", Capacity: "16Gi", HostWindow: "8Gi", LatencyClass: "low"},
		{Name: "b", Capacity: "4Gi", HostWindow: "4Gi", LatencyClass: "low"},
		{Name: "c", Capacity: "8Gi", HostWindow: "8Gi", LatencyClass: "low"},
	}, []string{"kwok-0", "real-0"}, 0)
	pools[1].Spec.Nodes = pools[1].Spec.Nodes[:1] // b: not on real-0

	sim, agent := hostRegions(pools, "real-0")
	assert.Equal(t, []string{"--region=region0=0x10000000000:0x400000000:1", "--region=region1=0x10400000000:0x200000000:2"}, sim)
	assert.Equal(t, []string{"--region=a=region0", "--region=c=region1"}, agent)
	sim, agent = hostRegions(pools, "elsewhere")
	assert.Empty(t, sim)
	assert.Empty(t, agent)
}
