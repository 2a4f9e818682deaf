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
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

// Timeouts of the scenario's waits: generous, the machine may be busy compiling.
const (
	runTimeout     = 3 * time.Minute
	pendingTimeout = time.Minute
	returnTimeout  = 2 * time.Minute
)

// logLines is how much of each component's log a failed test prints.
const logLines = 40

// startSystem starts the whole system (local cluster, memory service, scheduler, a
// node agent and DRA plugin per node) as `make demo` does, with the demo's pools whose
// simulated devices take addLatency to add extents, and the given scheduler
// (system.Options.Scheduler). It is stopped when the test ends.
func startSystem(t *testing.T, addLatency time.Duration, scheduler string) *system.System {
	t.Helper()
	return startSystemWithPools(t, scheduler, func(nodes []string) []v1alpha1.DynamicMemoryPool {
		return system.DefaultPools(nodes, addLatency)
	})
}

// startSystemWithPools starts a system of four nodes whose pools pools gives for the
// nodes' names.
func startSystemWithPools(t *testing.T, scheduler string, pools func(nodes []string) []v1alpha1.DynamicMemoryPool) *system.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), 5*time.Minute)
	defer cancel()
	nodes := make([]string, 4)
	for i := range nodes {
		nodes[i] = cluster.NodeName(cluster.DefaultNodePrefix, i)
	}
	// E2E_RUN_DIR keeps the run directory (component logs) for a look afterwards.
	dir := os.Getenv("E2E_RUN_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	sys, err := system.Start(ctx, system.Options{
		Dir:       dir,
		Nodes:     len(nodes),
		Pools:     pools(nodes),
		Progress:  system.NewProgress(&testWriter{t: t}, clock.RealClock{}),
		Scheduler: scheduler,
	})
	require.NoError(t, err, "start the system")
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range sys.Cluster.Processes() {
				t.Logf("---- last %d lines of %s ----\n%s", logLines, p.LogFile, p.LogTail(logLines))
			}
		}
		assert.NoError(t, sys.Stop(), "stop the system")
	})
	return sys
}

