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

package system

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

// Workload is one pod of the scenario and the dynamic memory its claim asks for.
type Workload struct {
	Name   string
	Memory resource.Quantity
	// SchedulerName schedules the pod; empty: the system's scheduler profile
	// (System.PodSchedulerName). A profile without the DynamicMemory plugin (the
	// benchmarks' baseline) has the claim allocated by DynamicResources alone, and the
	// memory service provisions it afterwards, without a reservation.
	SchedulerName string
}

// Scenario is a set of pods that fit the pools and one that cannot.
type Scenario struct {
	Namespace string
	// Fitting pods are all expected to run, with their memory online.
	Fitting []Workload
	// Oversize asks for more than any pool has left once the fitting pods run (but
	// no more than a host window), so only the pool-wide view can turn it down.
	Oversize Workload
}

// DefaultScenario is the demo's scenario on DefaultPools: 20 pods asking 2Gi to
// 16Gi, largest first, 168Gi of the 192Gi the two pools have; then a pod asking 48Gi —
// more than a node may hold of cxl-pool-a, within a node's window of cxl-pool-b, but
// more than the 24Gi left in the pools — which stays Pending.
func DefaultScenario(namespace string) Scenario {
	sc := Scenario{Namespace: namespace}
	for _, size := range []int{16, 12, 8, 4, 2} {
		for i := 1; i <= 4; i++ {
			sc.Fitting = append(sc.Fitting, NewWorkload(fmt.Sprintf("app-%dgi-%d", size, i), size))
		}
	}
	sc.Oversize = NewWorkload("too-big-48gi", 48)
	return sc
}

// NewWorkload is a pod named name asking for gib GiB of dynamic memory.
func NewWorkload(name string, gib int) Workload {
	return Workload{Name: name, Memory: *resource.NewQuantity(int64(gib)<<30, resource.BinarySI)}
}

// Total is the memory, in bytes, the workloads ask for together.
func Total(ws []Workload) int64 {
	var total int64
	for _, w := range ws {
		total += w.Memory.Value()
	}
	return total
}

// Names are the workloads' pod names.
func Names(ws []Workload) []string {
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.Name
	}
	return names
}

// claimName is the name of the pod's claim in its spec (and of the request).
const claimName = "memory"

// PodFor is the pod of a workload: scheduled by the dynamic memory scheduler (unless
// the workload names another), with one claim from its own ResourceClaimTemplate
// (TemplateFor).
func PodFor(namespace string, w Workload) *corev1.Pod {
	schedulerName := SchedulerName
	if w.SchedulerName != "" {
		schedulerName = w.SchedulerName
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      w.Name,
			Namespace: namespace,
			Labels:    map[string]string{"app.kubernetes.io/part-of": "dynamic-memory-demo"},
		},
		Spec: corev1.PodSpec{
			SchedulerName:                 schedulerName,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			// What a real node needs (kwok ignores it): the image is imported on the
			// node, there is no cluster DNS, and the workload never calls the API.
			DNSPolicy:                    corev1.DNSDefault,
			AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           cluster.ProbeImage,
				ImagePullPolicy: corev1.PullNever,
				Resources: corev1.ResourceRequirements{
					Claims: []corev1.ResourceClaim{{Name: claimName}},
				},
			}},
			ResourceClaims: []corev1.PodResourceClaim{{
				Name:                      claimName,
				ResourceClaimTemplateName: ptr.To(w.Name),
			}},
		},
	}
}

// TemplateFor is the ResourceClaimTemplate of a workload: w.Memory of the consumable
// capacity "memory" of one device of the DeviceClass.
func TemplateFor(namespace string, w Workload) *resourcev1.ResourceClaimTemplate {
	return &resourcev1.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: namespace},
		Spec: resourcev1.ResourceClaimTemplateSpec{
			Spec: resourcev1.ResourceClaimSpec{
				Devices: resourcev1.DeviceClaim{
					Requests: []resourcev1.DeviceRequest{{
						Name: claimName,
						Exactly: &resourcev1.ExactDeviceRequest{
							DeviceClassName: dra.DeviceClassName,
							Capacity: &resourcev1.CapacityRequirements{
								Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: w.Memory},
							},
						},
					}},
				},
			},
		},
	}
}

