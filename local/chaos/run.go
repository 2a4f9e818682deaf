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
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/agent"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
)

// Bounds of a run's waits: generous, the machine may be busy.
const (
	runTimeout    = 8 * time.Minute
	settleTimeout = 3 * time.Minute
	returnTimeout = 3 * time.Minute
)

// Shape of a run.
const (
	// overcommit is how much more memory the pods ask for than the pools have.
	overcommit = 1.4
	// maxPodGiB bounds one pod's claim (the smaller pool's host window is 32Gi).
	maxPodGiB = 16
	minFaults = 5
	maxFaults = 10
	// While the pods are deleted and their memory released, components are killed
	// too.
	minReleaseFaults = 1
	maxReleaseFaults = 4
	maxFaultGap      = 1500 * time.Millisecond
	maxRestartDelay  = 2 * time.Second
	maxCreateGap     = 100 * time.Millisecond
	maxUncordonDelay = 2 * time.Second
)

// run is one seeded run.
type run struct {
	sys      *system.System
	seed     uint64
	rng      *rand.Rand
	progress *system.Progress
	ns       string
	obs      *observer
	host     *hostState
	// offsets are how many entries of each node's journal were replayed.
	offsets map[string]int
	limits  map[string]limits

	mu       sync.Mutex
	faults   map[string]int
	checks   map[string]int
	failures []string
	created  []string        // pods created, in order
	deleted  map[string]bool // pods the run deleted or evicted
	down     map[string]bool // components stopped and not started again yet
	// attributes are the pools' attributes before the run edited them.
	attributes map[string]map[string]string
}

func newRun(sys *system.System, seed uint64, p *system.Progress) *run {
	return &run{
		sys:        sys,
		seed:       seed,
		rng:        newRng(seed),
		progress:   p,
		ns:         fmt.Sprintf("chaos-%d", seed),
		host:       newHostState(),
		offsets:    map[string]int{},
		limits:     poolLimits(sys.Pools, hostmem.SimulatedBlockSize),
		faults:     map[string]int{},
		checks:     map[string]int{},
		deleted:    map[string]bool{},
		down:       map[string]bool{},
		attributes: map[string]map[string]string{},
	}
}

func (r *run) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *run) count(m map[string]int, key string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m[key] += n
}

// execute makes the run and returns what it did and found.
func (r *run) execute(ctx context.Context) RunResult {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	logger := klog.FromContext(ctx).WithValues("seed", r.seed)
	ctx = klog.NewContext(ctx, logger)
	step := r.progress.Step("Chaos run, seed %d", r.seed)
	if err := r.steps(ctx); err != nil {
		r.fail("%v", err)
	}
	res := RunResult{Seed: r.seed, Pods: len(r.created), Faults: r.faults, Checks: r.checks, Failures: r.failures, Duration: time.Since(start)}
	step.Done("%d pods, %d faults, %d checks, %d failures", res.Pods, sum(res.Faults), sum(res.Checks), len(res.Failures))
	for _, f := range res.Failures {
		r.progress.Printf("    %s", f)
	}
	return res
}

// steps runs the phases; an error is a run that could not go on.
func (r *run) steps(ctx context.Context) error {
	if err := r.sys.EnsureNamespace(ctx, r.ns); err != nil {
		return err
	}
	obs, err := observe(ctx, r.sys.Kube(), r.ns)
	if err != nil {
		return err
	}
	r.obs = obs
	defer obs.stop()
	if err := r.skipJournals(); err != nil {
		return err
	}
	mon := r.sys.StartMonitor(ctx)

	ws := r.workloads()
	if err := r.sys.CreateTemplates(ctx, r.ns, ws); err != nil {
		return err
	}
	// The gaps between pods are drawn before the faults start drawing, so the seed
	// decides them whatever the timing.
	gaps := make([]time.Duration, len(ws))
	for i := range gaps {
		gaps[i] = r.duration(maxCreateGap)
	}
	var creating sync.WaitGroup
	creating.Go(func() { r.createPods(ctx, ws, gaps) })
	r.injectFaults(ctx, minFaults, maxFaults, false)
	creating.Wait()
	if err := r.recover(ctx); err != nil {
		mon.Stop()
		return err
	}

	r.settle(ctx)
	r.cleanUp(ctx)

	violations, snapshots, scans := mon.Stop()
	r.count(r.checks, CheckPoolSnapshots, snapshots)
	r.count(r.checks, CheckClaimScans, scans)
	for _, v := range violations {
		r.fail("over-commit: %s", v)
	}
	return nil
}

