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

// Package e2e benchmarks the whole system on the local cluster: how fast pool memory
// reaches pods and goes back to the pools. It is run by `make bench` (hack/bench.sh),
// never by `make test`: it has no tests, only benchmarks.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
	schedconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
)

// The workload: pods of podGiB each, created at once from createParallel goroutines.
const (
	pods           = 200
	podGiB         = 1
	createParallel = 16
	nodeCount      = 4
	runTimeout     = 10 * time.Minute
)

// BenchmarkPodsToRunning starts the whole system (as `make demo` does) with two pools
// of simulated devices at zero latency, creates 200 pods asking 1Gi each at once, and
// measures from each pod's creation until it is Running (its memory online), then
// deletes them all and measures until every pool is whole again. It runs four times
// on the same system, in the order A B B A so that neither gains from its place:
// profile=without-dynamic-memory is the baseline (a profile of the stock plugins the
// benchmark adds: the claims allocated by DynamicResources alone; the memory service
// provisions them afterwards, without a reservation, and nothing waits for it),
// profile=dynamic-memory-scheduler the project. Each profile reports the mean of its
// two runs.
//
// Metrics: running-p50-s and running-p99-s (pod created → Running), with the steps
// on the way: claimed-p50-s (created → its ResourceClaim made from the template by
// kube-controller-manager) and bound-p50-s (created → bound), all-running-s
// (first pod created → last pod Running), ledger-free-s (deletion → the memory
// service holds nothing) and pools-full-s (deletion → the memory service, the pools'
// status and the DynamicMemoryClaims all say every pool is whole); the API requests
// per pod of Kubernetes' components (k8s-requests/pod) and of this project's
// (project-requests/pod), and the ResourceSlice writes per pod (slice-writes/pod),
// from the API server's audit log (from the first pod created until the pools are
// whole and the run's pods and claims gone, and a second more: drained), and the watch events it sent per pod, to all
// watchers (watch-events/pod, its apiserver_watch_events_total; requests_test.go).
func BenchmarkPodsToRunning(b *testing.B) {
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(b, ktesting.NewConfig()))
	sys := startSystem(ctx, b, system.SchedulerDynamicMemory)
	mon := sys.StartMonitor(ctx)

	type measured struct {
		claimedP50, boundP50, p50, p99, allRunning, ledgerFree, poolsFull, k8sRequests, projectRequests, sliceWrites, watchEvents []float64
	}
	profiles := map[string]*measured{schedconfig.BaselineProfile: {}, system.SchedulerName: {}}
	for i, profile := range []string{schedconfig.BaselineProfile, system.SchedulerName, system.SchedulerName, schedconfig.BaselineProfile} {
		r := runOnce(ctx, b, sys, profile, fmt.Sprintf("%s-%d", profile, i), pods)
		m := profiles[profile]
		m.claimedP50 = append(m.claimedP50, percentile(r.claimed, 50))
		m.boundP50 = append(m.boundP50, percentile(r.bound, 50))
		m.p50 = append(m.p50, percentile(r.running, 50))
		m.p99 = append(m.p99, percentile(r.running, 99))
		m.allRunning = append(m.allRunning, r.allRunning.Seconds())
		m.ledgerFree = append(m.ledgerFree, r.ledgerFree.Seconds())
		m.poolsFull = append(m.poolsFull, r.poolsFull.Seconds())
		m.k8sRequests = append(m.k8sRequests, r.api.kubernetes)
		m.projectRequests = append(m.projectRequests, r.api.project)
		m.sliceWrites = append(m.sliceWrites, r.api.sliceWrites)
		m.watchEvents = append(m.watchEvents, r.api.watchEvents)
		// On stdout: a benchmark's log is cut short.
		fmt.Printf("Run %d, profile %s: running p50 %.2f s. API requests per pod (creation until the pools are whole and the pods and claims gone; watches not counted):\n%s\n",
			i, profile, percentile(r.running, 50), r.api.table)
	}
	if violations, _, _ := mon.Stop(); len(violations) > 0 {
		b.Fatalf("pools were over-committed: %v", violations)
	}
	for _, profile := range []string{schedconfig.BaselineProfile, system.SchedulerName} {
		m := profiles[profile]
		b.Run("profile="+profile, func(b *testing.B) {
			// The runs were measured before; the sub-benchmark only reports them.
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(mean(m.claimedP50), "claimed-p50-s")
			b.ReportMetric(mean(m.boundP50), "bound-p50-s")
			b.ReportMetric(mean(m.p50), "running-p50-s")
			b.ReportMetric(mean(m.p99), "running-p99-s")
			b.ReportMetric(mean(m.allRunning), "all-running-s")
			b.ReportMetric(mean(m.k8sRequests), "k8s-requests/pod")
			b.ReportMetric(mean(m.projectRequests), "project-requests/pod")
			b.ReportMetric(mean(m.sliceWrites), "slice-writes/pod")
			b.ReportMetric(mean(m.watchEvents), "watch-events/pod")
			if profile == system.SchedulerName {
				b.ReportMetric(mean(m.ledgerFree), "ledger-free-s")
				b.ReportMetric(mean(m.poolsFull), "pools-full-s")
			}
		})
	}
}

