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

// claimDemand reads a claim's request for dynamic memory (dra.ClaimDemand).
func claimDemand(claim *resourceapi.ResourceClaim) (demand, bool, error) {
	d, found, err := dra.ClaimDemand(claim)
	if err != nil || !found {
		return demand{}, false, err
	}
	return demand{claim: claim, request: d.Request, bytes: d.Bytes, allocated: d.Allocated, node: d.Node, pool: d.Pool}, true, nil
}

// formatBytes prints a size the way users write it (16Gi, 1536Mi).
func formatBytes(b int64) string {
	return resource.NewQuantity(b, resource.BinarySI).String()
}
