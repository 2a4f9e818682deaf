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

// Package dra names this project's side of Dynamic Resource Allocation: the driver,
// its DeviceClass, the capacity and attributes of its devices, and the device
// conditions the node agent sets on allocated ResourceClaims. Every component takes
// these names from here.
package dra

const (
	// DriverName is the DRA driver of every dynamic memory device and claim.
	DriverName = "dcd.dynamicmemory.io"
	// DeviceClassName is the DeviceClass that claims for dynamic memory name
	// (manifests/deviceclass).
	DeviceClassName = "dynamic-memory.dynamicmemory.io"
)

// Device capacity and attribute names, and the kind every device of the driver has.
// A pool's own attributes (v1alpha1.AttributeLatencyClass) are published under their
// keys as well.
const (
	// CapacityMemory is the consumable capacity claims request
	// (capacity.requests: {memory: 16Gi}).
	CapacityMemory = "memory"
	// AttributePool is the DynamicMemoryPool the device stands for.
	AttributePool = "pool"
	// AttributeKind says what the device is.
	AttributeKind = "kind"
	// KindCXLDCD is the kind of every device of this driver.
	KindCXLDCD = "cxl-dcd"
)

// Device conditions on an allocated ResourceClaim (status.devices[].conditions).
// With binding conditions on, they are also the devices' bindingConditions and
// bindingFailureConditions.
const (
	// ConditionOnline: the node agent has onlined the claim's memory on the node.
	ConditionOnline = "Online"
	// ConditionProvisioningFailed: the memory could not be provisioned; the reason
	// says why.
	ConditionProvisioningFailed = "ProvisioningFailed"
)