// sideBySidePods is the number of pods of each run of BenchmarkSchedulers.
const sideBySidePods = 50

// BenchmarkSchedulers compares the schedulers a pod with a dynamic memory claim may
// meet: 50 pods asking 1Gi each, created at once, measured from creation until
// Running. On one system, this project's scheduler with its two profiles,
// profile=dynamic-memory-scheduler and profile=default-scheduler (both run
// DynamicMemory), run in the order A B B A so that neither profits from going
// second; on a system of its own, scheduler=stock is the stock kube-scheduler in
// compatibility mode (binding conditions: the memory service provisions each claim
// once it is allocated, and the scheduler's PreBind polls the device condition every
// 5 s). Metrics: running-p50-s and bound-p50-s, the mean of the runs.
func BenchmarkSchedulers(b *testing.B) {
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(b, ktesting.NewConfig()))
	type measured struct{ running, bound []float64 }
	report := func(name string, m *measured) {
		b.Run(name, func(b *testing.B) {
			// The runs were measured before; the sub-benchmark only reports them.
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(mean(m.running), "running-p50-s")
			b.ReportMetric(mean(m.bound), "bound-p50-s")
		})
	}
	measure := func(sys *system.System, profile, namespace string, m *measured) {
		r := runOnce(ctx, b, sys, profile, namespace, sideBySidePods)
		m.running = append(m.running, percentile(r.running, 50))
		m.bound = append(m.bound, percentile(r.bound, 50))
	}

	sys := startSystem(ctx, b, system.SchedulerDynamicMemory)
	profiles := map[string]*measured{system.SchedulerName: {}, corev1.DefaultSchedulerName: {}}
	for i, profile := range []string{system.SchedulerName, corev1.DefaultSchedulerName, corev1.DefaultSchedulerName, system.SchedulerName} {
		measure(sys, profile, fmt.Sprintf("%s-%d", profile, i), profiles[profile])
	}
	if err := sys.Stop(); err != nil {
		b.Fatalf("stop the system: %v", err)
	}
	for _, profile := range []string{system.SchedulerName, corev1.DefaultSchedulerName} {
		report("profile="+profile, profiles[profile])
	}

	stock := &measured{}
	sys = startSystem(ctx, b, system.SchedulerStock)
	for i := range 2 {
		measure(sys, corev1.DefaultSchedulerName, fmt.Sprintf("stock-%d", i), stock)
	}
	report("scheduler=stock", stock)
}

// idleRounds is the number of rounds of BenchmarkIdlePodToRunning, each one pod of
// each profile in the order A B B A: twice as many pods per profile.
const idleRounds = 10

