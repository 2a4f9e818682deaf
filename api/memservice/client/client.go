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

// Package client connects to the memory service over mutual TLS. The scheduler
// plugin, the node agent, the DRA plugin and the kubectl plugin use it.
//
// Every unary call gets a deadline (Config.CallTimeout) unless the caller's context
// already has one, and the calls that are idempotent by design (all of them are keyed
// by a claim UID or read only) are retried by gRPC when the service is UNAVAILABLE,
// for example while a new leader takes over.
package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// DefaultCallTimeout bounds a unary call whose context has no deadline.
const DefaultCallTimeout = 30 * time.Second

// Keepalive settings. The server's enforcement policy allows pings this frequent.
const (
	KeepaliveTime    = 30 * time.Second
	KeepaliveTimeout = 10 * time.Second
)

// Config says where the memory service is and which certificate to present.
type Config struct {
	// Address is host:port of the memory service (or unix:///path).
	Address string
	// CAFile is the CA bundle that signed the server's certificate.
	CAFile string
	// CertFile and KeyFile are this client's certificate and key; the certificate
	// names the client's role (and node), see package pki.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the server's certificate (empty: the
	// host of Address).
	ServerName string
	// CallTimeout bounds unary calls made with a context without deadline
	// (0: DefaultCallTimeout). Streams are not bounded.
	CallTimeout time.Duration
}

// Validate says which field is missing.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"address", c.Address}, {"caFile", c.CAFile}, {"certFile", c.CertFile}, {"keyFile", c.KeyFile},
	} {
		if strings.TrimSpace(f.value) == "" {
			errs = append(errs, fmt.Errorf("memory service client: %s is required", f.name))
		}
	}
	if c.CallTimeout < 0 {
		errs = append(errs, fmt.Errorf("memory service client: callTimeout must not be negative, got %s", c.CallTimeout))
	}
	return errors.Join(errs...)
}

// Client is a connection to the memory service.
type Client struct {
	memservicev1.MemoryServiceClient
	conn *grpc.ClientConn
}

// retryServiceConfig retries UNAVAILABLE for the idempotent methods: every method
// but AgentSession (a bidirectional session the agent reopens itself).
var retryServiceConfig = func() string {
	methods := []string{"GetCapacity", "Reserve", "AddMemory", "RemoveMemory", "GetReservation", "WatchPools"}
	names := make([]string, 0, len(methods))
	for _, m := range methods {
		names = append(names, fmt.Sprintf(`{"service":%q,"method":%q}`, memservicev1.MemoryService_ServiceDesc.ServiceName, m))
	}
	return `{"methodConfig":[{"name":[` + strings.Join(names, ",") + `],` +
		`"retryPolicy":{"maxAttempts":5,"initialBackoff":"0.05s","maxBackoff":"1s",` +
		`"backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}`
}()

// Dial prepares a connection to the memory service. It does not wait for the service:
// the connection is made in the background and calls wait for it within their
// deadline, so components may start in any order. ctx only cancels Dial itself.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial memory service: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsConfig, err := pki.ClientTLSConfig(cfg.CertFile, cfg.KeyFile, cfg.CAFile, cfg.ServerName)
	if err != nil {
		return nil, fmt.Errorf("dial memory service %s: %w", cfg.Address, err)
	}
	timeout := cfg.CallTimeout
	if timeout == 0 {
		timeout = DefaultCallTimeout
	}
	conn, err := grpc.NewClient(cfg.Address,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true,
		}),
		grpc.WithDefaultServiceConfig(retryServiceConfig),
		grpc.WithChainUnaryInterceptor(deadlineInterceptor(timeout)),
	)
	if err != nil {
		return nil, fmt.Errorf("dial memory service %s: %w", cfg.Address, err)
	}
	conn.Connect()
	return &Client{MemoryServiceClient: memservicev1.NewMemoryServiceClient(conn), conn: conn}, nil
}

// Close closes the connection; calls in flight fail with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }

// deadlineInterceptor gives a call without deadline one of d.
func deadlineInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// AddFlags registers the --memservice-* flags of a node component whose certificate
// carries role (agent or draplugin) and its node's name, with the values in c as
// defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet, role string) {
	fs.StringVar(&c.Address, "memservice-address", c.Address, "host:port of the memory service.")
	fs.StringVar(&c.CAFile, "memservice-ca", c.CAFile, "CA bundle that signed the memory service's certificate.")
	fs.StringVar(&c.CertFile, "memservice-cert", c.CertFile,
		fmt.Sprintf("client certificate with role %[1]s and this node's name (pki: O=dynamicmemory.io:%[1]s, CN=<node>).", role))
	fs.StringVar(&c.KeyFile, "memservice-key", c.KeyFile, "key of --memservice-cert.")
	fs.StringVar(&c.ServerName, "memservice-server-name", c.ServerName, "name to check in the memory service's certificate (default: the host of --memservice-address).")
}
