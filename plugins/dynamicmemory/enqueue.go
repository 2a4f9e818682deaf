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
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/dynamic-resource-allocation/resourceclaim"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	v1alpha1 "github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// PoolEventResource names DynamicMemoryPool events for the scheduling queue
// ("<plural>.<version>.<group>"). The framework watches a resource named so with its
// own dynamic informer, the only source of the queue's cluster events, and hands the
// queueing hint *unstructured.Unstructured objects: poolFromEvent turns them into
// typed DynamicMemoryPools.
const PoolEventResource fwk.EventResource = "dynamicmemorypools.v1alpha1." + v1alpha1.GroupName

// EventsToRegister lists the events that may make a pod this plugin rejected
// schedulable. Besides these, the pool cache activates rejected pods itself when a
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
	newPool, err := poolFromEvent(newObj)
	if err != nil {
		return fwk.Queue, err
	}
	var oldPool *v1alpha1.DynamicMemoryPool
	if oldObj != nil {
		if oldPool, err = poolFromEvent(oldObj); err != nil {
			return fwk.Queue, err
		}
	}
	need := int64(0)
	if demands, status := podDemands(pl.handle.SharedDRAManager().ResourceClaims(), pod); status == nil {
		need = newDemandBytes(demands)
	}
	newFree, newReady := poolStatus(newPool)
	oldFree, oldReady := poolStatus(oldPool)
	if newReady && !oldReady {
		logger.V(5).Info("Pool became ready", "pod", klog.KObj(pod), "pool", klog.KObj(newPool))
		return fwk.Queue, nil
	}
	for node, free := range newFree {
		if free > oldFree[node] && free >= need {
			logger.V(5).Info("Pool freed capacity for a node", "pod", klog.KObj(pod), "pool", klog.KObj(newPool), "node", node, "free", formatBytes(free))
			return fwk.Queue, nil
		}
	}
	return fwk.QueueSkip, nil
}

// poolFromEvent is the DynamicMemoryPool of a cluster event: typed, or converted
// from the unstructured object the framework's dynamic informer delivers.
func poolFromEvent(obj interface{}) (*v1alpha1.DynamicMemoryPool, error) {
	switch o := obj.(type) {
	case *v1alpha1.DynamicMemoryPool:
		return o, nil
	case *unstructured.Unstructured:
		pool := &v1alpha1.DynamicMemoryPool{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, pool); err != nil {
			return nil, fmt.Errorf("DynamicMemoryPool event: convert %s: %w", o.GetName(), err)
		}
		return pool, nil
	default:
		return nil, fmt.Errorf("DynamicMemoryPool event carries %T", obj)
	}
}

// poolStatus reads a DynamicMemoryPool's free bytes per node with a connected agent
// and its Ready condition.
func poolStatus(pool *v1alpha1.DynamicMemoryPool) (map[string]int64, bool) {
	free := map[string]int64{}
	if pool == nil {
		return free, false
	}
	for _, n := range pool.Status.Nodes {
		if n.Name != "" && n.AgentConnected {
			free[n.Name] = n.Free.Value()
		}
	}
	return free, meta.IsStatusConditionTrue(pool.Status.Conditions, v1alpha1.PoolConditionReady)
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
