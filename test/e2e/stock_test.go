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

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
	schedconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
)

// TestStockScheduler runs the demo's scenario with the stock kube-scheduler
// (compatibility mode): the DRA plugins publish devices with the binding condition
// Online, the stock scheduler allocates the claims with DynamicResources alone and
// waits in PreBind, and the memory service provisions each claim allocated without a
// reservation. Every pod that fits runs with its memory online on its node, and was
// bound only once its memory was online; the oversize pod stays Pending, never
// bound, with no memory held for it; a monitor checks that no pool is ever
// over-committed; once the pods are deleted every pool is whole again.
func TestStockScheduler(t *testing.T) {
	sys := startSystem(t, 200*time.Millisecond, system.SchedulerStock)
	runScenarioBoundAfterOnline(t, sys, "stock", "")
}

// TestDefaultSchedulerProfile runs the same scenario with this project's scheduler,
// every pod naming default-scheduler (as a pod that names no scheduler does): that
// profile runs the DynamicMemory plugin too, with the same outcome.
func TestDefaultSchedulerProfile(t *testing.T) {
	sys := startSystem(t, 200*time.Millisecond, system.SchedulerDynamicMemory)
	runScenarioBoundAfterOnline(t, sys, "default-profile", schedconfig.DefaultProfile)
}

// runScenarioBoundAfterOnline runs the demo's scenario in namespace, its pods naming
// scheduler (empty: the system's), and checks that every pod that fits runs with its
// memory online and was bound after it was, that the oversize pod stays Pending with
// nothing held, that no pool was ever over-committed, and that the pools are whole
// once the pods are deleted.
func runScenarioBoundAfterOnline(t *testing.T, sys *system.System, namespace, scheduler string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mon := sys.StartMonitor(ctx)

	sc := system.DefaultScenario(namespace)
	for i := range sc.Fitting {
		sc.Fitting[i].SchedulerName = scheduler
	}
	sc.Oversize.SchedulerName = scheduler
	require.NoError(t, sys.CreateWorkloads(ctx, sc.Namespace, sc.Fitting, nil))
	require.NoError(t, sys.WaitRunning(ctx, sc.Namespace, system.Names(sc.Fitting), runTimeout))
	assertPlaced(ctx, t, sys, sc.Namespace, sc.Fitting)
	assertBoundAfterOnline(ctx, t, sys, sc.Namespace, len(sc.Fitting))

	require.NoError(t, sys.CreateWorkloads(ctx, sc.Namespace, []system.Workload{sc.Oversize}, nil))
	reason, err := sys.WaitUnschedulable(ctx, sc.Namespace, sc.Oversize.Name, pendingTimeout)
	require.NoError(t, err)
	t.Logf("the oversize pod is Pending: %s", reason)
	pending, err := sys.Placements(ctx, sc.Namespace, []string{sc.Oversize.Name})
	require.NoError(t, err)
	assert.Equal(t, corev1.PodPending, pending[0].Phase)
	assert.Empty(t, pending[0].Node, "the oversize pod is not bound")
	assert.Empty(t, pending[0].MemoryPhase, "no memory is held for the oversize pod")

	deleteAndCheckReturned(ctx, t, sys, sc.Namespace, append(system.Names(sc.Fitting), sc.Oversize.Name))
	violations, _, _ := mon.Stop()
	assert.Empty(t, violations, "no pool was over-committed")
}

// TestBothSchedulers runs this project's scheduler and the stock kube-scheduler side
// by side (system.SchedulerBoth), placing pods into the same pools at the same time,
// with more pods than the pools hold: half name dynamic-memory-scheduler, half the
// stock scheduler's profile. No pool is ever over-committed; the pools fill up; every
// pod that runs has its memory online on its node and was bound after it was; the
// others stay Pending and unbound. Which scheduler wins the race is not up to the
// test (ours reserves in Reserve, the stock one is refused after its allocation and
// tries again), so then this scheduler's pods are deleted and the stock scheduler's
// pods that lost take the capacity freed; once all are deleted, the pools are whole.
func TestBothSchedulers(t *testing.T) {
	runBothSchedulers(t, startSystem(t, 200*time.Millisecond, system.SchedulerBoth))
}

// TestBothSchedulersOnOneSharedPool runs the same with one pool shared by every node
// beyond its capacity: each node is attached to that pool alone, so its DRA device
// keeps an offer up to twice the node's free share (draplugin: written again only when
// off by 2x). What the stock scheduler's allocator takes beyond the memory service's
// figures is refused and tried again; the pool still fills, never over-committed.
func TestBothSchedulersOnOneSharedPool(t *testing.T) {
	runBothSchedulers(t, startSystemWithPools(t, system.SchedulerBoth, func(nodes []string) []v1alpha1.DynamicMemoryPool {
		return system.NewPools([]system.PoolSpec{{Name: system.PoolB, Capacity: "76Gi", HostWindow: "64Gi", LatencyClass: "medium"}}, nodes, 200*time.Millisecond)
	}))
}

