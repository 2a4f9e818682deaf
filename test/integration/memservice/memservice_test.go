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

// Package memservice_test runs the memory service in-process against a real
// kube-apiserver (the local cluster): persistence before hardware actions, restart in
// the middle of provisioning, release when the ResourceClaim goes away.
package memservice_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/simulated"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
)

const gi = int64(1) << 30

var claimsGVR = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemoryclaims")

// device is the pool's simulated device, shared by the service instances of a test
// (as a real device outlives the service), which checks on every add that the
// claim's DynamicMemoryClaim was already written.
type device struct {
	*simulated.Device
	t   *testing.T
	dyn dynamic.Interface

	mu         sync.Mutex
	adds       []string
	addStarted chan string
}

func (d *device) Add(ctx context.Context, host int32, tag string, ext []v1alpha1.Extent) error {
	list, err := d.dyn.Resource(claimsGVR).List(context.Background(), metav1.ListOptions{LabelSelector: v1alpha1.LabelClaimUID + "=" + tag})
	phase := ""
	if err == nil && len(list.Items) == 1 {
		var rec v1alpha1.DynamicMemoryClaim
		if runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[0].Object, &rec) == nil {
			phase = string(rec.CurrentPhase())
		}
	}
	d.mu.Lock()
	d.adds = append(d.adds, fmt.Sprintf("%s recorded as %q", tag, phase))
	d.mu.Unlock()
	select {
	case d.addStarted <- tag:
	default:
	}
	return d.Device.Add(ctx, host, tag, ext)
}

func (d *device) addLog() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.adds...)
}

type env struct {
	t      *testing.T
	ctx    context.Context
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	bundle pki.Bundle
	dev    *device
	cl     *cluster.Cluster
}

func setup(t *testing.T) *env {
	t.Helper()
	// With the installation's RBAC and admission policies: instances started with
	// startAsServiceAccount are held to them.
	cl := clustertest.Start(t, cluster.Options{InstallCRDs: true, InstallRBAC: true, ControllerManager: true})
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2))))
	e := &env{t: t, ctx: ctx, kube: cl.Client(), cl: cl}
	var err error
	e.dyn, err = dynamic.NewForConfig(cl.RESTConfig())
	require.NoError(t, err)
	e.bundle, err = pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, []string{"node1", "node2"})
	require.NoError(t, err)
	sim, err := simulated.New(simulated.Config{Capacity: 16 * gi, BlockSize: gi, HostWindow: 8 * gi, Seed: 1})
	require.NoError(t, err)
	e.dev = &device{Device: sim, t: t, dyn: e.dyn, addStarted: make(chan string, 16)}

	pool := &v1alpha1.DynamicMemoryPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryPool"},
		ObjectMeta: metav1.ObjectMeta{Name: "cxl-a"},
		Spec: v1alpha1.DynamicMemoryPoolSpec{
			Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
			Capacity:   resource.MustParse("16Gi"),
			BlockSize:  resource.MustParse("1Gi"),
			HostWindow: resource.MustParse("8Gi"),
			Nodes:      []v1alpha1.PoolNode{{Name: "node1", HostID: 0}, {Name: "node2", HostID: 1}},
		},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pool)
	require.NoError(t, err)
	_, err = e.dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("dynamicmemorypools")).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	require.NoError(t, err)
	return e
}

// start runs a service instance until the returned stop is called (a crash, as far
// as the service can tell: nothing is cleaned up beyond what Run does on return).
func (e *env) start(listen string) (svc *service.Service, stop func()) {
	e.t.Helper()
	svc, stop = e.startInstance(listen, "")
	select {
	case <-svc.Ready():
	case <-time.After(30 * time.Second):
		e.t.Fatal("service not ready within 30s")
	}
	return svc, stop
}

// startInstance starts an instance without waiting for it to serve; with a non-empty
// identity it takes part in leader election.
func (e *env) startInstance(listen, identity string) (svc *service.Service, stop func()) {
	e.t.Helper()
	cfg := e.config(e.cl.RESTConfig(), listen)
	if identity != "" {
		cfg.LeaderElection.Enabled = true
		cfg.LeaderElection.Namespace, cfg.LeaderElection.Name, cfg.LeaderElection.Identity = "default", "memservice-test", identity
	}
	svc, cancel, done := e.run(cfg)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			assert.NoError(e.t, <-done)
		})
	}
	e.t.Cleanup(stop)
	return svc, stop
}

