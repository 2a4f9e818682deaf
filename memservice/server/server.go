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

// Package server is the memory service's gRPC API: mutual TLS, authorization by the
// role and node a client certificate names, request validation, and one table from
// domain errors to status codes. The work is done by the ledger (reservations), the
// provisioning manager (hardware steps) and the agent session registry.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

// Config wires a Server.
type Config struct {
	// TLS is the server's config; it must require and verify client certificates
	// (pki.ServerTLSConfig does).
	TLS      *tls.Config
	Ledger   *ledger.Ledger
	Manager  *provision.Manager
	Sessions *session.Registry
	Metrics  *metrics.Metrics
	Clock    clock.Clock
	// SnapshotInterval is the least time between two WatchPools snapshots (0:
	// DefaultSnapshotInterval). The changes made meanwhile are in the next one.
	SnapshotInterval time.Duration
	// Serving tells whether this instance serves requests (the leader); nil: always.
	Serving func() bool
	// HelloTimeout bounds the wait for an agent's Hello (0: HelloTimeout).
	HelloTimeout time.Duration
}

// Bounds of what a client may make the server do.
const (
	// MaxConcurrentStreams bounds the calls in flight on one connection (the
	// scheduler's background Reserve calls share its connection; more wait at the
	// client).
	MaxConcurrentStreams = 256
	// MaxRecvMessageBytes bounds a request: the largest is an agent's Hello with
	// MaxHostClaims claims online (TestLargestHelloFits).
	MaxRecvMessageBytes = 3 << 20
	// HelloTimeout is the default bound of the wait for an agent's Hello once it
	// opened its session (Config.HelloTimeout).
	HelloTimeout = 10 * time.Second
	// SessionOpensPerNode and SessionOpenBurst bound how often one node may open a
	// session (each Hello costs the service a reconcile of the node's host state): a
	// node over it is told to retry later.
	SessionOpensPerNode = rate.Limit(0.5)
	SessionOpenBurst    = 5
)

// DefaultSnapshotInterval is the default least time between two WatchPools snapshots.
// Watchers account for the reservations they made since a snapshot by its
// ledger_revision, so a later snapshot costs them no accuracy.
const DefaultSnapshotInterval = 50 * time.Millisecond

// Server implements memservicev1.MemoryServiceServer.
type Server struct {
	memservicev1.UnimplementedMemoryServiceServer

	ledger   *ledger.Ledger
	manager  *provision.Manager
	sessions *session.Registry
	metrics  *metrics.Metrics
	clock    clock.PassiveClock
	serving  func() bool
	hub      *hub
	health   *health.Server
	grpc     *grpc.Server
	stopping chan struct{} // closed when Serve's context ends: streams return
	// helloTimeout bounds the wait for an agent's Hello.
	helloTimeout time.Duration

	// opens bounds each node's session opens (SessionOpensPerNode).
	opensMu sync.Mutex
	opens   map[string]*rate.Limiter
}

// New builds the gRPC server with its credentials, interceptors and health service.
func New(cfg Config) (*Server, error) {
	if cfg.TLS == nil || cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("memory service server: TLS config must require and verify client certificates")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = DefaultSnapshotInterval
	}
	if cfg.HelloTimeout == 0 {
		cfg.HelloTimeout = HelloTimeout
	}
	s := &Server{
		ledger: cfg.Ledger, manager: cfg.Manager, sessions: cfg.Sessions, metrics: cfg.Metrics,
		clock: cfg.Clock, serving: cfg.Serving, health: health.NewServer(),
		stopping: make(chan struct{}), helloTimeout: cfg.HelloTimeout,
		opens: map[string]*rate.Limiter{},
	}
	s.hub = newHub(s.snapshot, cfg.Clock, cfg.SnapshotInterval, func(n int) {
		if s.metrics != nil {
			s.metrics.WatchSubs.Set(float64(n))
		}
	})
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(cfg.TLS)),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: client.KeepaliveTime / 3, PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(MaxRecvMessageBytes),
	)
	memservicev1.RegisterMemoryServiceServer(s.grpc, s)
	grpc_health_v1.RegisterHealthServer(s.grpc, s.health)
	s.SetServing(false)
	return s, nil
}

// Notify tells the server that pools or sessions changed (WatchPools). Never blocks.
func (s *Server) Notify() { s.hub.Notify() }

// SetServing sets the health status that clients and probes see.
func (s *Server) SetServing(serving bool) {
	st := grpc_health_v1.HealthCheckResponse_NOT_SERVING
	if serving {
		st = grpc_health_v1.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(memservicev1.MemoryService_ServiceDesc.ServiceName, st)
}

// Serve serves on lis until ctx ends, then stops gracefully (bounded).
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	go s.hub.run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	close(s.stopping)
	s.SetServing(false)
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		s.grpc.Stop()
	}
	return nil
}

