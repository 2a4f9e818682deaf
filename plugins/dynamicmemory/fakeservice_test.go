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
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	v1alpha1 "github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

const (
	gi = int64(1) << 30
	mi = int64(1) << 20
)

// fakePool is a pool of the fake memory service.
type fakePool struct {
	name                    string
	capacity, block, window int64
	nodes                   []string
	latencyClass            string
	notReady                bool
	disconnected            map[string]bool // nodes whose agent has no session
}

// fakeService is an in-process memory service with a small ledger, served over
// bufconn. Tests steer it through its fields (under mu) and the hooks.
type fakeService struct {
	memservicev1.UnimplementedMemoryServiceServer

	mu           sync.Mutex
	pools        map[string]*fakePool
	reservations map[string]*memservicev1.Reservation
	revision     uint64
	watchers     map[chan struct{}]struct{}
	calls        []string
	// addMemory, when set, answers AddMemory instead of the ledger.
	addMemory func(ctx context.Context, req *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error)
	// reserveErr, when set, fails every Reserve.
	reserveErr error
	// reserveGate, when set, holds every Reserve until it is closed or the call
	// is canceled.
	reserveGate chan struct{}
	// held stops snapshots from being sent until release.
	held bool

	lis    *bufconn.Listener
	server *grpc.Server
}

func newFakeService(t *testing.T, pools ...*fakePool) *fakeService {
	t.Helper()
	fs := &fakeService{
		pools:        map[string]*fakePool{},
		reservations: map[string]*memservicev1.Reservation{},
		watchers:     map[chan struct{}]struct{}{},
	}
	for _, p := range pools {
		fs.pools[p.name] = p
	}
	fs.start()
	t.Cleanup(fs.stop)
	return fs
}

// start serves on a new listener (also after stop: a restart).
func (fs *fakeService) start() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.lis = bufconn.Listen(1 << 20)
	fs.server = grpc.NewServer()
	memservicev1.RegisterMemoryServiceServer(fs.server, fs)
	go func(s *grpc.Server, l net.Listener) { _ = s.Serve(l) }(fs.server, fs.lis)
}

// stop drops every connection and stream, like a crashed service.
func (fs *fakeService) stop() {
	fs.mu.Lock()
	s := fs.server
	fs.mu.Unlock()
	s.Stop()
}

// client dials the service; redials reach the current listener.
func (fs *fakeService) client(t *testing.T) memservicev1.MemoryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///fake-memservice",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			fs.mu.Lock()
			lis := fs.lis
			fs.mu.Unlock()
			return lis.DialContext(ctx)
		}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return memservicev1.NewMemoryServiceClient(conn)
}

func (fs *fakeService) callLog() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return slices.Clone(fs.calls)
}

// changed publishes a new revision; callers hold mu.
func (fs *fakeService) changedLocked() {
	fs.revision++
	for w := range fs.watchers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// hold stops sending snapshots, so that a test can look at the cache between a
// change and the snapshot that shows it.
func (fs *fakeService) hold() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.held = true
}

// release sends the current snapshot and resumes.
func (fs *fakeService) release() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.held = false
	for w := range fs.watchers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// change runs f on the ledger and publishes the result.
func (fs *fakeService) change(f func()) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f()
	fs.changedLocked()
}

func (fs *fakeService) snapshotLocked() *memservicev1.PoolSnapshot {
	snap := &memservicev1.PoolSnapshot{Revision: fs.revision, LedgerRevision: fs.revision}
	connected := map[string]bool{}
	for _, p := range fs.pools {
		used := int64(0)
		perNode := map[string]int64{}
		for _, r := range fs.reservations {
			if r.Pool == p.name {
				used += r.Bytes
				perNode[r.Node] += r.Bytes
			}
		}
		ps := &memservicev1.PoolStatus{
			Name: p.name, CapacityBytes: p.capacity, BlockSizeBytes: p.block, HostWindowBytes: p.window,
			FreeBytes: p.capacity - used, ReservedBytes: used, Ready: !p.notReady,
			Attributes: map[string]string{},
		}
		if p.latencyClass != "" {
			ps.Attributes[v1alpha1.AttributeLatencyClass] = p.latencyClass
		}
		for _, n := range p.nodes {
			ps.Nodes = append(ps.Nodes, &memservicev1.NodeShare{
				Node: n, ReservedBytes: perNode[n], FreeBytes: min(p.window-perNode[n], ps.FreeBytes),
				AgentConnected: !p.disconnected[n],
			})
			if !p.disconnected[n] {
				connected[n] = true
			}
		}
		snap.Pools = append(snap.Pools, ps)
	}
	slices.SortFunc(snap.Pools, func(a, b *memservicev1.PoolStatus) int { return cmp.Compare(a.Name, b.Name) })
	for n := range connected {
		snap.ConnectedNodes = append(snap.ConnectedNodes, n)
	}
	slices.Sort(snap.ConnectedNodes)
	return snap
}

