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

package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tlsServer accepts connections with a server TLS config, reports each client's
// certificate (its serial number, or what the test's report gives) and echoes.
type tlsServer struct {
	addr    string
	clients chan string
}

// startTLSServer serves with ServerTLSConfig of the bundle's server files.
func startTLSServer(t *testing.T, b Bundle) *tlsServer {
	t.Helper()
	cfg, err := ServerTLSConfig(b.CertFile("server"), b.KeyFile("server"), b.CAFile())
	require.NoError(t, err)
	return serveTLS(t, cfg, func(c *x509.Certificate) string { return c.SerialNumber.String() })
}

func serveTLS(t *testing.T, cfg *tls.Config, report func(*x509.Certificate) string) *tlsServer {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lis.Close() })
	s := &tlsServer{addr: lis.Addr().String(), clients: make(chan string, 16)}
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				tc := conn.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				s.clients <- report(tc.ConnectionState().PeerCertificates[0])
				buf := make([]byte, 1)
				for {
					if _, err := tc.Read(buf); err != nil {
						return
					}
					if _, err := tc.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

// dial connects with ClientTLSConfig of the bundle's scheduler files and returns the
// connection and the serial number of the server's certificate.
func dial(t *testing.T, b Bundle, addr string) (*tls.Conn, string, error) {
	t.Helper()
	cfg, err := ClientTLSConfig(b.CertFile("scheduler"), b.KeyFile("scheduler"), b.CAFile(), "")
	require.NoError(t, err)
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, "", err
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func serialOf(t *testing.T, file string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(file, strings.TrimSuffix(file, ".crt")+".key")
	require.NoError(t, err)
	return pair.Leaf.SerialNumber.String()
}

// renew writes a new bundle (a new CA if dir is empty of one) over b's files; the
// modification times move on, as a renewal's do.
func renew(t *testing.T, b Bundle, fromDir string) {
	t.Helper()
	nb, err := WriteBundle(fromDir, []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	later := time.Now().Add(time.Minute)
	for _, name := range []string{"ca.crt", "server.crt", "server.key", "scheduler.crt", "scheduler.key"} {
		data, err := os.ReadFile(filepath.Join(nb.Dir, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(b.Dir, name), data, 0o600))
		require.NoError(t, os.Chtimes(filepath.Join(b.Dir, name), later, later))
	}
}

func echo(t *testing.T, conn *tls.Conn) {
	t.Helper()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := conn.Write([]byte{'x'})
	require.NoError(t, err)
	buf := make([]byte, 1)
	_, err = conn.Read(buf)
	require.NoError(t, err, "the connection opened before the renewal still works")
}

func TestCertificatesRenewedOnDiskAreUsedWithoutARestart(t *testing.T) {
	b, err := WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	srv := startTLSServer(t, b)

	first, serverSerial, err := dial(t, b, srv.addr)
	require.NoError(t, err)
	assert.Equal(t, serialOf(t, b.CertFile("server")), serverSerial)
	assert.Equal(t, serialOf(t, b.CertFile("scheduler")), <-srv.clients)

	// New certificates of the same CA.
	renew(t, b, b.Dir+"-same-ca")
	_ = os.RemoveAll(b.Dir + "-same-ca")
	_, serverSerial, err = dial(t, b, srv.addr)
	require.NoError(t, err)
	assert.Equal(t, serialOf(t, b.CertFile("server")), serverSerial, "the server presents its renewed certificate")
	assert.Equal(t, serialOf(t, b.CertFile("scheduler")), <-srv.clients, "the client presents its renewed certificate")
	echo(t, first)

	// A new CA altogether: both sides trust it from the next connection, and a
	// client that still has the old CA's files is refused.
	old := Bundle{Dir: t.TempDir()}
	for _, name := range []string{"ca.crt", "scheduler.crt", "scheduler.key"} {
		data, err := os.ReadFile(filepath.Join(b.Dir, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(old.Dir, name), data, 0o600))
	}
	renew(t, b, t.TempDir())
	_, serverSerial, err = dial(t, b, srv.addr)
	require.NoError(t, err)
	assert.Equal(t, serialOf(t, b.CertFile("server")), serverSerial)
	<-srv.clients
	_, _, err = dial(t, old, srv.addr)
	assert.ErrorContains(t, err, "certificate signed by unknown authority", "a client of the old CA is refused by the new server certificate")
	echo(t, first)
}

func TestHalfWrittenCertificateKeepsThePreviousOne(t *testing.T) {
	b, err := WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	srv := startTLSServer(t, b)
	want := serialOf(t, b.CertFile("server"))

	later := time.Now().Add(time.Minute)
	require.NoError(t, os.WriteFile(b.CertFile("server"), []byte("-----BEGIN CERTIFICATE-----\ntrunc"), 0o644))
	require.NoError(t, os.Chtimes(b.CertFile("server"), later, later))
	_, serverSerial, err := dial(t, b, srv.addr)
	require.NoError(t, err, "the server goes on with the certificate it had")
	assert.Equal(t, want, serverSerial)
}

func TestExpiredCertificateIsRefusedWithAClearError(t *testing.T) {
	b, err := WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	srv := startTLSServer(t, b)
	cfg, err := ClientTLSConfig(b.CertFile("scheduler"), b.KeyFile("scheduler"), b.CAFile(), "")
	require.NoError(t, err)

	// The client's certificate is replaced by one that expired an hour ago.
	ca, err := LoadCA(b.CAFile(), b.KeyFile("ca"))
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "scheduler", Organization: []string{orgPrefix + string(RoleScheduler)}},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     time.Now().Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyPEM, err := encodeKey(key)
	require.NoError(t, err)
	require.NoError(t, Pair{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}.WriteFiles(b.Dir, "scheduler"))
	later := time.Now().Add(time.Minute)
	require.NoError(t, os.Chtimes(b.CertFile("scheduler"), later, later))

	_, err = tls.Dial("tcp", srv.addr, cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate "+b.CertFile("scheduler")+" expired at")
	assert.Contains(t, err.Error(), "renew it")

	_, err = ClientTLSConfig(b.CertFile("scheduler"), b.KeyFile("scheduler"), b.CAFile(), "")
	assert.ErrorContains(t, err, "expired at", "a component that starts with it says so at once")
}

func TestExpiryCollector(t *testing.T) {
	b, err := WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	_, err = ClientTLSConfig(b.CertFile("scheduler"), b.KeyFile("scheduler"), b.CAFile(), "")
	require.NoError(t, err)
	pair, err := tls.LoadX509KeyPair(b.CertFile("scheduler"), b.KeyFile("scheduler"))
	require.NoError(t, err)

	assert.Equal(t, pair.Leaf.NotAfter, CertificateExpiries()[b.CertFile("scheduler")])
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(NewExpiryCollector()))
	families, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, families, 1)
	assert.Equal(t, ExpiryMetric, families[0].GetName())
	found := false
	for _, m := range families[0].GetMetric() {
		if m.GetLabel()[0].GetValue() == b.CertFile("scheduler") {
			found = true
			assert.Equal(t, float64(pair.Leaf.NotAfter.Unix()), m.GetGauge().GetValue())
		}
	}
	assert.True(t, found, "the scheduler's certificate is collected")
	assert.Positive(t, testutil.CollectAndCount(NewExpiryCollector()))
}
