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

package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/simulated"
)

func TestBadInputGetsTheRightCodeAndChangesNothing(t *testing.T) {
	h := newHarness(t)
	sched := h.dial("scheduler")
	ctx := context.Background()
	// Something already reserved, so that conflicts can be tested.
	_, err := sched.Reserve(ctx, &memservicev1.ReserveRequest{Claim: claim(1), Node: "node1", Bytes: gi})
	require.NoError(t, err)

	tests := []struct {
		name     string
		req      *memservicev1.ReserveRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{"no claim", &memservicev1.ReserveRequest{Node: "node1", Bytes: gi}, codes.InvalidArgument, "claim: required"},
		{"malformed UID", &memservicev1.ReserveRequest{Claim: &memservicev1.ClaimRef{Uid: "x", Namespace: "default", Name: "c"}, Node: "node1", Bytes: gi},
			codes.InvalidArgument, `claim.uid: must be a UID (RFC 4122), got "x"`},
		{"no namespace", &memservicev1.ReserveRequest{Claim: &memservicev1.ClaimRef{Uid: uid(2), Name: "c"}, Node: "node1", Bytes: gi},
			codes.InvalidArgument, "claim.namespace: required"},
		{"bad claim name", &memservicev1.ReserveRequest{Claim: &memservicev1.ClaimRef{Uid: uid(2), Namespace: "default", Name: "Not_A_Name"}, Node: "node1", Bytes: gi},
			codes.InvalidArgument, `claim.name: invalid name "Not_A_Name"`},
		{"zero bytes", &memservicev1.ReserveRequest{Claim: claim(2), Node: "node1"}, codes.InvalidArgument, "bytes: must be positive, got 0"},
		{"negative bytes", &memservicev1.ReserveRequest{Claim: claim(2), Node: "node1", Bytes: -1}, codes.InvalidArgument, "bytes: must be positive, got -1"},
		{"absurd bytes", &memservicev1.ReserveRequest{Claim: claim(2), Node: "node1", Bytes: 1 << 62}, codes.InvalidArgument, "bytes: must be at most"},
		{"no node", &memservicev1.ReserveRequest{Claim: claim(2), Bytes: gi}, codes.InvalidArgument, "node: required"},
		{"bad pod UID", &memservicev1.ReserveRequest{Claim: claim(2), Pod: &memservicev1.PodRef{Name: "p", Uid: "nope"}, Node: "node1", Bytes: gi},
			codes.InvalidArgument, `pod.uid: must be a UID (RFC 4122), got "nope"`},
		{"unknown node", &memservicev1.ReserveRequest{Claim: claim(2), Node: "node9", Bytes: gi}, codes.NotFound, `node "node9" is not attached to any pool`},
		{"unknown pool", &memservicev1.ReserveRequest{Claim: claim(2), Node: "node1", Pool: "cxl-z", Bytes: gi}, codes.NotFound, `pool "cxl-z" does not exist`},
		{"over the host window", &memservicev1.ReserveRequest{Claim: claim(2), Node: "node1", Bytes: 40 * gi}, codes.ResourceExhausted, "node node1 can take 31Gi more from pool cxl-a (window 32Gi), claim needs 40Gi"},
		{"same claim, other node", &memservicev1.ReserveRequest{Claim: claim(1), Node: "node2", Bytes: gi}, codes.FailedPrecondition, "already reserved on node node1, not node2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.ledger.List()
			beforeSnap := h.ledger.Snapshot()
			_, err := sched.Reserve(ctx, tc.req)
			require.Error(t, err)
			assert.Equal(t, tc.wantCode, status.Code(err), err.Error())
			assert.Contains(t, status.Convert(err).Message(), tc.wantMsg)
			assert.Equal(t, before, h.ledger.List(), "the ledger is unchanged")
			assert.Equal(t, beforeSnap.Pools, h.ledger.Snapshot().Pools, "the pools are unchanged")
		})
	}

	for name, call := range map[string]func() error{
		"RemoveMemory without UID": func() error {
			_, err := sched.RemoveMemory(ctx, &memservicev1.RemoveMemoryRequest{})
			return err
		},
		"GetReservation with a malformed UID": func() error {
			_, err := sched.GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: "../etc"})
			return err
		},
		"AddMemory with zero bytes": func() error {
			_, err := sched.AddMemory(ctx, &memservicev1.AddMemoryRequest{Claim: claim(3), Node: "node1"})
			return err
		},
		"GetCapacity for a malformed node": func() error {
			_, err := sched.GetCapacity(ctx, &memservicev1.GetCapacityRequest{Node: "NODE 1"})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := call()
			assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		})
	}
	assert.Empty(t, h.ev.all(), "no bad request reached the store or the device")
}