// config is an instance's configuration: the test's device, its certificates.
func (e *env) config(restConfig *rest.Config, listen string) service.Config {
	cfg := service.Config{RESTConfig: restConfig, ListenAddress: listen, Metrics: metricsserver.Options{Address: "127.0.0.1:0"},
		ReservationTTL: time.Minute, ProvisionGracePeriod: time.Hour, AgentCommandTimeout: 30 * time.Second}
	cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = e.bundle.CAFile(), e.bundle.CertFile("server"), e.bundle.KeyFile("server")
	cfg.NewBackend = func(*v1alpha1.DynamicMemoryPool) (provision.Backend, error) { return e.dev, nil }
	return cfg
}

// run runs an instance until cancel is called; done has what Run returned.
func (e *env) run(cfg service.Config) (svc *service.Service, cancel context.CancelFunc, done <-chan error) {
	e.t.Helper()
	svc, err := service.New(cfg)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(e.ctx)
	errc := make(chan error, 1)
	go func() { errc <- svc.Run(ctx) }()
	return svc, cancel, errc
}

func (e *env) dial(addr, member string) *client.Client {
	e.t.Helper()
	c, err := client.Dial(e.ctx, client.Config{Address: addr, CAFile: e.bundle.CAFile(), CertFile: e.bundle.CertFile(member), KeyFile: e.bundle.KeyFile(member)})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// runAgent plays node's agent: it (re)opens its session whenever it drops, onlines
// and offlines on command, until the test ends.
func (e *env) runAgent(c *client.Client, node string) {
	ctx, cancel := context.WithCancel(e.ctx)
	e.t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			stream, err := c.AgentSession(ctx)
			if err == nil {
				err = stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: &memservicev1.AgentHello{Node: node}}})
			}
			for err == nil {
				var cmd *memservicev1.AgentCommand
				if cmd, err = stream.Recv(); err != nil {
					break
				}
				res := &memservicev1.CommandResult{CommandId: cmd.GetCommandId(), Outcome: memservicev1.CommandResult_OUTCOME_OFFLINE}
				if on := cmd.GetOnline(); on != nil {
					res.ClaimUid, res.Outcome, res.NumaNodes = on.GetClaimUid(), memservicev1.CommandResult_OUTCOME_ONLINE, []int32{1}
				}
				err = stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Result{Result: res}})
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

// createClaim makes an allocated ResourceClaim of our driver and returns its ref. It
// is not reserved for a pod, so provisioning it is left to the test's AddMemory (the
// service provisions a claim reserved for a pod without a reservation on its own:
// adopt_test.go).
func (e *env) createClaim(name string) *memservicev1.ClaimRef {
	e.t.Helper()
	rc := &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "mem", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "dynamic-memory.dynamicmemory.io"},
		}}}},
	}
	created, err := e.kube.ResourceV1().ResourceClaims("default").Create(e.ctx, rc, metav1.CreateOptions{})
	require.NoError(e.t, err)
	created.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{
		Results: []resourcev1.DeviceRequestAllocationResult{{Request: "mem", Driver: dra.DriverName, Pool: "node1", Device: "cxl-a"}},
	}}
	_, err = e.kube.ResourceV1().ResourceClaims("default").UpdateStatus(e.ctx, created, metav1.UpdateOptions{})
	require.NoError(e.t, err)
	return &memservicev1.ClaimRef{Uid: string(created.UID), Namespace: "default", Name: name}
}

func (e *env) record(name string) *v1alpha1.DynamicMemoryClaim {
	e.t.Helper()
	u, err := e.dyn.Resource(claimsGVR).Namespace("default").Get(e.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	require.NoError(e.t, err)
	var obj v1alpha1.DynamicMemoryClaim
	require.NoError(e.t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj))
	return &obj
}

