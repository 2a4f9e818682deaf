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

// Package metricsserver serves a component's Prometheus metrics over HTTPS to the
// callers the Kubernetes API server lets read them, as kube-scheduler serves its own
// on its secure port: the caller's bearer token must pass a TokenReview, and the user
// it names must be allowed to get the non-resource URL /metrics (a
// SubjectAccessReview; the ClusterRole ReaderClusterRole grants it). The answers are
// cached for a few seconds by the API server library's delegating authenticator and
// authorizer, the ones kube-scheduler uses. /healthz and /readyz stay open to all,
// for the kubelet's probes, as kube-scheduler's --authorization-always-allow-paths
// leaves them.
//
// The serving certificate comes from files, read again when they change, or, without
// them, is self-signed and made in memory at start, as kube-scheduler's.
//
// The memory service, the node agent and the DRA plugin serve their metrics with it.
package metricsserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	webhookutil "k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// ReaderClusterRole is the ClusterRole that allows getting /metrics
// (manifests/rbac/metrics-reader.yaml): bind it to whoever scrapes the components.
const ReaderClusterRole = "dynamic-memory:metrics-reader"

// Path is where the metrics are served.
const Path = "/metrics"

// The delegated checks: how long an answer of the API server is kept (kube-scheduler's
// defaults: short, so that a revoked token or role stops working soon) and how long
// one review may take.
const (
	cacheTTL      = 10 * time.Second
	reviewTimeout = 10 * time.Second
)

// Options are the flags of a component's metrics server.
type Options struct {
	// Address of the HTTPS server ("127.0.0.1:0" picks a free port; empty: no server).
	Address string
	// CertFile and KeyFile are the serving certificate (PEM, intermediates after it)
	// and its key, read again when they change. Both empty: a self-signed certificate
	// made at start.
	CertFile, KeyFile string
}

// AddFlags registers the address under the component's own flag name addressFlag,
// and --metrics-tls-cert-file and --metrics-tls-key-file.
func (o *Options) AddFlags(fs *pflag.FlagSet, addressFlag string) {
	fs.StringVar(&o.Address, addressFlag, o.Address, "HTTPS address of "+Path+", /healthz and /readyz (empty: off). "+Path+
		" needs a bearer token that the Kubernetes API server accepts (TokenReview) of a user allowed to get "+Path+
		" (SubjectAccessReview; bind the ClusterRole "+ReaderClusterRole+"); /healthz and /readyz are open to all.")
	fs.StringVar(&o.CertFile, "metrics-tls-cert-file", o.CertFile, "serving certificate of --"+addressFlag+
		" (PEM, intermediates after it), read again when it changes. With --metrics-tls-key-file empty too: a self-signed certificate made at start.")
	fs.StringVar(&o.KeyFile, "metrics-tls-key-file", o.KeyFile, "key of --metrics-tls-cert-file.")
}

// Validate checks that the certificate and its key are given together.
func (o *Options) Validate() error {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return fmt.Errorf("metrics server: give both --metrics-tls-cert-file and --metrics-tls-key-file, or neither for a self-signed certificate (got cert %q, key %q)", o.CertFile, o.KeyFile)
	}
	return nil
}

// Config configures a Server.
type Config struct {
	Options
	// Kube reviews the callers' tokens and access (TokenReview, SubjectAccessReview):
	// the component's client, whose ServiceAccount needs to create both (the
	// ClusterRole system:auth-delegator has it).
	Kube kubernetes.Interface
	// Metrics serves Path to the callers allowed.
	Metrics http.Handler
	// Ready answers /readyz: nil when ready, else why not (503 with its text). Nil:
	// always ready.
	Ready func() error
}

// Server is a component's metrics server.
type Server struct {
	lis     net.Listener
	handler http.Handler
	tls     *tls.Config
	// certs builds the TLS config of each connection from the serving certificate;
	// files, when given, reloads that certificate when its files change.
	certs *dynamiccertificates.DynamicServingCertificateController
	files *dynamiccertificates.DynamicCertKeyPairContent

	authn authenticator.Request
	authz authorizer.Authorizer
}

