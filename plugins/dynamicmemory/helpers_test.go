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

package dynamicmemory

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

// fakeClaims is the part of the DRA manager's claim tracker the plugin uses.
type fakeClaims struct {
	fwk.ResourceClaimTracker
	mu      sync.Mutex
	claims  map[string]*resourceapi.ResourceClaim
	pending map[types.UID]*resourceapi.AllocationResult
}

func (c *fakeClaims) Get(namespace, name string) (*resourceapi.ResourceClaim, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	claim, ok := c.claims[namespace+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(resourceapi.Resource("resourceclaims"), name)
	}
	return claim, nil
}

func (c *fakeClaims) GetPendingAllocation(uid types.UID) *resourceapi.AllocationResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[uid]
}

func (c *fakeClaims) set(claims ...*resourceapi.ResourceClaim) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, claim := range claims {
		c.claims[claim.Namespace+"/"+claim.Name] = claim
	}
}

type fakeDRA struct {
	fwk.SharedDRAManager
	claims *fakeClaims
}

func (d *fakeDRA) ResourceClaims() fwk.ResourceClaimTracker { return d.claims }

// fakeHandle is the part of the framework handle the plugin uses.
type fakeHandle struct {
	fwk.Handle
	dra       *fakeDRA
	recorder  *events.FakeRecorder
	informers informers.SharedInformerFactory

	mu        sync.Mutex
	activated []string
	// waitingPods are the pods a Permit plugin holds, as the framework registers them.
	waitingPods map[types.UID]*fakeWaitingPod
}

// fakeWaitingPod records the Permit plugin's answer.
type fakeWaitingPod struct {
	fwk.WaitingPod
	pod    *v1.Pod
	answer chan string // "allow" or "reject: <message>"
}

func (w *fakeWaitingPod) Allow(string) { w.answer <- "allow" }
func (w *fakeWaitingPod) Reject(_, msg string) bool {
	w.answer <- "reject: " + msg
	return true
}

// wait registers pod as waiting on Permit, as the framework does after Permit
// returned Wait.
func (h *fakeHandle) wait(pod *v1.Pod) *fakeWaitingPod {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &fakeWaitingPod{pod: pod, answer: make(chan string, 1)}
	h.waitingPods[pod.UID] = w
	return w
}

func (h *fakeHandle) GetWaitingPod(uid types.UID) fwk.WaitingPod {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w, ok := h.waitingPods[uid]; ok {
		return w
	}
	return nil
}

func newFakeHandle(t *testing.T, ctx context.Context, pods ...*v1.Pod) *fakeHandle {
	t.Helper()
	objs := make([]runtime.Object, 0, len(pods))
	for _, p := range pods {
		objs = append(objs, p)
	}
	h := &fakeHandle{
		dra:       &fakeDRA{claims: &fakeClaims{claims: map[string]*resourceapi.ResourceClaim{}, pending: map[types.UID]*resourceapi.AllocationResult{}}},
		recorder:  events.NewFakeRecorder(100),
		informers: informers.NewSharedInformerFactory(fake.NewClientset(objs...), 0),

		waitingPods: map[types.UID]*fakeWaitingPod{},
	}
	h.informers.Core().V1().Pods().Informer()
	ctx, cancel := context.WithCancel(ctx)
	h.informers.Start(ctx.Done())
	h.informers.WaitForCacheSync(ctx.Done())
	t.Cleanup(func() { cancel(); h.informers.Shutdown() })
	return h
}

func (h *fakeHandle) SharedDRAManager() fwk.SharedDRAManager                 { return h.dra }
func (h *fakeHandle) EventRecorder() events.EventRecorderLogger              { return h.recorder }
func (h *fakeHandle) SharedInformerFactory() informers.SharedInformerFactory { return h.informers }
func (h *fakeHandle) ProfileName() string                                    { return "dynamic-memory-scheduler" }

func (h *fakeHandle) Activate(_ klog.Logger, pods map[string]*v1.Pod) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for key := range pods {
		h.activated = append(h.activated, key)
	}
}

func (h *fakeHandle) activatedPods() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.activated...)
}

