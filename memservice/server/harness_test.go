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
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/simulated"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision/provisiontest"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/server"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

const (
	mi = int64(1) << 20
	gi = int64(1) << 30
)

// events is an ordered log of what the store and the device were asked to do.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

// memStore is a provision.Store in memory that logs every write. It refuses what
// the API server refuses of a DynamicMemoryClaim status (the CRD's bounds).
type memStore struct {
	ev      *events
	mu      sync.Mutex
	records map[string]ledger.Reservation
	refused []string // why writes were refused
}

// Bounds of DynamicMemoryClaim status in manifests/crds (status.message maxLength,
// status.numaNodes maxItems).
const (
	crdMessageMaxLength  = 4096
	crdNUMANodesMaxItems = 64
)

func (s *memStore) put(op string, r ledger.Reservation) error {
	s.mu.Lock()
	switch {
	case utf8.RuneCountInString(r.Message) > crdMessageMaxLength:
		s.refused = append(s.refused, fmt.Sprintf("%s %s: status.message: Too long: may not be more than %d bytes", op, r.Claim.UID, crdMessageMaxLength))
		s.mu.Unlock()
		return fmt.Errorf("DynamicMemoryClaim %s is invalid: status.message: Too long: may not be more than %d bytes", r.Claim.UID, crdMessageMaxLength)
	case len(r.NUMANodes) > crdNUMANodesMaxItems:
		s.refused = append(s.refused, fmt.Sprintf("%s %s: status.numaNodes: Too many: %d: must have at most %d items", op, r.Claim.UID, len(r.NUMANodes), crdNUMANodesMaxItems))
		s.mu.Unlock()
		return fmt.Errorf("DynamicMemoryClaim %s is invalid: status.numaNodes: Too many", r.Claim.UID)
	}
	s.records[r.Claim.UID] = r
	s.mu.Unlock()
	s.ev.add("store %s %s %s", op, r.Claim.UID, r.State)
	return nil
}
func (s *memStore) Create(_ context.Context, r ledger.Reservation) error { return s.put("create", r) }
func (s *memStore) Update(_ context.Context, r ledger.Reservation) error { return s.put("update", r) }
func (s *memStore) Released(_ context.Context, r ledger.Reservation) error {
	s.mu.Lock()
	delete(s.records, r.Claim.UID)
	s.mu.Unlock()
	s.ev.add("store released %s", r.Claim.UID)
	return nil
}

// loggedDevice logs the device calls of a simulated device.
type loggedDevice struct {
	*simulated.Device
	ev *events
}

func (d loggedDevice) Add(ctx context.Context, host int32, tag string, ext []v1alpha1.Extent) error {
	d.ev.add("device add %s", tag)
	return d.Device.Add(ctx, host, tag, ext)
}

func (d loggedDevice) Release(ctx context.Context, host int32, tag string, ext []v1alpha1.Extent) error {
	d.ev.add("device release %s", tag)
	return d.Device.Release(ctx, host, tag, ext)
}

type harness struct {
	t       testing.TB
	addr    string
	bundle  pki.Bundle
	ledger  *ledger.Ledger
	device  *simulated.Device
	ev      *events
	store   *memStore
	metrics *metrics.Metrics
	// sessions are the agents' sessions; their OnProgress sets the claim's message
	// as the service does.
	sessions *session.Registry
	serving  atomic.Bool
	// helloTimeout is the server's bound of the wait for an agent's Hello.
	helloTimeout time.Duration
}

var testPool = ledger.Pool{Name: "cxl-a", Capacity: 64 * gi, BlockSize: 128 * mi, HostWindow: 32 * gi, Nodes: []string{"node1", "node2"}}

