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
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

func TestPreFilter(t *testing.T) {
	gpuClaim := memClaim("gpu", "1Gi")
	gpuClaim.Spec.Devices.Requests[0].Exactly.DeviceClassName = "gpu.example.com"
	twoRequests := memClaim("two", "1Gi")
	second := twoRequests.Spec.Devices.Requests[0]
	second.Name = "mem2"
	twoRequests.Spec.Devices.Requests = append(twoRequests.Spec.Devices.Requests, second)
	noSize := memClaim("nosize", "1Gi")
	noSize.Spec.Devices.Requests[0].Exactly.Capacity = nil
	countTwo := memClaim("count", "1Gi")
	countTwo.Spec.Devices.Requests[0].Exactly.Count = 2
	prioritized := memClaim("prio", "1Gi")
	prioritized.Spec.Devices.Requests[0] = resourceapi.DeviceRequest{Name: "mem", FirstAvailable: []resourceapi.DeviceSubRequest{{Name: "a", DeviceClassName: dra.DeviceClassName}}}
	templated := memPod("templated")
	templated.Spec.ResourceClaims = []v1.PodResourceClaim{{Name: "mem", ResourceClaimTemplateName: ptr.To("mem-template")}}

	tests := []struct {
		name        string
		pod         *v1.Pod
		claims      []*resourceapi.ResourceClaim
		disconnect  bool
		wantCode    fwk.Code
		wantMessage string
		wantNodes   sets.Set[string]
		wantDemands int
	}{
		{name: "pod without claims is skipped", pod: memPod("plain"), wantCode: fwk.Skip},
		{name: "claim of another driver's class is ignored", pod: memPod("gpu", "gpu"), claims: []*resourceapi.ResourceClaim{gpuClaim}, wantCode: fwk.Skip},
		{name: "claim for dynamic memory is found", pod: memPod("p", "c1"), claims: []*resourceapi.ResourceClaim{memClaim("c1", "16Gi")}, wantDemands: 1},
		{name: "dynamic memory and another driver's claim", pod: memPod("p", "c1", "gpu"), claims: []*resourceapi.ResourceClaim{memClaim("c1", "16Gi"), gpuClaim}, wantDemands: 1},
		{
			name: "claim not created yet waits", pod: memPod("p", "missing"),
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: "waiting for ResourceClaim default/missing to be created",
		},
		{
			name: "template claim not generated yet waits", pod: templated,
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: `waiting for the ResourceClaim of pod claim "mem" to be created`,
		},
		{
			name: "two requests in one claim are refused", pod: memPod("p", "two"), claims: []*resourceapi.ResourceClaim{twoRequests},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: `ResourceClaim default/two asks DeviceClass dynamic-memory.dynamicmemory.io in requests "mem" and "mem2"; use one request per claim`,
		},
		{
			name: "request without size is refused", pod: memPod("p", "nosize"), claims: []*resourceapi.ResourceClaim{noSize},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: `ResourceClaim default/nosize request "mem" sets no size: set exactly.capacity.requests.memory, for example 16Gi`,
		},
		{
			name: "two devices are refused", pod: memPod("p", "count"), claims: []*resourceapi.ResourceClaim{countTwo},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: `request "mem" must ask for one device (one pool)`,
		},
		{
			name: "prioritized list is refused", pod: memPod("p", "prio"), claims: []*resourceapi.ResourceClaim{prioritized},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: "firstAvailable with DeviceClass dynamic-memory.dynamicmemory.io is not supported; use exactly",
		},
		{
			name: "allocated claim pins the node", pod: memPod("p", "c1"), claims: []*resourceapi.ResourceClaim{allocated(memClaim("c1", "16Gi"), "n3", "pool-b")},
			wantNodes: sets.New("n3"), wantDemands: 1,
		},
		{
			name: "claims allocated on two nodes cannot be served", pod: memPod("p", "c1", "c2"),
			claims:   []*resourceapi.ResourceClaim{allocated(memClaim("c1", "1Gi"), "n1", "pool-a"), allocated(memClaim("c2", "1Gi"), "n3", "pool-b")},
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: "the pod's dynamic memory claims are allocated on different nodes [n1 n3]",
		},
		{
			name: "memory service down: clear status", pod: memPod("p", "c1"), claims: []*resourceapi.ResourceClaim{memClaim("c1", "16Gi")}, disconnect: true,
			wantCode: fwk.UnschedulableAndUnresolvable, wantMessage: "the scheduler has no pool state from the memory service",
		},
		{
			name: "memory service down does not affect other pods", pod: memPod("plain"), disconnect: true, wantCode: fwk.Skip,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			fs := newFakeService(t, twoPools()...)
			h := newFakeHandle(t, ctx, tc.pod)
			h.dra.claims.set(tc.claims...)
			pl := newTestPlugin(t, ctx, fs, h, nil)
			if tc.disconnect {
				fs.stop()
				waitConnected(t, pl, false)
			}
			cs, res, status := preFilter(t, ctx, pl, tc.pod)
			assert.Equal(t, tc.wantCode, status.Code(), "status: %v", status)
			if tc.wantMessage != "" {
				assert.Contains(t, status.Message(), tc.wantMessage)
			}
			if tc.wantNodes != nil {
				require.NotNil(t, res)
				assert.Equal(t, tc.wantNodes, res.NodeNames)
			} else {
				assert.Nil(t, res)
			}
			if s := lookupState(cs); tc.wantDemands > 0 {
				require.NotNil(t, s)
				assert.Len(t, s.demands, tc.wantDemands)
			} else {
				assert.Nil(t, s, "no state for skipped or rejected pods")
			}
			if tc.disconnect && tc.wantCode != fwk.Skip {
				assert.Equal(t, 1, pl.rejected.len(), "a pod rejected for the missing pool state waits for the cache")
			}
		})
	}
}

func TestSignPod(t *testing.T) {
	pl := &DynamicMemory{}
	fragments, st := pl.SignPod(context.Background(), memPod("plain"))
	assert.True(t, st.IsSuccess(), "a pod without claims can be batched: %v", st)
	assert.Empty(t, fragments)

	_, st = pl.SignPod(context.Background(), memPod("p", "c1"))
	assert.Equal(t, fwk.Unschedulable, st.Code(), "a pod with claims is placed from the pool state of its own cycle")
}
