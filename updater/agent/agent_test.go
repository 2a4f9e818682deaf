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

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/cgroup"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	testingclock "k8s.io/utils/clock/testing"
)

const mib = int64(1) << 20

// fakeService is the memory service side of AgentSession: each session's messages
// arrive on its channel, and the test sends commands into the current session.
type fakeService struct {
	memservicev1.UnimplementedMemoryServiceServer
	sessions chan *fakeSession
}

type fakeSession struct {
	stream   memservicev1.MemoryService_AgentSessionServer
	messages chan *memservicev1.AgentMessage
	end      chan struct{}
}

func (f *fakeService) AgentSession(stream memservicev1.MemoryService_AgentSessionServer) error {
	s := &fakeSession{stream: stream, messages: make(chan *memservicev1.AgentMessage, 100), end: make(chan struct{})}
	f.sessions <- s
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			s.messages <- m
		}
	}()
	select {
	case <-s.end:
		return nil
	case <-stream.Context().Done():
		return nil
	}
}

func (s *fakeSession) next(t *testing.T) *memservicev1.AgentMessage {
	t.Helper()
	select {
	case m := <-s.messages:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message from the agent within 10s")
		return nil
	}
}

// result returns the next command result, skipping progress reports.
func (s *fakeSession) result(t *testing.T) *memservicev1.CommandResult {
	t.Helper()
	for {
		m := s.next(t)
		if r := m.GetResult(); r != nil {
			return r
		}
		require.NotNil(t, m.GetProgress(), "unexpected message %v", m)
	}
}

func (s *fakeSession) send(t *testing.T, cmd *memservicev1.AgentCommand) {
	t.Helper()
	require.NoError(t, s.stream.Send(cmd))
}

func (f *fakeService) session(t *testing.T) *fakeSession {
	t.Helper()
	select {
	case s := <-f.sessions:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not open a session within 10s")
		return nil
	}
}

func startService(t *testing.T) (*fakeService, memservicev1.MemoryServiceClient) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	svc := &fakeService{sessions: make(chan *fakeSession, 10)}
	memservicev1.RegisterMemoryServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return svc, memservicev1.NewMemoryServiceClient(conn)
}

// fakeNode is the Node object's status. Its writes can be held, like an API
// server that is slow or behind a rate limiter, or fail.
type fakeNode struct {
	// hold, while open, keeps every write waiting until it is closed (or the
	// write's context ends); held receives the status of each write kept waiting.
	hold     chan struct{}
	held     chan nodestatus.Status
	released sync.Once

	mu sync.Mutex
	// statuses are the statuses written, in order.
	statuses []nodestatus.Status
	// failures is how many of the next writes fail.
	failures int
	// failed counts the writes that failed.
	failed int
}

// holdingNode is a node whose writes wait until release is called.
func holdingNode() *fakeNode {
	return &fakeNode{hold: make(chan struct{}), held: make(chan nodestatus.Status, 100)}
}

// release lets the held writes, and all later ones, through.
func (f *fakeNode) release() {
	if f.hold != nil {
		f.released.Do(func() { close(f.hold) })
	}
}

func (f *fakeNode) Update(ctx context.Context, s nodestatus.Status) error {
	if f.hold != nil {
		select {
		case <-f.hold:
		default:
			f.held <- s
			select {
			case <-f.hold:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		f.failed++
		return errors.New("the server is currently unable to handle the request")
	}
	f.statuses = append(f.statuses, s)
	return nil
}

// failNext makes the next n writes fail.
func (f *fakeNode) failNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = n
}

// last is the status written last (zero before the first write).
func (f *fakeNode) last() nodestatus.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.statuses) == 0 {
		return nodestatus.Status{}
	}
	return f.statuses[len(f.statuses)-1]
}

func (f *fakeNode) written() []nodestatus.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.statuses)
}

func (f *fakeNode) failedWrites() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// nextHeld waits for a write to be held and returns its status.
func (f *fakeNode) nextHeld(t *testing.T) nodestatus.Status {
	t.Helper()
	select {
	case s := <-f.held:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no node status write within 10s")
		return nodestatus.Status{}
	}
}

type fakeLimiter struct {
	mu     sync.Mutex
	online int64
}

func (f *fakeLimiter) Set(b int64, _ func(cgroup.State) error) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.online = b
	return 8<<30 + b, nil
}

func (f *fakeLimiter) State() cgroup.State    { return cgroup.State{Base: 8 << 30} }
func (f *fakeLimiter) Drifted() (bool, error) { return false, nil }

func (f *fakeLimiter) bytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.online
}