// TestScenario runs the demo's scenario on the whole system and asserts its outcome:
// every pod that fits runs with its memory online on its node, the oversize pod is
// Pending with a reason naming the pool and the numbers, and once the pods are
// deleted every pool is whole again with no DynamicMemoryClaim left. Then the faults:
// each component killed in the middle of the work, and bad input. A monitor checks
// throughout that no pool is ever over-committed.
func TestScenario(t *testing.T) {
	sys := startSystem(t, 200*time.Millisecond, system.SchedulerDynamicMemory)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	mon := sys.StartMonitor(ctx)
	// The cases share the system and each ends at quiescence; once one fails the
	// state is unknown, so the rest are skipped rather than failed for its reason.
	clean := true
	step := func(name string, f func(t *testing.T)) {
		clean = t.Run(name, func(t *testing.T) {
			if !clean {
				t.Skip("an earlier case left the system unclean")
			}
			f(t)
		}) && clean
	}

	step("demo scenario", func(t *testing.T) {
		sc := system.DefaultScenario("scenario")
		require.NoError(t, sys.CreateWorkloads(ctx, sc.Namespace, sc.Fitting, nil))
		require.NoError(t, sys.WaitRunning(ctx, sc.Namespace, system.Names(sc.Fitting), runTimeout))
		assertPlaced(ctx, t, sys, sc.Namespace, sc.Fitting)

		require.NoError(t, sys.CreateWorkloads(ctx, sc.Namespace, []system.Workload{sc.Oversize}, nil))
		reason, err := sys.WaitUnschedulable(ctx, sc.Namespace, sc.Oversize.Name, pendingTimeout)
		require.NoError(t, err)
		assert.Regexp(t, regexp.MustCompile(`no dynamic memory pool can serve claim scenario/too-big-48gi-memory-\w+, which needs 48Gi`), reason)
		assert.Regexp(t, regexp.MustCompile(`pool `+system.PoolA+` gives a node at most 32Gi`), reason)
		assert.Regexp(t, regexp.MustCompile(`pool `+system.PoolB+` has 24Gi free`), reason)
		pending, err := sys.Placements(ctx, sc.Namespace, []string{sc.Oversize.Name})
		require.NoError(t, err)
		assert.Equal(t, corev1.PodPending, pending[0].Phase)
		assert.Empty(t, pending[0].AllocatedNode, "the oversize pod's claim is not allocated")
		assert.Empty(t, pending[0].MemoryPhase, "no DynamicMemoryClaim for the oversize pod")

		deleteAndCheckReturned(ctx, t, sys, sc.Namespace, append(system.Names(sc.Fitting), sc.Oversize.Name))
	})

	step("every component's metrics are read with the metrics reader's token", func(t *testing.T) {
		// Over HTTPS with a token the API server lets get /metrics (the local cluster's
		// ServiceAccount bound to dynamic-memory:metrics-reader), as Prometheus reads them.
		for _, name := range sys.Components() {
			text, err := sys.Metrics(ctx, name)
			if assert.NoError(t, err, name) {
				assert.Contains(t, text, "# TYPE dynamic_memory_", "%s serves the project's metrics", name)
			}
		}
	})

	step("memory service killed while provisioning", func(t *testing.T) {
		ws := workloads("memservice-", 12, 4)
		require.NoError(t, sys.CreateWorkloads(ctx, "fault-memservice", ws, nil))
		waitClaimPhase(ctx, t, sys, "fault-memservice", v1alpha1.PhaseProvisioning)
		require.NoError(t, sys.Kill(system.Memservice))
		require.NoError(t, sys.StartComponent(ctx, system.Memservice))
		require.NoError(t, sys.WaitRunning(ctx, "fault-memservice", system.Names(ws), runTimeout))
		assertPlaced(ctx, t, sys, "fault-memservice", ws)
		deleteAndCheckReturned(ctx, t, sys, "fault-memservice", system.Names(ws))
	})

	step("memory service killed while releasing", func(t *testing.T) {
		ws := workloads("release-", 12, 4)
		require.NoError(t, sys.CreateWorkloads(ctx, "fault-release", ws, nil))
		require.NoError(t, sys.WaitRunning(ctx, "fault-release", system.Names(ws), runTimeout))
		assertPlaced(ctx, t, sys, "fault-release", ws)
		require.NoError(t, sys.DeleteWorkloads(ctx, "fault-release", system.Names(ws)))
		// The claims are deleted for good, so their records go from Online straight to
		// their removal: killed once the first is gone, the service leaves the others'
		// releases cut short, their records still Online, at any step.
		left := waitRecordsFewerThan(ctx, t, sys, "fault-release", len(ws))
		require.NoError(t, sys.Kill(system.Memservice))
		t.Logf("killed with %d of %d records left", left, len(ws))
		require.NoError(t, sys.StartComponent(ctx, system.Memservice))
		require.NoError(t, sys.WaitMemoryReturned(ctx, returnTimeout))
		assert.NoError(t, sys.CheckQuiescent(ctx))
	})

	step("memory service restarted with a released record an older version left", func(t *testing.T) {
		// An older version wrote Released, then removed the finalizer; a crash in
		// between left this state: the record says Released, its finalizer is still
		// there, and its ResourceClaim is gone (so the record is being deleted).
		const ns = "crash-window"
		require.NoError(t, sys.EnsureNamespace(ctx, ns))
		claims := sys.DynamicMemory().DynamicMemoryV1alpha1().DynamicMemoryClaims(ns)
		node := cluster.NodeName(cluster.DefaultNodePrefix, 0)
		record := &v1alpha1.DynamicMemoryClaim{
			TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryClaim"},
			ObjectMeta: metav1.ObjectMeta{
				Name:       "released-before-crash",
				Labels:     map[string]string{v1alpha1.LabelClaimUID: "0a1b2c3d-0000-4000-8000-000000000001", v1alpha1.LabelNode: node, v1alpha1.LabelPool: system.PoolA},
				Finalizers: []string{v1alpha1.Finalizer},
			},
			Spec: v1alpha1.DynamicMemoryClaimSpec{
				ClaimRef:  v1alpha1.ClaimReference{Name: "released-before-crash", UID: "0a1b2c3d-0000-4000-8000-000000000001"},
				Node:      node,
				Pool:      system.PoolA,
				Requested: resource.MustParse("1Gi"),
				Size:      resource.MustParse("1Gi"),
			},
		}
		_, err := claims.Create(ctx, record, metav1.CreateOptions{})
		require.NoError(t, err)
		status := []byte(`{"status":{"phase":"Released","releasedAt":"` + time.Now().UTC().Format(time.RFC3339) + `"}}`)
		_, err = claims.Patch(ctx, record.Name, types.MergePatchType, status, metav1.PatchOptions{}, "status")
		require.NoError(t, err)
		require.NoError(t, claims.Delete(ctx, record.Name, metav1.DeleteOptions{}))

		require.NoError(t, sys.Restart(ctx, system.Memservice))
		require.NoError(t, sys.WaitMemoryReturned(ctx, returnTimeout), "the restarted memory service finishes the released record")
	})

	step("scheduler killed while binding", func(t *testing.T) {
		ws := workloads("scheduler-", 12, 4)
		require.NoError(t, sys.CreateWorkloads(ctx, "fault-scheduler", ws, nil))
		waitClaimPhase(ctx, t, sys, "fault-scheduler", v1alpha1.PhaseProvisioning)
		require.NoError(t, sys.Kill(system.Scheduler))
		require.NoError(t, sys.StartComponent(ctx, system.Scheduler))
		require.NoError(t, sys.WaitRunning(ctx, "fault-scheduler", system.Names(ws), runTimeout))
		assertPlaced(ctx, t, sys, "fault-scheduler", ws)
		deleteAndCheckReturned(ctx, t, sys, "fault-scheduler", system.Names(ws))
	})

	step("node agent killed while onlining", func(t *testing.T) {
		ws := workloads("agent-", 12, 4)
		require.NoError(t, sys.CreateWorkloads(ctx, "fault-agent", ws, nil))
		waitClaimPhase(ctx, t, sys, "fault-agent", v1alpha1.PhaseProvisioning)
		agent := system.AgentName(cluster.NodeName(cluster.DefaultNodePrefix, 0))
		require.NoError(t, sys.Kill(agent))
		require.NoError(t, sys.StartComponent(ctx, agent))
		require.NoError(t, sys.WaitAgentsConnected(ctx))
		require.NoError(t, sys.WaitRunning(ctx, "fault-agent", system.Names(ws), runTimeout))
		assertPlaced(ctx, t, sys, "fault-agent", ws)
		deleteAndCheckReturned(ctx, t, sys, "fault-agent", system.Names(ws))
	})

	step("claim larger than every host window stays Pending", func(t *testing.T) {
		w := system.NewWorkload("larger-than-windows", 100)
		require.NoError(t, sys.CreateWorkloads(ctx, "bad-input", []system.Workload{w}, nil))
		reason := waitPendingReason(ctx, t, sys, "bad-input", w.Name)
		// DRA's allocator turns every node down first (the request is above every
		// device's capacity), so the reason is DynamicResources' own.
		assert.Contains(t, reason, "0/4 nodes are available")
		assert.NoError(t, sys.CheckQuiescent(ctx), "a claim no node can hold reserves nothing")
		deleteAndCheckReturned(ctx, t, sys, "bad-input", []string{w.Name})
	})

	violations, snapshots, scans := mon.Stop()
	assert.Empty(t, violations, "a pool was over-committed")
	assert.Positive(t, snapshots, "the monitor saw pool snapshots")
	assert.Positive(t, scans, "the monitor scanned DynamicMemoryClaims")
	t.Logf("monitor: %d pool snapshots and %d claim scans without over-commit", snapshots, scans)
}

