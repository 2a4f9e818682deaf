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

// Package node_test runs the node side — the node agent and the DRA kubelet plugin —
// in-process against a real kube-apiserver (the local cluster) and the memory service
// (in-process, simulated pool): the ResourceSlice the plugin publishes is accepted by
// the apiserver as the design describes it; provisioning a claim makes the agent
// online memory, raise the pod cgroup limit, patch the node status and write the
// claim's device conditions; the plugin then prepares the claim the way the kubelet
// asks it to.
package node_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	drapbv1 "k8s.io/kubelet/pkg/apis/dra/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/driver"
	drametrics "github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/reconciler"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/agent"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/cgroup"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	agentmetrics "github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
)

const (
	gi       = int64(1) << 30
	poolName = "cxl-a"
	// kubeletLimit is the kubepods memory.max the fake cgroup tree starts with.
	kubeletLimit = 16 * gi
)

func TestNodeSideWithARealAPIServer(t *testing.T) {
	cl := clustertest.Start(t, cluster.Options{InstallCRDs: true, Kwok: true, Nodes: 1})
	node := cluster.NodeName(cluster.DefaultNodePrefix, 0)
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))))
	t.Cleanup(cancel)
	kube := cl.Client()
	dm, err := versioned.NewForConfig(cl.RESTConfig())
	require.NoError(t, err)

	createPool(ctx, t, dm, node)
	bundle, err := pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, []string{node})
	require.NoError(t, err)
	svc := startMemservice(ctx, t, cl, bundle)
	dial := func(member string) *client.Client {
		c, err := client.Dial(ctx, client.Config{Address: svc.Addr(), CAFile: bundle.CAFile(), CertFile: bundle.CertFile(member), KeyFile: bundle.KeyFile(member)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	// The DRA plugin, in binding-conditions mode.
	dir := t.TempDir()
	pluginDir, regDir, cdiDir := filepath.Join(dir, "plugin"), filepath.Join(dir, "registry"), filepath.Join(dir, "cdi")
	require.NoError(t, os.MkdirAll(pluginDir, 0o755))
	require.NoError(t, os.MkdirAll(regDir, 0o755))
	plugin, err := driver.Start(ctx, driver.Config{
		Node: node, Kube: kube, DynamicMemory: dm, Reservations: dial("draplugin-" + node), CDIDir: cdiDir,
		PluginDataDir: pluginDir, RegistrarDir: regDir, BindingConditions: true, Metrics: drametrics.New(),
	})
	require.NoError(t, err)
	t.Cleanup(plugin.Stop)

	// The node agent, with a simulated host and a fake cgroup tree.
	cgroupRoot := filepath.Join(dir, "cgroup")
	limitFile := filepath.Join(cgroupRoot, "kubepods.slice", "memory.max")
	require.NoError(t, os.MkdirAll(filepath.Dir(limitFile), 0o755))
	require.NoError(t, os.WriteFile(limitFile, []byte("17179869184\n"), 0o644))
	limiter, err := cgroup.New(cgroupRoot, "", cgroup.State{})
	require.NoError(t, err)
	host := hostmem.NewSimulated(hostmem.SimulatedConfig{NUMANode: 1})
	a, err := agent.New(agent.Config{
		Node: node, Client: dial("agent-" + node), Host: host, NodeStatus: nodestatus.New(kube, node, clock.RealClock{}),
		Limiter: limiter, Metrics: agentmetrics.New(), CheckpointFile: filepath.Join(dir, "agent.json"),
		HeartbeatInterval: time.Second, Version: "integration",
	})
	require.NoError(t, err)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-agentDone)
	})

	t.Run("the apiserver accepts the published ResourceSlice", func(t *testing.T) {
		var slice resourcev1.ResourceSlice
		require.Eventually(t, func() bool {
			list, err := kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
			if err != nil || len(list.Items) != 1 {
				return false
			}
			slice = list.Items[0]
			return true
		}, time.Minute, 100*time.Millisecond, "the plugin publishes one slice for the node")
		assert.Equal(t, dra.DriverName, slice.Spec.Driver)
		assert.Equal(t, node, slice.Spec.Pool.Name)
		assert.Equal(t, ptr.To(node), slice.Spec.NodeName)
		require.Len(t, slice.Spec.Devices, 1)
		dev := slice.Spec.Devices[0]
		assert.Equal(t, poolName, dev.Name)
		assert.Equal(t, ptr.To(true), dev.AllowMultipleAllocations, "the DRAConsumableCapacity field survived the apiserver")
		assert.Equal(t, []string{"Online"}, dev.BindingConditions, "the DRADeviceBindingConditions fields survived the apiserver")
		assert.Equal(t, []string{"ProvisioningFailed"}, dev.BindingFailureConditions)
		assert.Equal(t, ptr.To(poolName), dev.Attributes["pool"].StringValue)
		assert.Equal(t, ptr.To("low"), dev.Attributes["latencyClass"].StringValue)
		assert.Equal(t, ptr.To("cxl-dcd"), dev.Attributes["kind"].StringValue)
		capacity := dev.Capacity["memory"]
		assert.Equal(t, "8Gi", capacity.Value.String())
		require.NotNil(t, capacity.RequestPolicy)
		require.NotNil(t, capacity.RequestPolicy.ValidRange)
		assert.Equal(t, "1Gi", capacity.RequestPolicy.ValidRange.Min.String())
		assert.Equal(t, "1Gi", capacity.RequestPolicy.ValidRange.Step.String())
		assert.Equal(t, "8Gi", capacity.RequestPolicy.ValidRange.Max.String())
	})

	t.Run("the agent shows it is connected on the node", func(t *testing.T) {
		require.Eventually(t, func() bool {
			n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			return err == nil && conditionStatus(n, nodestatus.ConditionAgentReady) == corev1.ConditionTrue
		}, time.Minute, 100*time.Millisecond)
	})

	sched := dial("scheduler")
	rc := createAllocatedClaim(ctx, t, kube, node, "2Gi")
	ref := &memservicev1.ClaimRef{Uid: string(rc.UID), Namespace: rc.Namespace, Name: rc.Name}

	t.Run("a claim not provisioned yet is not prepared", func(t *testing.T) {
		resp := prepare(ctx, t, pluginDir, rc)
		assert.Contains(t, resp.Claims[string(rc.UID)].Error, "the memory service has no reservation for this claim")
	})

	t.Run("provisioning onlines the memory and shows it everywhere", func(t *testing.T) {
		resp, err := sched.AddMemory(ctx, &memservicev1.AddMemoryRequest{Claim: ref, Node: node, Pool: poolName, Bytes: 2 * gi})
		require.NoError(t, err)
		resv := resp.GetReservation()
		require.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resv.GetState(), resv.GetMessage())
		assert.Equal(t, []int32{1}, resv.GetNumaNodes())
		assert.Equal(t, 16, host.OnlineBlocks(), "2Gi in 128Mi blocks")

		limit, err := os.ReadFile(limitFile)
		require.NoError(t, err)
		assert.Equal(t, "19327352832", strings.TrimSpace(string(limit)), "kubepods raised by 2Gi")

		require.Eventually(t, func() bool {
			n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false
			}
			q := n.Status.Capacity[nodestatus.ResourceName]
			a := n.Status.Allocatable[nodestatus.ResourceName]
			return q.Value() == 2*gi && a.Value() == 2*gi
		}, time.Minute, 100*time.Millisecond, "node status shows 2Gi of dynamicmemory.io/online-memory")

		require.Eventually(t, func() bool {
			c, err := kube.ResourceV1().ResourceClaims(rc.Namespace).Get(ctx, rc.Name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, d := range c.Status.Devices {
				if d.Driver == dra.DriverName && d.Pool == node && d.Device == poolName {
					for _, cond := range d.Conditions {
						if cond.Type == "Online" && cond.Status == metav1.ConditionTrue {
							return true
						}
					}
				}
			}
			return false
		}, time.Minute, 100*time.Millisecond, "the claim's device has condition Online=True")
		c, err := kube.ResourceV1().ResourceClaims(rc.Namespace).Get(ctx, rc.Name, metav1.GetOptions{})
		require.NoError(t, err)
		var managers []string
		for _, f := range c.ManagedFields {
			if f.Subresource == "status" && f.Operation == metav1.ManagedFieldsOperationApply {
				managers = append(managers, f.Manager)
			}
		}
		assert.Equal(t, []string{reconciler.FieldManager}, managers, "written by the memory service")
	})

	t.Run("device conditions for a claim replaced under its name are refused", func(t *testing.T) {
		// The memory service applies from its informer's copy of the claim, whose
		// UID the apply names: a claim deleted and created again under the name in
		// between has another UID, and the apply is refused.
		stale, err := kube.ResourceV1().ResourceClaims(rc.Namespace).Get(ctx, rc.Name, metav1.GetOptions{})
		require.NoError(t, err)
		stale.UID = "0b7c2a3e-0000-4000-8000-000000000000"
		apply := dra.ApplyDeviceState(stale, dra.Devices(stale, node), dra.DeviceState{Reason: "OnlineFailed", Message: "stale", Since: time.Now()})
		_, err = kube.ResourceV1().ResourceClaims(rc.Namespace).ApplyStatus(ctx, apply, metav1.ApplyOptions{FieldManager: reconciler.FieldManager, Force: true})
		require.Error(t, err)
		assert.True(t, apierrors.IsInvalid(err), "got %v", err)
		assert.Contains(t, err.Error(), "metadata.uid")
		c, err := kube.ResourceV1().ResourceClaims(rc.Namespace).Get(ctx, rc.Name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, rc.UID, c.UID)
	})

	t.Run("the kubelet prepares the online claim", func(t *testing.T) {
		resp := prepare(ctx, t, pluginDir, rc)
		got := resp.Claims[string(rc.UID)]
		require.NotNil(t, got)
		require.Empty(t, got.Error)
		require.Len(t, got.Devices, 1)
		assert.Equal(t, []string{"dcd.dynamicmemory.io/memory=" + string(rc.UID)}, got.Devices[0].CdiDeviceIds)
		data, err := os.ReadFile(filepath.Join(cdiDir, "dcd.dynamicmemory.io_memory-"+string(rc.UID)+".json"))
		require.NoError(t, err)
		var spec cdispec.Spec
		require.NoError(t, json.Unmarshal(data, &spec))
		require.Len(t, spec.Devices, 1)
		assert.Equal(t, []string{"DYNAMIC_MEMORY_BYTES=2147483648", "DYNAMIC_MEMORY_NUMA_NODES=1"}, spec.Devices[0].ContainerEdits.Env)
	})

	t.Run("releasing offlines the memory and restores the node", func(t *testing.T) {
		resp, err := sched.RemoveMemory(ctx, &memservicev1.RemoveMemoryRequest{ClaimUid: ref.Uid, Wait: true})
		require.NoError(t, err)
		assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_RELEASED, resp.GetReservation().GetState(), resp.GetReservation().GetMessage())
		assert.Equal(t, 0, host.OnlineBlocks())
		limit, err := os.ReadFile(limitFile)
		require.NoError(t, err)
		assert.Equal(t, "17179869184", strings.TrimSpace(string(limit)), "kubepods back to the kubelet's limit")
		require.Eventually(t, func() bool {
			n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			q := n.Status.Capacity[nodestatus.ResourceName]
			return err == nil && q.Value() == 0
		}, time.Minute, 100*time.Millisecond)
	})
}

