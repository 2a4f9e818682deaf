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
	"sync"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// rejectedPods are pods the plugin rejected for lack of pool capacity or of the pool
// cache. When the cache sees capacity come back it moves them to the active queue
// (PodActivator), so they do not wait for an unrelated cluster event or a timer.
// PreFilter, PostFilter and a refused reservation add pods; Reserve forgets them.
type rejectedPods struct {
	handle fwk.Handle

	mu   sync.Mutex
	pods map[types.UID]rejectedPod
}

type rejectedPod struct {
	pod *v1.Pod
	// need is the smallest new demand of the pod (0: any change may help).
	need int64
	// agents is how many nodes had their agent connected when the pod was turned
	// down: more later may change the verdict (or at least its reason).
	agents int
}

func newRejectedPods(h fwk.Handle) *rejectedPods {
	return &rejectedPods{handle: h, pods: map[types.UID]rejectedPod{}}
}

// add lists a pod turned down for view (nil: with no pool state at all).
func (r *rejectedPods) add(pod *v1.Pod, need int64, v *cacheView) {
	agents := 0
	if v != nil {
		agents = v.connectedAgents()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pods[pod.UID] = rejectedPod{pod: pod, need: need, agents: agents}
}

func (r *rejectedPods) forget(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pods, uid)
}

func (r *rejectedPods) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pods)
}

// retry moves a rejected pod to the active queue if it is still rejected and
// pending.
func (r *rejectedPods) retry(logger klog.Logger, pod *v1.Pod) {
	r.mu.Lock()
	_, listed := r.pods[pod.UID]
	r.mu.Unlock()
	if !listed {
		return // scheduled again meanwhile, or activated
	}
	current, err := r.handle.SharedInformerFactory().Core().V1().Pods().Lister().Pods(pod.Namespace).Get(pod.Name)
	if err != nil || current.UID != pod.UID || current.Spec.NodeName != "" {
		r.forget(pod.UID)
		return
	}
	logger.V(3).Info("Trying a pod again that a pool view behind the memory service's turned down", "pod", klog.KObj(pod))
	r.handle.Activate(logger, map[string]*v1.Pod{pod.Namespace + "/" + pod.Name: pod})
}

// activate moves the rejected pods that the view may now admit to the active queue:
// those it has the capacity for, and those turned down while fewer nodes had their
// agent connected. Pods that were deleted or bound meanwhile are forgotten.
func (r *rejectedPods) activate(logger klog.Logger, v *cacheView) {
	if !v.connected {
		return
	}
	lister := r.handle.SharedInformerFactory().Core().V1().Pods().Lister()
	free, agents := v.maxFree(), v.connectedAgents()
	ready := map[string]*v1.Pod{}
	r.mu.Lock()
	for uid, rp := range r.pods {
		current, err := lister.Pods(rp.pod.Namespace).Get(rp.pod.Name)
		if apierrors.IsNotFound(err) || (err == nil && (current.UID != uid || current.Spec.NodeName != "")) {
			delete(r.pods, uid)
			continue
		}
		if rp.need <= free || agents > rp.agents {
			ready[rp.pod.Namespace+"/"+rp.pod.Name] = rp.pod
		}
	}
	r.mu.Unlock()
	if len(ready) > 0 {
		logger.V(3).Info("Pool capacity freed or agents connected, activating rejected pods", "pods", len(ready), "maxFree", formatBytes(free), "agentsConnected", agents)
		r.handle.Activate(logger, ready)
	}
}
