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

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/driver"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
	pluginconfig "github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
	schedconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/agent"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	agentmetrics "github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
)

const gi = int64(1) << 30

// testPool is a DynamicMemoryPool of the integration test.
type testPool struct {
	name             string
	capacity, window string
	nodes            []string
	latencyClass     string
}

// TestSchedulingWithRealAPIServer runs the scheduler in-process with both profiles
// against a real kube-apiserver (local cluster: etcd, kube-apiserver,
// kube-controller-manager, kwok), the memory service in-process with simulated
// pools, node agents with simulated hosts and the DRA driver's ResourceSlices. Pods
// with claims name either profile: both run the plugin, share one pool cache, and
// fill the pools together without promising anything twice.
func TestSchedulingWithRealAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver and etcd")
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Nodes 0-3 are attached to pools, node 4 to none.
	c := clustertest.Start(t, cluster.Options{ControllerManager: true, Kwok: true, InstallCRDs: true, Nodes: 5})
	nodes := c.Nodes()
	require.Len(t, nodes, 5)
	kube := c.Client()
	pools := []testPool{
		{name: "pool-a", capacity: "8Gi", window: "6Gi", nodes: nodes[0:2], latencyClass: "low"},
		{name: "pool-b", capacity: "4Gi", window: "4Gi", nodes: nodes[2:4], latencyClass: "high"},
	}
	poolObjs := createPools(t, ctx, c, pools)
	publishSlices(t, ctx, kube, poolObjs, nodes)

	bundle, err := pki.WriteBundle(filepath.Join(t.TempDir(), "pki"), []string{"127.0.0.1"}, nodes[:4])
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after cancel (deferred above runs first)
	svc := startMemService(t, ctx, &wg, c, bundle)
	for _, node := range nodes[:4] {
		startAgent(t, ctx, &wg, node, svc.Addr(), bundle)
	}
	admin := dial(t, ctx, svc.Addr(), bundle, "admin")
	waitForPools(t, ctx, admin, func(p *memservicev1.PoolStatus) bool {
		return p.GetReady() && !slices.ContainsFunc(p.GetNodes(), func(n *memservicev1.NodeShare) bool { return !n.GetAgentConnected() })
	}, "every pool ready with its agents connected")

	startScheduler(t, ctx, &wg, c, svc.Addr(), bundle)

	_, err = kube.ResourceV1().ResourceClaimTemplates("default").Create(ctx, claimTemplate("memory-2gi", "2Gi"), metav1.CreateOptions{})
	require.NoError(t, err)

	// A pod of the stock profile schedules as usual.
	plain, err := kube.CoreV1().Pods("default").Create(ctx, pod("plain", v1.DefaultSchedulerName, ""), metav1.CreateOptions{})
	require.NoError(t, err)

	// Fill both pools to exactly their capacity: 4 × 2Gi in pool-a, 2 × 2Gi in pool-b,
	// half of the pods through each profile.
	profiles := []string{schedconfig.DynamicMemoryProfile, schedconfig.DefaultProfile}
	var filled []string
	for i := range 6 {
		name := fmt.Sprintf("mem-%d", i)
		_, err := kube.CoreV1().Pods("default").Create(ctx, pod(name, profiles[i%2], "memory-2gi"), metav1.CreateOptions{})
		require.NoError(t, err)
		filled = append(filled, name)
	}
	placed := map[string]string{}
	for _, name := range filled {
		placed[name] = waitScheduled(t, ctx, kube, name)
	}
	assert.NotEmpty(t, waitScheduled(t, ctx, kube, plain.Name), "the default-scheduler pod is scheduled")
	perPool := map[string]int{}
	for name, node := range placed {
		pool := poolOf(pools, node)
		require.NotEmpty(t, pool, "pod %s landed on node %s, which no pool serves", name, node)
		perPool[pool]++
	}
	assert.Equal(t, map[string]int{"pool-a": 4, "pool-b": 2}, perPool, "both pools filled to their capacity")
	waitForPools(t, ctx, admin, func(p *memservicev1.PoolStatus) bool {
		return p.GetFreeBytes() == 0 && p.GetOnlineBytes() == p.GetCapacityBytes()
	}, "both pools full and their memory online")
	for _, name := range filled {
		assertOnline(t, ctx, kube, admin, name, placed[name])
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(svc.Metrics().WatchSubs), "the two profiles share one WatchPools stream")

	// One more pod stays Pending and says why.
	_, err = kube.CoreV1().Pods("default").Create(ctx, pod("mem-pending", schedconfig.DefaultProfile, "memory-2gi"), metav1.CreateOptions{})
	require.NoError(t, err)
	msg := waitUnschedulable(t, ctx, kube, "mem-pending")
	// PreFilter says it pool-wide ("no dynamic memory pool can serve claim ..., which
	// needs 2Gi: pool pool-a has 0 free; ...") once the pool cache shows both pools
	// full; Filter says it per node while reservations are still in flight.
	assert.Regexp(t, `claim default/mem-pending-memory-\w+,? (which )?needs 2Gi`, msg)
	assert.Regexp(t, `pool pool-a has 0 free`, msg)
	assert.Regexp(t, `pool pool-b has 0 free`, msg)
	t.Logf("pending pod: %s", msg)

	// Deleting a pod of pool-a frees 2Gi there: the pending pod schedules on pool-a,
	// moved by the pool cache (no timer: the scheduler's unschedulable flush is 5m).
	var victim string
	for _, name := range filled {
		if poolOf(pools, placed[name]) == "pool-a" {
			victim = name
			break
		}
	}
	deleted := time.Now()
	require.NoError(t, kube.CoreV1().Pods("default").Delete(ctx, victim, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	node := waitScheduled(t, ctx, kube, "mem-pending")
	assert.Equal(t, "pool-a", poolOf(pools, node), "the pending pod takes the freed pool-a memory")
	t.Logf("pending pod scheduled %s after the delete", time.Since(deleted).Round(time.Millisecond))
	waitForPools(t, ctx, admin, func(p *memservicev1.PoolStatus) bool {
		return p.GetFreeBytes() == 0 && p.GetOnlineBytes() == p.GetCapacityBytes()
	}, "both pools full again")

	// A plain pod pays nothing: the plugin skipped it, no dynamic memory event.
	events, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + plain.Name})
	require.NoError(t, err)
	for _, e := range events.Items {
		assert.NotContains(t, e.Reason, "DynamicMemory")
	}
}