// events drains the recorded events.
func (h *fakeHandle) events() []string {
	var out []string
	for {
		select {
		case e := <-h.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// testArgs are valid, defaulted args.
func testArgs() *config.DynamicMemoryArgs {
	args := &config.DynamicMemoryArgs{Address: "memservice:8443", CAFile: "ca.crt", CertFile: "scheduler.crt", KeyFile: "scheduler.key"}
	config.SetDefaults(args)
	return args
}

// newTestPlugin runs a plugin against fs until the test ends and waits for its
// pool cache to connect.
func newTestPlugin(t *testing.T, ctx context.Context, fs *fakeService, h *fakeHandle, mutate func(*config.DynamicMemoryArgs)) *DynamicMemory {
	t.Helper()
	args := testArgs()
	if mutate != nil {
		mutate(args)
	}
	conn := newConnection(fs.client(t), clock.RealClock{})
	rejected := newRejectedPods(h)
	conn.addRejected(rejected)
	pl := newPlugin(h, args, conn, rejected, clock.RealClock{})
	pl.cache.backoff.Duration = 10 * time.Millisecond
	pl.cache.backoff.Cap = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); pl.cache.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitConnected(t, pl, true)
	return pl
}

// prefilteredPod makes pod "p" with a 4Gi claim "c1", a plugin against fs (args
// changed by mutate) and runs PreFilter, which must pass.
func prefilteredPod(t *testing.T, ctx context.Context, fs *fakeService, mutate func(*config.DynamicMemoryArgs)) (*DynamicMemory, *fakeHandle, *v1.Pod, *resourceapi.ResourceClaim, *framework.CycleState) {
	t.Helper()
	claim := memClaim("c1", "4Gi")
	pod := memPod("p", "c1")
	h := newFakeHandle(t, ctx, pod)
	h.dra.claims.set(claim)
	pl := newTestPlugin(t, ctx, fs, h, mutate)
	cs, _, st := preFilter(t, ctx, pl, pod)
	require.True(t, st.IsSuccess(), "PreFilter: %v", st)
	return pl, h, pod, claim, cs
}

func waitConnected(t *testing.T, pl *DynamicMemory, connected bool) {
	t.Helper()
	require.Eventually(t, func() bool { return pl.cache.view().connected == connected }, 5*time.Second, 5*time.Millisecond,
		"pool cache connected should become %v", connected)
}

// waitRevision waits until the cache holds the service's current revision.
func waitRevision(t *testing.T, pl *DynamicMemory, fs *fakeService) {
	t.Helper()
	fs.mu.Lock()
	want := fs.revision
	fs.mu.Unlock()
	require.Eventually(t, func() bool {
		v := pl.cache.view()
		return v.index != nil && v.index.revision >= want
	}, 5*time.Second, 5*time.Millisecond, "pool cache should reach revision %d", want)
}

func testContext(t *testing.T) context.Context {
	_, ctx := ktesting.NewTestContext(t)
	return ctx
}

// memClaim is a claim asking size of dynamic memory in request "mem".
func memClaim(name, size string) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name + "-uid")},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "mem",
			Exactly: &resourceapi.ExactDeviceRequest{
				DeviceClassName: dra.DeviceClassName,
				AllocationMode:  resourceapi.DeviceAllocationModeExactCount,
				Count:           1,
				Capacity:        &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse(size)}},
			},
		}}}},
	}
}

// allocated marks claim as allocated on node from pool.
func allocated(claim *resourceapi.ResourceClaim, node, pool string) *resourceapi.ResourceClaim {
	claim = claim.DeepCopy()
	claim.Status.Allocation = allocation(node, pool)
	return claim
}

func allocation(node, pool string) *resourceapi.AllocationResult {
	return &resourceapi.AllocationResult{
		Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{{
			Request: "mem", Driver: dra.DriverName, Pool: node, Device: pool, ShareID: ptr.To(types.UID("share")),
		}}},
		NodeSelector: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{MatchFields: []v1.NodeSelectorRequirement{{
			Key: "metadata.name", Operator: v1.NodeSelectorOpIn, Values: []string{node},
		}}}}},
	}
}

// memPod is a pod using the named claims.
func memPod(name string, claims ...string) *v1.Pod {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name + "-uid")}}
	for _, c := range claims {
		pod.Spec.ResourceClaims = append(pod.Spec.ResourceClaims, v1.PodResourceClaim{Name: c, ResourceClaimName: ptr.To(c)})
	}
	return pod
}

func nodeInfo(name string) fwk.NodeInfo {
	ni := framework.NewNodeInfo()
	ni.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	return ni
}

// twoPools: pool-a (32Gi, window 16Gi, n1 n2, high latency), pool-b (64Gi, window
// 32Gi, n3 n4, low latency); both with 1Gi blocks.
func twoPools() []*fakePool {
	return []*fakePool{
		{name: "pool-a", capacity: 32 * gi, block: gi, window: 16 * gi, nodes: []string{"n1", "n2"}, latencyClass: "high"},
		{name: "pool-b", capacity: 64 * gi, block: gi, window: 32 * gi, nodes: []string{"n3", "n4"}, latencyClass: "low"},
	}
}

// preFilter runs PreFilter into a new cycle state.
func preFilter(t *testing.T, ctx context.Context, pl *DynamicMemory, pod *v1.Pod) (*framework.CycleState, *fwk.PreFilterResult, *fwk.Status) {
	t.Helper()
	cs := framework.NewCycleState()
	res, status := pl.PreFilter(ctx, cs, pod, nil)
	return cs, res, status
}

func typesUID(s string) types.UID { return types.UID(s) }
