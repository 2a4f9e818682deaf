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

package memservice_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

// The memory service's record writes are fenced by the API server: with the
// installation's RBAC and admission policies, a store writing as the service's
// ServiceAccount for a leader that no longer holds the Lease has every write refused
// and changes nothing, while the holder, and people, write as before.
func TestTheAPIServerRefusesTheRecordWritesOfALeaderThatLostItsLease(t *testing.T) {
	cl := clustertest.Start(t, cluster.Options{InstallCRDs: true, InstallRBAC: true})
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig()))
	const ns = "fence"
	_, err := cl.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	kubeconfig, err := cl.ServiceAccountKubeconfig(deploy.Namespace, deploy.MemoryServiceName)
	require.NoError(t, err)
	saConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	saConfig.ContentType = runtime.ContentTypeJSON
	asService, err := versioned.NewForConfig(saConfig)
	require.NoError(t, err)
	// A store of the service's ServiceAccount writing for leader identity ("": a
	// service without leader election).
	storeOf := func(identity string) *store.Store { return store.New(asService.DynamicMemoryV1alpha1(), identity) }
	admin, err := versioned.NewForConfig(cl.RESTConfig())
	require.NoError(t, err)
	claims := admin.DynamicMemoryV1alpha1().DynamicMemoryClaims(ns)

	at := time.Now().UTC().Truncate(time.Second)
	reservation := func(name, uid string) ledger.Reservation {
		return ledger.Reservation{
			Claim: ledger.ClaimRef{UID: uid, Namespace: ns, Name: name},
			Node:  "node1", Pool: "cxl-a", Requested: gi, Bytes: gi, State: v1alpha1.PhaseProvisioning,
			Extents:    []v1alpha1.Extent{{Offset: 0, Length: gi}},
			ReservedAt: at, ProvisioningAt: at, UpdatedAt: at,
		}
	}
	fenced := func(t *testing.T, err error, what string) {
		t.Helper()
		require.Error(t, err, what)
		assert.True(t, apierrors.IsForbidden(err), "%s: Forbidden, got %v", what, err)
		assert.ErrorIs(t, err, provision.ErrFenced, what)
		assert.Contains(t, err.Error(), "only the memory service instance holding the Lease dynamic-memory-system/memservice may write DynamicMemoryClaims; it is held by b and this write's field manager is 'memservice/a'")
	}
	// The policy and the Lease reach admission through informers: wait for them.
	eventually := func(t *testing.T, what string, refused func() error) {
		t.Helper()
		var err error
		_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			err = refused()
			return errors.Is(err, provision.ErrFenced), nil
		})
		require.ErrorIs(t, err, provision.ErrFenced, what)
	}

	// No Lease yet: no instance runs with leader election, and nothing is checked.
	require.NoError(t, storeOf("").Create(ctx, reservation("before-any-lease", "uid-0")), "a service without leader election writes")

	leases := cl.Client().CoordinationV1().Leases(deploy.Namespace)
	lease, err := leases.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: deploy.MemoryServiceName, Namespace: deploy.Namespace},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("a"), LeaseDurationSeconds: ptr.To[int32](15), RenewTime: &metav1.MicroTime{Time: at}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	eventually(t, "once the Lease exists, a write that names no leader is refused", func() error {
		return storeOf("").Create(ctx, reservation("no-leader", "uid-9"))
	})

	a, b := storeOf("a"), storeOf("b")
	r := reservation("claim", "uid-1")
	require.NoError(t, a.Create(ctx, r), "the holder writes")

	// a pauses; its Lease runs out and b takes it over.
	lease.Spec.HolderIdentity = ptr.To("b")
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	require.NoError(t, err)
	before, err := claims.Get(ctx, "claim", metav1.GetOptions{})
	require.NoError(t, err)

	t.Run("the old leader's writes are refused and change nothing", func(t *testing.T) {
		online := r
		online.State, online.OnlineAt = v1alpha1.PhaseOnline, at.Add(time.Second)
		eventually(t, "a's status write", func() error { return a.Update(ctx, online) })
		fenced(t, a.Update(ctx, online), "status write")
		fenced(t, a.SetAside(ctx, r, "a test"), "set aside")
		fenced(t, a.Create(ctx, reservation("other", "uid-2")), "create")

		after, err := claims.Get(ctx, "claim", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, before.ResourceVersion, after.ResourceVersion, "the record is unchanged")
		assert.Equal(t, v1alpha1.PhaseProvisioning, after.CurrentPhase())
		_, err = claims.Get(ctx, "other", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "no record created: %v", err)
	})

	t.Run("people write as before", func(t *testing.T) {
		_, err := claims.Patch(ctx, "claim", types.MergePatchType, []byte(`{"status":{"message":"checked by a person"}}`), metav1.PatchOptions{}, "status")
		require.NoError(t, err)
	})

	t.Run("the new leader removes the record", func(t *testing.T) {
		// A removal is a delete, which carries no field manager and is not fenced: a
		// release flight removes a record only after its memory is off the host and
		// the device, for a decision every leader makes alike or one its fenced
		// Releasing write recorded (docs/architecture.md, "Records fenced by the Lease").
		released := r
		released.State, released.ReleasedAt = v1alpha1.PhaseReleased, at.Add(time.Second)
		require.NoError(t, b.Released(ctx, released))
		_, err = claims.Get(ctx, "claim", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the record is gone: %v", err)
	})

}

