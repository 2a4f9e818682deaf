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
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// Filter admits a node when every new demand of the pod fits a pool attached to it:
// the pool has the free capacity (minus reservations in flight), the node's host
// window has room, the pool is ready and the node's agent is connected. It runs in
// parallel for many nodes and changes nothing but the cycle state: a rejection for
// capacity is noted there, for PostFilter.
func (pl *DynamicMemory) Filter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, nodeInfo fwk.NodeInfo) *fwk.Status {
	s, err := getState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	node := nodeInfo.Node().Name
	for _, d := range s.demands {
		if d.allocated && d.node != "" && d.node != node {
			return fwk.NewStatus(fwk.UnschedulableAndUnresolvable,
				fmt.Sprintf("ResourceClaim %s is allocated on node %s", d.claimRef(), d.node))
		}
	}
	if _, status := s.view.fitNode(node, s.demands, pl.scorer); status != nil {
		s.mu.Lock()
		s.capacityRejected = true
		s.mu.Unlock()
		klog.FromContext(ctx).V(5).Info("Node cannot get the pod's dynamic memory", "pod", klog.KObj(pod), "node", node, "reason", status.Message())
		return status
	}
	return nil
}

// PostFilter runs when no node fits the pod. When Filter rejected a node for pool
// capacity, the pod is listed among the rejected pods, which the pool cache
// activates as soon as a snapshot shows capacity come back. It never makes the pod
// schedulable itself.
func (pl *DynamicMemory) PostFilter(_ context.Context, cs fwk.CycleState, pod *v1.Pod, _ fwk.NodeToStatusReader) (*fwk.PostFilterResult, *fwk.Status) {
	if s := lookupState(cs); s != nil {
		s.mu.Lock()
		rejected := s.capacityRejected
		s.mu.Unlock()
		if rejected {
			pl.rejected.add(pod, newDemandBytes(s.demands), s.view)
		}
	}
	return nil, fwk.NewStatus(fwk.Unschedulable)
}