func (s *Server) GetCapacity(ctx context.Context, req *memservicev1.GetCapacityRequest) (*memservicev1.GetCapacityResponse, error) {
	if err := validateGetCapacity(req); err != nil {
		return nil, toStatus(err)
	}
	id := identityFrom(ctx)
	if id.Role.NodeBound() {
		if err := checkNode(id, req.GetNode()); err != nil {
			return nil, err
		}
	}
	connected := s.connectedSet()
	var out []*memservicev1.PoolStatus
	for _, p := range s.ledger.Snapshot().Pools {
		if req.GetNode() != "" && !attached(p, req.GetNode()) {
			continue
		}
		pool := poolToProto(p, connected)
		if id.Role.NodeBound() {
			// A node sees the pool and its own share, not what the others hold.
			pool.Nodes = slices.DeleteFunc(pool.Nodes, func(n *memservicev1.NodeShare) bool { return n.GetNode() != id.Node })
		}
		out = append(out, pool)
	}
	return &memservicev1.GetCapacityResponse{Pools: out}, nil
}

func attached(p ledger.PoolStatus, node string) bool {
	for _, h := range p.Hosts {
		if h.Node == node {
			return true
		}
	}
	return false
}

func (s *Server) Reserve(ctx context.Context, req *memservicev1.ReserveRequest) (*memservicev1.ReserveResponse, error) {
	if err := validateReserve(req); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.manager.Reserve(ledgerRequest(req.GetClaim(), req.GetPod(), req.GetNode(), req.GetPool(), req.GetBytes()))
	if err != nil {
		return nil, toStatus(err)
	}
	// Read after the reservation is in the ledger: any snapshot at this revision or
	// later counts it, which lets the scheduler drop its in-flight copy exactly.
	return &memservicev1.ReserveResponse{Reservation: reservationToProto(r), LedgerRevision: s.ledger.Revision()}, nil
}