type harness struct {
	svc   *fakeService
	agent *Agent
	// stop ends Run and returns its error; it may be called more than once.
	stop    func() error
	host    *hostmem.Simulated
	node    *fakeNode
	limiter *fakeLimiter
	metrics *metrics.Metrics
	clock   *testingclock.FakeClock
	cp      string
}

func startAgent(t *testing.T, cpFile string, host *hostmem.Simulated) *harness {
	t.Helper()
	return startAgentOn(t, cpFile, host, host, &fakeNode{})
}

// startAgentOn runs the agent on backend, showing its status on node; sim is the
// simulated host under backend.
func startAgentOn(t *testing.T, cpFile string, backend Host, host *hostmem.Simulated, node *fakeNode) *harness {
	t.Helper()
	svc, client := startService(t)
	h := &harness{svc: svc, host: host, node: node, limiter: &fakeLimiter{},
		metrics: metrics.New(), clock: testingclock.NewFakeClock(time.Now()), cp: cpFile}
	a, err := New(Config{
		Node: "node-1", Client: client, Host: backend, NodeStatus: h.node, Limiter: h.limiter,
		Metrics: h.metrics, Clock: h.clock, CheckpointFile: cpFile, HeartbeatInterval: 10 * time.Second, Version: "test",
		// Node status writes as they come: the fake clock does not move on its own.
		NodeStatusInterval: -1,
	})
	require.NoError(t, err)
	h.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		require.NoError(t, h.stop())
		assert.Equal(t, "AgentStopped", h.node.last().Reason, "the node shows the agent stopped")
		assert.False(t, h.node.last().Ready)
	})
	t.Cleanup(node.release) // runs first: a failed test leaves no write held
	return h
}

func onlineCmd(id, uid string, offset, length int64) *memservicev1.AgentCommand {
	return &memservicev1.AgentCommand{CommandId: id, Command: &memservicev1.AgentCommand_Online{Online: &memservicev1.OnlineCommand{
		ClaimUid: uid, Pool: "pool-a", Extents: []*memservicev1.Extent{{Offset: offset, Length: length}}, Bytes: length, BlockSizeBytes: 128 * mib,
	}}}
}

func offlineCmd(id, uid string, offset, length int64) *memservicev1.AgentCommand {
	return &memservicev1.AgentCommand{CommandId: id, Command: &memservicev1.AgentCommand_Offline{Offline: &memservicev1.OfflineCommand{
		ClaimUid: uid, Extents: []*memservicev1.Extent{{Offset: offset, Length: length}}, Bytes: length,
	}}}
}

func TestAgentOnlinesAndOfflinesOnCommand(t *testing.T) {
	host := hostmem.NewSimulated(hostmem.SimulatedConfig{NUMANode: 2})
	h := startAgent(t, filepath.Join(t.TempDir(), "agent.json"), host)
	s := h.svc.session(t)
	hello := s.next(t).GetHello()
	require.NotNil(t, hello)
	assert.Equal(t, "node-1", hello.Node)
	assert.Equal(t, "test", hello.Version)
	assert.Empty(t, hello.HostState.Online)
	assert.Equal(t, 128*mib, hello.HostState.MemoryBlockBytes)

	s.send(t, onlineCmd("c1", "uid-1", 0, 256*mib))
	var progress []int32
	var res *memservicev1.CommandResult
	for res == nil {
		m := s.next(t)
		if p := m.GetProgress(); p != nil {
			assert.Equal(t, "c1", p.CommandId)
			progress = append(progress, p.BlocksDone)
			continue
		}
		res = m.GetResult()
	}
	assert.Equal(t, []int32{1, 2}, progress)
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, res.Outcome)
	assert.Equal(t, "uid-1", res.ClaimUid)
	assert.Equal(t, []int32{2}, res.NumaNodes)
	assert.Equal(t, 2, host.OnlineBlocks())
	assert.Equal(t, 256*mib, h.limiter.bytes(), "pod cgroup raised by the onlined bytes")
	want := nodestatus.Status{OnlineBytes: 256 * mib, Ready: true, Reason: "SessionEstablished", Message: "the node agent holds a session with the memory service"}
	require.Eventually(t, func() bool { return h.node.last() == want }, 10*time.Second, time.Millisecond, "the node status shows the bytes online")
	assert.Equal(t, float64(256*mib), testutil.ToFloat64(h.metrics.OnlineBytes))
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.Commands.WithLabelValues("online", "online")))

	// Heartbeat: host state with the claim.
	h.clock.Step(10 * time.Second)
	hs := s.next(t).GetHostState()
	require.NotNil(t, hs)
	require.Len(t, hs.Online, 1)
	assert.Equal(t, &memservicev1.OnlineClaim{ClaimUid: "uid-1", Bytes: 256 * mib, NumaNodes: []int32{2}}, stripProto(hs.Online[0]))
	assert.Equal(t, 256*mib, hs.OnlineBytes)

	s.send(t, offlineCmd("c2", "uid-1", 0, 256*mib))
	res = s.result(t)
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_OFFLINE, res.Outcome)
	assert.Equal(t, 0, host.OnlineBlocks())
	assert.Equal(t, int64(0), h.limiter.bytes(), "pod cgroup back to the kubelet's limit")
	require.Eventually(t, func() bool { return h.node.last().OnlineBytes == 0 }, 10*time.Second, time.Millisecond, "the node status shows no bytes online")

	// Offline again (the service retries after a lost result): still OFFLINE.
	s.send(t, offlineCmd("c3", "uid-1", 0, 256*mib))
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_OFFLINE, s.result(t).Outcome)
}

