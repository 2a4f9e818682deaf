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

package driver

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	dmfake "github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	dynamicmemoryv1alpha1 "github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/typed/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	drapbv1 "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// fakeMemservice answers GetReservation from a map, over mTLS, and records who asked.
type fakeMemservice struct {
	memservicev1.UnimplementedMemoryServiceServer
	mu           sync.Mutex
	reservations map[string]*memservicev1.Reservation
	callers      []string
}

func (f *fakeMemservice) GetReservation(ctx context.Context, req *memservicev1.GetReservationRequest) (*memservicev1.GetReservationResponse, error) {
	p, _ := peer.FromContext(ctx)
	tlsInfo := p.AuthInfo.(credentials.TLSInfo)
	id, err := pki.IdentityFromCert(tlsInfo.State.PeerCertificates[0])
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.callers = append(f.callers, id.String())
	r, ok := f.reservations[req.ClaimUid]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no reservation for claim %s", req.ClaimUid)
	}
	return &memservicev1.GetReservationResponse{Reservation: r}, nil
}

func startMemservice(t *testing.T, svc *fakeMemservice) client.Config {
	t.Helper()
	bundle, err := pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, []string{"node-1"})
	require.NoError(t, err)
	tlsConfig, err := pki.ServerTLSConfig(bundle.CertFile("server"), bundle.KeyFile("server"), bundle.CAFile())
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConfig)))
	memservicev1.RegisterMemoryServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return client.Config{
		Address: lis.Addr().String(), CAFile: bundle.CAFile(),
		CertFile: bundle.CertFile("draplugin-node-1"), KeyFile: bundle.KeyFile("draplugin-node-1"),
	}
}

func claim(name, uid, pool string) *resourceapi.ResourceClaim {
	share := types.UID("share-" + uid)
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(uid)},
		Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{
			Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
				{Request: "mem", Driver: dra.DriverName, Pool: pool, Device: "pool-a", ShareID: &share},
			}},
		}},
	}
}

type pluginHarness struct {
	kube    *fake.Clientset
	metrics *metrics.Metrics
	cdiDir  string
	regDir  string
	dra     drapbv1.DRAPluginClient
	svc     *fakeMemservice
	pools   dynamicmemoryv1alpha1.DynamicMemoryPoolInterface
	driver  *Driver
}

func startPlugin(t *testing.T, bindingConditions bool, claims ...*resourceapi.ResourceClaim) *pluginHarness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc := &fakeMemservice{reservations: map[string]*memservicev1.Reservation{}}
	conn, err := client.Dial(ctx, startMemservice(t, svc))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })

	objs := []runtime.Object{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "node-1-uid"}}}
	for _, c := range claims {
		objs = append(objs, c)
	}
	kube := fake.NewClientset(objs...)
	poolA := pool("pool-a", "128Mi", "4Gi", map[string]string{"latencyClass": "medium"}, "node-1")
	poolB := pool("pool-b", "1Gi", "8Gi", nil, "node-2")
	dm := dmfake.NewSimpleClientset(&poolA, &poolB)

	dir := t.TempDir()
	h := &pluginHarness{kube: kube, metrics: metrics.New(), cdiDir: filepath.Join(dir, "cdi"), regDir: filepath.Join(dir, "registry"), svc: svc, pools: dm.DynamicMemoryV1alpha1().DynamicMemoryPools()}
	pluginDir := filepath.Join(dir, "plugin")
	require.NoError(t, os.MkdirAll(pluginDir, 0o755))
	require.NoError(t, os.MkdirAll(h.regDir, 0o755))
	d, err := Start(ctx, Config{
		Node: "node-1", Kube: kube, DynamicMemory: dm, Reservations: conn, CDIDir: h.cdiDir,
		PluginDataDir: pluginDir, RegistrarDir: h.regDir, BindingConditions: bindingConditions, Metrics: h.metrics,
	})
	require.NoError(t, err)
	t.Cleanup(d.Stop)
	h.driver = d

	draConn, err := grpc.NewClient("unix://"+filepath.Join(pluginDir, "dra.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = draConn.Close() })
	h.dra = drapbv1.NewDRAPluginClient(draConn)
	return h
}

func (h *pluginHarness) online(uid string, bytes int64, numa ...int32) {
	h.svc.mu.Lock()
	defer h.svc.mu.Unlock()
	h.svc.reservations[uid] = &memservicev1.Reservation{Node: "node-1", Pool: "pool-a", Bytes: bytes, State: memservicev1.ReservationState_RESERVATION_STATE_ONLINE, NumaNodes: numa}
}

func (h *pluginHarness) readSpec(t *testing.T, uid string) cdispec.Spec {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cdiDir, "dcd.dynamicmemory.io_memory-"+uid+".json"))
	require.NoError(t, err)
	var spec cdispec.Spec
	require.NoError(t, json.Unmarshal(data, &spec))
	return spec
}