func poolOf(pools []testPool, node string) string {
	for _, p := range pools {
		if slices.Contains(p.nodes, node) {
			return p.name
		}
	}
	return ""
}

// createPools creates the DynamicMemoryPools (simulated backends, 1Gi blocks).
func createPools(t *testing.T, ctx context.Context, c *cluster.Cluster, pools []testPool) []v1alpha1.DynamicMemoryPool {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	require.NoError(t, err)
	gvr := v1alpha1.SchemeGroupVersion.WithResource("dynamicmemorypools")
	var out []v1alpha1.DynamicMemoryPool
	for _, p := range pools {
		obj := v1alpha1.DynamicMemoryPool{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryPool"},
			ObjectMeta: metav1.ObjectMeta{Name: p.name},
			Spec: v1alpha1.DynamicMemoryPoolSpec{
				Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
				Capacity:   resource.MustParse(p.capacity),
				BlockSize:  resource.MustParse("1Gi"),
				HostWindow: resource.MustParse(p.window),
				Attributes: map[string]string{v1alpha1.AttributeLatencyClass: p.latencyClass},
			},
		}
		for i, n := range p.nodes {
			obj.Spec.Nodes = append(obj.Spec.Nodes, v1alpha1.PoolNode{Name: n, HostID: int32(i)})
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&obj)
		require.NoError(t, err)
		_, err = dyn.Resource(gvr).Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{})
		require.NoError(t, err, "create pool %s", p.name)
		out = append(out, obj)
	}
	return out
}

