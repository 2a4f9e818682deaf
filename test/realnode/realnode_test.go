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

// Package realnode runs the node's half of the lifecycle for real: a kubelet built
// from the pinned k8s.io/kubernetes with containerd and runc (local-cluster's real
// node) calls NodePrepareResources on the DRA plugin, containerd injects the CDI
// device into the container, the node agent onlines memory blocks through its sysfs
// backend (on the simulated tree of local/sysfssim) and raises the kubelet's kubepods
// cgroup, and the kubelet unprepares when the pod ends. It needs root; without it the test
// is skipped with the reason.
package realnode

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

const (
	gi        = int64(1) << 30
	namespace = "real"
	pool      = "cxl-real"
	// logLines is how much of each component's log a failed test prints.
	logLines = 60
)

var node = cluster.RealNodeName(0)

// env is the system with one kwok node and one real node; the test's pool is
// attached to the real node only, so every pod with a claim runs there.
type env struct {
	t   *testing.T
	ctx context.Context
	sys *system.System
	rn  cluster.RealNode
	// limits samples the kubepods memory limit all along.
	limits *sampler
}

func setup(t *testing.T) *env {
	if os.Geteuid() != 0 {
		t.Skip("skipped: a real node needs root (the kubelet, containerd and runc create cgroups, mounts and network namespaces)")
	}
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), 15*time.Minute)
	t.Cleanup(cancel)
	dir := os.Getenv("E2E_RUN_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	sys, err := system.Start(ctx, system.Options{
		Dir:       dir,
		Nodes:     1,
		RealNodes: 1,
		Pools:     system.NewPools([]system.PoolSpec{{Name: pool, Capacity: "16Gi", HostWindow: "8Gi", LatencyClass: "low"}}, []string{node}, 0),
		Progress:  system.NewProgress(testWriter{t}, clock.RealClock{}),
	})
	require.NoError(t, err, "start the system with a real node")
	e := &env{t: t, ctx: ctx, sys: sys, rn: sys.Cluster.RealNode(node)}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range sys.Cluster.Processes() {
				t.Logf("---- last %d lines of %s ----\n%s", logLines, p.LogFile, p.LogTail(logLines))
			}
		}
		assert.NoError(t, sys.Stop(), "stop the system")
		for _, ctrl := range []string{"memory", "cpu", "pids"} {
			_, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctrl, e.rn.CgroupRoot))
			assert.True(t, os.IsNotExist(err), "the real node's %s cgroup is removed with it", ctrl)
		}
	})
	require.NoError(t, sys.EnsureNamespace(ctx, namespace))
	e.limits = startSampler(ctx, e.limitFile())
	t.Cleanup(e.limits.stop)
	return e
}

// limitFile is the kubelet's kubepods memory limit (cgroup v1).
func (e *env) limitFile() string {
	return filepath.Join("/sys/fs/cgroup/memory", e.rn.KubepodsCgroup(), "memory.limit_in_bytes")
}

func (e *env) limit() int64 {
	e.t.Helper()
	v, err := readLimit(e.limitFile())
	require.NoError(e.t, err)
	return v
}

func readLimit(file string) (int64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}

// waitLimit waits until the kubepods limit is want.
func (e *env) waitLimit(want int64, within time.Duration, msg string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		v, err := readLimit(e.limitFile())
		return err == nil && v == want
	}, within, 20*time.Millisecond, "%s: kubepods limit %d wanted, %d in the file", msg, want, e.limit())
}

// pod returns the pod, failing the test on error.
func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.sys.Kube().CoreV1().Pods(namespace).Get(e.ctx, name, metav1.GetOptions{})
	require.NoError(e.t, err)
	return p
}

// probeOutput is what memory-probe printed, NAME=value by name.
func (e *env) probeOutput(name string) map[string]string {
	e.t.Helper()
	var out map[string]string
	require.Eventually(e.t, func() bool {
		raw, err := e.sys.Kube().CoreV1().Pods(namespace).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(e.ctx)
		if err != nil {
			return false
		}
		out = map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(string(raw)))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				out[k] = v
			}
		}
		_, done := out["DYNAMIC_MEMORY_NUMA_NODES"]
		return done
	}, time.Minute, 200*time.Millisecond, "the log of pod %s, through the API server and the kubelet", name)
	return out
}