func TestMemoryServiceWithARealAPIServer(t *testing.T) {
	e := setup(t)
	svc, stopFirst := e.start("127.0.0.1:0")
	sched := e.dial(svc.Addr(), "scheduler")
	e.runAgent(e.dial(svc.Addr(), "agent-node1"), "node1")

	t.Run("provisioning writes the DynamicMemoryClaim before the device is called", func(t *testing.T) {
		ref := e.createClaim("first")
		resp, err := sched.AddMemory(e.ctx, &memservicev1.AddMemoryRequest{Claim: ref, Node: "node1", Bytes: 3 * gi})
		require.NoError(t, err)
		require.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState(), resp.GetReservation().GetMessage())
		assert.Equal(t, []string{ref.GetUid() + ` recorded as "Provisioning"`}, e.dev.addLog())

		// AddMemory answers from the ledger; the record follows.
		var rec *v1alpha1.DynamicMemoryClaim
		require.Eventually(t, func() bool {
			rec = e.record("first")
			return rec != nil && rec.Status.Phase == v1alpha1.PhaseOnline
		}, 10*time.Second, 20*time.Millisecond, "the DynamicMemoryClaim should say Online")
		assert.Equal(t, ref.GetUid(), rec.Labels[v1alpha1.LabelClaimUID])
		assert.Equal(t, "node1", rec.Labels[v1alpha1.LabelNode])
		assert.Empty(t, rec.Finalizers, "the admission policy keeps others from deleting it")
		assert.Empty(t, rec.OwnerReferences, "the service removes the record itself once the memory is back")
		assert.Equal(t, "3Gi", rec.Spec.Size.String())
		assert.Equal(t, []v1alpha1.Extent{{Offset: 0, Length: 3 * gi}}, rec.Status.Extents)
		assert.NotNil(t, rec.Status.ProvisioningDuration)
	})

	t.Run("the pool status is written back", func(t *testing.T) {
		require.Eventually(t, func() bool {
			u, err := e.dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("dynamicmemorypools")).Get(e.ctx, "cxl-a", metav1.GetOptions{})
			if err != nil {
				return false
			}
			free, _, _ := unstructured.NestedString(u.Object, "status", "free")
			online, _, _ := unstructured.NestedString(u.Object, "status", "online")
			return free == "13Gi" && online == "3Gi"
		}, 10*time.Second, 50*time.Millisecond)
	})

	t.Run("a restart in the middle of provisioning loses nothing", func(t *testing.T) {
		ref := e.createClaim("second")
		e.dev.SetFaults(simulated.Faults{Hang: true})
		for len(e.dev.addStarted) > 0 {
			<-e.dev.addStarted
		}
		go func() {
			_, _ = sched.AddMemory(e.ctx, &memservicev1.AddMemoryRequest{Claim: ref, Node: "node1", Bytes: 2 * gi})
		}()
		select {
		case tag := <-e.dev.addStarted:
			require.Equal(t, ref.GetUid(), tag)
		case <-time.After(10 * time.Second):
			t.Fatal("the device was not asked to add extents")
		}
		require.Equal(t, v1alpha1.PhaseProvisioning, e.record("second").CurrentPhase())

		// "Kill" the first instance in the middle of the add: its context ends, nothing
		// more is written; a new instance takes over on the same address.
		addr := svc.Addr()
		stopFirst()
		require.Equal(t, v1alpha1.PhaseProvisioning, e.record("second").CurrentPhase(), "the crash left the claim Provisioning")
		e.dev.SetFaults(simulated.Faults{})
		svc2, _ := e.start(addr)
		require.Equal(t, addr, svc2.Addr())

		require.Eventually(t, func() bool {
			rec := e.record("second")
			return rec != nil && rec.Status.Phase == v1alpha1.PhaseOnline
		}, 30*time.Second, 50*time.Millisecond, "the restarted service finishes provisioning")
		resp, err := sched.GetReservation(e.ctx, &memservicev1.GetReservationRequest{ClaimUid: ref.GetUid()})
		require.NoError(t, err)
		assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState())

		capResp, err := sched.GetCapacity(e.ctx, &memservicev1.GetCapacityRequest{})
		require.NoError(t, err)
		assert.Equal(t, 11*gi, capResp.GetPools()[0].GetFreeBytes(), "3Gi and 2Gi held, nothing more")
		assert.Equal(t, 5*gi, capResp.GetPools()[0].GetOnlineBytes())
		onDevice, err := e.dev.List(e.ctx)
		require.NoError(t, err)
		var total int64
		for _, x := range onDevice {
			total += x.Length
		}
		assert.Equal(t, 5*gi, total, "the device holds exactly the claims' extents")
		require.NoError(t, svc2.Ledger().CheckInvariants())
	})

	t.Run("an agent reporting memory of an unknown claim is told to offline it", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
		defer cancel()
		stream, err := e.dial(svc.Addr(), "agent-node2").AgentSession(ctx)
		require.NoError(t, err)
		unknown := "0b7c3f6e-1d2a-4c5b-8e9f-00000000dead"
		require.NoError(t, stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: &memservicev1.AgentHello{
			Node: "node2", HostState: &memservicev1.HostState{Online: []*memservicev1.OnlineClaim{{ClaimUid: unknown, Bytes: gi}}, OnlineBytes: gi},
		}}}))
		cmd, err := stream.Recv()
		require.NoError(t, err)
		require.NotNil(t, cmd.GetOffline(), "an offline command, got %v", cmd)
		assert.Equal(t, unknown, cmd.GetOffline().GetClaimUid())
	})

	t.Run("a claim deleted while a pod holds it keeps its memory until the pod is done", func(t *testing.T) {
		// As the scheduler leaves an allocated claim: reserved for its pod, and the
		// delete-protection finalizer, which keeps a deleted claim while it is in use.
		// kube-controller-manager's resourceclaim controller drops a consumer that is
		// not a pod of the claim: the pod exists (never scheduled: no scheduler here).
		pod, err := e.kube.CoreV1().Pods("default").Create(e.ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "runner"},
			Spec: corev1.PodSpec{
				SchedulerName:  "none",
				ResourceClaims: []corev1.PodResourceClaim{{Name: "mem", ResourceClaimName: ptr.To("held")}},
				Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10",
					Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "mem"}}}}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		ref := e.createClaim("held")
		claims := e.kube.ResourceV1().ResourceClaims("default")
		rc, err := claims.Get(e.ctx, "held", metav1.GetOptions{})
		require.NoError(t, err)
		rc.Finalizers = []string{"resource.kubernetes.io/delete-protection"}
		rc, err = claims.Update(e.ctx, rc, metav1.UpdateOptions{})
		require.NoError(t, err)
		rc.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
		rc, err = claims.UpdateStatus(e.ctx, rc, metav1.UpdateOptions{})
		require.NoError(t, err)
		resp, err := sched.AddMemory(e.ctx, &memservicev1.AddMemoryRequest{Claim: ref, Node: "node1", Bytes: gi})
		require.NoError(t, err)
		require.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState(), resp.GetReservation().GetMessage())

		require.NoError(t, claims.Delete(e.ctx, "held", metav1.DeleteOptions{}))
		deleting, err := claims.Get(e.ctx, "held", metav1.GetOptions{})
		require.NoError(t, err)
		require.NotNil(t, deleting.DeletionTimestamp)
		// The reconciler acts on the informer's event at once, and re-checks a
		// deallocation after DeallocationPause: three seconds cover both.
		time.Sleep(3 * time.Second)
		r, err := sched.GetReservation(e.ctx, &memservicev1.GetReservationRequest{ClaimUid: ref.GetUid()})
		require.NoError(t, err)
		assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, r.GetReservation().GetState(), "the pod still holds the claim")

		// The pod is done: kube-controller-manager takes it out of the claim's
		// consumers, deallocates the claim and lets it go.
		require.NoError(t, e.kube.CoreV1().Pods("default").Delete(e.ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
		require.Eventually(t, func() bool { return e.record("held") == nil }, 60*time.Second, 100*time.Millisecond,
			"released once no pod holds the claim")
	})

	t.Run("deleting the ResourceClaim releases the memory and removes the finalizer", func(t *testing.T) {
		require.NoError(t, e.kube.ResourceV1().ResourceClaims("default").Delete(e.ctx, "first", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			rec := e.record("first")
			return rec == nil // released, finalizer removed, garbage-collected with its owner
		}, 60*time.Second, 100*time.Millisecond, "the DynamicMemoryClaim goes once released")
		onDevice, err := e.dev.List(e.ctx)
		require.NoError(t, err)
		require.Len(t, onDevice, 1, "only the second claim's extent remains")
		assert.Equal(t, 2*gi, onDevice[0].Length)
	})
}