// publishSlices publishes each node's ResourceSlice the way the DRA plugin does:
// one device per pool attached to the node.
func publishSlices(t *testing.T, ctx context.Context, kube kubernetes.Interface, pools []v1alpha1.DynamicMemoryPool, nodes []string) {
	t.Helper()
	for _, node := range nodes {
		devices, errs := driver.Devices(pools, node, false, nil)
		require.Empty(t, errs)
		if len(devices) == 0 {
			continue
		}
		slice := &resourceapi.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: node + "-" + strings.ReplaceAll(dra.DriverName, ".", "-")},
			Spec: resourceapi.ResourceSliceSpec{
				Driver:   dra.DriverName,
				Pool:     resourceapi.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1},
				NodeName: ptr.To(node),
				Devices:  devices,
			},
		}
		_, err := kube.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{})
		require.NoError(t, err, "publish ResourceSlice of %s", node)
	}
}

func startMemService(t *testing.T, ctx context.Context, wg *sync.WaitGroup, c *cluster.Cluster, bundle pki.Bundle) *service.Service {
	t.Helper()
	cfg := service.Config{RESTConfig: c.RESTConfig(), ListenAddress: "127.0.0.1:0"}
	cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = bundle.CAFile(), bundle.CertFile("server"), bundle.KeyFile("server")
	svc, err := service.New(cfg)
	require.NoError(t, err)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := svc.Run(klog.NewContext(ctx, klog.FromContext(ctx).WithName("memservice"))); err != nil {
			t.Errorf("memory service: %v", err)
		}
	}()
	select {
	case <-svc.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("memory service not ready within 30s")
	}
	return svc
}

func startAgent(t *testing.T, ctx context.Context, wg *sync.WaitGroup, node, address string, bundle pki.Bundle) {
	t.Helper()
	cl := dial(t, ctx, address, bundle, "agent-"+node)
	a, err := agent.New(agent.Config{
		Node: node, Client: cl, Host: hostmem.NewSimulated(hostmem.SimulatedConfig{}), Metrics: agentmetrics.New(),
		HeartbeatInterval: time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
	})
	require.NoError(t, err)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = a.Run(klog.NewContext(ctx, klog.FromContext(ctx).WithName("agent").WithValues("node", node)))
	}()
}

func dial(t *testing.T, ctx context.Context, address string, bundle pki.Bundle, member string) *client.Client {
	t.Helper()
	cl, err := client.Dial(ctx, client.Config{
		Address: address, CAFile: bundle.CAFile(), CertFile: bundle.CertFile(member), KeyFile: bundle.KeyFile(member),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// startScheduler runs the scheduler as the binary does, from the shipped
// configuration pointed at the test's cluster and memory service.
func startScheduler(t *testing.T, ctx context.Context, wg *sync.WaitGroup, c *cluster.Cluster, address string, bundle pki.Bundle) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "scheduler-config.yaml")
	args := &pluginconfig.DynamicMemoryArgs{
		Address: address, CAFile: bundle.CAFile(), CertFile: bundle.CertFile("scheduler"), KeyFile: bundle.KeyFile("scheduler"),
		ProvisionTimeout: &metav1.Duration{Duration: 30 * time.Second},
	}
	require.NoError(t, schedconfig.Write(file, schedconfig.Options{Kubeconfig: c.Kubeconfig(), LeaderElect: ptr.To(false), Args: args}))

	opts := options.NewOptions()
	opts.ConfigFile = file
	opts.SecureServing.BindPort = 0
	name, err := cache.NewInformerName("kube-scheduler-integration")
	require.NoError(t, err)
	opts.InformerName = name
	require.NoError(t, opts.ComponentGlobalsRegistry.Set())
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithName("scheduler"))
	cc, sched, err := app.Setup(ctx, opts, app.WithPlugin(dynamicmemory.Name, dynamicmemory.New))
	require.NoError(t, err)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := app.Run(ctx, cc, sched); err != nil && ctx.Err() == nil {
			t.Errorf("scheduler: %v", err)
		}
	}()
}

