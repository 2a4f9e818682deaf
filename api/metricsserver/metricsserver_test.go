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

package metricsserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
)

// The fake API server's users: tokens and who may get /metrics.
const (
	readerToken   = "token-of-reader"
	strangerToken = "token-of-stranger"
	reader        = "system:serviceaccount:monitoring:prometheus"
	stranger      = "system:serviceaccount:default:stranger"
)

// fakeAPIServer answers TokenReviews and SubjectAccessReviews as an API server whose
// RBAC binds ReaderClusterRole to reader only, and counts the reviews. (The delegating
// authenticator and authorizer send them with the clientset's REST client, which a
// fake clientset lacks.)
func fakeAPIServer(t *testing.T, reviews *atomic.Int32) kubernetes.Interface {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reviews.Add(1)
		var out any
		switch r.URL.Path {
		case "/apis/authentication.k8s.io/v1/tokenreviews":
			var tr authenticationv1.TokenReview
			if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			switch tr.Spec.Token {
			case readerToken:
				tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: reader}}
			case strangerToken:
				tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: stranger}}
			default:
				tr.Status = authenticationv1.TokenReviewStatus{Error: "invalid token"}
			}
			out = &tr
		case "/apis/authorization.k8s.io/v1/subjectaccessreviews":
			var sar authorizationv1.SubjectAccessReview
			if err := json.NewDecoder(r.Body).Decode(&sar); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			nr := sar.Spec.NonResourceAttributes
			sar.Status.Allowed = sar.Spec.User == reader && nr != nil && nr.Path == Path && nr.Verb == "get" && sar.Spec.ResourceAttributes == nil
			if !sar.Status.Allowed {
				sar.Status.Reason = "no RBAC policy matched"
			}
			out = &sar
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	require.NoError(t, err)
	return kube
}

// start serves cfg (its Kube and Metrics filled in when unset) until the test ends.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	if cfg.Kube == nil {
		cfg.Kube = fakeAPIServer(t, &atomic.Int32{})
	}
	if cfg.Metrics == nil {
		cfg.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("dynamic_memory_test 1\n")) })
	}
	s, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	return s
}

var insecure = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test's self-signed server

// get GETs path of s with the bearer token (none if empty).
func get(t *testing.T, s *Server, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+s.Addr()+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := insecure.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestMetricsNeedAnAcceptedTokenOfAnAllowedUser(t *testing.T) {
	var reviews atomic.Int32
	s := start(t, Config{Kube: fakeAPIServer(t, &reviews)})

	code, body := get(t, s, Path, "")
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Contains(t, body, "needs a bearer token")
	assert.Contains(t, body, ReaderClusterRole)

	code, body = get(t, s, Path, "forged")
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Contains(t, body, "did not accept the bearer token")

	code, body = get(t, s, Path, strangerToken)
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body, `user "`+stranger+`" may not get /metrics (bind the ClusterRole `+ReaderClusterRole+` to it): no RBAC policy matched`)

	code, body = get(t, s, Path, readerToken)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "dynamic_memory_test 1\n", body)

	// The API server's answers are cached: a second scrape asks it nothing.
	before := reviews.Load()
	code, _ = get(t, s, Path, readerToken)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, before, reviews.Load(), "reviews of a scrape repeated within the cache TTL")
}

func TestProbesAreOpen(t *testing.T) {
	var ready atomic.Bool
	var reviews atomic.Int32
	s := start(t, Config{Kube: fakeAPIServer(t, &reviews), Ready: func() error {
		if !ready.Load() {
			return errors.New("not serving: standby")
		}
		return nil
	}})
	code, body := get(t, s, "/healthz", "")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)
	code, body = get(t, s, "/readyz", "")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "not serving: standby\n", body)
	ready.Store(true)
	code, body = get(t, s, "/readyz", "forged")
	assert.Equal(t, http.StatusOK, code, "a probe's token is not looked at")
	assert.Equal(t, "ok\n", body)
	assert.Zero(t, reviews.Load(), "probes ask the API server nothing")

	code, _ = get(t, s, "/other", readerToken)
	assert.Equal(t, http.StatusNotFound, code)
	resp, err := insecure.Post("https://"+s.Addr()+Path, "text/plain", strings.NewReader(""))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// servedCertificate is the leaf certificate s presents.
func servedCertificate(t *testing.T, s *Server) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // inspecting the certificate
	require.NoError(t, err)
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func TestSelfSignedCertificateWithoutFiles(t *testing.T) {
	s := start(t, Config{})
	cert := servedCertificate(t, s)
	assert.Contains(t, cert.DNSNames, "localhost")
	assert.NoError(t, cert.VerifyHostname("127.0.0.1"))
	assert.True(t, cert.NotAfter.After(time.Now().Add(300*24*time.Hour)), "valid for about a year, as kube-scheduler's")
}

func TestCertificateFromFilesIsReloaded(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(host string) {
		certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, nil, nil)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
		require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	}
	write("metrics-a.example")
	s := start(t, Config{Options: Options{CertFile: certFile, KeyFile: keyFile}})
	assert.Contains(t, servedCertificate(t, s).DNSNames, "metrics-a.example")

	write("metrics-b.example")
	assert.Eventually(t, func() bool {
		return slices.Contains(servedCertificate(t, s).DNSNames, "metrics-b.example")
	}, 30*time.Second, 100*time.Millisecond, "the renewed certificate is served without a restart")
}

func TestOptions(t *testing.T) {
	o := Options{Address: ":9465"}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.AddFlags(fs, "metrics-address")
	require.NoError(t, fs.Parse([]string{"--metrics-tls-cert-file=/tls/tls.crt"}))
	assert.Equal(t, ":9465", o.Address)
	assert.ErrorContains(t, o.Validate(), "give both --metrics-tls-cert-file and --metrics-tls-key-file")
	require.NoError(t, fs.Parse([]string{"--metrics-tls-key-file=/tls/tls.key", "--metrics-address=127.0.0.1:1"}))
	assert.NoError(t, o.Validate())
	assert.Equal(t, Options{Address: "127.0.0.1:1", CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key"}, o)

	_, err := New(Config{Options: Options{Address: "127.0.0.1:0", CertFile: "/does/not/exist.crt", KeyFile: "/does/not/exist.key"},
		Kube: fakeAPIServer(t, &atomic.Int32{}), Metrics: http.NotFoundHandler()})
	assert.ErrorContains(t, err, "--metrics-tls-cert-file /does/not/exist.crt")
}