// workloads are n pods named prefix0.. asking 1Gi to maxGi each.
func workloads(prefix string, n, maxGi int) []system.Workload {
	ws := make([]system.Workload, n)
	for i := range ws {
		ws[i] = system.NewWorkload(fmt.Sprintf("%s%d", prefix, i), 1+i%maxGi)
	}
	return ws
}

// assertPlaced checks that each workload's pod runs on a node, its ResourceClaim is
// allocated on that node, and its DynamicMemoryClaim is Online there with at least
// the memory asked for.
func assertPlaced(ctx context.Context, t *testing.T, sys *system.System, namespace string, ws []system.Workload) {
	t.Helper()
	placements, err := sys.Placements(ctx, namespace, system.Names(ws))
	require.NoError(t, err)
	require.Len(t, placements, len(ws))
	for i, p := range placements {
		assert.Equal(t, corev1.PodRunning, p.Phase, "pod %s", p.Pod)
		assert.NotEmpty(t, p.Node, "pod %s is bound", p.Pod)
		assert.Equal(t, p.Node, p.AllocatedNode, "ResourceClaim %s of pod %s is allocated on the pod's node", p.Claim, p.Pod)
		assert.Equal(t, v1alpha1.PhaseOnline, p.MemoryPhase, "DynamicMemoryClaim of pod %s is Online", p.Pod)
		assert.Equal(t, p.Node, p.MemoryNode, "DynamicMemoryClaim of pod %s is for the pod's node", p.Pod)
		assert.Contains(t, []string{system.PoolA, system.PoolB}, p.MemoryPool, "pool of pod %s", p.Pod)
		assert.GreaterOrEqual(t, p.MemorySize.Value(), ws[i].Memory.Value(), "memory of pod %s", p.Pod)
	}
}