// BenchmarkIdlePodToRunning measures what this project adds to the start of one pod
// on an otherwise idle cluster. On the system BenchmarkPodsToRunning starts, it
// creates one pod asking 1Gi, waits until it is Running, deletes it and waits until
// the pools are whole again, then the next: 10 rounds of four pods, their profiles in
// the order A B B A (profile=without-dynamic-memory, DRA only, is the baseline;
// profile=dynamic-memory-scheduler the project), after one pod of each that warms
// the system up and is not counted.
//
// Metrics per profile, over its 20 pods: running-p50-ms and running-p90-ms (pod
// created → Running), with the steps on the way, claimed-p50-ms (created → its
// ResourceClaim made from the template) and bound-p50-ms (created → bound); and for
// the project, over-dra-p50-ms and over-dra-p90-ms: its running-p50-ms and
// running-p90-ms less the baseline's.
func BenchmarkIdlePodToRunning(b *testing.B) {
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(b, ktesting.NewConfig()))
	sys := startSystem(ctx, b, system.SchedulerDynamicMemory)
	const namespace = "idle"
	if err := sys.EnsureNamespace(ctx, namespace); err != nil {
		b.Fatal(err)
	}
	rec := watchRunning(ctx, b, sys, namespace)
	defer rec.stop()

	// one runs one pod of profile, alone, and returns its steps.
	pods := 0
	one := func(profile string) steps {
		w := workload(fmt.Sprintf("%s-%03d", profile, pods), profile)
		pods++
		if err := sys.CreateTemplates(ctx, namespace, []system.Workload{w}); err != nil {
			b.Fatal(err)
		}
		cycle(ctx, b, sys, namespace, []system.Workload{w}, rec)
		return rec.steps(time.Now(), []string{w.Name})
	}
	order := []string{schedconfig.BaselineProfile, system.SchedulerName, system.SchedulerName, schedconfig.BaselineProfile}
	for _, profile := range order[:2] {
		one(profile)
	}
	measured := map[string]*steps{schedconfig.BaselineProfile: {}, system.SchedulerName: {}}
	for range idleRounds {
		for _, profile := range order {
			s := one(profile)
			m := measured[profile]
			m.claimed = append(m.claimed, s.claimed...)
			m.bound = append(m.bound, s.bound...)
			m.running = append(m.running, s.running...)
		}
	}
	ms := func(ds []time.Duration, p int) float64 { return 1000 * percentile(ds, p) }
	base := measured[schedconfig.BaselineProfile]
	for _, profile := range []string{schedconfig.BaselineProfile, system.SchedulerName} {
		m := measured[profile]
		// On stdout: a benchmark's log is cut short.
		fmt.Printf("profile %s, created → Running of each pod (ms):%s\n", profile, durationsMs(m.running))
		b.Run("profile="+profile, func(b *testing.B) {
			// The pods were measured before; the sub-benchmark only reports them.
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ms(m.claimed, 50), "claimed-p50-ms")
			b.ReportMetric(ms(m.bound, 50), "bound-p50-ms")
			b.ReportMetric(ms(m.running, 50), "running-p50-ms")
			b.ReportMetric(ms(m.running, 90), "running-p90-ms")
			if profile == system.SchedulerName {
				b.ReportMetric(ms(m.running, 50)-ms(base.running, 50), "over-dra-p50-ms")
				b.ReportMetric(ms(m.running, 90)-ms(base.running, 90), "over-dra-p90-ms")
			}
		})
	}
}

// durationsMs lists durations in ms, in their order.
func durationsMs(ds []time.Duration) string {
	var sb strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&sb, " %.0f", 1000*d.Seconds())
	}
	return sb.String()
}

// startSystem starts the whole system (as `make demo` does) with the given scheduler,
// two pools of simulated devices at zero latency, and this project's scheduler with
// the baseline profile too. It is stopped when the benchmark ends.
func startSystem(ctx context.Context, b *testing.B, scheduler string) *system.System {
	nodes := make([]string, nodeCount)
	for i := range nodes {
		nodes[i] = cluster.NodeName(cluster.DefaultNodePrefix, i)
	}
	// 384Gi in all: pool a split in node windows of 32Gi, pool b shared (each node may
	// hold 128Gi of its 256Gi).
	pools := []system.PoolSpec{
		{Name: system.PoolA, Capacity: "128Gi", HostWindow: "32Gi", LatencyClass: "low"},
		{Name: system.PoolB, Capacity: "256Gi", HostWindow: "128Gi", LatencyClass: "medium"},
	}
	// E2E_BENCH_DIR keeps the run directory (component logs) for a look afterwards.
	dir := os.Getenv("E2E_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		dir = filepath.Join(dir, scheduler)
	}
	sys, err := system.Start(ctx, system.Options{
		Dir: dir, Nodes: nodeCount, Pools: system.NewPools(pools, nodes, 0), Verbosity: 1,
		Scheduler: scheduler, Baseline: scheduler == system.SchedulerDynamicMemory, AuditLog: true,
	})
	if err != nil {
		b.Fatalf("start the system: %v", err)
	}
	b.Cleanup(func() {
		if b.Failed() {
			for _, p := range sys.Cluster.Processes() {
				b.Logf("---- last 30 lines of %s ----\n%s", p.LogFile, p.LogTail(30))
			}
		}
		if err := sys.Stop(); err != nil {
			b.Errorf("stop the system: %v", err)
		}
	})
	return sys
}