// EnsureNamespace creates the namespace unless it exists.
func (s *System) EnsureNamespace(ctx context.Context, namespace string) error {
	_, err := s.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	return nil
}

// CreateWorkloads creates each workload's claim template, then its pod. created is
// called (when not nil) right after each pod was created.
func (s *System) CreateWorkloads(ctx context.Context, namespace string, ws []Workload, created func(name string, at time.Time)) error {
	if err := s.CreateTemplates(ctx, namespace, ws); err != nil {
		return err
	}
	return s.CreatePods(ctx, namespace, ws, 1, created)
}

// CreateTemplates creates the namespace and each workload's ResourceClaimTemplate.
func (s *System) CreateTemplates(ctx context.Context, namespace string, ws []Workload) error {
	if err := s.EnsureNamespace(ctx, namespace); err != nil {
		return err
	}
	for _, w := range ws {
		if _, err := s.kube.ResourceV1().ResourceClaimTemplates(namespace).Create(ctx, TemplateFor(namespace, w), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create ResourceClaimTemplate %s/%s: %w", namespace, w.Name, err)
		}
	}
	return nil
}

// CreatePods creates the workloads' pods (their templates must exist) from parallel
// goroutines, in the workloads' order when parallel is 1. created is called (when
// not nil) right after each pod was created.
func (s *System) CreatePods(ctx context.Context, namespace string, ws []Workload, parallel int, created func(name string, at time.Time)) error {
	errs := make([]error, len(ws))
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, parallel) {
		wg.Go(func() {
			for i := range next {
				w := ws[i]
				if w.SchedulerName == "" {
					w.SchedulerName = s.PodSchedulerName()
				}
				if _, err := s.kube.CoreV1().Pods(namespace).Create(ctx, PodFor(namespace, w), metav1.CreateOptions{}); err != nil {
					errs[i] = fmt.Errorf("create pod %s/%s: %w", namespace, w.Name, err)
					continue
				}
				if created != nil {
					created(w.Name, time.Now())
				}
			}
		})
	}
	for i := range ws {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// PodCounts counts the scenario's pods by progress.
type PodCounts struct {
	Total, Scheduled, Running int
}

func (c PodCounts) String() string {
	return fmt.Sprintf("%d/%d pods scheduled, %d/%d running", c.Scheduled, c.Total, c.Running, c.Total)
}

// WaitRunning waits until every named pod is Running, printing the counts as they
// change (at most once a second).
func (s *System) WaitRunning(ctx context.Context, namespace string, names []string, timeout time.Duration) error {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var counts PodCounts
	var lastPrinted PodCounts
	var printedAt time.Time
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := s.CheckComponents(); err != nil {
			return false, err
		}
		pods, err := s.kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		counts = PodCounts{Total: len(names)}
		for _, p := range pods.Items {
			if !want[p.Name] {
				continue
			}
			if p.Spec.NodeName != "" {
				counts.Scheduled++
			}
			if p.Status.Phase == corev1.PodRunning {
				counts.Running++
			}
		}
		done := counts.Running == counts.Total
		if counts != lastPrinted && (done || time.Since(printedAt) >= time.Second) {
			s.opts.Progress.Printf("  %s", counts)
			lastPrinted, printedAt = counts, time.Now()
		}
		return done, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %d pods in %s to run (%s): %w", len(names), namespace, counts, err)
	}
	return nil
}

// WaitUnschedulable waits until the scheduler has marked the pod unschedulable for
// a reason naming one of the pools (the stock scheduler: for any reason), and returns
// that reason.
func (s *System) WaitUnschedulable(ctx context.Context, namespace, name string, timeout time.Duration) (string, error) {
	var msg string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := s.CheckComponents(); err != nil {
			return false, err
		}
		pod, err := s.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if pod.Spec.NodeName != "" {
			return false, fmt.Errorf("pod %s/%s was scheduled to %s, expected it to stay Pending", namespace, name, pod.Spec.NodeName)
		}
		unschedulable := false
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				msg, unschedulable = c.Message, c.Reason == corev1.PodReasonUnschedulable
			}
		}
		if s.opts.Scheduler != SchedulerDynamicMemory {
			// The stock scheduler knows no pools: DynamicResources finds no device
			// with room (the devices shrink as their pool fills).
			return unschedulable, nil
		}
		return slices.ContainsFunc(s.Pools, func(p v1alpha1.DynamicMemoryPool) bool { return strings.Contains(msg, p.Name) }), nil
	})
	if err != nil {
		return msg, fmt.Errorf("wait for pod %s/%s to be unschedulable for lack of pool memory (last reason %q): %w", namespace, name, msg, err)
	}
	return msg, nil
}