func TestReserveRoundsUpAndIsIdempotent(t *testing.T) {
	h := newHarness(t)
	sched := h.dial("scheduler")
	ctx := context.Background()
	req := &memservicev1.ReserveRequest{Claim: claim(1), Pod: &memservicev1.PodRef{Name: "pod", Uid: uid(100)}, Node: "node1", Bytes: 200 * mi}
	first, err := sched.Reserve(ctx, req)
	require.NoError(t, err)
	r := first.GetReservation()
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_RESERVED, r.GetState())
	assert.Equal(t, 256*mi, r.GetBytes())
	assert.Equal(t, 200*mi, r.GetRequestedBytes())
	assert.Equal(t, "cxl-a", r.GetPool(), "the service picked the pool")
	assert.NotNil(t, r.GetExpiresAt())

	again, err := sched.Reserve(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, r.GetReservedAt().AsTime(), again.GetReservation().GetReservedAt().AsTime())
	capResp, err := sched.GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
	require.NoError(t, err)
	assert.Equal(t, 64*gi-256*mi, capResp.GetPools()[0].GetFreeBytes(), "held once")

	removed, err := sched.RemoveMemory(ctx, &memservicev1.RemoveMemoryRequest{ClaimUid: uid(1)})
	require.NoError(t, err)
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_RELEASED, removed.GetReservation().GetState())
	removed, err = sched.RemoveMemory(ctx, &memservicev1.RemoveMemoryRequest{ClaimUid: uid(1)})
	require.NoError(t, err, "removing twice succeeds")
	assert.Nil(t, removed.GetReservation())
	_, err = sched.GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: uid(1)})
	assert.Equal(t, codes.NotFound, status.Code(err))
}

func TestAddMemoryRecordsBeforeTheDeviceAndWaitsForTheAgent(t *testing.T) {
	h := newHarness(t)
	sched := h.dial("scheduler")
	agent := h.startAgent(h.dial("agent-node1"), "node1")
	ctx := context.Background()

	resp, err := sched.AddMemory(ctx, &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: 3 * gi})
	require.NoError(t, err)
	r := resp.GetReservation()
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, r.GetState(), r.GetMessage())
	assert.Equal(t, []int32{1}, r.GetNumaNodes())
	require.Len(t, r.GetExtents(), 1)
	assert.Equal(t, 3*gi, r.GetExtents()[0].GetLength())
	assert.True(t, agent.isOnline(uid(1)))
	// AddMemory answers once the ledger holds the outcome; the record's status follows.
	require.Eventually(t, func() bool { return len(h.ev.all()) >= 3 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, []string{
		"store create " + uid(1) + " Provisioning",
		"device add " + uid(1),
		"store update " + uid(1) + " Online",
	}, h.ev.all(), "the claim is recorded before the device is asked")
	onDevice, err := h.device.List(ctx)
	require.NoError(t, err)
	require.Len(t, onDevice, 1)
	assert.Equal(t, uid(1), onDevice[0].Tag)

	again, err := sched.AddMemory(ctx, &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: 3 * gi})
	require.NoError(t, err)
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, again.GetReservation().GetState())
	assert.Len(t, h.ev.all(), 3, "provisioning again changes nothing")

	removed, err := sched.RemoveMemory(ctx, &memservicev1.RemoveMemoryRequest{ClaimUid: uid(1), Wait: true})
	require.NoError(t, err)
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_RELEASED, removed.GetReservation().GetState())
	assert.False(t, agent.isOnline(uid(1)), "the agent offlined the memory")
	onDevice, err = h.device.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, onDevice, "the extents are back in the pool")
	assert.Equal(t, []string{
		"store update " + uid(1) + " Releasing",
		"device release " + uid(1),
		"store released " + uid(1),
	}, h.ev.all()[3:])
	require.NoError(t, h.ledger.CheckInvariants())
	assert.Equal(t, 64*gi, h.ledger.Snapshot().Pools[0].Free)
}

