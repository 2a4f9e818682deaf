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
// window has room, the pool is ready and the node's agent is connected.
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
		pl.waiting.add(pod, newDemandBytes(s.demands))
		klog.FromContext(ctx).V(5).Info("Node cannot get the pod's dynamic memory", "pod", klog.KObj(pod), "node", node, "reason", status.Message())
		return status
	}
	return nil
}