type result struct {
	steps
	ledgerFree time.Duration
	poolsFull  time.Duration
	// api is what the run cost the API server, creation until the pools are whole and the pods and claims gone (drained).
	api apiCost
}

// runOnce creates count pods naming profile at once, waits until they run, deletes
// them and waits until the pools are whole again.
func runOnce(ctx context.Context, b *testing.B, sys *system.System, profile, namespace string, count int) result {
	ws := make([]system.Workload, count)
	for i := range ws {
		ws[i] = workload(fmt.Sprintf("pod-%03d", i), profile)
	}
	b.StopTimer()
	if err := sys.CreateTemplates(ctx, namespace, ws); err != nil {
		b.Fatal(err)
	}
	rec := watchRunning(ctx, b, sys, namespace)
	defer rec.stop()
	audit := startAuditWindow(ctx, b, sys)
	b.StartTimer()

	start := time.Now()
	var r result
	r.ledgerFree, r.poolsFull = cycle(ctx, b, sys, namespace, ws, rec)
	r.steps = rec.steps(start, system.Names(ws))
	b.StopTimer()
	drained(ctx, b, sys, namespace)
	logMetrics(ctx, b, sys, system.Scheduler, "scheduler_scheduling_attempt_duration_seconds", "scheduler_framework_extension_point_duration_seconds",
		"scheduler_plugin_execution_duration_seconds", "dynamic_memory_")
	logMetrics(ctx, b, sys, system.Memservice, "dynamic_memory_")
	counts, events := audit.counts(ctx, b)
	r.api = costOf(counts, events, count)
	b.StartTimer()
	return r
}

// settle is how long the request count goes on after a run's last pod and claim are
// gone: a kubelet's (kwok's) delete of a pod that is gone already comes just after.
const settle = time.Second

// drained waits until the run's namespace holds no pod and no ResourceClaim, then for
// settle: the pools are whole before kube-controller-manager and the kubelets finish
// deleting, and sooner without DynamicMemory (nothing to take back), so a window that
// ended there would count less of the baseline's clean-up than of the project's.
func drained(ctx context.Context, b *testing.B, sys *system.System, namespace string) {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, runTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := sys.Kube().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		claims, err := sys.Kube().ResourceV1().ResourceClaims(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 0 && len(claims.Items) == 0, nil
	})
	if err != nil {
		b.Fatalf("wait until namespace %s has no pods and no ResourceClaims: %v", namespace, err)
	}
	time.Sleep(settle)
}

// workload is a pod of podGiB named name, placed by the scheduler profile.
func workload(name, profile string) system.Workload {
	w := system.NewWorkload(name, podGiB)
	w.SchedulerName = profile
	return w
}

// cycle creates the pods of ws (their claim templates exist) from createParallel
// goroutines, waits until rec saw them all Running, deletes them and waits until the
// pools are whole again. It returns the time from the deletion until the memory
// service held nothing (ledgerFree) and until the pools were whole (poolsFull).
func cycle(ctx context.Context, b *testing.B, sys *system.System, namespace string, ws []system.Workload, rec *recorder) (ledgerFree, poolsFull time.Duration) {
	names := system.Names(ws)
	if err := sys.CreatePods(ctx, namespace, ws, createParallel, rec.created); err != nil {
		b.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, runTimeout, true, func(context.Context) (bool, error) {
		if err := sys.CheckComponents(); err != nil {
			return false, err
		}
		return rec.running(names) == len(names), nil
	}); err != nil {
		b.Fatalf("wait for %d pods to run (%d running): %v", len(names), rec.running(names), err)
	}

	deleted := time.Now()
	if err := sys.DeleteWorkloads(ctx, namespace, names); err != nil {
		b.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, runTimeout, true, func(ctx context.Context) (bool, error) {
		if ledgerFree == 0 && sys.LedgerFree(ctx) {
			ledgerFree = time.Since(deleted)
		}
		return sys.CheckQuiescent(ctx) == nil, nil
	}); err != nil {
		b.Fatalf("wait for the pools to be whole again (%v): %v", sys.CheckQuiescent(ctx), err)
	}
	return ledgerFree, time.Since(deleted)
}