// newHarness starts a server over mutual TLS on loopback with a simulated device and
// an in-memory store.
func newHarness(t testing.TB) *harness {
	t.Helper()
	logger := klog.Background()
	if tt, ok := t.(*testing.T); ok {
		logger = ktesting.NewLogger(tt, ktesting.NewConfig(ktesting.Verbosity(1)))
	}
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logger))
	h := &harness{t: t, ev: &events{}, helloTimeout: 500 * time.Millisecond}
	h.serving.Store(true)
	h.store = &memStore{ev: h.ev, records: map[string]ledger.Reservation{}}
	var err error
	h.bundle, err = pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, []string{"node1", "node2"})
	require.NoError(t, err)
	tlsConfig, err := pki.ServerTLSConfig(h.bundle.CertFile("server"), h.bundle.KeyFile("server"), h.bundle.CAFile())
	require.NoError(t, err)

	sessions := session.NewRegistry()
	var srv *server.Server
	h.ledger = ledger.New(nil, ledger.Options{ReservationTTL: time.Minute, OnChange: func() {
		if srv != nil {
			srv.Notify()
		}
	}})
	h.metrics = metrics.New(h.ledger, sessions.Connected)
	require.NoError(t, h.ledger.SetPool(testPool))
	h.ledger.SetPoolReady(testPool.Name, true, "")
	h.device, err = simulated.New(simulated.Config{Capacity: testPool.Capacity, BlockSize: testPool.BlockSize, HostWindow: testPool.HostWindow, Seed: 1})
	require.NoError(t, err)
	mgr := provision.New(provision.Config{
		Ledger: h.ledger, Agents: sessions, Store: h.store, Metrics: h.metrics,
		Devices:             provisiontest.Devices{Pool: testPool.Name, Backend: loggedDevice{Device: h.device, ev: h.ev}, HostIDs: map[string]int32{"node1": 0, "node2": 1}},
		AgentCommandTimeout: 5 * time.Second, RetryInterval: 10 * time.Millisecond,
	})
	mgr.Start(ctx)
	srv, err = server.New(server.Config{TLS: tlsConfig, Ledger: h.ledger, Manager: mgr, Sessions: sessions, Metrics: h.metrics, Serving: h.serving.Load, HelloTimeout: h.helloTimeout})
	require.NoError(t, err)
	sessions.OnChange = srv.Notify
	sessions.OnProgress = func(node string, p *memservicev1.CommandProgress) { // as service.New wires it
		h.ledger.SetMessage(p.GetClaimUid(), fmt.Sprintf("node agent of %s: %s (%d of %d blocks)", node, p.GetMessage(), p.GetBlocksDone(), p.GetBlocksTotal()))
	}
	h.sessions = sessions
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h.addr = lis.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, lis)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		mgr.Wait()
	})
	return h
}

// dial connects as a member of the bundle ("scheduler", "agent-node1", ...).
func (h *harness) dial(member string) *client.Client {
	h.t.Helper()
	c, err := client.Dial(context.Background(), client.Config{
		Address: h.addr, CAFile: h.bundle.CAFile(), CertFile: h.bundle.CertFile(member), KeyFile: h.bundle.KeyFile(member),
		CallTimeout: 10 * time.Second,
	})
	require.NoError(h.t, err)
	h.t.Cleanup(func() { _ = c.Close() })
	return c
}

// fakeAgent answers commands for a node the way a node agent does.
type fakeAgent struct {
	mu      sync.Mutex
	fail    string  // non-empty: answer FAILED with this message
	numa    []int32 // non-nil: the NUMA nodes of ONLINE answers (default [1])
	onlined map[string]bool

	sendMu sync.Mutex
	stream memservicev1.MemoryService_AgentSessionClient
}

// send sends a message on the agent's stream, as the agent would.
func (a *fakeAgent) send(msg *memservicev1.AgentMessage) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return a.stream.Send(msg)
}

// startAgent opens an AgentSession for node with c and serves commands until the
// test ends. It returns once the session is registered (the server saw the Hello).
func (h *harness) startAgent(c *client.Client, node string) *fakeAgent {
	h.t.Helper()
	a := &fakeAgent{onlined: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	stream, err := c.AgentSession(ctx)
	require.NoError(h.t, err)
	a.stream = stream
	require.NoError(h.t, stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{
		Hello: &memservicev1.AgentHello{Node: node, Version: "test"},
	}}))
	go func() {
		for {
			cmd, err := stream.Recv()
			if err != nil {
				return
			}
			res := &memservicev1.CommandResult{CommandId: cmd.GetCommandId()}
			a.mu.Lock()
			switch {
			case a.fail != "":
				res.Outcome, res.Message = memservicev1.CommandResult_OUTCOME_FAILED, a.fail
			case cmd.GetOnline() != nil:
				res.ClaimUid = cmd.GetOnline().GetClaimUid()
				res.Outcome, res.NumaNodes = memservicev1.CommandResult_OUTCOME_ONLINE, []int32{1}
				if a.numa != nil {
					res.NumaNodes = a.numa
				}
				a.onlined[res.ClaimUid] = true
			case cmd.GetOffline() != nil:
				res.ClaimUid = cmd.GetOffline().GetClaimUid()
				res.Outcome = memservicev1.CommandResult_OUTCOME_OFFLINE
				delete(a.onlined, res.ClaimUid)
			}
			a.mu.Unlock()
			if err := a.send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Result{Result: res}}); err != nil {
				return
			}
		}
	}()
	// The session is registered once a snapshot lists the node.
	require.Eventually(h.t, func() bool {
		resp, err := h.dial("admin").GetCapacity(context.Background(), &memservicev1.GetCapacityRequest{Node: node})
		if err != nil || len(resp.GetPools()) == 0 {
			return false
		}
		for _, n := range resp.GetPools()[0].GetNodes() {
			if n.GetNode() == node {
				return n.GetAgentConnected()
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)
	return a
}

func (a *fakeAgent) isOnline(uid string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.onlined[uid]
}

// uid makes a valid claim UID from n.
func uid(n int) string { return fmt.Sprintf("0b7c3f6e-1d2a-4c5b-8e9f-%012d", n) }

func claim(n int) *memservicev1.ClaimRef {
	return &memservicev1.ClaimRef{Uid: uid(n), Namespace: "default", Name: fmt.Sprintf("claim-%d", n)}
}
