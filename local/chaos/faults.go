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
	"strconv"
	"strings"
	"sync"

	policyv1 "k8s.io/api/policy/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

// Kinds of fault, as the report counts them. A component fault is counted as
// "<signal> <component kind>".
const (
	FaultPodDeleted       = "pod deleted"
	FaultNodeDrained      = "node drained"
	FaultPoolEditAllowed  = "pool edit (allowed)"
	FaultPoolEditRefused  = "pool edit (refused)"
	signalKill            = "SIGKILL"
	signalTerm            = "SIGTERM"
	editAttribute         = "chaos-edit"
	componentFaultPercent = 60
)

// injectFaults injects between min and max faults (component faults only when
// onlyComponents), a random moment apart; it returns once every component it stopped
// has been started again and every node it cordoned is schedulable again.
func (r *run) injectFaults(ctx context.Context, min, max int, onlyComponents bool) {
	var later sync.WaitGroup
	defer later.Wait()
	n := min + r.rng.IntN(max-min+1)
	for range n {
		if !sleep(ctx, r.duration(maxFaultGap)) {
			return
		}
		p := r.rng.IntN(100)
		if onlyComponents {
			p = 0
		}
		switch {
		case p < componentFaultPercent:
			r.componentFault(ctx, &later)
		case p < 75:
			r.deletePod(ctx)
		case p < 85:
			r.drainNode(ctx, &later)
		case p < 92:
			r.editPool(ctx)
		default:
			r.refusedPoolEdit(ctx)
		}
	}
}

// componentFault stops a component with SIGKILL or SIGTERM and starts it again a
// random moment later: the memory service, the scheduler, or a random node's agent
// or DRA plugin, each kind as likely. A component already down is left alone.
func (r *run) componentFault(ctx context.Context, later *sync.WaitGroup) {
	nodes := r.sys.Cluster.Nodes()
	node := nodes[r.rng.IntN(len(nodes))]
	name := []string{system.Memservice, system.Scheduler, system.AgentName(node), system.PluginName(node)}[r.rng.IntN(4)]
	signal := signalKill
	if r.rng.IntN(2) == 1 {
		signal = signalTerm
	}
	delay := r.duration(maxRestartDelay)
	r.mu.Lock()
	down := r.down[name]
	r.down[name] = true
	r.mu.Unlock()
	if down {
		return
	}
	logger := klog.FromContext(ctx)
	logger.Info("Chaos: stopping a component", "component", name, "signal", signal, "restartAfter", delay)
	stop := r.sys.Kill
	if signal == signalTerm {
		stop = r.sys.Terminate
	}
	if err := stop(name); err != nil {
		r.fail("%s %s: %v", signal, name, err)
	}
	r.count(r.faults, signal+" "+componentKind(r.sys, name), 1)
	later.Go(func() {
		sleep(ctx, delay)
		if err := r.sys.StartComponent(ctx, name); err != nil {
			r.fail("start %s again after %s: %v", name, signal, err)
		}
		r.mu.Lock()
		delete(r.down, name)
		r.mu.Unlock()
	})
}

// componentKind names the kind of a component process (a node's agent and plugin
// are counted together over the nodes).
func componentKind(sys *system.System, name string) string {
	for _, node := range sys.Cluster.Nodes() {
		switch name {
		case system.AgentName(node):
			return "node agent"
		case system.PluginName(node):
			return "DRA plugin"
		}
	}
	switch name {
	case system.Memservice:
		return "memory service"
	case system.Scheduler:
		return "scheduler"
	}
	return name
}

// deletePod deletes a random pod the run created and has not deleted.
func (r *run) deletePod(ctx context.Context) {
	r.mu.Lock()
	var live []string
	for _, name := range r.created {
		if !r.deleted[name] {
			live = append(live, name)
		}
	}
	r.mu.Unlock()
	if len(live) == 0 {
		return
	}
	name := live[r.rng.IntN(len(live))]
	pod, err := r.sys.Kube().CoreV1().Pods(r.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		r.fail("get pod %s to delete it: %v", name, err)
		return
	}
	r.markDeleted(name, pod.UID)
	klog.FromContext(ctx).Info("Chaos: deleting a pod", "pod", name, "node", pod.Spec.NodeName)
	err = r.sys.Kube().CoreV1().Pods(r.ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
	if err != nil && !apierrors.IsNotFound(err) {
		r.fail("delete pod %s: %v", name, err)
		return
	}
	r.count(r.faults, FaultPodDeleted, 1)
}

func (r *run) markDeleted(name string, uid types.UID) {
	r.obs.deleting(uid)
	r.mu.Lock()
	r.deleted[name] = true
	r.mu.Unlock()
}

// drainNode cordons a random node, evicts the run's pods on it, and makes it
// schedulable again a random moment later.
func (r *run) drainNode(ctx context.Context, later *sync.WaitGroup) {
	nodes := r.sys.Cluster.Nodes()
	node := nodes[r.rng.IntN(len(nodes))]
	delay := r.duration(maxUncordonDelay)
	if err := r.cordon(ctx, node, true); err != nil {
		r.fail("%v", err)
		return
	}
	klog.FromContext(ctx).Info("Chaos: draining a node", "node", node, "uncordonAfter", delay)
	pods, err := r.sys.Kube().CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		r.fail("list the pods of node %s: %v", node, err)
	}
	if pods != nil {
		for _, p := range pods.Items {
			r.markDeleted(p.Name, p.UID)
			eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}}
			if err := r.sys.Kube().CoreV1().Pods(r.ns).EvictV1(ctx, eviction); err != nil && !apierrors.IsNotFound(err) {
				r.fail("evict pod %s from node %s: %v", p.Name, node, err)
			}
		}
	}
	r.count(r.faults, FaultNodeDrained, 1)
	later.Go(func() {
		sleep(ctx, delay)
		if err := r.cordon(context.WithoutCancel(ctx), node, false); err != nil {
			r.fail("%v", err)
		}
	})
}

