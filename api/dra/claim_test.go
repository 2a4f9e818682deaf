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

package dra_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

func TestAllocatedNode(t *testing.T) {
	onNode := func(values ...string) *resourcev1.AllocationResult {
		return &resourcev1.AllocationResult{NodeSelector: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: values}},
		}}}}
	}
	tests := []struct {
		name  string
		alloc *resourcev1.AllocationResult
		want  string
	}{
		{"an unallocated claim has no node", nil, ""},
		{"an allocation without a node selector has no node", &resourcev1.AllocationResult{}, ""},
		{"an allocation for one node names it", onNode("n1"), "n1"},
		{"an allocation for several nodes names none", onNode("n1", "n2"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, dra.AllocatedNode(tt.alloc))
		})
	}
}

func TestClaimDemand(t *testing.T) {
	memory := func(size string) *resourcev1.CapacityRequirements {
		return &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse(size)}}
	}
	claim := func(reqs ...resourcev1.DeviceRequest) *resourcev1.ResourceClaim {
		return &resourcev1.ResourceClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"},
			Spec:       resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: reqs}},
		}
	}
	ours := func(name string, capacity *resourcev1.CapacityRequirements) resourcev1.DeviceRequest {
		return resourcev1.DeviceRequest{Name: name, Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: dra.DeviceClassName, Capacity: capacity}}
	}
	gpu := resourcev1.DeviceRequest{Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "gpu.example.com"}}

	allocated := claim(gpu, ours("mem", memory("3Gi")))
	allocated.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{
		{Request: "gpu", Driver: "gpu.example.com", Pool: "n1", Device: "gpu-0"},
		{Request: "mem", Driver: dra.DriverName, Pool: "n1", Device: "cxl-b"},
	}}}
	d, found, err := dra.ClaimDemand(allocated)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, dra.Demand{Request: "mem", Bytes: 3 << 30, Allocated: true, Pool: "cxl-b"}, d)

	_, found, err = dra.ClaimDemand(claim(gpu))
	require.NoError(t, err)
	assert.False(t, found, "a claim that asks no dynamic memory")

	for name, tc := range map[string]struct {
		claim *resourcev1.ResourceClaim
		want  string
	}{
		"no size":      {claim(ours("mem", nil)), `ResourceClaim ns/c request "mem" sets no size: set exactly.capacity.requests.memory`},
		"two requests": {claim(ours("a", memory("1Gi")), ours("b", memory("1Gi"))), `asks DeviceClass dynamic-memory.dynamicmemory.io in requests "a" and "b"; use one request per claim`},
		"two devices": {claim(resourcev1.DeviceRequest{Name: "mem", Exactly: &resourcev1.ExactDeviceRequest{
			DeviceClassName: dra.DeviceClassName, Count: 2, Capacity: memory("1Gi")}}), `request "mem" must ask for one device (one pool)`},
		"first available": {claim(resourcev1.DeviceRequest{Name: "mem", FirstAvailable: []resourcev1.DeviceSubRequest{{Name: "a", DeviceClassName: dra.DeviceClassName}}}),
			"firstAvailable with DeviceClass dynamic-memory.dynamicmemory.io is not supported; use exactly"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := dra.ClaimDemand(tc.claim)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