// New prepares the serving certificate and the delegated checks, and listens on
// cfg.Address.
func New(cfg Config) (*Server, error) {
	if cfg.Address == "" || cfg.Kube == nil || cfg.Metrics == nil {
		return nil, errors.New("metrics server: Address, Kube and Metrics are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{}
	var err error
	backoff := webhookutil.DefaultRetryBackoffWithInitialDelay(500 * time.Millisecond)
	if s.authn, _, err = (authenticatorfactory.DelegatingAuthenticatorConfig{
		TokenAccessReviewClient:  cfg.Kube.AuthenticationV1(),
		TokenAccessReviewTimeout: reviewTimeout,
		WebhookRetryBackoff:      &backoff,
		CacheTTL:                 cacheTTL,
	}).New(); err != nil {
		return nil, fmt.Errorf("metrics server: delegated authentication: %w", err)
	}
	if s.authz, err = (authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: cfg.Kube.AuthorizationV1(),
		AllowCacheTTL:             cacheTTL,
		DenyCacheTTL:              cacheTTL,
		WebhookRetryBackoff:       &backoff,
	}).New(); err != nil {
		return nil, fmt.Errorf("metrics server: delegated authorization: %w", err)
	}
	if err := s.loadCertificate(cfg.Options); err != nil {
		return nil, err
	}
	s.handler = s.routes(cfg)
	if s.lis, err = net.Listen("tcp", cfg.Address); err != nil {
		return nil, fmt.Errorf("metrics server: listen on %s: %w", cfg.Address, err)
	}
	return s, nil
}

// loadCertificate loads the serving certificate of the files, or makes a self-signed
// one, and the TLS config that presents it.
func (s *Server) loadCertificate(o Options) error {
	var cert dynamiccertificates.CertKeyContentProvider
	if o.CertFile != "" {
		files, err := dynamiccertificates.NewDynamicServingContentFromFiles("metrics-serving-cert", o.CertFile, o.KeyFile)
		if err != nil {
			return fmt.Errorf("metrics server: serving certificate --metrics-tls-cert-file %s, --metrics-tls-key-file %s: %w", o.CertFile, o.KeyFile, err)
		}
		s.files, cert = files, files
	} else {
		host, ips, names := selfSignedNames(o.Address)
		certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, ips, names)
		if err != nil {
			return fmt.Errorf("metrics server: make a self-signed serving certificate: %w", err)
		}
		if cert, err = dynamiccertificates.NewStaticCertKeyContent("self-signed metrics serving certificate", certPEM, keyPEM); err != nil {
			return fmt.Errorf("metrics server: self-signed serving certificate: %w", err)
		}
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	s.certs = dynamiccertificates.NewDynamicServingCertificateController(base, nil, cert, nil, nil)
	cert.AddListener(s.certs)
	if err := s.certs.RunOnce(); err != nil {
		return fmt.Errorf("metrics server: serving certificate: %w", err)
	}
	s.tls = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: base.NextProtos, GetConfigForClient: s.certs.GetConfigForClient}
	return nil
}

// selfSignedNames are the names of a self-signed serving certificate, as
// kube-scheduler's: localhost and the loopback address, plus the host name and the
// address listened on when it names one.
func selfSignedNames(address string) (host string, ips []net.IP, names []string) {
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if h, _, err := net.SplitHostPort(address); err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			ips = append(ips, ip)
		} else if ip == nil && h != "" && h != "localhost" {
			names = append(names, h)
		}
	}
	if name, err := os.Hostname(); err == nil && name != "" && name != "localhost" {
		names = append(names, name)
	}
	return "localhost", ips, names
}

// routes are Path behind the delegated checks, and the open probes.
func (s *Server) routes(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, s.authorized(cfg.Metrics))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// authorized serves next to the callers whose token the API server accepts and who
// may get the request's path: 401 without such a token, 403 when not allowed.
func (s *Server) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger := klog.FromContext(r.Context()).WithValues("path", r.URL.Path, "remote", r.RemoteAddr)
		resp, ok, err := s.authn.AuthenticateRequest(r)
		if err != nil || !ok {
			msg := "Unauthorized: " + Path + " needs a bearer token (Authorization: Bearer <token>) that the Kubernetes API server accepts, of a user allowed to get " + Path + " (the ClusterRole " + ReaderClusterRole + ")\n"
			if r.Header.Get("Authorization") != "" {
				msg = "Unauthorized: the Kubernetes API server did not accept the bearer token (TokenReview)\n"
				logger.V(2).Info("Refused a metrics request: token not accepted", "err", err)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, msg, http.StatusUnauthorized)
			return
		}
		user := resp.User
		decision, reason, err := s.authz.Authorize(r.Context(), authorizer.AttributesRecord{
			User: user, Verb: "get", Path: r.URL.Path, ResourceRequest: false,
		})
		switch {
		case decision == authorizer.DecisionAllow:
			next.ServeHTTP(w, r)
		case err != nil:
			logger.Error(err, "Checking access to metrics", "user", user.GetName())
			http.Error(w, fmt.Sprintf("Internal Server Error: could not check whether user %q may get %s (SubjectAccessReview): %v\n", user.GetName(), r.URL.Path, err), http.StatusInternalServerError)
		default:
			logger.V(2).Info("Refused a metrics request: not authorized", "user", user.GetName(), "reason", reason)
			msg := fmt.Sprintf("Forbidden: user %q may not get %s (bind the ClusterRole %s to it)", user.GetName(), r.URL.Path, ReaderClusterRole)
			if reason != "" {
				msg += ": " + reason
			}
			http.Error(w, msg+"\n", http.StatusForbidden)
		}
	})
}

// Addr is the address listened on (host:port).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve serves until ctx ends (nil then) or serving fails. It closes the listener.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.certs.Run(1, ctx.Done())
	if s.files != nil {
		go s.files.Run(ctx, 1)
	}
	srv := &http.Server{Handler: s.handler, TLSConfig: s.tls, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ServeTLS(s.lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server on %s: %w", s.Addr(), err)
	}
	return nil
}
