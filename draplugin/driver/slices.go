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
	"fmt"
	"slices"
	"strings"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

// Devices are the node's devices: one per pool the node is attached to, sorted by
// pool name. Pools whose name cannot be a device name (a DNS label) are returned
// as errors and left out. published holds the memory capacity of each pool's device
// as last published on this node (nil when nothing was): on a node attached to one
// pool, a capacity still close enough to the truth is kept (see nodeCapacity). A
// node with several pools always gets the exact figures: the DRA allocator takes
// the first device with room, and a pool offering more than it has would get
// claims another pool of the node could serve.
func Devices(pools []v1alpha1.DynamicMemoryPool, node string, bindingConditions bool, published map[string]int64) ([]resourceapi.Device, []error) {
	var attached []v1alpha1.DynamicMemoryPool
	var errs []error
	for _, pool := range pools {
		if !slices.ContainsFunc(pool.Spec.Nodes, func(n v1alpha1.PoolNode) bool { return n.Name == node }) {
			continue
		}
		if msgs := validation.IsDNS1123Label(pool.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("pool %s is not published on node %s: a DRA device name must be a DNS label (%s); rename the pool", pool.Name, node, strings.Join(msgs, "; ")))
			continue
		}
		attached = append(attached, pool)
	}
	var devices []resourceapi.Device
	for _, pool := range attached {
		last, hasLast := published[pool.Name]
		if d, ok := device(pool, node, bindingConditions, last, hasLast && len(attached) == 1); ok {
			devices = append(devices, d)
		}
	}
	slices.SortFunc(devices, func(a, b resourceapi.Device) int { return strings.Compare(a.Name, b.Name) })
	return devices, errs
}

// device is the DRA device of one pool on this node, handed out in multiples of the
// pool's block size to many claims at once. ok is false when the pool cannot give
// this node even one block.
func device(pool v1alpha1.DynamicMemoryPool, node string, bindingConditions bool, last int64, hasLast bool) (d resourceapi.Device, ok bool) {
	block := pool.Spec.BlockSize.DeepCopy()
	window := pool.Spec.HostWindow.DeepCopy()
	if capacity := nodeCapacity(pool, node, last, hasLast); capacity != window.Value() {
		window = *resource.NewQuantity(capacity, resource.BinarySI)
	}
	if window.Cmp(block) < 0 {
		return resourceapi.Device{}, false
	}
	valueRange := &resourceapi.CapacityRequestPolicyRange{Min: ptr.To(block.DeepCopy()), Max: ptr.To(window.DeepCopy())}
	// The API wants min+step within the capacity: a window of one block has no step.
	twoBlocks := block.DeepCopy()
	twoBlocks.Add(block)
	if twoBlocks.Cmp(window) <= 0 {
		valueRange.Step = ptr.To(block.DeepCopy())
	}
	d = resourceapi.Device{
		Name:                     pool.Name,
		AllowMultipleAllocations: ptr.To(true),
		Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			dra.AttributePool: {StringValue: ptr.To(pool.Name)},
			dra.AttributeKind: {StringValue: ptr.To(dra.KindCXLDCD)},
		},
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			dra.CapacityMemory: {
				Value: window,
				RequestPolicy: &resourceapi.CapacityRequestPolicy{
					Default:    ptr.To(block.DeepCopy()),
					ValidRange: valueRange,
				},
			},
		},
	}
	if lc, ok := pool.Spec.Attributes[v1alpha1.AttributeLatencyClass]; ok && lc != "" {
		d.Attributes[v1alpha1.AttributeLatencyClass] = resourceapi.DeviceAttribute{StringValue: ptr.To(lc)}
	}
	if bindingConditions {
		d.BindingConditions = []string{dra.ConditionOnline}
		d.BindingFailureConditions = []string{dra.ConditionProvisioningFailed}
	}
	return d, true
}

// nodeCapacity is the device's memory capacity on node: the pool's host window,
// lowered to what the pool can still give the node (its reservations there plus
// its free share, from the pool status the memory service keeps) when the pool
// is shared beyond its capacity. The scheduler's DRA allocator takes the first
// device of a node with room; a pool exhausted elsewhere must look full here, or
// the allocator keeps picking it while another pool of the node has room.
//
// A shared pool's free share moves with every reservation on any of its nodes, and
// each change of a capacity is a ResourceSlice write on every node and a new look
// by every scheduler. So on a node of one pool the capacity last published (last,
// when hasLast) is kept while it is within a factor of two of the truth:
//   - never below it (reserved + free): a pod must never wait for memory the pool
//     has;
//   - offering at most twice the node's free share, so that a node sees at most
//     one write each time its free share halves (about log2(window/block) writes
//     while the pool fills, instead of one per change);
//   - exact once less than a block is left: the allocator must see the pool full.
//
// What this offers beyond the truth is bounded, and it is never handed out: the
// DynamicMemory plugin filters on the memory service's own figures, and a claim
// the stock scheduler allocates beyond them is refused by the memory service
// (binding failure ProvisioningFailed), which makes the scheduler try again.
func nodeCapacity(pool v1alpha1.DynamicMemoryPool, node string, last int64, hasLast bool) int64 {
	window := pool.Spec.HostWindow.Value()
	block := pool.Spec.BlockSize.Value()
	for _, n := range pool.Status.Nodes {
		if n.Name != node {
			continue
		}
		reserved, free := n.Reserved.Value(), n.Free.Value()
		exact := min(window, reserved+free)
		if block > 0 {
			exact -= exact % block
		}
		keep := hasLast && free >= block && last >= exact && last <= window && last-reserved <= 2*free
		if keep {
			return last
		}
		return exact
	}
	return window
}