func TestAddMemoryFailures(t *testing.T) {
	t.Run("the device fails: the claim is Failed, nothing stays on the device", func(t *testing.T) {
		h := newHarness(t)
		h.startAgent(h.dial("agent-node1"), "node1")
		h.device.SetFaults(simulated.Faults{FailPercent: 100})
		resp, err := h.dial("scheduler").AddMemory(context.Background(), &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: gi})
		require.NoError(t, err)
		r := resp.GetReservation()
		assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_FAILED, r.GetState())
		assert.Contains(t, r.GetMessage(), "add 1Gi of extents to node node1 (host 0) in pool cxl-a: injected fault")
		onDevice, _ := h.device.List(context.Background())
		assert.Empty(t, onDevice)
	})
	t.Run("a partial add is taken back", func(t *testing.T) {
		h := newHarness(t)
		h.device.SetFaults(simulated.Faults{Partial: true})
		resp, err := h.dial("scheduler").AddMemory(context.Background(), &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: gi})
		require.NoError(t, err)
		assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_FAILED, resp.GetReservation().GetState())
		assert.Contains(t, resp.GetReservation().GetMessage(), "extents only partly added")
		onDevice, _ := h.device.List(context.Background())
		assert.Empty(t, onDevice)
	})
	t.Run("the agent fails: Failed with its message; release takes the memory back", func(t *testing.T) {
		h := newHarness(t)
		agent := h.startAgent(h.dial("agent-node1"), "node1")
		agent.mu.Lock()
		agent.fail = "memory block 42: EBUSY"
		agent.mu.Unlock()
		sched := h.dial("scheduler")
		resp, err := sched.AddMemory(context.Background(), &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: gi})
		require.NoError(t, err)
		assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_FAILED, resp.GetReservation().GetState())
		assert.Contains(t, resp.GetReservation().GetMessage(), "memory block 42: EBUSY")
		agent.mu.Lock()
		agent.fail = ""
		agent.mu.Unlock()
		removed, err := sched.RemoveMemory(context.Background(), &memservicev1.RemoveMemoryRequest{ClaimUid: uid(1), Wait: true})
		require.NoError(t, err)
		assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_RELEASED, removed.GetReservation().GetState())
		onDevice, _ := h.device.List(context.Background())
		assert.Empty(t, onDevice)
	})
	t.Run("no agent: the deadline passes, provisioning goes on", func(t *testing.T) {
		h := newHarness(t)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := h.dial("scheduler").AddMemory(ctx, &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: gi})
		assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
		r, ok := h.ledger.Get(uid(1))
		require.True(t, ok)
		assert.Equal(t, v1alpha1.PhaseProvisioning, r.State)
	})
}

func TestCertificatesAreRequiredAndBoundToTheirNode(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()

	t.Run("a client without certificate is refused at the handshake", func(t *testing.T) {
		pool, err := pkiPool(h.bundle.CAFile())
		require.NoError(t, err)
		conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})))
		require.NoError(t, err)
		defer conn.Close()
		_, err = memservicev1.NewMemoryServiceClient(conn).GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
		require.Error(t, err)
		// TLS 1.3: the client learns of the server's "certificate required" alert
		// when it reads or writes next, so the words vary; the call never arrives.
		assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		assert.Zero(t, testutil.CollectAndCount(h.metrics.GRPCRequests), "no request reached the service")
	})

	t.Run("an agent of node1 cannot open a session for node2", func(t *testing.T) {
		stream, err := h.dial("agent-node1").AgentSession(ctx)
		require.NoError(t, err)
		require.NoError(t, stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: &memservicev1.AgentHello{Node: "node2"}}}))
		_, err = stream.Recv()
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), `agent certificate is for node "node1", cannot act for node "node2"`)
	})

	t.Run("a session must start with Hello", func(t *testing.T) {
		stream, err := h.dial("agent-node1").AgentSession(ctx)
		require.NoError(t, err)
		require.NoError(t, stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_HostState{HostState: &memservicev1.HostState{}}}))
		_, err = stream.Recv()
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), "hello: the first message of a session must be a Hello")
	})

	roleTests := []struct {
		member string
		call   func(c memservicev1.MemoryServiceClient) error
		want   codes.Code
		msg    string
	}{
		{"agent-node1", func(c memservicev1.MemoryServiceClient) error {
			_, err := c.Reserve(ctx, &memservicev1.ReserveRequest{Claim: claim(1), Node: "node1", Bytes: gi})
			return err
		}, codes.PermissionDenied, "agent/node1 may not call Reserve"},
		{"admin", func(c memservicev1.MemoryServiceClient) error {
			_, err := c.RemoveMemory(ctx, &memservicev1.RemoveMemoryRequest{ClaimUid: uid(1)})
			return err
		}, codes.PermissionDenied, "admin may not call RemoveMemory"},
		{"draplugin-node1", func(c memservicev1.MemoryServiceClient) error {
			_, err := c.GetCapacity(ctx, &memservicev1.GetCapacityRequest{Node: "node2"})
			return err
		}, codes.PermissionDenied, `draplugin certificate is for node "node1", cannot act for node "node2"`},
		{"draplugin-node1", func(c memservicev1.MemoryServiceClient) error {
			_, err := c.GetCapacity(ctx, &memservicev1.GetCapacityRequest{Node: "node1"})
			return err
		}, codes.OK, ""},
		{"scheduler", func(c memservicev1.MemoryServiceClient) error {
			_, err := c.AgentSession(ctx)
			if err != nil {
				return err
			}
			return nil
		}, codes.OK, ""},
		{"admin", func(c memservicev1.MemoryServiceClient) error {
			_, err := c.GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
			return err
		}, codes.OK, ""},
	}
	for _, tc := range roleTests {
		name := tc.member + " " + strings.ReplaceAll(tc.msg, " ", "_")
		t.Run(name, func(t *testing.T) {
			err := tc.call(h.dial(tc.member))
			assert.Equal(t, tc.want, status.Code(err), "%v", err)
			if tc.msg != "" {
				assert.Contains(t, err.Error(), tc.msg)
			}
		})
	}

	t.Run("a scheduler cannot act as an agent", func(t *testing.T) {
		stream, err := h.dial("scheduler").AgentSession(ctx)
		require.NoError(t, err)
		_, err = stream.Recv()
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	})

	t.Run("a draplugin reads reservations of its own node only", func(t *testing.T) {
		_, err := h.dial("scheduler").Reserve(ctx, &memservicev1.ReserveRequest{Claim: claim(7), Node: "node2", Bytes: gi})
		require.NoError(t, err)
		_, err = h.dial("draplugin-node1").GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: uid(7)})
		_, unknown := h.dial("draplugin-node1").GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: uid(8)})
		assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)
		assert.Equal(t, strings.Replace(unknown.Error(), uid(8), uid(7), 1), err.Error(),
			"another node's claim gets the answer of a claim nobody holds")
		resp, err := h.dial("draplugin-node2").GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: uid(7)})
		require.NoError(t, err)
		assert.Equal(t, "node2", resp.GetReservation().GetNode())
	})
}

func pkiPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(data)
	return pool, nil
}

func TestWatchPoolsStreamsSnapshots(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.dial("scheduler").WatchPools(ctx, &memservicev1.WatchPoolsRequest{})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	require.Len(t, first.GetPools(), 1)
	assert.Equal(t, 64*gi, first.GetPools()[0].GetFreeBytes())

	_, err = h.dial("scheduler").Reserve(context.Background(), &memservicev1.ReserveRequest{Claim: claim(1), Node: "node1", Bytes: 2 * gi})
	require.NoError(t, err)
	var last *memservicev1.PoolSnapshot
	for last == nil || last.GetPools()[0].GetFreeBytes() != 62*gi {
		last, err = stream.Recv()
		require.NoError(t, err)
		assert.Greater(t, last.GetRevision(), first.GetRevision(), "revisions grow")
	}
	assert.Equal(t, 2*gi, last.GetPools()[0].GetNodes()[0].GetReservedBytes())

	_, err = h.dial("agent-node1").AgentSession(ctx)
	require.NoError(t, err)
	h.startAgent(h.dial("agent-node2"), "node2")
	for len(last.GetConnectedNodes()) == 0 {
		last, err = stream.Recv()
		require.NoError(t, err)
	}
	assert.Equal(t, []string{"node2"}, last.GetConnectedNodes())
}

func TestStandbyRefusesRequests(t *testing.T) {
	h := newHarness(t)
	h.serving.Store(false)
	sched := h.dial("scheduler")
	_, err := sched.Reserve(context.Background(), &memservicev1.ReserveRequest{Claim: claim(1), Node: "node1", Bytes: gi})
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "not serving (standby or starting)")
	assert.Empty(t, h.ledger.List())

	h.serving.Store(true)
	_, err = sched.Reserve(context.Background(), &memservicev1.ReserveRequest{Claim: claim(1), Node: "node1", Bytes: gi})
	assert.NoError(t, err)
}

func TestRemoveMemoryDuringProvisioningStopsItAndReleases(t *testing.T) {
	h := newHarness(t)
	h.startAgent(h.dial("agent-node1"), "node1")
	h.device.SetFaults(simulated.Faults{Hang: true})
	sched := h.dial("scheduler")
	added := make(chan *memservicev1.AddMemoryResponse, 1)
	go func() {
		resp, _ := sched.AddMemory(context.Background(), &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: gi})
		added <- resp
	}()
	require.Eventually(t, func() bool { return h.device.Adds() == 1 }, 5*time.Second, time.Millisecond, "the device is adding")
	h.device.SetFaults(simulated.Faults{}) // the add in flight hangs on; what follows does not

	removed, err := sched.RemoveMemory(context.Background(), &memservicev1.RemoveMemoryRequest{ClaimUid: uid(1), Wait: true})
	require.NoError(t, err)
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_RELEASED, removed.GetReservation().GetState())
	select {
	case resp := <-added:
		assert.Contains(t, []memservicev1.ReservationState{
			memservicev1.ReservationState_RESERVATION_STATE_RELEASING, memservicev1.ReservationState_RESERVATION_STATE_RELEASED,
		}, resp.GetReservation().GetState(), "the waiting AddMemory returns: the claim is being released")
	case <-time.After(5 * time.Second):
		t.Fatal("AddMemory still waits after the claim was released")
	}
	assert.Equal(t, 64*gi, h.ledger.Snapshot().Pools[0].Free)
	require.NoError(t, h.ledger.CheckInvariants())
}
