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
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

var _ fwk.SignPlugin = (*DynamicMemory)(nil)

// SignPod lets the scheduler batch pods without claims (opportunistic batching,
// KEP-5598): the plugin skips them, so they need no fragment of their own. A profile
// with a Filter or Score plugin that cannot sign batches no pod at all. Pods with
// claims are not signed: their placement depends on the pool state of each cycle.
func (pl *DynamicMemory) SignPod(_ context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	if len(pod.Spec.ResourceClaims) > 0 {
		return nil, fwk.NewStatus(fwk.Unschedulable, "pods with resource claims are not signable")
	}
	return nil, nil
}

// PreFilter finds the pod's requests for dynamic memory. Pods without any are
// skipped by every other extension point of the plugin. While the pool cache is not
// connected to the memory service the pod is rejected: the plugin never guesses.
// Claims allocated before this cycle pin the pod to their node.
func (pl *DynamicMemory) PreFilter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, _ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	if len(pod.Spec.ResourceClaims) == 0 {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	demands, status := podDemands(pl.handle.SharedDRAManager().ResourceClaims(), pod)
	if status != nil {
		return nil, status
	}
	if len(demands) == 0 {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	logger := klog.FromContext(ctx)
	view := pl.cache.view()
	if !view.connected {
		pl.rejected.add(pod, 0, nil)
		msg := "the scheduler has no pool state from the memory service"
		if view.lastErr != nil {
			msg += " (" + view.lastErr.Error() + ")"
		}
		logger.V(4).Info("Rejecting pod: pool cache not connected", "pod", klog.KObj(pod), "err", view.lastErr)
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, msg+"; dynamic-memory pods wait until it is back")
	}
	if msg := view.unservable(demands); msg != "" {
		pl.rejected.add(pod, newDemandBytes(demands), view)
		logger.V(4).Info("Rejecting pod: no pool can serve it", "pod", klog.KObj(pod), "reason", msg)
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, msg)
	}
	nodes := sets.New[string]()
	for _, d := range demands {
		if d.allocated && d.node != "" {
			nodes.Insert(d.node)
		}
	}
	if nodes.Len() > 1 {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable,
			fmt.Sprintf("the pod's dynamic memory claims are allocated on different nodes %v", sets.List(nodes)))
	}
	cs.Write(stateKey, &stateData{demands: demands, view: view})
	if nodes.Len() == 1 {
		return &fwk.PreFilterResult{NodeNames: nodes}, nil
	}
	return nil, nil
}

// PreFilterExtensions returns nil: the plugin's decisions do not depend on other pods.
func (pl *DynamicMemory) PreFilterExtensions() fwk.PreFilterExtensions { return nil }

// newDemandBytes is the smallest request among the demands not allocated yet.
func newDemandBytes(demands []demand) int64 {
	var least int64
	for _, d := range demands {
		if !d.allocated && (least == 0 || d.bytes < least) {
			least = d.bytes
		}
	}
	return least
}