func (r *run) cordon(ctx context.Context, node string, unschedulable bool) error {
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, unschedulable)
	if _, err := r.sys.Kube().CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("set node %s unschedulable=%t: %w", node, unschedulable, err)
	}
	return nil
}

// editPool makes an edit a pool always allows: an attribute of its devices.
func (r *run) editPool(ctx context.Context) {
	name := r.sys.Pools[r.rng.IntN(len(r.sys.Pools))].Name
	value := strconv.Itoa(r.rng.IntN(1000))
	pools := r.sys.DynamicMemory().DynamicMemoryV1alpha1().DynamicMemoryPools()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pool, err := pools.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		r.mu.Lock()
		if _, saved := r.attributes[name]; !saved {
			r.attributes[name] = pool.Spec.Attributes
		}
		r.mu.Unlock()
		pool.Spec.Attributes = copyWith(pool.Spec.Attributes, editAttribute, value)
		_, err = pools.Update(ctx, pool, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		r.fail("allowed edit of pool %s (attribute %s=%s) failed: %v", name, editAttribute, value, err)
		return
	}
	r.count(r.faults, FaultPoolEditAllowed, 1)
}

func copyWith(m map[string]string, key, value string) map[string]string {
	out := map[string]string{key: value}
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

// refusedPoolEdit tries an edit that would strand the memory a pool holds — a new
// block size, or a capacity below what it holds — and checks that the API server
// refuses it and the pool is unchanged. A pool that holds nothing is left alone (the
// edit would be allowed, and rightly).
func (r *run) refusedPoolEdit(ctx context.Context) {
	name := r.sys.Pools[r.rng.IntN(len(r.sys.Pools))].Name
	changeBlockSize := r.rng.IntN(2) == 0
	pools := r.sys.DynamicMemory().DynamicMemoryV1alpha1().DynamicMemoryPools()
	pool, err := pools.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		r.fail("get pool %s: %v", name, err)
		return
	}
	reserved := pool.Status.Reserved
	if reserved == nil || reserved.Cmp(pool.Spec.BlockSize) <= 0 {
		return
	}
	edited := pool.DeepCopy()
	what := ""
	if changeBlockSize {
		edited.Spec.BlockSize = *resource.NewQuantity(2*pool.Spec.BlockSize.Value(), resource.BinarySI)
		what = "blockSize " + edited.Spec.BlockSize.String()
	} else {
		edited.Spec.Capacity = pool.Spec.BlockSize.DeepCopy()
		what = "capacity " + edited.Spec.Capacity.String()
	}
	// The update names the resourceVersion read, so the API server judges it
	// against the status read: it holds memory.
	_, err = pools.Update(ctx, edited, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err):
		return // the pool changed meanwhile; the edit was not judged
	case err == nil:
		r.fail("pool %s holding %s accepted the edit %s", name, reserved.String(), what)
		if _, err := pools.Update(ctx, withSpec(edited, pool.Spec), metav1.UpdateOptions{}); err != nil {
			r.fail("restore pool %s: %v", name, err)
		}
		return
	case !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "status.reserved"):
		r.fail("edit %s of pool %s holding %s: want a refusal naming status.reserved, got %v", what, name, reserved.String(), err)
		return
	}
	after, err := pools.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		r.fail("get pool %s: %v", name, err)
		return
	}
	if !apiequality.Semantic.DeepEqual(after.Spec, pool.Spec) {
		r.fail("pool %s changed although the edit %s was refused", name, what)
	}
	r.count(r.faults, FaultPoolEditRefused, 1)
	r.count(r.checks, CheckRefusedEdit, 1)
}

func withSpec(pool *v1alpha1.DynamicMemoryPool, spec v1alpha1.DynamicMemoryPoolSpec) *v1alpha1.DynamicMemoryPool {
	out := pool.DeepCopy()
	out.Spec = spec
	return out
}

// restorePools puts back the attributes the run edited.
func (r *run) restorePools(ctx context.Context) {
	pools := r.sys.DynamicMemory().DynamicMemoryV1alpha1().DynamicMemoryPools()
	for name, attrs := range r.attributes {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			pool, err := pools.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			pool.Spec.Attributes = attrs
			_, err = pools.Update(ctx, pool, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			r.fail("restore the attributes of pool %s: %v", name, err)
		}
	}
}