func TestOnlyTheLeaderServes(t *testing.T) {
	e := setup(t)
	a, stopA := e.startInstance("127.0.0.1:0", "a")
	b, stopB := e.startInstance("127.0.0.1:0", "b")
	var leader, standby *service.Service
	var stopLeader func()
	select {
	case <-a.Ready():
		leader, standby, stopLeader = a, b, stopA
	case <-b.Ready():
		leader, standby, stopLeader = b, a, stopB
	case <-time.After(30 * time.Second):
		t.Fatal("no instance became leader within 30s")
	}
	req := &memservicev1.ReserveRequest{Claim: &memservicev1.ClaimRef{Uid: "0b7c3f6e-1d2a-4c5b-8e9f-000000000001", Namespace: "default", Name: "c"}, Node: "node1", Bytes: gi}
	_, err := e.dial(leader.Addr(), "scheduler").Reserve(e.ctx, req)
	require.NoError(t, err, "the leader serves")
	lease, err := e.cl.Client().CoordinationV1().Leases("default").Get(e.ctx, "memservice-test", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, deploy.VersionLabelValue(version.Version), lease.Labels[deploy.VersionLabel],
		"the Lease names the version of the instance holding it, for kubectl dynamic-memory version")
	metrics, err := e.cl.MetricsClient(e.ctx)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, httpStatus(t, metrics, "https://"+leader.MetricsAddr()+"/readyz"))
	assert.Equal(t, http.StatusServiceUnavailable, httpStatus(t, metrics, "https://"+standby.MetricsAddr()+"/readyz"))
	assert.Equal(t, http.StatusOK, httpStatus(t, metrics, "https://"+standby.MetricsAddr()+"/healthz"))
	resp, err := metrics.Get("https://" + leader.MetricsAddr() + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), `dynamic_memory_current_usage_bytes{node="node1",pool="cxl-a"} 1.073741824e+09`)
	assert.Contains(t, string(body), "dynamic_memory_leader 1")

	short, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	_, err = e.dial(standby.Addr(), "scheduler").Reserve(short, req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not serving (standby or starting)")

	stopLeader()
	select {
	case <-standby.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("the standby did not take over within 30s of the leader stopping")
	}
	_, err = e.dial(standby.Addr(), "scheduler").Reserve(e.ctx, &memservicev1.ReserveRequest{
		Claim: &memservicev1.ClaimRef{Uid: "0b7c3f6e-1d2a-4c5b-8e9f-000000000002", Namespace: "default", Name: "d"}, Node: "node1", Bytes: gi})
	require.NoError(t, err, "the new leader serves")
}