func prepareReq(claims ...*resourceapi.ResourceClaim) *drapbv1.NodePrepareResourcesRequest {
	req := &drapbv1.NodePrepareResourcesRequest{}
	for _, c := range claims {
		req.Claims = append(req.Claims, &drapbv1.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)})
	}
	return req
}

func TestPrepareGivesOnlineMemoryToContainers(t *testing.T) {
	c := claim("claim-1", "uid-1", "node-1")
	h := startPlugin(t, false, c)
	h.online("uid-1", 2<<30, 1, 3)
	ctx := context.Background()

	resp, err := h.dra.NodePrepareResources(ctx, prepareReq(c))
	require.NoError(t, err)
	got := resp.Claims["uid-1"]
	require.NotNil(t, got)
	assert.Empty(t, got.Error)
	require.Len(t, got.Devices, 1)
	assert.Equal(t, []string{"mem"}, got.Devices[0].RequestNames)
	assert.Equal(t, "node-1", got.Devices[0].PoolName)
	assert.Equal(t, "pool-a", got.Devices[0].DeviceName)
	assert.Equal(t, []string{"dcd.dynamicmemory.io/memory=uid-1"}, got.Devices[0].CdiDeviceIds)
	require.NotNil(t, got.Devices[0].ShareId)
	assert.Equal(t, "share-uid-1", *got.Devices[0].ShareId)

	spec := h.readSpec(t, "uid-1")
	assert.Equal(t, "dcd.dynamicmemory.io/memory", spec.Kind)
	require.Len(t, spec.Devices, 1)
	assert.Equal(t, "uid-1", spec.Devices[0].Name)
	assert.Equal(t, []string{"DYNAMIC_MEMORY_BYTES=2147483648", "DYNAMIC_MEMORY_NUMA_NODES=1,3"}, spec.Devices[0].ContainerEdits.Env)
	assert.Equal(t, []string{"draplugin/node-1"}, h.svc.callers, "the plugin asks with its own node identity")

	// Prepare again (kubelet restart): same answer.
	resp, err = h.dra.NodePrepareResources(ctx, prepareReq(c))
	require.NoError(t, err)
	assert.Empty(t, resp.Claims["uid-1"].Error)

	// Unprepare removes the spec, and may be repeated.
	for range 2 {
		uresp, err := h.dra.NodeUnprepareResources(ctx, &drapbv1.NodeUnprepareResourcesRequest{Claims: []*drapbv1.Claim{{Namespace: "default", Name: "claim-1", Uid: "uid-1"}}})
		require.NoError(t, err)
		assert.Empty(t, uresp.Claims["uid-1"].Error)
		_, err = os.Stat(filepath.Join(h.cdiDir, "dcd.dynamicmemory.io_memory-uid-1.json"))
		assert.True(t, os.IsNotExist(err), "CDI spec removed")
	}
	assert.Equal(t, float64(2), testutil.ToFloat64(h.metrics.PrepareClaims))
	assert.Equal(t, float64(2), testutil.ToFloat64(h.metrics.UnprepareClaims))
	assert.Equal(t, 1, testutil.CollectAndCount(h.metrics.PrepareDuration))
}

func TestPrepareSaysWhyAClaimIsNotReady(t *testing.T) {
	provisioning := claim("claim-2", "uid-2", "node-1")
	unknown := claim("claim-3", "uid-3", "node-1")
	elsewhere := claim("claim-4", "uid-4", "node-1")
	wrongPool := claim("claim-5", "uid-5", "node-2")
	ready := claim("claim-6", "uid-6", "node-1")
	h := startPlugin(t, false, provisioning, unknown, elsewhere, wrongPool, ready)
	h.svc.reservations["uid-2"] = &memservicev1.Reservation{Node: "node-1", State: memservicev1.ReservationState_RESERVATION_STATE_PROVISIONING, Message: "waiting for the node agent"}
	h.svc.reservations["uid-4"] = &memservicev1.Reservation{Node: "node-7", State: memservicev1.ReservationState_RESERVATION_STATE_ONLINE}
	h.online("uid-6", 1<<30, 0)

	resp, err := h.dra.NodePrepareResources(context.Background(), prepareReq(provisioning, unknown, elsewhere, wrongPool, ready))
	require.NoError(t, err)
	for uid, want := range map[string]string{
		"uid-2": "claim default/claim-2 (uid uid-2): the claim's memory is Provisioning, not online yet: waiting for the node agent",
		"uid-3": "claim default/claim-3 (uid uid-3): the memory service has no reservation for this claim: its memory is not provisioned yet, or the pool cannot serve it",
		"uid-4": `claim default/claim-4 (uid uid-4): the memory service provisions this claim's memory on node "node-7", not on node-1`,
		"uid-5": "claim default/claim-5 (uid uid-5): device pool-a is allocated from DRA pool node-2, but this plugin serves node node-1",
	} {
		require.Contains(t, resp.Claims, uid)
		assert.Contains(t, resp.Claims[uid].Error, want)
		assert.Empty(t, resp.Claims[uid].Devices)
		_, err := os.Stat(filepath.Join(h.cdiDir, "dcd.dynamicmemory.io_memory-"+uid+".json"))
		assert.True(t, os.IsNotExist(err), "no CDI spec for %s", uid)
	}
	assert.Empty(t, resp.Claims["uid-6"].Error, "one claim's failure does not fail the others")
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.PrepareErrors.WithLabelValues(metrics.ReasonNotOnline)))
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.PrepareErrors.WithLabelValues(metrics.ReasonNotFound)))
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.PrepareErrors.WithLabelValues(metrics.ReasonWrongNode)))
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.PrepareErrors.WithLabelValues(metrics.ReasonWrongAllocation)))
}