func TestAgentReportsFailures(t *testing.T) {
	tests := []struct {
		name string
		cmd  *memservicev1.AgentCommand
		want string
	}{
		{"extent not aligned to the host block", onlineCmd("c1", "uid-1", 0, 64*mib), "claim uid-1: extents[0] = {offset 0x0, length 0x4000000}"},
		{"pool block smaller than the host block", &memservicev1.AgentCommand{CommandId: "c1", Command: &memservicev1.AgentCommand_Online{Online: &memservicev1.OnlineCommand{
			ClaimUid: "uid-1", Pool: "small", Extents: []*memservicev1.Extent{{Offset: 0, Length: 128 * mib}}, Bytes: 128 * mib, BlockSizeBytes: 2 * mib,
		}}}, "pool small block size 2097152 is not a multiple of node node-1 memory block size 134217728: set the pool's blockSize to a multiple of 134217728"},
		{"bytes disagree with extents", &memservicev1.AgentCommand{CommandId: "c1", Command: &memservicev1.AgentCommand_Online{Online: &memservicev1.OnlineCommand{
			ClaimUid: "uid-1", Extents: []*memservicev1.Extent{{Offset: 0, Length: 128 * mib}}, Bytes: 256 * mib,
		}}}, "extents hold 134217728 bytes, bytes says 268435456"},
		{"no command", &memservicev1.AgentCommand{CommandId: "c1"}, "command c1 has no online or offline command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startAgent(t, "", hostmem.NewSimulated(hostmem.SimulatedConfig{}))
			s := h.svc.session(t)
			require.NotNil(t, s.next(t).GetHello())
			s.send(t, tc.cmd)
			res := s.result(t)
			assert.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
			assert.Contains(t, res.Message, tc.want)
			assert.Equal(t, 0, h.host.OnlineBlocks())
		})
	}
}

func TestAgentReconnectsAndReportsWhatIsOnline(t *testing.T) {
	host := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	h := startAgent(t, "", host)
	s := h.svc.session(t)
	require.NotNil(t, s.next(t).GetHello())
	s.send(t, onlineCmd("c1", "uid-1", 128*mib, 128*mib))
	require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)

	close(s.end) // the service restarts
	require.Eventually(t, func() bool { return !h.agent.Connected() }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return h.node.last().Reason == "SessionLost" }, 10*time.Second, time.Millisecond, "the node status shows the session lost")
	assert.False(t, h.node.last().Ready)
	// Step the fake clock through the backoff until the agent dials again; a step
	// taken before the agent starts waiting is simply repeated.
	require.Eventually(t, func() bool {
		h.clock.Step(time.Second)
		select {
		case s = <-h.svc.sessions:
			return true
		default:
			return false
		}
	}, 10*time.Second, 10*time.Millisecond, "the agent did not reconnect")
	hello := s.next(t).GetHello()
	require.NotNil(t, hello)
	require.Len(t, hello.HostState.Online, 1)
	assert.Equal(t, "uid-1", hello.HostState.Online[0].ClaimUid)
	assert.Equal(t, 128*mib, hello.HostState.OnlineBytes)
	require.Eventually(t, h.agent.Connected, 10*time.Second, time.Millisecond)
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.SessionReconnects))
}