func createPool(ctx context.Context, t *testing.T, dm versioned.Interface, node string) {
	t.Helper()
	pool := &v1alpha1.DynamicMemoryPool{
		ObjectMeta: metav1.ObjectMeta{Name: poolName},
		Spec: v1alpha1.DynamicMemoryPoolSpec{
			Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
			Capacity:   resource.MustParse("32Gi"),
			BlockSize:  resource.MustParse("1Gi"),
			HostWindow: resource.MustParse("8Gi"),
			Nodes:      []v1alpha1.PoolNode{{Name: node}, {Name: "other-node", HostID: 1}},
			Attributes: map[string]string{v1alpha1.AttributeLatencyClass: "low"},
		},
	}
	_, err := dm.DynamicMemoryV1alpha1().DynamicMemoryPools().Create(ctx, pool, metav1.CreateOptions{})
	require.NoError(t, err)
}

func startMemservice(ctx context.Context, t *testing.T, cl *cluster.Cluster, bundle pki.Bundle) *service.Service {
	t.Helper()
	cfg := service.Config{RESTConfig: cl.RESTConfig(), ListenAddress: "127.0.0.1:0", AgentCommandTimeout: 30 * time.Second, ProvisionGracePeriod: time.Hour}
	cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = bundle.CAFile(), bundle.CertFile("server"), bundle.KeyFile("server")
	svc, err := service.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	select {
	case <-svc.Ready():
	case <-time.After(time.Minute):
		t.Fatal("memory service not ready within a minute")
	}
	return svc
}