func (fs *fakeService) WatchPools(_ *memservicev1.WatchPoolsRequest, stream grpc.ServerStreamingServer[memservicev1.PoolSnapshot]) error {
	w := make(chan struct{}, 1)
	w <- struct{}{}
	fs.mu.Lock()
	fs.watchers[w] = struct{}{}
	fs.mu.Unlock()
	defer func() {
		fs.mu.Lock()
		delete(fs.watchers, w)
		fs.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-w:
		}
		fs.mu.Lock()
		if fs.held {
			fs.mu.Unlock()
			continue
		}
		snap := fs.snapshotLocked()
		fs.mu.Unlock()
		if err := stream.Send(snap); err != nil {
			return err
		}
	}
}

// freeLocked is what node can take from pool p.
func (fs *fakeService) freeLocked(p *fakePool, node string) int64 {
	used, onNode := int64(0), int64(0)
	for _, r := range fs.reservations {
		if r.Pool == p.name {
			used += r.Bytes
			if r.Node == node {
				onNode += r.Bytes
			}
		}
	}
	return min(p.capacity-used, p.window-onNode)
}

func (fs *fakeService) Reserve(ctx context.Context, req *memservicev1.ReserveRequest) (*memservicev1.ReserveResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.calls = append(fs.calls, fmt.Sprintf("Reserve %s %s %s %d", req.Claim.GetUid(), req.Node, req.Pool, req.Bytes))
	if gate := fs.reserveGate; gate != nil {
		fs.mu.Unlock()
		select {
		case <-gate:
		case <-ctx.Done():
		}
		fs.mu.Lock()
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if fs.reserveErr != nil {
		return nil, fs.reserveErr
	}
	if r, ok := fs.reservations[req.Claim.GetUid()]; ok {
		if r.Node != req.Node || r.RequestedBytes != req.Bytes {
			return nil, status.Errorf(codes.FailedPrecondition, "claim %s is reserved on node %s", r.Claim.GetUid(), r.Node)
		}
		return &memservicev1.ReserveResponse{Reservation: r, LedgerRevision: fs.revision}, nil
	}
	r, err := fs.reserveLocked(req.Claim, req.Node, req.Pool, req.Bytes)
	if err != nil {
		return nil, err
	}
	return &memservicev1.ReserveResponse{Reservation: r, LedgerRevision: fs.revision}, nil
}

func (fs *fakeService) reserveLocked(claim *memservicev1.ClaimRef, node, pool string, bytes int64) (*memservicev1.Reservation, error) {
	names := make([]string, 0, len(fs.pools))
	for n, p := range fs.pools {
		if (pool == "" || pool == n) && slices.Contains(p.nodes, node) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		p := fs.pools[n]
		need := roundUp(bytes, p.block)
		if fs.freeLocked(p, node) >= need {
			r := &memservicev1.Reservation{Claim: claim, Node: node, Pool: n, RequestedBytes: bytes, Bytes: need,
				State: memservicev1.ReservationState_RESERVATION_STATE_RESERVED}
			fs.reservations[claim.GetUid()] = r
			fs.changedLocked()
			return r, nil
		}
	}
	return nil, status.Errorf(codes.ResourceExhausted, "no pool attached to node %s has %d bytes free", node, bytes)
}

func (fs *fakeService) AddMemory(ctx context.Context, req *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error) {
	fs.mu.Lock()
	fs.calls = append(fs.calls, fmt.Sprintf("AddMemory %s %s %s %d", req.Claim.GetUid(), req.Node, req.Pool, req.Bytes))
	hook := fs.addMemory
	fs.mu.Unlock()
	if hook != nil {
		return hook(ctx, req)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	r, ok := fs.reservations[req.Claim.GetUid()]
	if ok && req.Pool != "" && r.Pool != req.Pool {
		delete(fs.reservations, req.Claim.GetUid())
		ok = false
	}
	if !ok {
		var err error
		if r, err = fs.reserveLocked(req.Claim, req.Node, req.Pool, req.Bytes); err != nil {
			return nil, err
		}
	}
	r.State = memservicev1.ReservationState_RESERVATION_STATE_ONLINE
	r.NumaNodes = []int32{1}
	fs.changedLocked()
	return &memservicev1.AddMemoryResponse{Reservation: r}, nil
}

func (fs *fakeService) RemoveMemory(_ context.Context, req *memservicev1.RemoveMemoryRequest) (*memservicev1.RemoveMemoryResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.calls = append(fs.calls, "RemoveMemory "+req.ClaimUid)
	r := fs.reservations[req.ClaimUid]
	delete(fs.reservations, req.ClaimUid)
	fs.changedLocked()
	return &memservicev1.RemoveMemoryResponse{Reservation: r}, nil
}