// memoryClaim is the DynamicMemoryClaim of the pod's ResourceClaim.
func (e *env) memoryClaim(pod string) (v1alpha1.DynamicMemoryClaim, bool) {
	e.t.Helper()
	placements, err := e.sys.Placements(e.ctx, namespace, []string{pod})
	require.NoError(e.t, err)
	claims, err := e.sys.ListClaims(e.ctx, namespace)
	require.NoError(e.t, err)
	for _, c := range claims {
		if string(c.Spec.ClaimRef.UID) == placements[0].ClaimUID {
			return c, true
		}
	}
	return v1alpha1.DynamicMemoryClaim{}, false
}

// onlineBlocks counts the memory blocks of the node's simulated host that are online.
func (e *env) onlineBlocks() int {
	e.t.Helper()
	states, err := filepath.Glob(filepath.Join(e.rn.Dir, "sysfs/sys/devices/system/memory/memory*/state"))
	require.NoError(e.t, err)
	require.NotEmpty(e.t, states, "the simulated sysfs is mounted")
	n := 0
	for _, f := range states {
		data, err := os.ReadFile(f)
		require.NoError(e.t, err)
		if strings.TrimSpace(string(data)) == "online" {
			n++
		}
	}
	return n
}

func (e *env) cdiSpec(claimUID string) string {
	return filepath.Join(e.rn.CDIDir, "dcd.dynamicmemory.io_memory-"+claimUID+".json")
}

func (e *env) deleteAndWaitReturned(names ...string) {
	e.t.Helper()
	require.NoError(e.t, e.sys.DeleteWorkloads(e.ctx, namespace, names))
	require.NoError(e.t, e.sys.WaitMemoryReturned(e.ctx, 2*time.Minute))
}

// containerStart is when the pod's (only) container started, and its restarts.
func containerStart(p *corev1.Pod) (time.Time, int32, bool) {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running != nil {
			return cs.State.Running.StartedAt.Time, cs.RestartCount, true
		}
	}
	return time.Time{}, 0, false
}