// startAsServiceAccount starts an instance that runs as the memory service's
// ServiceAccount and elects itself on the Lease the manifests name: as installed, so
// the API server fences its record writes.
// Each change, if any, is made to the instance's configuration.
func (e *env) startAsServiceAccount(identity string, changes ...func(*service.Config)) (svc *service.Service, finished <-chan error) {
	e.t.Helper()
	kubeconfig, err := e.cl.ServiceAccountKubeconfig(deploy.Namespace, deploy.MemoryServiceName)
	require.NoError(e.t, err)
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(e.t, err)
	cfg := e.config(restConfig, "127.0.0.1:0")
	for _, change := range changes {
		change(&cfg)
	}
	cfg.LeaderElection.Enabled = true
	cfg.LeaderElection.Namespace, cfg.LeaderElection.Name, cfg.LeaderElection.Identity = deploy.Namespace, deploy.MemoryServiceName, identity
	svc, cancel, ran := e.run(cfg)
	done, ended := make(chan error, 1), make(chan struct{})
	go func() {
		done <- <-ran
		close(ended)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-ended
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		e.t.Fatalf("instance %s stopped before it led: %v", identity, err)
	case <-time.After(30 * time.Second):
		e.t.Fatalf("instance %s did not lead within 30s", identity)
	}
	return svc, done
}

// A leader that lost its Lease while it could not tell (paused: here the Lease is
// taken from it) writes no record status, and stops once it sees the Lease is gone;
// the new holder finishes what it began. The claim is deleted for good, a decision
// every leader makes alike, so the old leader may take the memory back from the host
// and the device and remove the record (a delete is not fenced) before it stops; a
// release that is not final stops at its fenced Releasing mark, before the host acts
// (provision's TestAReleaseRefusedAsFencedByTheAPIServerTouchesNothing).
func TestAReleaseALeaderThatLostItsLeaseBeganIsFinishedByTheNewLeader(t *testing.T) {
	e := setup(t)
	a, aDone := e.startAsServiceAccount("a")
	sched := e.dial(a.Addr(), "scheduler")
	e.runAgent(e.dial(a.Addr(), "agent-node1"), "node1")
	ref := e.createClaim("held")
	resp, err := sched.AddMemory(e.ctx, &memservicev1.AddMemoryRequest{Claim: ref, Node: "node1", Bytes: 2 * gi})
	require.NoError(t, err)
	require.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState(), resp.GetReservation().GetMessage())
	require.Eventually(t, func() bool {
		rec := e.record("held")
		return rec != nil && rec.Status.Phase == v1alpha1.PhaseOnline
	}, 10*time.Second, 20*time.Millisecond, "the leader's records are written")

	// b takes the Lease over while a cannot tell.
	leases := e.kube.CoordinationV1().Leases(deploy.Namespace)
	lease, err := leases.Get(e.ctx, deploy.MemoryServiceName, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "a", *lease.Spec.HolderIdentity)
	lease.Spec.HolderIdentity, lease.Spec.RenewTime = ptr.To("b"), &metav1.MicroTime{Time: time.Now()}
	_, err = leases.Update(e.ctx, lease, metav1.UpdateOptions{})
	require.NoError(t, err)
	kubeconfig, err := e.cl.ServiceAccountKubeconfig(deploy.Namespace, deploy.MemoryServiceName)
	require.NoError(t, err)
	saConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	saConfig.ContentType = runtime.ContentTypeJSON
	asService, err := versioned.NewForConfig(saConfig)
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := asService.DynamicMemoryV1alpha1().DynamicMemoryClaims("default").Patch(ctx, "held", types.MergePatchType, []byte(`{"status":{"message":"probe"}}`),
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: store.LeaderFieldManager("a")}, "status")
		return apierrors.IsForbidden(err), nil
	}), "the API server sees b hold the Lease")

	require.NoError(t, e.kube.ResourceV1().ResourceClaims("default").Delete(e.ctx, "held", metav1.DeleteOptions{}))
	select {
	case err := <-aDone:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "lost the lease dynamic-memory-system/memservice")
	case <-time.After(30 * time.Second):
		t.Fatal("a did not stop within 30s of losing its Lease")
	}
	if rec := e.record("held"); rec != nil {
		assert.Equal(t, v1alpha1.PhaseOnline, rec.Status.Phase, "a could not write the record's status")
	}

	b, _ := e.startAsServiceAccount("b")
	e.runAgent(e.dial(b.Addr(), "agent-node1"), "node1")
	require.Eventually(t, func() bool { return e.record("held") == nil }, 60*time.Second, 100*time.Millisecond,
		"the new leader releases the claim and lets its record go")
	assert.Zero(t, extentsOf(t, e, ref.GetUid()), "the new leader released the extents")
}

// extentsOf is how many bytes the device holds for claim uid.
func extentsOf(t *testing.T, e *env, uid string) int64 {
	t.Helper()
	onDevice, err := e.dev.List(e.ctx)
	require.NoError(t, err)
	var n int64
	for _, x := range onDevice {
		if x.Tag == uid {
			n += x.Length
		}
	}
	return n
}
