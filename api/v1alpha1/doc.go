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

// Package v1alpha1 holds the dynamicmemory.io/v1alpha1 API: DynamicMemoryPool, the
// admin's description of a CXL Dynamic Capacity Device pool, and DynamicMemoryClaim, the
// memory service's durable record of one reservation of pool memory for one
// ResourceClaim.
//
// +kubebuilder:object:generate=true
// +groupName=dynamicmemory.io
// +groupGoName=DynamicMemory
package v1alpha1