// runBothSchedulers fills the system's pools with more pods of 8Gi than they hold,
// half of them for each scheduler, and checks the outcome.
func runBothSchedulers(t *testing.T, sys *system.System) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mon := sys.StartMonitor(ctx)

	const namespace, podGiB = "both", 8
	var capacity int64
	for _, p := range sys.Pools {
		capacity += p.Spec.Capacity.Value()
	}
	fit := int(capacity / (podGiB << 30))
	var ws, ours, stock []system.Workload
	for i := range fit + 8 {
		w := system.NewWorkload(fmt.Sprintf("pod-%02d", i), podGiB)
		w.SchedulerName = []string{system.SchedulerName, system.StockProfile}[i%2]
		ws = append(ws, w)
		if w.SchedulerName == system.SchedulerName {
			ours = append(ours, w)
		} else {
			stock = append(stock, w)
		}
	}
	require.NoError(t, sys.CreateWorkloads(ctx, namespace, ws, nil))

	ran := waitRunning(ctx, t, sys, namespace, ws, fit)
	t.Logf("pods running by scheduler: %v", ran)
	assertBoundAfterOnline(ctx, t, sys, namespace, fit)

	require.NoError(t, sys.DeleteWorkloads(ctx, namespace, system.Names(ours)))
	ran = waitRunning(ctx, t, sys, namespace, stock, min(fit, len(stock)))
	t.Logf("after this scheduler's pods were deleted, pods running by scheduler: %v", ran)
	assert.Equal(t, min(fit, len(stock)), ran[system.StockProfile], "the stock scheduler's pods take the capacity freed")

	deleteAndCheckReturned(ctx, t, sys, namespace, system.Names(stock))
	violations, _, _ := mon.Stop()
	assert.Empty(t, violations, "no pool was over-committed")
}

// waitRunning waits until want pods of ws run and checks them: each runs with its
// memory online on its node and its claim allocated there; the others are not bound.
// It returns the pods running by scheduler.
func waitRunning(ctx context.Context, t *testing.T, sys *system.System, namespace string, ws []system.Workload, want int) map[string]int {
	t.Helper()
	var placements []system.Placement
	running := 0
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, runTimeout, true, func(ctx context.Context) (bool, error) {
		var err error
		if placements, err = sys.Placements(ctx, namespace, system.Names(ws)); err != nil {
			return false, nil
		}
		running = 0
		for _, p := range placements {
			if p.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == want, nil
	})
	require.NoError(t, err, "%d of %d pods running, %d expected", running, len(ws), want)
	ran := map[string]int{}
	for i, p := range placements {
		if p.Phase != corev1.PodRunning {
			assert.Empty(t, p.Node, "pod %s is not running: it is not bound", p.Pod)
			continue
		}
		ran[ws[i].SchedulerName]++
		assert.Equal(t, v1alpha1.PhaseOnline, p.MemoryPhase, "pod %s runs with its memory online", p.Pod)
		assert.Equal(t, p.Node, p.MemoryNode, "the memory of pod %s is on its node", p.Pod)
		assert.Equal(t, p.Node, p.AllocatedNode, "the claim of pod %s is allocated on its node", p.Pod)
	}
	return ran
}

// assertBoundAfterOnline checks that the namespace has want DynamicMemoryClaims, each
// online, and that each one's pod was bound no earlier than its memory was online.
func assertBoundAfterOnline(ctx context.Context, t *testing.T, sys *system.System, namespace string, want int) {
	t.Helper()
	claims, err := sys.ListClaims(ctx, namespace)
	require.NoError(t, err)
	pods, err := sys.Cluster.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	boundAt := map[string]time.Time{}
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue {
				boundAt[p.Name] = c.LastTransitionTime.Time
			}
		}
	}
	require.Len(t, claims, want)
	for _, c := range claims {
		require.NotNil(t, c.Spec.PodRef, "claim %s names its pod", c.Name)
		require.NotNil(t, c.Status.OnlineAt, "claim %s is online", c.Name)
		bound, ok := boundAt[c.Spec.PodRef.Name]
		require.True(t, ok, "pod %s is bound", c.Spec.PodRef.Name)
		// Both times are in whole seconds.
		assert.False(t, bound.Before(c.Status.OnlineAt.Truncate(time.Second)),
			"pod %s was bound at %s, before its memory was online at %s", c.Spec.PodRef.Name, bound, c.Status.OnlineAt)
	}
}