func TestAgentRestoresFromCheckpoint(t *testing.T) {
	cp := filepath.Join(t.TempDir(), "agent.json")
	host := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	// A previous run onlined three claims; one of them is no longer online.
	for _, c := range []struct {
		uid    string
		offset int64
	}{{"uid-1", 0}, {"uid-3", 1024 * mib}} {
		_, err := host.Online(context.Background(), hostmem.Request{ClaimUID: c.uid, Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: c.offset, Length: 128 * mib}}}, nil)
		require.NoError(t, err)
	}
	data, err := checkpoint{Claims: map[string]onlineClaim{
		"uid-1": {Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 0, Length: 128 * mib}}, Bytes: 128 * mib},
		"uid-2": {Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 512 * mib, Length: 128 * mib}}, Bytes: 128 * mib},
		"uid-3": {Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 1024 * mib, Length: 128 * mib}}, Bytes: 128 * mib},
	}}.encode()
	require.NoError(t, err)
	require.NoError(t, writeAtomically(cp, data))

	h := startAgent(t, cp, host)
	s := h.svc.session(t)
	hello := s.next(t).GetHello()
	require.NotNil(t, hello)
	require.Len(t, hello.HostState.Online, 2)
	assert.Equal(t, "uid-1", hello.HostState.Online[0].ClaimUid)
	assert.Equal(t, "uid-3", hello.HostState.Online[1].ClaimUid)
	assert.Equal(t, 256*mib, h.limiter.bytes())

	saved, err := loadCheckpoint(cp)
	require.NoError(t, err)
	assert.Len(t, saved.Claims, 2)
	assert.Equal(t, map[string]pendingClaim{"uid-2": {Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 512 * mib, Length: 128 * mib}}}}, saved.Pending,
		"memory no longer reported is an intent again, kept for its offline")
	assert.Equal(t, cgroup.State{Base: 8 << 30}, saved.Cgroup)
}

func TestNewNamesMissingConfig(t *testing.T) {
	_, err := New(Config{})
	require.Error(t, err)
	for _, want := range []string{"node name is required (--node-name or NODE_NAME)", "memory service client is required", "host backend is required"} {
		assert.Contains(t, err.Error(), want)
	}
}

func stripProto(c *memservicev1.OnlineClaim) *memservicev1.OnlineClaim {
	return &memservicev1.OnlineClaim{ClaimUid: c.ClaimUid, Bytes: c.Bytes, NumaNodes: c.NumaNodes}
}

// halfOnline fails onlining after the first block, like a host whose second block
// never appears, and records the pool of each offline.
type halfOnline struct {
	*hostmem.Simulated
	mu       sync.Mutex
	offlines []string
}

func (h *halfOnline) Online(ctx context.Context, req hostmem.Request, p hostmem.Progress) (hostmem.Result, error) {
	first := req
	first.Extents = []v1alpha1.Extent{{Offset: req.Extents[0].Offset, Length: h.BlockSize()}}
	if _, err := h.Simulated.Online(ctx, first, p); err != nil {
		return hostmem.Result{}, err
	}
	return hostmem.Result{}, errors.New("memory block 2 did not appear")
}

func (h *halfOnline) Offline(ctx context.Context, req hostmem.Request, p hostmem.Progress) error {
	h.mu.Lock()
	h.offlines = append(h.offlines, req.Pool)
	h.mu.Unlock()
	return h.Simulated.Offline(ctx, req, p)
}

func TestAgentOfflinesHalfOnlinedMemoryInItsPool(t *testing.T) {
	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	host := &halfOnline{Simulated: sim}
	h := startAgentOn(t, filepath.Join(t.TempDir(), "agent.json"), host, sim, &fakeNode{})
	s := h.svc.session(t)
	require.NotNil(t, s.next(t).GetHello())

	s.send(t, onlineCmd("c1", "uid-1", 0, 256*mib))
	res := s.result(t)
	require.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
	assert.Equal(t, "memory block 2 did not appear", res.Message)
	assert.Equal(t, 1, sim.OnlineBlocks(), "one block made it online")
	saved, err := loadCheckpoint(h.cp)
	require.NoError(t, err)
	assert.Equal(t, map[string]pendingClaim{"uid-1": {Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 0, Length: 256 * mib}}}}, saved.Pending,
		"the pool and extents are remembered across restarts")
	assert.Empty(t, saved.Claims, "a failed claim is not reported online")

	// The service releases the claim: the offline (which names no pool) goes to
	// the pool the online command named.
	s.send(t, offlineCmd("c2", "uid-1", 0, 256*mib))
	require.Equal(t, memservicev1.CommandResult_OUTCOME_OFFLINE, s.result(t).Outcome)
	assert.Equal(t, []string{"pool-a"}, host.offlines)
	assert.Equal(t, 0, sim.OnlineBlocks())
	saved, err = loadCheckpoint(h.cp)
	require.NoError(t, err)
	assert.Empty(t, saved.Pending)
}

