package dynamicmemory

import (
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/resourceclaim"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

// demand is one ResourceClaim's request for dynamic memory.
type demand struct {
	claim *resourceapi.ResourceClaim
	// request is the name of the claim's request for the dynamic memory DeviceClass.
	request string
	// bytes is what the request asks (capacity.requests.memory), before rounding.
	bytes int64
	// allocated is set when the claim was allocated before this scheduling cycle:
	// its memory was reserved then, on node (if known) from pool.
	allocated  bool
	node, pool string
}

func (d demand) claimRef() string { return klog.KObj(d.claim).String() }

// podDemands finds the pod's claims that ask for dynamic memory. A status is returned
// when a claim cannot be read or asks in a way the plugin cannot serve.
func podDemands(claims fwk.ResourceClaimTracker, pod *v1.Pod) ([]demand, *fwk.Status) {
	var out []demand
	for i := range pod.Spec.ResourceClaims {
		podClaim := &pod.Spec.ResourceClaims[i]
		name, mustCheckOwner, err := resourceclaim.Name(pod, podClaim)
		if err != nil {
			if errors.Is(err, resourceclaim.ErrClaimNotFound) {
				return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable,
					fmt.Sprintf("waiting for the ResourceClaim of pod claim %q to be created", podClaim.Name))
			}
			return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
		}
		if name == nil {
			continue
		}
		claim, err := claims.Get(pod.Namespace, *name)
		if err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable,
					fmt.Sprintf("waiting for ResourceClaim %s/%s to be created", pod.Namespace, *name))
			}
			return nil, fwk.AsStatus(fmt.Errorf("get ResourceClaim %s/%s: %w", pod.Namespace, *name, err))
		}
		if mustCheckOwner {
			if err := resourceclaim.IsForPod(pod, claim, false); err != nil {
				return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
			}
		}
		d, found, err := claimDemand(claim)
		if err != nil {
			return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
		}
		if found {
			out = append(out, d)
		}
	}
	return out, nil
}

// claimDemand reads a claim's request for dynamic memory. One request per claim is
// supported: a reservation is keyed by the claim UID.
func claimDemand(claim *resourceapi.ResourceClaim) (demand, bool, error) {
	ref := klog.KObj(claim)
	var d demand
	found := false
	for _, req := range claim.Spec.Devices.Requests {
		for _, sub := range req.FirstAvailable {
			if sub.DeviceClassName == dra.DeviceClassName {
				return d, false, fmt.Errorf("ResourceClaim %s request %q: firstAvailable with DeviceClass %s is not supported; use exactly",
					ref, req.Name, dra.DeviceClassName)
			}
		}
		if req.Exactly == nil || req.Exactly.DeviceClassName != dra.DeviceClassName {
			continue
		}
		if found {
			return d, false, fmt.Errorf("ResourceClaim %s asks DeviceClass %s in requests %q and %q; use one request per claim",
				ref, dra.DeviceClassName, d.request, req.Name)
		}
		ex := req.Exactly
		if ex.AllocationMode == resourceapi.DeviceAllocationModeAll || ex.Count > 1 {
			return d, false, fmt.Errorf("ResourceClaim %s request %q must ask for one device (one pool); set capacity.requests.%s for the size",
				ref, req.Name, dra.CapacityMemory)
		}
		var q resource.Quantity
		if ex.Capacity != nil {
			q = ex.Capacity.Requests[dra.CapacityMemory]
		}
		if q.Sign() <= 0 {
			return d, false, fmt.Errorf("ResourceClaim %s request %q sets no size: set exactly.capacity.requests.%s, for example 16Gi",
				ref, req.Name, dra.CapacityMemory)
		}
		d = demand{claim: claim, request: req.Name, bytes: q.Value()}
		found = true
	}
	if found && claim.Status.Allocation != nil {
		d.allocated = true
		d.node = allocatedNode(claim.Status.Allocation)
		d.pool = allocatedPool(claim.Status.Allocation, d.request)
	}
	return d, found, nil
}

// allocatedPool is the pool DynamicResources allocated a request from: our devices
// are named after their pool.
func allocatedPool(alloc *resourceapi.AllocationResult, request string) string {
	if alloc == nil {
		return ""
	}
	for _, r := range alloc.Devices.Results {
		if r.Driver == dra.DriverName && resourceclaim.BaseRequestRef(r.Request) == request {
			return r.Device
		}
	}
	return ""
}

// allocatedNode is the node an allocation is bound to, if its node selector names one.
func allocatedNode(alloc *resourceapi.AllocationResult) string {
	if alloc.NodeSelector == nil {
		return ""
	}
	for _, term := range alloc.NodeSelector.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == v1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// formatBytes prints a size the way users write it (16Gi, 1536Mi).
func formatBytes(b int64) string {
	return resource.NewQuantity(b, resource.BinarySI).String()
}