// workloads are pods of random sizes asking together overcommit times what the pools
// have, named after the run.
func (r *run) workloads() []system.Workload {
	var capacity int64
	for _, p := range r.sys.Pools {
		capacity += p.Spec.Capacity.Value()
	}
	var ws []system.Workload
	var total int64
	for float64(total) < overcommit*float64(capacity) {
		gib := 1 + r.rng.IntN(maxPodGiB)
		ws = append(ws, system.NewWorkload(fmt.Sprintf("pod-%d-%dgi", len(ws), gib), gib))
		total += int64(gib) << 30
	}
	return ws
}

// createPods creates the pods one at a time, gaps apart.
func (r *run) createPods(ctx context.Context, ws []system.Workload, gaps []time.Duration) {
	for i, w := range ws {
		if !sleep(ctx, gaps[i]) {
			return
		}
		if err := r.sys.CreatePods(ctx, r.ns, []system.Workload{w}, 1, nil); err != nil {
			r.fail("%v", err)
			continue
		}
		r.mu.Lock()
		r.created = append(r.created, w.Name)
		r.mu.Unlock()
	}
}

// duration is a random duration in [0, max).
func (r *run) duration(max time.Duration) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Duration(r.rng.Int64N(int64(max)))
}

// recover starts what is still down and waits until the memory service sees every
// agent again. A component that exited without being stopped by the run crashed:
// that is a finding.
func (r *run) recover(ctx context.Context) error {
	if err := r.sys.CheckComponents(); err != nil {
		r.fail("a component exited on its own: %v", err)
		for _, name := range r.sys.Components() {
			if !r.sys.Running(name) {
				if err := r.sys.StartComponent(ctx, name); err != nil {
					return fmt.Errorf("start %s again: %w", name, err)
				}
			}
		}
	}
	return r.sys.WaitAgentsConnected(ctx)
}

// unschedulableReason matches a Pending pod's reason that names the numbers.
var unschedulableReason = regexp.MustCompile(`\d+(\.\d+)?(Ki|Mi|Gi|Ti)\b`)

// settle waits until every pod the run did not delete either runs with its memory
// online on its node or is Pending with a reason that names a pool and the numbers,
// and checks the memory of the running ones on the hosts.
func (r *run) settle(ctx context.Context) {
	var unsettled []string
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, settleTimeout, true, func(ctx context.Context) (bool, error) {
		list, err := r.sys.Kube().CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		claims, err := r.claimsByUID(ctx)
		if err != nil {
			return false, nil
		}
		unsettled = unsettled[:0]
		pods = list.Items
		for i := range pods {
			if why := r.unsettled(ctx, &pods[i], claims); why != "" {
				unsettled = append(unsettled, why)
			}
		}
		return len(unsettled) == 0, nil
	})
	if err != nil {
		sort.Strings(unsettled)
		r.fail("pods not settled after %s: %s", settleTimeout, strings.Join(unsettled, "; "))
		return
	}
	claims, err := r.claimsByUID(ctx)
	if err != nil {
		r.fail("%v", err)
		return
	}
	if err := r.replayJournals(); err != nil {
		r.fail("%v", err)
		return
	}
	running, pending := 0, 0
	for i := range pods {
		pod := &pods[i]
		if pod.Status.Phase != corev1.PodRunning {
			pending++
			continue
		}
		running++
		r.checkOnline(ctx, pod, claims)
	}
	r.count(r.checks, CheckSettled, len(pods))
	r.progress.Printf("    settled: %d pods running with their memory online, %d pending", running, pending)
}

