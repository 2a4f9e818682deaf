// Package v1alpha1 holds the dynamicmemory.io/v1alpha1 API: DynamicMemoryPool, the
// admin's description of a CXL Dynamic Capacity Device pool, and DynamicMemoryClaim, the
// memory service's durable record of one reservation of pool memory for one
// ResourceClaim.
//
// +kubebuilder:object:generate=true
// +groupName=dynamicmemory.io
// +groupGoName=DynamicMemory
package v1alpha1
