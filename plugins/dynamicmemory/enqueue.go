package dynamicmemory

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/dynamic-resource-allocation/resourceclaim"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	v1alpha1 "github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// PoolEventResource names DynamicMemoryPool events for the scheduling queue
// ("<plural>.<version>.<group>": the scheduler watches it with a dynamic informer).
const PoolEventResource fwk.EventResource = "dynamicmemorypools." + "v1alpha1." + v1alpha1.GroupName

// EventsToRegister lists the events that may make a pod this plugin rejected
// schedulable. Besides these, the pool cache activates waiting pods itself when a
// pool snapshot from the memory service shows freed capacity.
func (pl *DynamicMemory) EventsToRegister(_ context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		// The memory service writes pool status (free capacity per node, Ready)
		// after reservations change.
		{Event: fwk.ClusterEvent{Resource: PoolEventResource, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: pl.isSchedulableAfterPoolChange},
		// A new node may be attached to a pool.
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add}},
		// A claim the pod waits for was created, or one of its claims was allocated
		// or deallocated.
		{Event: fwk.ClusterEvent{Resource: fwk.ResourceClaim, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: pl.isSchedulableAfterClaimChange},
	}, nil
}

// isSchedulableAfterPoolChange queues the pod when some node's free share of the
// pool grew to at least the pod's smallest new demand, or the pool became ready.
func (pl *DynamicMemory) isSchedulableAfterPoolChange(logger klog.Logger, pod *v1.Pod, oldObj, newObj interface{}) (fwk.QueueingHint, error) {
	newPool, ok := newObj.(*unstructured.Unstructured)
	if !ok {
		return fwk.Queue, fmt.Errorf("DynamicMemoryPool event carries %T", newObj)
	}
	var oldPool *unstructured.Unstructured
	if oldObj != nil {
		if oldPool, ok = oldObj.(*unstructured.Unstructured); !ok {
			return fwk.Queue, fmt.Errorf("DynamicMemoryPool event carries %T", oldObj)
		}
	}
	need := int64(0)
	if demands, status := podDemands(pl.handle.SharedDRAManager().ResourceClaims(), pod); status == nil {
		need = newDemandBytes(demands)
	}
	newFree, newReady := poolStatus(newPool)
	oldFree, oldReady := poolStatus(oldPool)
	if newReady && !oldReady {
		logger.V(5).Info("Pool became ready", "pod", klog.KObj(pod), "pool", newPool.GetName())
		return fwk.Queue, nil
	}
	for node, free := range newFree {
		if free > oldFree[node] && free >= need {
			logger.V(5).Info("Pool freed capacity for a node", "pod", klog.KObj(pod), "pool", newPool.GetName(), "node", node, "free", formatBytes(free))
			return fwk.Queue, nil
		}
	}
	return fwk.QueueSkip, nil
}

// poolStatus reads a DynamicMemoryPool's free bytes per node with a connected agent
// and its Ready condition from the unstructured object the dynamic informer gives.
func poolStatus(pool *unstructured.Unstructured) (map[string]int64, bool) {
	free := map[string]int64{}
	if pool == nil {
		return free, false
	}
	nodes, _, _ := unstructured.NestedSlice(pool.Object, "status", "nodes")
	for _, n := range nodes {
		m, ok := n.(map[string]interface{})
		if !ok {
			continue
		}
		name, _, _ := unstructured.NestedString(m, "name")
		s, _, _ := unstructured.NestedString(m, "free")
		connected, _, _ := unstructured.NestedBool(m, "agentConnected")
		q, err := resource.ParseQuantity(s)
		if name == "" || err != nil || !connected {
			continue
		}
		free[name] = q.Value()
	}
	ready := false
	conditions, _, _ := unstructured.NestedSlice(pool.Object, "status", "conditions")
	for _, c := range conditions {
		m, ok := c.(map[string]interface{})
		if ok && m["type"] == "Ready" && m["status"] == "True" {
			ready = true
		}
	}
	return free, ready
}

// isSchedulableAfterClaimChange queues the pod when the claim is one of its own.
func (pl *DynamicMemory) isSchedulableAfterClaimChange(logger klog.Logger, pod *v1.Pod, _, newObj interface{}) (fwk.QueueingHint, error) {
	claim, ok := newObj.(*resourceapi.ResourceClaim)
	if !ok {
		return fwk.Queue, fmt.Errorf("ResourceClaim event carries %T", newObj)
	}
	if claim.Namespace != pod.Namespace {
		return fwk.QueueSkip, nil
	}
	for _, owner := range claim.OwnerReferences {
		if owner.UID == pod.UID {
			logger.V(5).Info("Pod's generated claim changed", "pod", klog.KObj(pod), "claim", klog.KObj(claim))
			return fwk.Queue, nil
		}
	}
	for i := range pod.Spec.ResourceClaims {
		if name, _, err := resourceclaim.Name(pod, &pod.Spec.ResourceClaims[i]); err == nil && name != nil && *name == claim.Name {
			logger.V(5).Info("Pod's claim changed", "pod", klog.KObj(pod), "claim", klog.KObj(claim))
			return fwk.Queue, nil
		}
	}
	return fwk.QueueSkip, nil
}
