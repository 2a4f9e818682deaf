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

package driver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

func pool(name, block, window string, attrs map[string]string, nodes ...string) v1alpha1.DynamicMemoryPool {
	p := v1alpha1.DynamicMemoryPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.DynamicMemoryPoolSpec{
			Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
			Capacity:   resource.MustParse("64Gi"),
			BlockSize:  resource.MustParse(block),
			HostWindow: resource.MustParse(window),
			Attributes: attrs,
		},
	}
	for _, n := range nodes {
		p.Spec.Nodes = append(p.Spec.Nodes, v1alpha1.PoolNode{Name: n})
	}
	return p
}

func q(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }

func TestDevicesOnePerAttachedPool(t *testing.T) {
	pools := []v1alpha1.DynamicMemoryPool{
		pool("pool-b", "1Gi", "16Gi", map[string]string{"latencyClass": "low"}, "node-1", "node-2"),
		pool("pool-a", "128Mi", "4Gi", nil, "node-1"),
		pool("pool-c", "1Gi", "16Gi", nil, "node-2"),
	}
	devices, errs := Devices(pools, "node-1", false, nil)
	require.Empty(t, errs)
	require.Len(t, devices, 2, "pool-c is not attached to node-1")
	assert.Equal(t, resourceapi.Device{
		Name:                     "pool-a",
		AllowMultipleAllocations: ptr.To(true),
		Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			"pool": {StringValue: ptr.To("pool-a")},
			"kind": {StringValue: ptr.To("cxl-dcd")},
		},
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			"memory": {
				Value: resource.MustParse("4Gi"),
				RequestPolicy: &resourceapi.CapacityRequestPolicy{
					Default:    q("128Mi"),
					ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: q("128Mi"), Step: q("128Mi"), Max: q("4Gi")},
				},
			},
		},
	}, devices[0])
	assert.Equal(t, "pool-b", devices[1].Name)
	assert.Equal(t, ptr.To("low"), devices[1].Attributes["latencyClass"].StringValue)
	assert.Empty(t, devices[1].BindingConditions)
}

func TestDevicesWithBindingConditions(t *testing.T) {
	devices, errs := Devices([]v1alpha1.DynamicMemoryPool{pool("pool-a", "1Gi", "8Gi", nil, "node-1")}, "node-1", true, nil)
	require.Empty(t, errs)
	require.Len(t, devices, 1)
	assert.Equal(t, []string{"Online"}, devices[0].BindingConditions)
	assert.Equal(t, []string{"ProvisioningFailed"}, devices[0].BindingFailureConditions)
	assert.Nil(t, devices[0].BindsToNode, "the slice is node-local already")
}

func TestDevicesWindowOfOneBlockHasNoStep(t *testing.T) {
	devices, _ := Devices([]v1alpha1.DynamicMemoryPool{pool("pool-a", "1Gi", "1Gi", nil, "node-1")}, "node-1", false, nil)
	require.Len(t, devices, 1)
	r := devices[0].Capacity["memory"].RequestPolicy.ValidRange
	assert.Nil(t, r.Step, "min+step would exceed the capacity, which the API rejects")
	assert.Equal(t, q("1Gi"), r.Min)
	assert.Equal(t, q("1Gi"), r.Max)
}

func TestDevicesSkipsPoolsThatCannotBeDeviceNames(t *testing.T) {
	devices, errs := Devices([]v1alpha1.DynamicMemoryPool{
		pool("cxl.rack1", "1Gi", "8Gi", nil, "node-1"),
		pool("pool-a", "1Gi", "8Gi", nil, "node-1"),
	}, "node-1", false, nil)
	require.Len(t, devices, 1)
	assert.Equal(t, "pool-a", devices[0].Name)
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Error(), "pool cxl.rack1 is not published on node node-1: a DRA device name must be a DNS label")
}

func TestDevicesShrinkToWhatTheSharedPoolCanStillGive(t *testing.T) {
	share := func(p v1alpha1.DynamicMemoryPool, node, reserved, free string) v1alpha1.DynamicMemoryPool {
		p.Status.Nodes = append(p.Status.Nodes, v1alpha1.PoolNodeStatus{
			Name: node, Reserved: resource.MustParse(reserved), Free: resource.MustParse(free),
		})
		return p
	}
	capacity := func(t *testing.T, p v1alpha1.DynamicMemoryPool) []string {
		t.Helper()
		devices, errs := Devices([]v1alpha1.DynamicMemoryPool{p}, "node-1", false, nil)
		require.Empty(t, errs)
		var out []string
		for _, d := range devices {
			c := d.Capacity["memory"]
			out = append(out, d.Name+"="+c.Value.String()+" max="+c.RequestPolicy.ValidRange.Max.String())
		}
		return out
	}
	base := pool("pool-a", "1Gi", "16Gi", nil, "node-1", "node-2")

	assert.Equal(t, []string{"pool-a=16Gi max=16Gi"}, capacity(t, base), "no status yet: the host window")
	assert.Equal(t, []string{"pool-a=16Gi max=16Gi"}, capacity(t, share(base, "node-1", "4Gi", "12Gi")),
		"the pool has room: the window")
	assert.Equal(t, []string{"pool-a=7Gi max=7Gi"}, capacity(t, share(base, "node-1", "4Gi", "3Gi")),
		"the pool is nearly used up by other nodes: what this node holds plus the pool's free")
	assert.Equal(t, []string{"pool-a=4Gi max=4Gi"}, capacity(t, share(base, "node-1", "4Gi", "0")),
		"the pool is full: the device is full with what the node already holds")
	assert.Empty(t, capacity(t, share(base, "node-1", "0", "512Mi")),
		"less than a block to give: the pool is not offered on this node")
	assert.Equal(t, []string{"pool-a=16Gi max=16Gi"}, capacity(t, share(base, "node-2", "0", "0")),
		"another node's share says nothing about this one")
}

