package dynamicmemory

import (
	"sync"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// waitingPods are pods the plugin rejected for lack of pool capacity or of the pool
// cache. When the cache sees capacity come back it moves them to the active queue
// (PodActivator), so they do not wait for an unrelated cluster event or a timer.
type waitingPods struct {
	handle fwk.Handle

	mu   sync.Mutex
	pods map[types.UID]waitingPod
}

type waitingPod struct {
	pod *v1.Pod
	// need is the smallest new demand of the pod (0: any change may help).
	need int64
}

func newWaitingPods(h fwk.Handle) *waitingPods {
	return &waitingPods{handle: h, pods: map[types.UID]waitingPod{}}
}

func (w *waitingPods) add(pod *v1.Pod, need int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pods[pod.UID] = waitingPod{pod: pod, need: need}
}

func (w *waitingPods) remove(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pods, uid)
}

func (w *waitingPods) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pods)
}

// activate moves the waiting pods that the view may now admit to the active queue.
// Pods that were deleted or bound meanwhile are forgotten.
func (w *waitingPods) activate(logger klog.Logger, v *cacheView) {
	if !v.connected {
		return
	}
	lister := w.handle.SharedInformerFactory().Core().V1().Pods().Lister()
	free := v.maxFree()
	ready := map[string]*v1.Pod{}
	w.mu.Lock()
	for uid, wp := range w.pods {
		current, err := lister.Pods(wp.pod.Namespace).Get(wp.pod.Name)
		if apierrors.IsNotFound(err) || (err == nil && (current.UID != uid || current.Spec.NodeName != "")) {
			delete(w.pods, uid)
			continue
		}
		if wp.need <= free {
			ready[wp.pod.Namespace+"/"+wp.pod.Name] = wp.pod
		}
	}
	w.mu.Unlock()
	if len(ready) > 0 {
		logger.V(3).Info("Pool capacity freed, activating waiting pods", "pods", len(ready), "maxFree", formatBytes(free))
		w.handle.Activate(logger, ready)
	}
}
