package driver

import (
	"fmt"
	"slices"
	"strings"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

// Device attribute and capacity names, and binding condition types.
const (
	// CapacityMemory is the consumable capacity claims request.
	CapacityMemory resourceapi.QualifiedName = "memory"
	// AttributePool is the DynamicMemoryPool the device stands for.
	AttributePool resourceapi.QualifiedName = "pool"
	// AttributeLatencyClass is the pool's latency class, when set.
	AttributeLatencyClass resourceapi.QualifiedName = v1alpha1.AttributeLatencyClass
	// AttributeKind says what the device is.
	AttributeKind resourceapi.QualifiedName = "kind"
	// KindCXLDCD is the kind of every device of this driver.
	KindCXLDCD = "cxl-dcd"

	// ConditionOnline is the binding condition: the node agent has onlined the memory.
	ConditionOnline = "Online"
	// ConditionProvisioningFailed is the binding failure condition.
	ConditionProvisioningFailed = "ProvisioningFailed"
)

// Devices are the node's devices: one per pool the node is attached to, sorted by
// pool name. Pools whose name cannot be a device name (a DNS label) are returned
// as errors and left out.
func Devices(pools []v1alpha1.DynamicMemoryPool, node string, bindingConditions bool) ([]resourceapi.Device, []error) {
	var devices []resourceapi.Device
	var errs []error
	for _, pool := range pools {
		if !slices.ContainsFunc(pool.Spec.Nodes, func(n v1alpha1.PoolNode) bool { return n.Name == node }) {
			continue
		}
		if msgs := validation.IsDNS1123Label(pool.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("pool %s is not published on node %s: a DRA device name must be a DNS label (%s); rename the pool", pool.Name, node, strings.Join(msgs, "; ")))
			continue
		}
		devices = append(devices, device(pool, bindingConditions))
	}
	slices.SortFunc(devices, func(a, b resourceapi.Device) int { return strings.Compare(a.Name, b.Name) })
	return devices, errs
}

// device is the DRA device of one pool on this node. Its memory capacity is the
// pool's host window, handed out in multiples of the pool's block size, to many
// claims at once.
func device(pool v1alpha1.DynamicMemoryPool, bindingConditions bool) resourceapi.Device {
	block := pool.Spec.BlockSize.DeepCopy()
	window := pool.Spec.HostWindow.DeepCopy()
	valueRange := &resourceapi.CapacityRequestPolicyRange{Min: ptr.To(block.DeepCopy()), Max: ptr.To(window.DeepCopy())}
	// The API wants min+step within the capacity: a window of one block has no step.
	twoBlocks := block.DeepCopy()
	twoBlocks.Add(block)
	if twoBlocks.Cmp(window) <= 0 {
		valueRange.Step = ptr.To(block.DeepCopy())
	}
	d := resourceapi.Device{
		Name:                     pool.Name,
		AllowMultipleAllocations: ptr.To(true),
		Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			AttributePool: {StringValue: ptr.To(pool.Name)},
			AttributeKind: {StringValue: ptr.To(KindCXLDCD)},
		},
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			CapacityMemory: {
				Value: window,
				RequestPolicy: &resourceapi.CapacityRequestPolicy{
					Default:    ptr.To(block.DeepCopy()),
					ValidRange: valueRange,
				},
			},
		},
	}
	if lc, ok := pool.Spec.Attributes[v1alpha1.AttributeLatencyClass]; ok && lc != "" {
		d.Attributes[AttributeLatencyClass] = resourceapi.DeviceAttribute{StringValue: ptr.To(lc)}
	}
	if bindingConditions {
		d.BindingConditions = []string{ConditionOnline}
		d.BindingFailureConditions = []string{ConditionProvisioningFailed}
	}
	return d
}