// createAllocatedClaim makes a ResourceClaim allocated from the node's device the way
// the scheduler's DynamicResources plugin would (consumable capacity, a share ID). It
// is reserved for no pod yet, so the memory service does not start provisioning it on
// its own: the test decides when its memory is added.
func createAllocatedClaim(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, size string) *resourcev1.ResourceClaim {
	t.Helper()
	rc := &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "memory-claim"},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "mem", Exactly: &resourcev1.ExactDeviceRequest{
				DeviceClassName: dra.DeviceClassName,
				Capacity:        &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{"memory": resource.MustParse(size)}},
			},
		}}}},
	}
	created, err := kube.ResourceV1().ResourceClaims("default").Create(ctx, rc, metav1.CreateOptions{})
	require.NoError(t, err)
	created.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{
		Results: []resourcev1.DeviceRequestAllocationResult{{
			Request: "mem", Driver: dra.DriverName, Pool: node, Device: poolName,
			ShareID:          ptr.To(types.UID("7d1e4f3a-5c2b-4e8d-9a6f-0123456789ab")),
			ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{"memory": resource.MustParse(size)},
			// As the allocator copies them from the slice (BindingConditions above).
			BindingConditions:        []string{dra.ConditionOnline},
			BindingFailureConditions: []string{dra.ConditionProvisioningFailed},
		}},
	}}
	updated, err := kube.ResourceV1().ResourceClaims("default").UpdateStatus(ctx, created, metav1.UpdateOptions{})
	require.NoError(t, err)
	return updated
}

func prepare(ctx context.Context, t *testing.T, pluginDir string, rc *resourcev1.ResourceClaim) *drapbv1.NodePrepareResourcesResponse {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(pluginDir, "dra.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	resp, err := drapbv1.NewDRAPluginClient(conn).NodePrepareResources(ctx, &drapbv1.NodePrepareResourcesRequest{
		Claims: []*drapbv1.Claim{{Namespace: rc.Namespace, Name: rc.Name, Uid: string(rc.UID)}},
	})
	require.NoError(t, err)
	return resp
}

func conditionStatus(n *corev1.Node, typ corev1.NodeConditionType) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}