func TestDevicesKeepACapacityWithinAFactorOfTwoOfTheTruth(t *testing.T) {
	const gi = int64(1) << 30
	base := pool("pool-a", "1Gi", "16Gi", nil, "node-1", "node-2")
	capacity := func(t *testing.T, reserved, free string, last int64) int64 {
		t.Helper()
		p := base
		p.Status.Nodes = []v1alpha1.PoolNodeStatus{{Name: "node-1", Reserved: resource.MustParse(reserved), Free: resource.MustParse(free)}}
		devices, errs := Devices([]v1alpha1.DynamicMemoryPool{p}, "node-1", false, map[string]int64{"pool-a": last})
		require.Empty(t, errs)
		if len(devices) == 0 {
			return 0
		}
		c := devices[0].Capacity["memory"]
		assert.True(t, c.Value.Equal(*c.RequestPolicy.ValidRange.Max), "the largest request is the capacity")
		return c.Value.Value()
	}
	for _, tc := range []struct {
		name           string
		reserved, free string
		last, want     int64
	}{
		{"the window, while the pool has room", "4Gi", "12Gi", 16 * gi, 16 * gi},
		{"kept: offers 6Gi free where 3Gi are (twice)", "4Gi", "3Gi", 10 * gi, 10 * gi},
		{"written again: the free share fell below half of what is offered", "4Gi", "2Gi", 10 * gi, 6 * gi},
		{"written again: never below the truth, the pool freed memory", "4Gi", "8Gi", 10 * gi, 12 * gi},
		{"kept: the node's own claims do not move it (reserved up, free down by as much)", "6Gi", "4Gi", 10 * gi, 10 * gi},
		{"exact once less than a block is left: the allocator must see the pool full", "4Gi", "512Mi", 6 * gi, 4 * gi},
		{"exact when the window shrank below what was published", "0", "12Gi", 20 * gi, 12 * gi},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want/gi, capacity(t, tc.reserved, tc.free, tc.last)/gi)
		})
	}
}

// TestDevicesPublishFewCapacitiesWhileASharedPoolFills fills a pool shared by many
// nodes one block at a time elsewhere, and counts the capacities one node publishes:
// one each time its free share halves, not one per reservation.
func TestDevicesPublishFewCapacitiesWhileASharedPoolFills(t *testing.T) {
	const gi = int64(1) << 30
	p := pool("pool-a", "1Gi", "64Gi", nil, "node-1", "node-2")
	var published map[string]int64
	writes := 0
	for free := int64(100); free >= 0; free-- {
		p.Status.Nodes = []v1alpha1.PoolNodeStatus{{Name: "node-1", Reserved: resource.MustParse("2Gi"), Free: *resource.NewQuantity(min(62, free)*gi, resource.BinarySI)}}
		devices, errs := Devices([]v1alpha1.DynamicMemoryPool{p}, "node-1", false, published)
		require.Empty(t, errs)
		require.Len(t, devices, 1)
		c := devices[0].Capacity["memory"]
		got := c.Value.Value()
		truth := (2 + min(62, free)) * gi
		require.GreaterOrEqual(t, got, truth, "free %dGi: never less than the node can have", free)
		require.LessOrEqual(t, got-2*gi, 2*min(62, free)*gi, "free %dGi: at most twice the free share", free)
		if published == nil || published["pool-a"] != got {
			writes++
		}
		published = map[string]int64{"pool-a": got}
	}
	// The window first, then each time the free share falls below half of what is
	// offered (30, 14, 6 and 2 GiB free) and at 0: 6 instead of the 63 changes.
	assert.Equal(t, 6, writes)
}

func TestDevicesOfANodeWithSeveralPoolsAreExact(t *testing.T) {
	a := pool("pool-a", "1Gi", "16Gi", nil, "node-1", "node-2")
	b := pool("pool-b", "1Gi", "16Gi", nil, "node-1")
	a.Status.Nodes = []v1alpha1.PoolNodeStatus{{Name: "node-1", Reserved: resource.MustParse("4Gi"), Free: resource.MustParse("3Gi")}}
	published := map[string]int64{"pool-a": 10 << 30, "pool-b": 16 << 30}

	devices, errs := Devices([]v1alpha1.DynamicMemoryPool{a}, "node-1", false, published)
	require.Empty(t, errs)
	c := devices[0].Capacity["memory"]
	assert.Equal(t, "10Gi", c.Value.String(), "one pool: the published capacity is kept")

	devices, errs = Devices([]v1alpha1.DynamicMemoryPool{a, b}, "node-1", false, published)
	require.Empty(t, errs)
	c = devices[0].Capacity["memory"]
	assert.Equal(t, "7Gi", c.Value.String(), "two pools: pool-a must not offer more than it has, or it takes claims pool-b could serve")
}