// DeleteWorkloads deletes the workloads' pods, then their claim templates, from a
// few goroutines.
func (s *System) DeleteWorkloads(ctx context.Context, namespace string, names []string) error {
	errs := make([]error, 2*len(names))
	deleteAll := func(offset int, del func(name string) error) {
		next := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range next {
					if err := del(names[i]); err != nil && !apierrors.IsNotFound(err) {
						errs[offset+i] = err
					}
				}
			})
		}
		for i := range names {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	deleteAll(0, func(name string) error {
		if err := s.kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("delete pod %s/%s: %w", namespace, name, err)
		}
		return nil
	})
	deleteAll(len(names), func(name string) error {
		if err := s.kube.ResourceV1().ResourceClaimTemplates(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("delete ResourceClaimTemplate %s/%s: %w", namespace, name, err)
		}
		return nil
	})
	return errors.Join(errs...)
}

// WaitMemoryReturned waits until every pool is free again, as the memory service
// and the pools' status say, and no DynamicMemoryClaim is left; it prints the
// memory in use as it goes down.
func (s *System) WaitMemoryReturned(ctx context.Context, timeout time.Duration) error {
	var last error
	var lastInUse int64 = -1
	var printedAt time.Time
	printedRest := false
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := s.CheckComponents(); err != nil {
			return false, err
		}
		resp, err := s.admin.GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
		if err != nil {
			if last == nil {
				last = err
			}
			return false, nil
		}
		var inUse int64
		for _, p := range resp.GetPools() {
			inUse += p.GetCapacityBytes() - p.GetFreeBytes()
		}
		if inUse != lastInUse && (inUse == 0 || time.Since(printedAt) >= time.Second) {
			s.opts.Progress.Printf("  %s of pool memory still held", formatBytes(inUse))
			lastInUse, printedAt = inUse, time.Now()
		}
		last = s.CheckQuiescent(ctx)
		if last != nil && inUse == 0 && !printedRest {
			s.opts.Progress.Printf("  the memory service holds nothing; waiting for the DynamicMemoryClaims to go and the pools' status to follow")
			printedRest = true
		}
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("wait for every pool to be free again (%v): %w", last, err)
	}
	return nil
}

// LedgerFree tells whether the memory service reports every pool entirely free.
func (s *System) LedgerFree(ctx context.Context) bool {
	resp, err := s.admin.GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
	if err != nil {
		return false
	}
	for _, p := range resp.GetPools() {
		if p.GetFreeBytes() != p.GetCapacityBytes() {
			return false
		}
	}
	return true
}