// unsettled says why a pod is not settled yet ("" when it is).
func (r *run) unsettled(ctx context.Context, pod *corev1.Pod, claims map[types.UID]v1alpha1.DynamicMemoryClaim) string {
	if pod.DeletionTimestamp != nil {
		return pod.Name + " is being deleted"
	}
	switch pod.Status.Phase {
	case corev1.PodRunning:
		uid, err := r.claimUID(ctx, pod)
		if err != nil {
			return pod.Name + ": " + err.Error()
		}
		c, ok := claims[uid]
		if !ok {
			return fmt.Sprintf("%s runs on %s without a DynamicMemoryClaim for its claim", pod.Name, pod.Spec.NodeName)
		}
		if c.CurrentPhase() != v1alpha1.PhaseOnline || c.Spec.Node != pod.Spec.NodeName {
			return fmt.Sprintf("%s runs on %s, its memory is %s on %s", pod.Name, pod.Spec.NodeName, c.CurrentPhase(), c.Spec.Node)
		}
		return ""
	case corev1.PodPending:
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
				if r.namesNumbers(cond.Message) {
					return ""
				}
				return fmt.Sprintf("%s is Pending for a reason without the numbers: %q", pod.Name, cond.Message)
			}
		}
		return pod.Name + " is Pending, not marked unschedulable"
	default:
		return fmt.Sprintf("%s is %s", pod.Name, pod.Status.Phase)
	}
}

func (r *run) namesNumbers(msg string) bool {
	return unschedulableReason.MatchString(msg) && slices.ContainsFunc(r.sys.Pools, func(p v1alpha1.DynamicMemoryPool) bool {
		return strings.Contains(msg, p.Name)
	})
}