func (s *Server) AddMemory(ctx context.Context, req *memservicev1.AddMemoryRequest) (*memservicev1.AddMemoryResponse, error) {
	if err := validateAddMemory(req); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.manager.AddMemory(ctx, ledgerRequest(req.GetClaim(), req.GetPod(), req.GetNode(), req.GetPool(), req.GetBytes()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &memservicev1.AddMemoryResponse{Reservation: reservationToProto(r)}, nil
}

func (s *Server) RemoveMemory(ctx context.Context, req *memservicev1.RemoveMemoryRequest) (*memservicev1.RemoveMemoryResponse, error) {
	if err := validateRemoveMemory(req); err != nil {
		return nil, toStatus(err)
	}
	r, found, err := s.manager.RemoveMemory(ctx, req.GetClaimUid(), req.GetWait())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &memservicev1.RemoveMemoryResponse{}
	if found {
		resp.Reservation = reservationToProto(r)
	}
	return resp, nil
}

func (s *Server) GetReservation(ctx context.Context, req *memservicev1.GetReservationRequest) (*memservicev1.GetReservationResponse, error) {
	if err := validateGetReservation(req); err != nil {
		return nil, toStatus(err)
	}
	r, ok := s.ledger.Get(req.GetClaimUid())
	// A node learns nothing of another node's claims: it gets the answer of a claim
	// nobody holds.
	if id := identityFrom(ctx); !ok || (id.Role.NodeBound() && r.Node != id.Node) {
		return nil, status.Errorf(codes.NotFound, "claim_uid: no reservation for claim %s", req.GetClaimUid())
	}
	return &memservicev1.GetReservationResponse{Reservation: reservationToProto(r)}, nil
}

// AgentSession serves one node agent: its Hello must name the node of its
// certificate; then commands go out and results, progress and host state come in.
func (s *Server) AgentSession(stream memservicev1.MemoryService_AgentSessionServer) error {
	ctx := stream.Context()
	first, err := s.recvHello(stream)
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if err := validateHello(hello); err != nil {
		return toStatus(err)
	}
	if err := checkNode(identityFrom(ctx), hello.GetNode()); err != nil {
		return err
	}
	if !s.mayOpen(hello.GetNode()) {
		return status.Errorf(codes.ResourceExhausted, "node %s opens sessions too often (at most %d at once, then one every %s): retry later",
			hello.GetNode(), SessionOpenBurst, time.Duration(float64(time.Second)/float64(SessionOpensPerNode)))
	}
	logger := klog.FromContext(ctx).WithValues("node", hello.GetNode(), "agentVersion", hello.GetVersion())
	sess := s.sessions.Open(hello.GetNode(), hello)
	defer s.sessions.Close(sess)
	logger.Info("Node agent connected")
	defer logger.Info("Node agent disconnected")

	errc := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if !s.onItsNode(sess.Node(), msg) {
				continue
			}
			if err := s.sessions.Handle(sess, msg); err != nil {
				errc <- toStatus(err)
				return
			}
		}
	}()
	for {
		select {
		case cmd := <-sess.Commands():
			if err := stream.Send(cmd); err != nil {
				return err
			}
		case <-sess.Done():
			return status.Errorf(codes.Aborted, "a newer session of node %s replaced this one", hello.GetNode())
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the memory service is stopping; reconnect")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// recvHello waits at most helloTimeout for the session's first message. (Returning
// ends the stream, which ends the Recv left behind.)
func (s *Server) recvHello(stream memservicev1.MemoryService_AgentSessionServer) (*memservicev1.AgentMessage, error) {
	type received struct {
		msg *memservicev1.AgentMessage
		err error
	}
	ch := make(chan received, 1)
	go func() {
		msg, err := stream.Recv()
		ch <- received{msg, err}
	}()
	select {
	case r := <-ch:
		return r.msg, r.err
	case <-time.After(s.helloTimeout):
		return nil, status.Errorf(codes.DeadlineExceeded, "hello: no Hello within %s of opening the session", s.helloTimeout)
	}
}

// mayOpen takes one of node's session opens, if it has one left.
func (s *Server) mayOpen(node string) bool {
	s.opensMu.Lock()
	defer s.opensMu.Unlock()
	l, ok := s.opens[node]
	if !ok {
		l = rate.NewLimiter(SessionOpensPerNode, SessionOpenBurst)
		s.opens[node] = l
	}
	return l.AllowN(s.clock.Now(), 1)
}

// onItsNode tells whether an agent's message may touch the claim it names: a progress
// report only reaches a claim reserved on the agent's own node. A report on another
// node's claim and one on a claim nobody holds take the same path and are dropped
// alike; the agent is told nothing. (Results answer commands of the agent's own
// session, matched by command id.)
func (s *Server) onItsNode(node string, msg *memservicev1.AgentMessage) bool {
	p := msg.GetProgress()
	if p == nil {
		return true
	}
	r, ok := s.ledger.Get(p.GetClaimUid())
	return ok && r.Node == node
}

// snapshot builds the WatchPools message (the hub sets the revision).
func (s *Server) snapshot() *memservicev1.PoolSnapshot {
	connected := s.connectedSet()
	pools := s.ledger.Snapshot()
	snap := &memservicev1.PoolSnapshot{ConnectedNodes: s.sessions.Connected(), LedgerRevision: pools.Revision}
	for _, p := range pools.Pools {
		snap.Pools = append(snap.Pools, poolToProto(p, connected))
	}
	return snap
}

func (s *Server) connectedSet() map[string]bool {
	out := map[string]bool{}
	for _, n := range s.sessions.Connected() {
		out[n] = true
	}
	return out
}

func ledgerRequest(c *memservicev1.ClaimRef, p *memservicev1.PodRef, node, pool string, bytes int64) ledger.Request {
	return ledger.Request{
		Claim: ledger.ClaimRef{UID: c.GetUid(), Namespace: c.GetNamespace(), Name: c.GetName()},
		Pod:   ledger.PodRef{Name: p.GetName(), UID: p.GetUid()},
		Node:  node, Pool: pool, Bytes: bytes,
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func reservationToProto(r ledger.Reservation) *memservicev1.Reservation {
	out := &memservicev1.Reservation{
		Claim:          &memservicev1.ClaimRef{Uid: r.Claim.UID, Namespace: r.Claim.Namespace, Name: r.Claim.Name},
		Node:           r.Node,
		Pool:           r.Pool,
		RequestedBytes: r.Requested,
		Bytes:          r.Bytes,
		State:          memservicev1.StateOf(r.State),
		NumaNodes:      r.NUMANodes,
		Message:        r.Message,
		ReservedAt:     timestamp(r.ReservedAt),
		ExpiresAt:      timestamp(r.ExpiresAt),
		UpdatedAt:      timestamp(r.UpdatedAt),
	}
	if r.Pod != (ledger.PodRef{}) {
		out.Pod = &memservicev1.PodRef{Name: r.Pod.Name, Uid: r.Pod.UID}
	}
	if len(r.Extents) > 0 {
		out.Extents = memservicev1.ExtentsOf(r.Extents)
	}
	return out
}

func poolToProto(p ledger.PoolStatus, connected map[string]bool) *memservicev1.PoolStatus {
	out := &memservicev1.PoolStatus{
		Name:            p.Name,
		CapacityBytes:   p.Capacity,
		BlockSizeBytes:  p.BlockSize,
		HostWindowBytes: p.HostWindow,
		FreeBytes:       p.Free,
		ReservedBytes:   p.Reserved,
		OnlineBytes:     p.Online,
		Attributes:      p.Attributes,
		Ready:           p.Ready,
	}
	for _, h := range p.Hosts {
		out.Nodes = append(out.Nodes, &memservicev1.NodeShare{
			Node: h.Node, ReservedBytes: h.Reserved, OnlineBytes: h.Online, FreeBytes: h.Free, AgentConnected: connected[h.Node],
		})
	}
	return out
}