func TestPluginRegistersAndPublishesTheNodeSlice(t *testing.T) {
	h := startPlugin(t, true)
	var slices *resourceapi.ResourceSliceList
	require.Eventually(t, func() bool {
		var err error
		slices, err = h.kube.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
		return err == nil && len(slices.Items) == 1
	}, 20*time.Second, 20*time.Millisecond)
	s := slices.Items[0]
	assert.Equal(t, dra.DriverName, s.Spec.Driver)
	assert.Equal(t, "node-1", s.Spec.Pool.Name)
	require.NotNil(t, s.Spec.NodeName)
	assert.Equal(t, "node-1", *s.Spec.NodeName)
	require.Len(t, s.Spec.Devices, 1, "pool-b is not attached to node-1")
	dev := s.Spec.Devices[0]
	assert.Equal(t, "pool-a", dev.Name)
	assert.Equal(t, "medium", *dev.Attributes["latencyClass"].StringValue)
	assert.Equal(t, []string{"Online"}, dev.BindingConditions)
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.PublishedDevices))

	// The kubelet finds the plugin through its registration socket.
	regConn, err := grpc.NewClient("unix://"+filepath.Join(h.regDir, dra.DriverName+"-reg.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = regConn.Close() }()
	info, err := registerapi.NewRegistrationClient(regConn).GetInfo(context.Background(), &registerapi.InfoRequest{})
	require.NoError(t, err)
	assert.Equal(t, "DRAPlugin", info.Type)
	assert.Equal(t, dra.DriverName, info.Name)
	assert.Contains(t, info.SupportedVersions, drapbv1.DRAPluginService)

	// Ready (the plugin's /readyz) only once the kubelet says it registered it.
	require.ErrorContains(t, h.driver.Ready(), "not registered with the kubelet yet")
	_, err = registerapi.NewRegistrationClient(regConn).NotifyRegistrationStatus(context.Background(),
		&registerapi.RegistrationStatus{PluginRegistered: false, Error: "unsupported version"})
	require.ErrorContains(t, err, "unsupported version", "the helper answers a refusal with an error")
	require.ErrorContains(t, h.driver.Ready(), "the kubelet refused to register the plugin: unsupported version")
	_, err = registerapi.NewRegistrationClient(regConn).NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: true})
	require.NoError(t, err)
	assert.NoError(t, h.driver.Ready())
}

func TestPluginFollowsPoolChanges(t *testing.T) {
	h := startPlugin(t, false)
	ctx := context.Background()
	slice := func() *resourceapi.ResourceSlice {
		list, err := h.kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		if len(list.Items) != 1 {
			return nil
		}
		return &list.Items[0]
	}
	require.Eventually(t, func() bool { return slice() != nil }, 20*time.Second, 20*time.Millisecond)

	// The admin widens pool-a's host window: the device's capacity follows.
	bigger := pool("pool-a", "128Mi", "6Gi", nil, "node-1")
	_, err := h.pools.Update(ctx, &bigger, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s := slice()
		if s == nil || len(s.Spec.Devices) != 1 {
			return false
		}
		c := s.Spec.Devices[0].Capacity["memory"]
		return c.Value.String() == "6Gi" && c.RequestPolicy.ValidRange.Max.String() == "6Gi"
	}, 20*time.Second, 20*time.Millisecond)

	// pool-b gets attached to node-1 too: two devices.
	attached := pool("pool-b", "1Gi", "8Gi", nil, "node-2", "node-1")
	_, err = h.pools.Update(ctx, &attached, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s := slice()
		return s != nil && len(s.Spec.Devices) == 2 && s.Spec.Devices[1].Name == "pool-b"
	}, 20*time.Second, 20*time.Millisecond)

	// Both pools deleted: the node has no device left, and no slice.
	require.NoError(t, h.pools.Delete(ctx, "pool-a", metav1.DeleteOptions{}))
	require.NoError(t, h.pools.Delete(ctx, "pool-b", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		list, err := h.kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 0
	}, 20*time.Second, 20*time.Millisecond)
	assert.Equal(t, float64(0), testutil.ToFloat64(h.metrics.PublishedDevices))
}
