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
}

func newRejectedPods(h fwk.Handle) *rejectedPods {
	return &rejectedPods{handle: h, pods: map[types.UID]rejectedPod{}}
}

func (r *rejectedPods) add(pod *v1.Pod, need int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pods[pod.UID] = rejectedPod{pod: pod, need: need}
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

// activate moves the rejected pods that the view may now admit to the active queue.
// Pods that were deleted or bound meanwhile are forgotten.
func (r *rejectedPods) activate(logger klog.Logger, v *cacheView) {
	if !v.connected {
		return
	}
	lister := r.handle.SharedInformerFactory().Core().V1().Pods().Lister()
	free := v.maxFree()
	ready := map[string]*v1.Pod{}
	r.mu.Lock()
	for uid, rp := range r.pods {
		current, err := lister.Pods(rp.pod.Namespace).Get(rp.pod.Name)
		if apierrors.IsNotFound(err) || (err == nil && (current.UID != uid || current.Spec.NodeName != "")) {
			delete(r.pods, uid)
			continue
		}
		if rp.need <= free {
			ready[rp.pod.Namespace+"/"+rp.pod.Name] = rp.pod
		}
	}
	r.mu.Unlock()
	if len(ready) > 0 {
		logger.V(3).Info("Pool capacity freed, activating rejected pods", "pods", len(ready), "maxFree", formatBytes(free))
		r.handle.Activate(logger, ready)
	}
}