// deleteAndCheckReturned deletes the pods and waits until every pool is whole again
// and no DynamicMemoryClaim is left.
func deleteAndCheckReturned(ctx context.Context, t *testing.T, sys *system.System, namespace string, names []string) {
	t.Helper()
	require.NoError(t, sys.DeleteWorkloads(ctx, namespace, names))
	require.NoError(t, sys.WaitMemoryReturned(ctx, returnTimeout))
	assert.NoError(t, sys.CheckQuiescent(ctx))
}

// waitClaimPhase waits until some DynamicMemoryClaim of the namespace is in phase.
func waitClaimPhase(ctx context.Context, t *testing.T, sys *system.System, namespace string, phase v1alpha1.ClaimPhase) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, runTimeout, true, func(ctx context.Context) (bool, error) {
		claims, err := sys.ListClaims(ctx, namespace)
		if err != nil {
			return false, nil
		}
		for _, c := range claims {
			if c.CurrentPhase() == phase {
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "wait for a DynamicMemoryClaim in %s to be %s", namespace, phase)
}

// waitRecordsFewerThan waits until namespace holds fewer than n DynamicMemoryClaims
// and returns how many it holds.
func waitRecordsFewerThan(ctx context.Context, t *testing.T, sys *system.System, namespace string, n int) int {
	t.Helper()
	left := n
	err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, runTimeout, true, func(ctx context.Context) (bool, error) {
		claims, err := sys.ListClaims(ctx, namespace)
		if err != nil {
			return false, nil
		}
		left = len(claims)
		return left < n, nil
	})
	require.NoError(t, err, "wait for a DynamicMemoryClaim in %s to be removed", namespace)
	return left
}

// waitPendingReason waits until the scheduler has given up on the pod for now and
// returns its reason.
func waitPendingReason(ctx context.Context, t *testing.T, sys *system.System, namespace, name string) string {
	t.Helper()
	var reason string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, pendingTimeout, true, func(ctx context.Context) (bool, error) {
		placements, err := sys.Placements(ctx, namespace, []string{name})
		if err != nil {
			return false, nil
		}
		require.Empty(t, placements[0].Node, "pod %s/%s must not be scheduled", namespace, name)
		pod, err := sys.Kube().CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				reason = c.Message
			}
		}
		return reason != "", nil
	})
	require.NoError(t, err, "wait for pod %s/%s to be unschedulable", namespace, name)
	t.Logf("pod %s/%s is Pending: %s", namespace, name, reason)
	return reason
}

// testWriter logs whole lines to the test.
type testWriter struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // no newline yet: keep it
			break
		}
		w.t.Log(line[:len(line)-1])
	}
	return len(p), nil
}