func TestRealNode(t *testing.T) {
	e := setup(t)
	base := e.limit()
	t.Logf("kubepods memory limit the kubelet set: %d", base)
	require.Greater(t, base, int64(0))

	var claimUID string
	t.Run("a pod with a 2Gi claim starts and its container sees the memory", func(t *testing.T) {
		w := system.Workload{Name: "probe-2gi", Memory: resource.MustParse("2Gi")}
		require.NoError(t, e.sys.CreateWorkloads(e.ctx, namespace, []system.Workload{w}, nil))
		require.NoError(t, e.sys.WaitRunning(e.ctx, namespace, []string{w.Name}, 3*time.Minute))
		assert.Equal(t, node, e.pod(w.Name).Spec.NodeName)
		mc, ok := e.memoryClaim(w.Name)
		require.True(t, ok, "a DynamicMemoryClaim for the pod's claim")
		require.Equal(t, v1alpha1.PhaseOnline, mc.CurrentPhase())
		claimUID = string(mc.Spec.ClaimRef.UID)

		out := e.probeOutput(w.Name)
		assert.Equal(t, "2147483648", out["DYNAMIC_MEMORY_BYTES"], "from the CDI device containerd injected")
		var numa []string
		for _, n := range mc.Status.NUMANodes {
			numa = append(numa, strconv.Itoa(int(n)))
		}
		assert.Equal(t, strings.Join(numa, ","), out["DYNAMIC_MEMORY_NUMA_NODES"], "the NUMA nodes the agent onlined the memory into")
		assert.NotEmpty(t, out["NUMA_NODES_ONLINE"], "the container reads the host's NUMA nodes")
		t.Logf("memory-probe printed %v", out)
		assert.Equal(t, 16, e.onlineBlocks(), "the agent onlined 2Gi as 16 blocks of 128Mi through its sysfs backend")
		assert.FileExists(t, e.cdiSpec(claimUID), "the DRA plugin prepared the claim for the kubelet")
	})

	t.Run("the kubepods limit is raised by the claim and stays raised across kubelet restarts", func(t *testing.T) {
		e.waitLimit(base+2*gi, 10*time.Second, "pod running")
		started, restarts, ok := containerStart(e.pod("probe-2gi"))
		require.True(t, ok)

		mark := time.Now()
		require.NoError(t, e.sys.Cluster.RestartKubelet(e.ctx, node))
		e.waitLimit(base+2*gi, 5*time.Second, "after a kubelet restart")
		t.Logf("kubepods limit during the kubelet restart: %s", e.limits.since(mark))

		// The memory service down: the agent raises the limit again on its own.
		require.NoError(t, e.sys.Kill(system.Memservice))
		mark = time.Now()
		require.NoError(t, e.sys.Cluster.RestartKubelet(e.ctx, node))
		e.waitLimit(base+2*gi, 5*time.Second, "after a kubelet restart with the memory service down")
		t.Logf("kubepods limit during the kubelet restart without the memory service: %s", e.limits.since(mark))
		require.NoError(t, e.sys.StartComponent(e.ctx, system.Memservice))
		require.NoError(t, e.sys.WaitAgentsConnected(e.ctx))

		// The kubelet writes node allocatable only when it starts: over a full period
		// of its pod resync and of its QoS cgroup updates (a minute each) nobody
		// writes the limit again.
		quiet := time.Now()
		time.Sleep(65 * time.Second)
		assert.Equal(t, "unchanged", e.limits.since(quiet), "the kubepods limit over 65 s of a running kubelet")
		assert.Equal(t, base+2*gi, e.limit())
		again, restartsAgain, ok := containerStart(e.pod("probe-2gi"))
		require.True(t, ok, "the pod still runs")
		assert.Equal(t, started, again, "its container was not started again")
		assert.Equal(t, restarts, restartsAgain)
	})

	t.Run("the kubelet unprepares when the pod is deleted and the memory returns to the pool", func(t *testing.T) {
		require.NotEmpty(t, claimUID)
		e.deleteAndWaitReturned("probe-2gi")
		assert.NoFileExists(t, e.cdiSpec(claimUID), "NodeUnprepareResources removed the claim's CDI spec")
		e.waitLimit(base, 10*time.Second, "pod gone")
		assert.Zero(t, e.onlineBlocks(), "the agent offlined the blocks")
	})

	t.Run("the DRA plugin restarted while a pod runs: the kubelet registers it again and nothing is lost", func(t *testing.T) {
		first := system.Workload{Name: "before-restart", Memory: resource.MustParse("1Gi")}
		require.NoError(t, e.sys.CreateWorkloads(e.ctx, namespace, []system.Workload{first}, nil))
		require.NoError(t, e.sys.WaitRunning(e.ctx, namespace, []string{first.Name}, 3*time.Minute))
		started, _, ok := containerStart(e.pod(first.Name))
		require.True(t, ok)

		require.NoError(t, e.sys.Restart(e.ctx, system.PluginName(node)))
		// Only a registered plugin can prepare the next pod's claim.
		second := system.Workload{Name: "after-restart", Memory: resource.MustParse("1Gi")}
		require.NoError(t, e.sys.CreateWorkloads(e.ctx, namespace, []system.Workload{second}, nil))
		require.NoError(t, e.sys.WaitRunning(e.ctx, namespace, []string{second.Name}, 3*time.Minute))
		assert.Equal(t, "1073741824", e.probeOutput(second.Name)["DYNAMIC_MEMORY_BYTES"])

		again, restarts, ok := containerStart(e.pod(first.Name))
		require.True(t, ok, "the first pod still runs")
		assert.Equal(t, started, again)
		assert.Zero(t, restarts)
		mc, ok := e.memoryClaim(first.Name)
		require.True(t, ok)
		assert.Equal(t, v1alpha1.PhaseOnline, mc.CurrentPhase(), "the first pod's memory stays online")
		e.waitLimit(base+2*gi, 10*time.Second, "two pods of 1Gi")
		e.deleteAndWaitReturned(first.Name, second.Name)
		e.waitLimit(base, 10*time.Second, "pods gone")
	})

	t.Run("a pod whose claim is allocated but whose memory is not online does not start until it is", func(t *testing.T) {
		// Placed by another scheduler, which neither reserves nor waits: the pod is
		// bound at once and the kubelet asks the DRA plugin while the node's agent
		// is down, so the memory cannot be online.
		require.NoError(t, e.sys.Kill(system.AgentName(node)))
		claim := e.allocateElsewhere("foreign", "1Gi")

		// The kubelet's Prepare is refused by the plugin, and retried.
		require.Eventually(t, func() bool { return e.prepareRefused("foreign") }, 2*time.Minute, 500*time.Millisecond,
			"an event of the kubelet saying that the DRA plugin refused to prepare the claim")
		time.Sleep(5 * time.Second)
		p := e.pod("foreign")
		_, _, running := containerStart(p)
		assert.False(t, running, "no container started without the memory online")
		assert.NotEqual(t, corev1.PodRunning, p.Status.Phase)

		require.NoError(t, e.sys.StartComponent(e.ctx, system.AgentName(node)))
		require.NoError(t, e.sys.WaitRunning(e.ctx, namespace, []string{"foreign"}, 3*time.Minute))
		out := e.probeOutput("foreign")
		assert.Equal(t, "1073741824", out["DYNAMIC_MEMORY_BYTES"])
		require.NoError(t, e.sys.Kube().CoreV1().Pods(namespace).Delete(e.ctx, "foreign", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)}))
		require.Eventually(t, func() bool {
			_, err := e.sys.Kube().CoreV1().Pods(namespace).Get(e.ctx, "foreign", metav1.GetOptions{})
			return err != nil
		}, 2*time.Minute, 200*time.Millisecond, "the pod is gone")
		require.NoError(t, e.sys.Kube().ResourceV1().ResourceClaims(namespace).Delete(e.ctx, claim.Name, metav1.DeleteOptions{}))
		require.NoError(t, e.sys.WaitMemoryReturned(e.ctx, 2*time.Minute))
		e.waitLimit(base, 10*time.Second, "pod gone")
	})
}

