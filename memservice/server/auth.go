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

package server

import (
	"context"
	"fmt"
	"path"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// allowed says which roles may call each method. Node-bound roles are further limited
// to their node in the handlers.
var allowed = map[string][]pki.Role{
	memservicev1.MemoryService_Reserve_FullMethodName:        {pki.RoleScheduler},
	memservicev1.MemoryService_AddMemory_FullMethodName:      {pki.RoleScheduler},
	memservicev1.MemoryService_RemoveMemory_FullMethodName:   {pki.RoleScheduler},
	memservicev1.MemoryService_GetCapacity_FullMethodName:    {pki.RoleScheduler, pki.RoleDRAPlugin, pki.RoleAdmin},
	memservicev1.MemoryService_GetReservation_FullMethodName: {pki.RoleScheduler, pki.RoleDRAPlugin, pki.RoleAdmin},
	memservicev1.MemoryService_WatchPools_FullMethodName:     {pki.RoleScheduler, pki.RoleAdmin},
	memservicev1.MemoryService_AgentSession_FullMethodName:   {pki.RoleAgent},
	grpc_health_v1.Health_Check_FullMethodName:               {pki.RoleScheduler, pki.RoleAgent, pki.RoleDRAPlugin, pki.RoleAdmin},
	grpc_health_v1.Health_Watch_FullMethodName:               {pki.RoleScheduler, pki.RoleAgent, pki.RoleDRAPlugin, pki.RoleAdmin},
	grpc_health_v1.Health_List_FullMethodName:                {pki.RoleScheduler, pki.RoleAgent, pki.RoleDRAPlugin, pki.RoleAdmin},
}

type identityKey struct{}

// identityFrom returns the caller's identity set by the interceptors.
func identityFrom(ctx context.Context) pki.Identity {
	id, _ := ctx.Value(identityKey{}).(pki.Identity)
	return id
}

// authenticate reads the verified client certificate of the call.
func authenticate(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "a client certificate signed by the service's CA is required")
	}
	id, err := pki.IdentityFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return pki.Identity{}, status.Error(codes.PermissionDenied, err.Error())
	}
	return id, nil
}

func authorize(ctx context.Context, method string) (context.Context, error) {
	id, err := authenticate(ctx)
	if err != nil {
		return ctx, err
	}
	for _, r := range allowed[method] {
		if r == id.Role {
			return context.WithValue(ctx, identityKey{}, id), nil
		}
	}
	return ctx, status.Errorf(codes.PermissionDenied, "%s may not call %s", id, path.Base(method))
}

// checkNode refuses a node-bound caller acting for another node.
func checkNode(id pki.Identity, node string) error {
	if id.Role.NodeBound() && node != id.Node {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("%s certificate is for node %q, cannot act for node %q", id.Role, id.Node, node))
	}
	return nil
}

// Interceptors authorize, gate on leadership, and count every call.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := s.clock.Now()
	resp, err := s.unary(ctx, req, info, handler)
	if s.metrics != nil {
		method := path.Base(info.FullMethod)
		s.metrics.GRPCRequests.WithLabelValues(method, status.Code(err).String()).Inc()
		s.metrics.GRPCDuration.WithLabelValues(method).Observe(s.clock.Since(start).Seconds())
	}
	return resp, err
}

func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := s.gate(info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := authorize(ss.Context(), info.FullMethod)
	if err == nil {
		err = s.gate(info.FullMethod)
	}
	if err == nil {
		err = handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
	if s.metrics != nil {
		s.metrics.GRPCRequests.WithLabelValues(path.Base(info.FullMethod), status.Code(err).String()).Inc()
	}
	return err
}

// gate refuses the service's methods while this instance does not lead.
func (s *Server) gate(method string) error {
	if s.serving == nil || s.serving() {
		return nil
	}
	if strings.HasPrefix(method, "/"+grpc_health_v1.Health_ServiceDesc.ServiceName+"/") {
		return nil
	}
	return status.Error(codes.Unavailable, "this memory service instance is not serving (standby or starting); retry: the leader serves requests")
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