func TestAgentFinishesACommandWhenTheSessionBreaks(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	host := hostmem.NewSimulated(hostmem.SimulatedConfig{BlockLatency: time.Second, Clock: clk})
	svc, client := startService(t)
	a, err := New(Config{Node: "node-1", Client: client, Host: host, Metrics: metrics.New(), Clock: clk, HeartbeatInterval: 10 * time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	s := svc.session(t)
	require.NotNil(t, s.next(t).GetHello())
	require.Eventually(t, func() bool { return clk.Waiters() == 1 }, 10*time.Second, time.Millisecond, "the heartbeat ticker")
	s.send(t, onlineCmd("c1", "uid-1", 0, 128*mib))
	require.Eventually(t, func() bool { return clk.Waiters() == 2 }, 10*time.Second, time.Millisecond, "onlining the block takes a second")

	close(s.end) // the session breaks while the block is being onlined
	require.Eventually(t, func() bool { return clk.Waiters() == 3 }, 10*time.Second, time.Millisecond, "the reconnect backoff")
	clk.Step(time.Second) // the block is online, and the agent reconnects

	s = svc.session(t)
	require.NotNil(t, s.next(t).GetHello())
	require.Eventually(t, func() bool { return len(a.hostState().Online) == 1 }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return clk.Waiters() == 2 }, 10*time.Second, time.Millisecond, "the new session's heartbeat ticker (the fake clock keeps the old one)")
	clk.Step(10 * time.Second)
	var hs *memservicev1.HostState
	for hs == nil {
		hs = s.next(t).GetHostState()
	}
	require.Len(t, hs.Online, 1, "the new session learns the memory is online")
	assert.Equal(t, "uid-1", hs.Online[0].ClaimUid)
	assert.Equal(t, 1, host.OnlineBlocks())
}

// An offline for memory the checkpoint does not know (a lost checkpoint, or memory
// never onlined here) offlines nothing: it succeeds only if the command's blocks are
// offline, in the pool the command names, and fails if any is online.
func TestAgentOfflinesNothingItHasNoRecordOf(t *testing.T) {
	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	_, err := sim.Online(context.Background(), hostmem.Request{ClaimUID: "unknown", Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 0, Length: 128 * mib}}}, nil)
	require.NoError(t, err)
	host := &halfOnline{Simulated: sim}
	h := startAgentOn(t, filepath.Join(t.TempDir(), "agent.json"), host, sim, &fakeNode{})
	s := h.svc.session(t)
	require.NotNil(t, s.next(t).GetHello())

	cmd := offlineCmd("c1", "uid-9", 0, 128*mib)
	cmd.GetOffline().Pool = "pool-b"
	s.send(t, cmd)
	require.Equal(t, memservicev1.CommandResult_OUTCOME_OFFLINE, s.result(t).Outcome, "block 0 of pool-b is offline")

	cmd = offlineCmd("c2", "uid-9", 0, 128*mib)
	cmd.GetOffline().Pool = "pool-a"
	s.send(t, cmd)
	res := s.result(t)
	require.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
	assert.Equal(t, "claim uid-9: memory block(s) [0] of pool pool-a are online: memory still online, but this agent has no record of onlining it for claim uid-9 (another claim's memory, the host's own, or a lost checkpoint), so it does not offline it", res.Message)
	assert.Empty(t, host.offlines, "nothing was offlined")
	assert.Equal(t, 1, sim.OnlineBlocks())
}

// Commands of one claim run in the order the service sent them: an offline sent
// right after an online runs after it, so memory is never left online for a claim
// the service released (whatever order the goroutines are scheduled in).
func TestAgentRunsCommandsOfAClaimInOrder(t *testing.T) {
	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	h := startAgentOn(t, filepath.Join(t.TempDir(), "agent.json"), sim, sim, &fakeNode{})
	s := h.svc.session(t)
	require.NotNil(t, s.next(t).GetHello())
	for i := range 50 {
		uid := fmt.Sprintf("uid-%d", i)
		on := onlineCmd(fmt.Sprintf("on-%d", i), uid, int64(i)*128*mib, 128*mib)
		off := offlineCmd(fmt.Sprintf("off-%d", i), uid, int64(i)*128*mib, 128*mib)
		off.GetOffline().Pool = "pool-a"
		s.send(t, on)
		s.send(t, off)
		first, second := s.result(t), s.result(t)
		require.Equal(t, []string{"on-" + fmt.Sprint(i), "off-" + fmt.Sprint(i)}, []string{first.CommandId, second.CommandId}, "round %d", i)
		require.Equal(t, 0, sim.OnlineBlocks(), "round %d: the claim's memory is offline at the end", i)
	}
}