// allocateElsewhere does what a scheduler without the DynamicMemory plugin and
// without binding conditions does: it allocates the pod's claim on the real node
// from the test's pool, reserves it for the pod, and binds the pod at once.
func (e *env) allocateElsewhere(name, size string) *resourcev1.ResourceClaim {
	e.t.Helper()
	kube := e.sys.Kube()
	claim, err := kube.ResourceV1().ResourceClaims(namespace).Create(e.ctx, &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name + "-memory"},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "memory", Exactly: &resourcev1.ExactDeviceRequest{
				DeviceClassName: dra.DeviceClassName,
				Capacity:        &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse(size)}},
			},
		}}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	pod := system.PodFor(namespace, system.Workload{Name: name, SchedulerName: "another-scheduler"})
	pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "memory", ResourceClaimName: ptr.To(claim.Name)}}
	pod, err = kube.CoreV1().Pods(namespace).Create(e.ctx, pod, metav1.CreateOptions{})
	require.NoError(e.t, err)

	slices, err := kube.ResourceV1().ResourceSlices().List(e.ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(fields.OneTermEqualSelector("spec.nodeName", node), fields.OneTermEqualSelector("spec.driver", dra.DriverName)).String(),
	})
	require.NoError(e.t, err)
	require.Len(e.t, slices.Items, 1)
	sl := slices.Items[0]
	require.Len(e.t, sl.Spec.Devices, 1, "one device: the test's pool")
	claim.Status.Allocation = &resourcev1.AllocationResult{
		Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
			Request: "memory", Driver: dra.DriverName, Pool: sl.Spec.Pool.Name, Device: sl.Spec.Devices[0].Name,
		}}},
		NodeSelector: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
		}}},
	}
	claim.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	claim, err = kube.ResourceV1().ResourceClaims(namespace).UpdateStatus(e.ctx, claim, metav1.UpdateOptions{})
	require.NoError(e.t, err)
	require.NoError(e.t, kube.CoreV1().Pods(namespace).Bind(e.ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{}))
	return claim
}

// prepareRefused tells whether the kubelet reported that it could not prepare the
// pod's claims.
func (e *env) prepareRefused(pod string) bool {
	events, err := e.sys.Kube().CoreV1().Events(namespace).List(e.ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(fields.OneTermEqualSelector("involvedObject.name", pod), fields.OneTermEqualSelector("source", "kubelet")).String(),
	})
	if err != nil {
		return false
	}
	for _, ev := range events.Items {
		// The DRA plugin's refusal, not the kubelet's own checks.
		if ev.Reason == "FailedPrepareDynamicResources" && strings.Contains(ev.Message, "NodePrepareResources failed for ResourceClaim") {
			e.t.Logf("kubelet event %s: %s", ev.Reason, ev.Message)
			return true
		}
	}
	return false
}

// sampler reads the kubepods limit every 10ms and keeps each change with its time.
type sampler struct {
	mu      sync.Mutex
	changes []change
	cancel  context.CancelFunc
	done    chan struct{}
}

type change struct {
	at    time.Time
	value int64
}

func startSampler(ctx context.Context, file string) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		last := int64(-1)
		for ctx.Err() == nil {
			if v, err := readLimit(file); err == nil && v != last {
				s.mu.Lock()
				s.changes = append(s.changes, change{time.Now(), v})
				s.mu.Unlock()
				last = v
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return s
}

func (s *sampler) stop() {
	s.cancel()
	<-s.done
}

// since describes the values the limit took from t on, with the time of each.
func (s *sampler) since(t time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, c := range s.changes {
		if !c.at.Before(t) {
			parts = append(parts, fmt.Sprintf("+%s: %d", c.at.Sub(t).Round(time.Millisecond), c.value))
		}
	}
	if len(parts) == 0 {
		return "unchanged"
	}
	return strings.Join(parts, ", ")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