// logMetrics logs the sums and counts of the component's histograms whose names
// start with one of prefixes: where the time went.
func logMetrics(ctx context.Context, b *testing.B, sys *system.System, component string, prefixes ...string) {
	text, err := sys.Metrics(ctx, component)
	if err != nil {
		b.Logf("metrics of %s: %v", component, err)
		return
	}
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if strings.HasPrefix(line, "#") || strings.HasSuffix(name, "_bucket") {
			continue
		}
		if slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			lines = append(lines, line)
		}
	}
	b.Logf("metrics of %s:\n%s", component, strings.Join(lines, "\n"))
}

// recorder notes when each pod was created and when it was first seen with its
// ResourceClaim (created by kube-controller-manager), bound and Running.
type recorder struct {
	stop func()

	mu        sync.Mutex
	createdAt map[string]time.Time
	// claimedAt, boundAt and runningAt are the steps of a pod's way to Running.
	claimedAt, boundAt, runningAt map[string]time.Time
}

func watchRunning(ctx context.Context, b *testing.B, sys *system.System, namespace string) *recorder {
	r := &recorder{createdAt: map[string]time.Time{}, claimedAt: map[string]time.Time{}, boundAt: map[string]time.Time{}, runningAt: map[string]time.Time{}}
	factory := informers.NewSharedInformerFactoryWithOptions(sys.Kube(), 0, informers.WithNamespace(namespace))
	informer := factory.Core().V1().Pods().Informer()
	seen := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		now := time.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, step := range []struct {
			done bool
			at   map[string]time.Time
		}{
			{len(pod.Status.ResourceClaimStatuses) > 0, r.claimedAt},
			{pod.Spec.NodeName != "", r.boundAt},
			{pod.Status.Phase == corev1.PodRunning, r.runningAt},
		} {
			if _, ok := step.at[pod.Name]; step.done && !ok {
				step.at[pod.Name] = now
			}
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    seen,
		UpdateFunc: func(_, obj any) { seen(obj) },
	}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		b.Fatal("pod informer did not sync")
	}
	r.stop = func() {
		cancel()
		factory.Shutdown()
	}
	return r
}

func (r *recorder) created(name string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.createdAt[name] = at
}

// running counts the named pods seen Running.
func (r *recorder) running(names []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, name := range names {
		if _, ok := r.runningAt[name]; ok {
			n++
		}
	}
	return n
}

// steps are each pod's times from creation until it had its claim, was bound and
// ran, and the time from start until the last pod ran.
type steps struct {
	claimed, bound, running []time.Duration
	allRunning              time.Duration
}

// steps are the named pods' steps; start is when the first was created.
func (r *recorder) steps(start time.Time, names []string) steps {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := func(at map[string]time.Time) []time.Duration {
		out := make([]time.Duration, 0, len(names))
		for _, name := range names {
			if t, ok := at[name]; ok {
				// A step seen before the pod's Create call returned counts as instant.
				out = append(out, max(0, t.Sub(r.createdAt[name])))
			}
		}
		return out
	}
	var last time.Time
	for _, name := range names {
		if ran := r.runningAt[name]; ran.After(last) {
			last = ran
		}
	}
	return steps{claimed: since(r.claimedAt), bound: since(r.boundAt), running: since(r.runningAt), allRunning: last.Sub(start)}
}

// percentile is the p-th percentile (nearest rank) in seconds.
func percentile(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(0, rank-1)].Seconds()
}

func mean(vs []float64) float64 {
	var sum float64
	for _, v := range vs {
		sum += v
	}
	return sum / float64(len(vs))
}
