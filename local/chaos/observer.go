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

package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// observer records, from watches of a run's namespace, when each pod was first seen
// bound and when it started going away, and which pod each ResourceClaim belongs to:
// what the journal check needs to tell whether memory was offlined under a running
// pod. Deletions the run makes itself are recorded before the request is sent, so a
// pod counts as going away from the earliest moment it could.
type observer struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	boundAt   map[types.UID]time.Time
	deletedAt map[types.UID]time.Time
	podOf     map[types.UID]types.UID // ResourceClaim UID -> pod UID
	podName   map[types.UID]string
}

func observe(ctx context.Context, kube kubernetes.Interface, namespace string) (*observer, error) {
	ctx, cancel := context.WithCancel(ctx)
	o := &observer{
		cancel:    cancel,
		done:      make(chan struct{}),
		boundAt:   map[types.UID]time.Time{},
		deletedAt: map[types.UID]time.Time{},
		podOf:     map[types.UID]types.UID{},
		podName:   map[types.UID]string{},
	}
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace))
	pods := factory.Core().V1().Pods().Informer()
	claims := factory.Resource().V1().ResourceClaims().Informer()
	podHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.sawPod(obj) },
		UpdateFunc: func(_, obj any) { o.sawPod(obj) },
	}
	claimHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.sawClaim(obj) },
		UpdateFunc: func(_, obj any) { o.sawClaim(obj) },
	}
	if _, err := pods.AddEventHandler(podHandler); err != nil {
		cancel()
		return nil, fmt.Errorf("watch pods: %w", err)
	}
	if _, err := claims.AddEventHandler(claimHandler); err != nil {
		cancel()
		return nil, fmt.Errorf("watch ResourceClaims: %w", err)
	}
	factory.Start(ctx.Done())
	for typ, synced := range factory.WaitForCacheSync(ctx.Done()) {
		if !synced {
			cancel()
			return nil, fmt.Errorf("watch %v in %s: cache not synced", typ, namespace)
		}
	}
	go func() {
		<-ctx.Done()
		factory.Shutdown()
		close(o.done)
	}()
	return o, nil
}

func (o *observer) stop() {
	o.cancel()
	<-o.done
}

func (o *observer) sawPod(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.podName[pod.UID] = pod.Name
	if _, seen := o.boundAt[pod.UID]; !seen && pod.Spec.NodeName != "" {
		o.boundAt[pod.UID] = now
	}
	if _, seen := o.deletedAt[pod.UID]; !seen && pod.DeletionTimestamp != nil {
		o.deletedAt[pod.UID] = now
	}
}

func (o *observer) sawClaim(obj any) {
	claim, ok := obj.(*resourcev1.ResourceClaim)
	if !ok {
		return
	}
	for _, ref := range claim.OwnerReferences {
		if ref.Kind == "Pod" && ref.Controller != nil && *ref.Controller {
			o.mu.Lock()
			o.podOf[claim.UID] = ref.UID
			o.mu.Unlock()
		}
	}
}

// deleting records that the run is about to delete (or evict) the pod.
func (o *observer) deleting(pod types.UID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, seen := o.deletedAt[pod]; !seen {
		o.deletedAt[pod] = time.Now()
	}
}

// runningAt tells whether the pod of a claim was bound and not going away at t, and
// names it.
func (o *observer) runningAt(claim types.UID, t time.Time) (pod string, running bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	uid, ok := o.podOf[claim]
	if !ok {
		return "", false
	}
	bound, isBound := o.boundAt[uid]
	deleted, isDeleted := o.deletedAt[uid]
	return o.podName[uid], isBound && bound.Before(t) && (!isDeleted || deleted.After(t))
}