// checkOnline checks that a running pod's memory is online on its node's host, onlined
// for its claim.
func (r *run) checkOnline(ctx context.Context, pod *corev1.Pod, claims map[types.UID]v1alpha1.DynamicMemoryClaim) {
	uid, err := r.claimUID(ctx, pod)
	if err != nil {
		r.fail("%s: %v", pod.Name, err)
		return
	}
	c := claims[uid]
	blocks := blocksOf(c.Spec.Node, c.Spec.Pool, c.Status.Extents, hostmem.SimulatedBlockSize)
	if len(blocks) == 0 {
		r.fail("pod %s runs with memory Online but no extents in DynamicMemoryClaim %s", pod.Name, c.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[CheckRunningOnline] += len(blocks)
	for _, b := range blocks {
		if owner := r.host.owner[b]; owner != string(uid) {
			r.failures = append(r.failures, fmt.Sprintf("pod %s runs on %s but block %d of pool %s is online for %q, not its claim %s", pod.Name, b.node, b.block, b.pool, owner, uid))
		}
	}
}

// claimUID is the UID of the pod's ResourceClaim.
func (r *run) claimUID(ctx context.Context, pod *corev1.Pod) (types.UID, error) {
	for _, st := range pod.Status.ResourceClaimStatuses {
		if st.ResourceClaimName == nil {
			continue
		}
		rc, err := r.sys.Kube().ResourceV1().ResourceClaims(r.ns).Get(ctx, *st.ResourceClaimName, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("get ResourceClaim %s: %w", *st.ResourceClaimName, err)
		}
		return rc.UID, nil
	}
	return "", errors.New("no ResourceClaim in the pod's status")
}

func (r *run) claimsByUID(ctx context.Context) (map[types.UID]v1alpha1.DynamicMemoryClaim, error) {
	list, err := r.sys.ListClaims(ctx, r.ns)
	if err != nil {
		return nil, err
	}
	out := map[types.UID]v1alpha1.DynamicMemoryClaim{}
	for _, c := range list {
		out[c.Spec.ClaimRef.UID] = c
	}
	return out, nil
}

// cleanUp deletes every pod while components are killed and started again, waits
// until the memory is back and checks that nothing is left anywhere, then puts the
// pools' attributes back.
func (r *run) cleanUp(ctx context.Context) {
	list, err := r.sys.Kube().CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		r.fail("list pods: %v", err)
		return
	}
	var names []string
	for _, p := range list.Items {
		r.obs.deleting(p.UID)
		names = append(names, p.Name)
	}
	var deleting sync.WaitGroup
	deleting.Go(func() {
		if err := r.sys.DeleteWorkloads(ctx, r.ns, names); err != nil {
			r.fail("%v", err)
		}
	})
	r.injectFaults(ctx, minReleaseFaults, maxReleaseFaults, true)
	deleting.Wait()
	if err := r.recover(ctx); err != nil {
		r.fail("%v", err)
		return
	}
	if err := r.sys.WaitMemoryReturned(ctx, returnTimeout); err != nil {
		r.fail("memory not returned: %v", err)
	}
	r.count(r.checks, CheckPoolsFull, 1)
	if err := r.replayJournals(); err != nil {
		r.fail("%v", err)
	}
	r.mu.Lock()
	left := r.host.online()
	r.checks[CheckHostsEmpty]++
	r.mu.Unlock()
	if len(left) > 0 {
		r.fail("blocks online after every pod is gone: %s", strings.Join(left, ", "))
	}
	r.checkNodes(ctx)
	r.restorePools(ctx)
	if err := r.sys.Kube().CoreV1().Namespaces().Delete(ctx, r.ns, metav1.DeleteOptions{}); err != nil {
		r.fail("delete namespace %s: %v", r.ns, err)
	}
}

// checkNodes checks that every agent checkpoint holds no claim and every node shows
// no pool memory online.
func (r *run) checkNodes(ctx context.Context) {
	for _, node := range r.sys.Cluster.Nodes() {
		held, err := agent.CheckpointClaims(r.sys.CheckpointFile(node))
		if err != nil {
			r.fail("node %s: %v", node, err)
		} else if len(held) > 0 {
			r.fail("node %s: the agent checkpoint still holds claims %v", node, held)
		}
		r.count(r.checks, CheckCheckpointEmpty, 1)
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			n, err := r.sys.Kube().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			q, ok := n.Status.Capacity[nodestatus.ResourceName]
			return !ok || q.IsZero(), nil
		})
		if err != nil {
			r.fail("node %s still shows %s online: %v", node, nodestatus.ResourceName, err)
		}
		r.count(r.checks, CheckNodeStatus, 1)
	}
}

// skipJournals starts the run's journal check where the journals end now (the run
// before ended with every block offline).
func (r *run) skipJournals() error {
	for _, node := range r.sys.Cluster.Nodes() {
		entries, err := hostmem.ReadJournal(r.sys.HostJournal(node))
		if err != nil {
			return fmt.Errorf("node %s: %w", node, err)
		}
		r.offsets[node] = len(entries)
	}
	return nil
}

// replayJournals checks the journal entries written since the last replay.
func (r *run) replayJournals() error {
	var entries []hostEntry
	for _, node := range r.sys.Cluster.Nodes() {
		all, err := hostmem.ReadJournal(r.sys.HostJournal(node))
		if err != nil {
			return fmt.Errorf("node %s: %w", node, err)
		}
		for _, e := range all[r.offsets[node]:] {
			entries = append(entries, hostEntry{node: node, JournalEntry: e})
		}
		r.offsets[node] = len(all)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	checks, violations := r.host.replay(entries, r.limits, r.obs)
	r.checks[CheckJournal] += checks
	r.failures = append(r.failures, violations...)
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