// CheckQuiescent checks the state once nothing uses dynamic memory: the memory
// service reports every pool and node share entirely free, the pools' status says
// the same, and no DynamicMemoryClaim exists.
func (s *System) CheckQuiescent(ctx context.Context) error {
	var errs []error
	resp, err := s.admin.GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
	if err != nil {
		return fmt.Errorf("get capacity from the memory service: %w", err)
	}
	for _, want := range s.Pools {
		p := findPool(resp.GetPools(), want.Name)
		if p == nil {
			errs = append(errs, fmt.Errorf("memory service does not know pool %s", want.Name))
			continue
		}
		if p.GetFreeBytes() != want.Spec.Capacity.Value() || p.GetReservedBytes() != 0 || p.GetOnlineBytes() != 0 {
			errs = append(errs, fmt.Errorf("memory service: pool %s has %s free of %s (%s reserved, %s online)", p.GetName(),
				formatBytes(p.GetFreeBytes()), formatBytes(want.Spec.Capacity.Value()), formatBytes(p.GetReservedBytes()), formatBytes(p.GetOnlineBytes())))
		}
		for _, n := range p.GetNodes() {
			if n.GetReservedBytes() != 0 || n.GetOnlineBytes() != 0 {
				errs = append(errs, fmt.Errorf("memory service: node %s holds %s reserved and %s online of pool %s",
					n.GetNode(), formatBytes(n.GetReservedBytes()), formatBytes(n.GetOnlineBytes()), p.GetName()))
			}
		}
	}
	pools, err := s.ListPools(ctx)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if p.Status.Free == nil || p.Status.Free.Cmp(p.Spec.Capacity) != 0 {
			errs = append(errs, fmt.Errorf("DynamicMemoryPool %s status: free %v of %s", p.Name, p.Status.Free, p.Spec.Capacity.String()))
		}
	}
	claims, err := s.ListClaims(ctx, metav1.NamespaceAll)
	if err != nil {
		return err
	}
	for _, c := range claims {
		errs = append(errs, fmt.Errorf("DynamicMemoryClaim %s/%s is left (phase %s, node %s, pool %s)", c.Namespace, c.Name, c.CurrentPhase(), c.Spec.Node, c.Spec.Pool))
	}
	return errors.Join(errs...)
}

// ListPools returns the DynamicMemoryPools.
func (s *System) ListPools(ctx context.Context) ([]v1alpha1.DynamicMemoryPool, error) {
	list, err := s.dm.DynamicMemoryV1alpha1().DynamicMemoryPools().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list DynamicMemoryPools: %w", err)
	}
	return list.Items, nil
}

// ListClaims returns the DynamicMemoryClaims of a namespace (all: metav1.NamespaceAll).
func (s *System) ListClaims(ctx context.Context, namespace string) ([]v1alpha1.DynamicMemoryClaim, error) {
	list, err := s.dm.DynamicMemoryV1alpha1().DynamicMemoryClaims(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list DynamicMemoryClaims: %w", err)
	}
	return list.Items, nil
}

// Placement is where one pod and its memory ended up.
type Placement struct {
	Pod   string
	Phase corev1.PodPhase
	// Node the pod is bound to.
	Node string
	// Claim is the pod's ResourceClaim; AllocatedNode the node its allocation is for.
	Claim         string
	ClaimUID      string
	AllocatedNode string
	// The DynamicMemoryClaim of the claim (empty Phase when there is none).
	MemoryPhase v1alpha1.ClaimPhase
	MemoryNode  string
	MemoryPool  string
	MemorySize  resource.Quantity
}

// Placements reports, for each named pod, where it and its memory are.
func (s *System) Placements(ctx context.Context, namespace string, names []string) ([]Placement, error) {
	claims, err := s.ListClaims(ctx, namespace)
	if err != nil {
		return nil, err
	}
	byUID := map[string]v1alpha1.DynamicMemoryClaim{}
	for _, c := range claims {
		byUID[string(c.Spec.ClaimRef.UID)] = c
	}
	var out []Placement
	for _, name := range names {
		pod, err := s.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
		}
		p := Placement{Pod: name, Phase: pod.Status.Phase, Node: pod.Spec.NodeName}
		for _, st := range pod.Status.ResourceClaimStatuses {
			if st.Name == claimName && st.ResourceClaimName != nil {
				p.Claim = *st.ResourceClaimName
			}
		}
		if p.Claim != "" {
			rc, err := s.kube.ResourceV1().ResourceClaims(namespace).Get(ctx, p.Claim, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("get ResourceClaim %s/%s of pod %s: %w", namespace, p.Claim, name, err)
			}
			p.ClaimUID = string(rc.UID)
			p.AllocatedNode = dra.AllocatedNode(rc.Status.Allocation)
			if m, ok := byUID[p.ClaimUID]; ok {
				p.MemoryPhase, p.MemoryNode, p.MemoryPool, p.MemorySize = m.CurrentPhase(), m.Spec.Node, m.Spec.Pool, m.Spec.Size
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func formatBytes(n int64) string {
	return resource.NewQuantity(n, resource.BinarySI).String()
}