func httpStatus(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// A record that cannot be restored (here: its second extent overlaps another claim's,
// as a bad edit or a bug could leave it) does not stop a new leader: it is set aside
// with a condition and an event, the others are served, and its memory is neither
// released from the device nor offlined on the node, and not given to another claim.
func TestRestartSetsAsideARecordItCannotRestore(t *testing.T) {
	e := setup(t)
	svc, stop := e.start("127.0.0.1:0")
	addr := svc.Addr()
	sched := e.dial(addr, "scheduler")
	agentClient := e.dial(addr, "agent-node1")
	e.runAgent(agentClient, "node1")

	good, victim := e.createClaim("good"), e.createClaim("victim")
	for _, ref := range []*memservicev1.ClaimRef{good, victim} {
		resp, err := sched.AddMemory(e.ctx, &memservicev1.AddMemoryRequest{Claim: ref, Node: "node1", Bytes: 2 * gi})
		require.NoError(t, err)
		require.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState(), resp.GetReservation().GetMessage())
	}
	var rec *v1alpha1.DynamicMemoryClaim
	require.Eventually(t, func() bool {
		rec = e.record("victim")
		return rec != nil && rec.Status.Phase == v1alpha1.PhaseOnline
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, []v1alpha1.Extent{{Offset: 2 * gi, Length: 2 * gi}}, rec.Status.Extents)
	stop()

	// Damage the record while no service runs: two extents, the second one the good
	// claim's.
	patch := []byte(fmt.Sprintf(`{"status":{"extents":[{"offset":%d,"length":%d},{"offset":0,"length":%d}]}}`, 2*gi, gi, gi))
	_, err := e.dyn.Resource(claimsGVR).Namespace("default").Patch(e.ctx, "victim", types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	require.NoError(t, err)

	svc2, _ := e.start(addr)
	sched = e.dial(addr, "scheduler")
	resp, err := sched.GetReservation(e.ctx, &memservicev1.GetReservationRequest{ClaimUid: good.GetUid()})
	require.NoError(t, err)
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState(), "the other claims are served")

	require.Eventually(t, func() bool {
		rec = e.record("victim")
		return meta.IsStatusConditionTrue(rec.Status.Conditions, v1alpha1.ClaimConditionSetAside)
	}, 10*time.Second, 50*time.Millisecond, "the record says it is set aside")
	cond := meta.FindStatusCondition(rec.Status.Conditions, v1alpha1.ClaimConditionSetAside)
	assert.Equal(t, v1alpha1.ReasonRestoreRefused, cond.Reason)
	assert.Contains(t, cond.Message, "is not free")
	require.Eventually(t, func() bool {
		events, err := e.kube.CoreV1().Events("default").List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=victim,reason=" + v1alpha1.ReasonRestoreRefused})
		return err == nil && len(events.Items) == 1
	}, 10*time.Second, 100*time.Millisecond, "an event says so")

	onDevice, err := e.dev.List(e.ctx)
	require.NoError(t, err)
	var victimOnDevice int64
	for _, x := range onDevice {
		if x.Tag == victim.GetUid() {
			victimOnDevice += x.Length
		}
	}
	assert.Equal(t, 2*gi, victimOnDevice, "its extents stay on the device")
	capResp, err := sched.GetCapacity(e.ctx, &memservicev1.GetCapacityRequest{})
	require.NoError(t, err)
	assert.Equal(t, 12*gi, capResp.GetPools()[0].GetFreeBytes(), "2Gi held by the good claim, the victim's 2Gi withheld")
	require.NoError(t, svc2.Ledger().CheckInvariants())
	assert.Equal(t, int64(2*gi), svc2.Ledger().Snapshot().Pools[0].Withheld)

	// The node's agent reconnects and reports both claims and an unknown one online:
	// only the unknown one is offlined.
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	stream, err := e.dial(addr, "agent-node1").AgentSession(ctx)
	require.NoError(t, err)
	unknown := "0b7c3f6e-1d2a-4c5b-8e9f-00000000beef"
	require.NoError(t, stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: &memservicev1.AgentHello{
		Node: "node1", HostState: &memservicev1.HostState{Online: []*memservicev1.OnlineClaim{
			{ClaimUid: victim.GetUid(), Bytes: 2 * gi}, {ClaimUid: good.GetUid(), Bytes: 2 * gi}, {ClaimUid: unknown, Bytes: gi},
		}, OnlineBytes: 5 * gi},
	}}}))
	cmd, err := stream.Recv()
	require.NoError(t, err)
	require.NotNil(t, cmd.GetOffline(), "an offline command, got %v", cmd)
	assert.Equal(t, unknown, cmd.GetOffline().GetClaimUid(), "the set-aside claim's memory stays online")

	// New claims fill the pool to the last free byte without touching the withheld
	// ranges.
	l := svc2.Ledger()
	withheld := l.SetAsideClaims()[0].Withheld
	var given int64
	for i := 0; ; i++ {
		r, _, err := l.Provision(ledger.Request{Claim: ledger.ClaimRef{UID: fmt.Sprintf("fill-%d", i)}, Node: []string{"node1", "node2"}[i%2], Bytes: gi})
		if err != nil {
			break
		}
		given += r.Bytes
		for _, x := range r.Extents {
			for _, w := range withheld {
				require.False(t, x.Overlaps(w), "extent %s of a new claim is withheld", x)
			}
		}
	}
	assert.Equal(t, 12*gi, given)
	require.NoError(t, l.CheckInvariants())
}
