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

package dra

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Demand is a ResourceClaim's request for dynamic memory: what the scheduler plugin
// reserves before it allocates, and what the memory service provisions for a claim
// that another scheduler allocated.
type Demand struct {
	// Request is the name of the claim's request for DeviceClassName.
	Request string
	// Bytes is what the request asks (exactly.capacity.requests.memory), before
	// rounding to a pool's block size.
	Bytes int64
	// Allocated is set once the claim is allocated; Node is then the node its
	// allocation is bound to, Pool the DynamicMemoryPool of the allocated device.
	Allocated  bool
	Node, Pool string
}

// ClaimDemand reads a claim's request for dynamic memory; found is false when the
// claim asks for none. One request per claim, for one device, with a size, is what
// this driver serves (a reservation is keyed by the claim UID): the error of any
// other claim names the request and what to change.
func ClaimDemand(claim *resourceapi.ResourceClaim) (d Demand, found bool, err error) {
	ref := claim.Namespace + "/" + claim.Name
	for _, req := range claim.Spec.Devices.Requests {
		for _, sub := range req.FirstAvailable {
			if sub.DeviceClassName == DeviceClassName {
				return Demand{}, false, fmt.Errorf("ResourceClaim %s request %q: firstAvailable with DeviceClass %s is not supported; use exactly",
					ref, req.Name, DeviceClassName)
			}
		}
		if req.Exactly == nil || req.Exactly.DeviceClassName != DeviceClassName {
			continue
		}
		if found {
			return Demand{}, false, fmt.Errorf("ResourceClaim %s asks DeviceClass %s in requests %q and %q; use one request per claim",
				ref, DeviceClassName, d.Request, req.Name)
		}
		ex := req.Exactly
		if ex.AllocationMode == resourceapi.DeviceAllocationModeAll || ex.Count > 1 {
			return Demand{}, false, fmt.Errorf("ResourceClaim %s request %q must ask for one device (one pool); set capacity.requests.%s for the size",
				ref, req.Name, CapacityMemory)
		}
		var q resource.Quantity
		if ex.Capacity != nil {
			q = ex.Capacity.Requests[CapacityMemory]
		}
		if q.Sign() <= 0 {
			return Demand{}, false, fmt.Errorf("ResourceClaim %s request %q sets no size: set exactly.capacity.requests.%s, for example 16Gi",
				ref, req.Name, CapacityMemory)
		}
		d = Demand{Request: req.Name, Bytes: q.Value()}
		found = true
	}
	if found && claim.Status.Allocation != nil {
		d.Allocated = true
		d.Node = AllocatedNode(claim.Status.Allocation)
		d.Pool = AllocatedPool(claim.Status.Allocation, d.Request)
	}
	return d, found, nil
}

// AllocatedPool is the DynamicMemoryPool an allocation gave a request: the devices
// of this driver are named after their pool.
func AllocatedPool(alloc *resourceapi.AllocationResult, request string) string {
	if alloc == nil {
		return ""
	}
	for _, r := range alloc.Devices.Results {
		base, _, _ := strings.Cut(r.Request, "/") // a subrequest's result names its request first
		if r.Driver == DriverName && base == request {
			return r.Device
		}
	}
	return ""
}

// AllocatedNode is the node an allocation is bound to, if its node selector names one.
func AllocatedNode(alloc *resourceapi.AllocationResult) string {
	if alloc == nil || alloc.NodeSelector == nil {
		return ""
	}
	for _, term := range alloc.NodeSelector.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}
