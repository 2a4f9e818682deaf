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

package client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// fakeService answers GetReservation with UNAVAILABLE the first failures times, and
// records what it saw.
type fakeService struct {
	memservicev1.UnimplementedMemoryServiceServer
	failures    int32
	calls       atomic.Int32
	deadline    atomic.Int64 // remaining time of the last call, ns
	callerIdent atomic.Value
}

func (f *fakeService) GetReservation(ctx context.Context, req *memservicev1.GetReservationRequest) (*memservicev1.GetReservationResponse, error) {
	n := f.calls.Add(1)
	if d, ok := ctx.Deadline(); ok {
		f.deadline.Store(int64(time.Until(d)))
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			id, err := pki.IdentityFromCert(info.State.PeerCertificates[0])
			if err == nil {
				f.callerIdent.Store(id)
			}
		}
	}
	if n <= f.failures {
		return nil, status.Error(codes.Unavailable, "not the leader yet")
	}
	return &memservicev1.GetReservationResponse{Reservation: &memservicev1.Reservation{
		Claim: &memservicev1.ClaimRef{Uid: req.GetClaimUid()},
	}}, nil
}

func startServer(t *testing.T, svc memservicev1.MemoryServiceServer) (string, pki.Bundle) {
	t.Helper()
	bundle, err := pki.WriteBundle(t.TempDir(), []string{"127.0.0.1", "memservice"}, []string{"node1"})
	require.NoError(t, err)
	tlsConfig, err := pki.ServerTLSConfig(bundle.CertFile("server"), bundle.KeyFile("server"), bundle.CAFile())
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConfig)))
	memservicev1.RegisterMemoryServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), bundle
}

func dial(t *testing.T, addr string, b pki.Bundle, member string, timeout time.Duration) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), client.Config{
		Address: addr, CAFile: b.CAFile(), CertFile: b.CertFile(member), KeyFile: b.KeyFile(member),
		CallTimeout: timeout,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDialCallsOverMutualTLSWithTheClientsIdentity(t *testing.T) {
	svc := &fakeService{}
	addr, bundle := startServer(t, svc)
	c := dial(t, addr, bundle, "draplugin-node1", 0)

	resp, err := c.GetReservation(context.Background(), &memservicev1.GetReservationRequest{ClaimUid: "u1"})
	require.NoError(t, err)
	assert.Equal(t, "u1", resp.GetReservation().GetClaim().GetUid())
	assert.Equal(t, pki.Identity{Role: pki.RoleDRAPlugin, Node: "node1"}, svc.callerIdent.Load())
}

func TestCallWithoutDeadlineGetsTheCallTimeout(t *testing.T) {
	svc := &fakeService{}
	addr, bundle := startServer(t, svc)
	c := dial(t, addr, bundle, "scheduler", 3*time.Second)

	_, err := c.GetReservation(context.Background(), &memservicev1.GetReservationRequest{ClaimUid: "u1"})
	require.NoError(t, err)
	remaining := time.Duration(svc.deadline.Load())
	assert.Greater(t, remaining, time.Second, "server saw remaining %s", remaining)
	assert.LessOrEqual(t, remaining, 3*time.Second, "server saw remaining %s", remaining)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: "u1"})
	require.NoError(t, err)
	assert.Greater(t, time.Duration(svc.deadline.Load()), 10*time.Second, "the caller's own deadline is kept")
}

func TestUnavailableIsRetried(t *testing.T) {
	svc := &fakeService{failures: 2}
	addr, bundle := startServer(t, svc)
	c := dial(t, addr, bundle, "scheduler", 0)

	_, err := c.GetReservation(context.Background(), &memservicev1.GetReservationRequest{ClaimUid: "u1"})
	require.NoError(t, err)
	assert.Equal(t, int32(3), svc.calls.Load())
}

func TestServerSignedByAnotherCAIsRefused(t *testing.T) {
	addr, _ := startServer(t, &fakeService{})
	other, err := pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	c := dial(t, addr, other, "scheduler", 2*time.Second)

	_, err = c.GetReservation(context.Background(), &memservicev1.GetReservationRequest{ClaimUid: "u1"})
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, err.Error(), "certificate")
}

func TestDialValidatesTheConfig(t *testing.T) {
	b, err := pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	good := client.Config{Address: "127.0.0.1:1", CAFile: b.CAFile(), CertFile: b.CertFile("admin"), KeyFile: b.KeyFile("admin")}
	tests := []struct {
		name    string
		mutate  func(*client.Config)
		wantErr string
	}{
		{name: "a complete config dials", mutate: func(*client.Config) {}},
		{name: "no address", mutate: func(c *client.Config) { c.Address = "" }, wantErr: "address is required"},
		{name: "no CA", mutate: func(c *client.Config) { c.CAFile = "" }, wantErr: "caFile is required"},
		{name: "no certificate", mutate: func(c *client.Config) { c.CertFile = "" }, wantErr: "certFile is required"},
		{name: "no key", mutate: func(c *client.Config) { c.KeyFile = " " }, wantErr: "keyFile is required"},
		{name: "negative timeout", mutate: func(c *client.Config) { c.CallTimeout = -time.Second }, wantErr: "callTimeout must not be negative"},
		{name: "missing certificate file", mutate: func(c *client.Config) { c.CertFile = "/nonexistent.crt" }, wantErr: "client certificate: load certificate /nonexistent.crt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			c, err := client.Dial(context.Background(), cfg)
			if tc.wantErr == "" {
				require.NoError(t, err)
				require.NoError(t, c.Close())
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}