func claimTemplate(name, size string) *resourceapi.ResourceClaimTemplate {
	return &resourceapi.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: resourceapi.ResourceClaimTemplateSpec{Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{
			Requests: []resourceapi.DeviceRequest{{Name: "memory", Exactly: &resourceapi.ExactDeviceRequest{
				DeviceClassName: dra.DeviceClassName,
				Capacity: &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{
					dra.CapacityMemory: resource.MustParse(size),
				}},
			}}},
		}}},
	}
}

// pod is a pod of the given scheduler, using a claim from template if set.
func pod(name, scheduler, template string) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{
			SchedulerName:                 scheduler,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers:                    []v1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	if template != "" {
		p.Spec.ResourceClaims = []v1.PodResourceClaim{{Name: "memory", ResourceClaimTemplateName: ptr.To(template)}}
		p.Spec.Containers[0].Resources.Claims = []v1.ResourceClaim{{Name: "memory"}}
	}
	return p
}

const waitTimeout = 60 * time.Second

func waitScheduled(t *testing.T, ctx context.Context, kube kubernetes.Interface, name string) string {
	t.Helper()
	var node string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		p, err := kube.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		require.NoError(c, err)
		require.NotEmpty(c, p.Spec.NodeName, "pod %s not scheduled: %s", name, podScheduledMessage(p))
		node = p.Spec.NodeName
	}, waitTimeout, 100*time.Millisecond)
	return node
}

func waitUnschedulable(t *testing.T, ctx context.Context, kube kubernetes.Interface, name string) string {
	t.Helper()
	var msg string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		p, err := kube.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		require.NoError(c, err)
		require.Empty(c, p.Spec.NodeName)
		msg = podScheduledMessage(p)
		require.Regexp(c, `pool pool-\w has 0 free`, msg)
	}, waitTimeout, 100*time.Millisecond)
	return msg
}

func podScheduledMessage(p *v1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodScheduled {
			return c.Reason + ": " + c.Message
		}
	}
	return ""
}

// assertOnline checks that the memory service has the memory of pod's claim online
// on node.
func assertOnline(t *testing.T, ctx context.Context, kube kubernetes.Interface, admin *client.Client, pod, node string) {
	t.Helper()
	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		p, err := kube.CoreV1().Pods("default").Get(ctx, pod, metav1.GetOptions{})
		require.NoError(c, err)
		require.NotEmpty(c, p.Status.ResourceClaimStatuses, "pod %s has no claim yet", pod)
		claim, err := kube.ResourceV1().ResourceClaims("default").Get(ctx, *p.Status.ResourceClaimStatuses[0].ResourceClaimName, metav1.GetOptions{})
		require.NoError(c, err)
		resp, err := admin.GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: string(claim.UID)})
		require.NoError(c, err)
		assert.Equal(c, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState(), "pod %s", pod)
		assert.Equal(c, node, resp.GetReservation().GetNode(), "pod %s", pod)
	}, waitTimeout, 200*time.Millisecond)
}

func waitForPools(t *testing.T, ctx context.Context, cl *client.Client, ok func(*memservicev1.PoolStatus) bool, what string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := cl.GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
		require.NoError(c, err)
		require.NotEmpty(c, resp.GetPools())
		for _, p := range resp.GetPools() {
			assert.True(c, ok(p), "pool %s: free %d, reserved %d, online %d, ready %v", p.GetName(), p.GetFreeBytes(), p.GetReservedBytes(), p.GetOnlineBytes(), p.GetReady())
		}
	}, waitTimeout, 200*time.Millisecond, what)
}
