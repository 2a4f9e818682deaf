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
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// signedPair is a client pair the authority signs for id, as the signer does for a
// PodCertificateRequest, written into dir as name.crt and name.key.
func signedPair(t *testing.T, a *Authority, id Identity, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	now := time.Now().Truncate(time.Second)
	chain, err := a.SignClient(id, &key.PublicKey, now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	keyPEM, err := encodeKey(key)
	require.NoError(t, err)
	require.NoError(t, Pair{CertPEM: chain, KeyPEM: keyPEM}.WriteFiles(dir, name))
}

// startAuthorityServer serves TLS with the authority's own serving certificate and
// reports the common name of each client's certificate.
func startAuthorityServer(t *testing.T, a *Authority) *tlsServer {
	t.Helper()
	cfg, err := a.ServerTLSConfig([]string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	return serveTLS(t, cfg, func(c *x509.Certificate) string { return c.Subject.CommonName })
}

func dialAs(dir, name, addr string) (*tls.Conn, error) {
	cfg, err := ClientTLSConfig(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, "ca.crt"), "")
	if err != nil {
		return nil, err
	}
	return tls.Dial("tcp", addr, cfg)
}

func TestAuthorityServesWithItsOwnCertificateAndTrustsWhatItSigned(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("test")
	require.NoError(t, err)
	require.NoError(t, ca.Pair().WriteFiles(dir, "ca"))
	a, err := NewAuthority(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	require.NoError(t, err)
	srv := startAuthorityServer(t, a)
	signedPair(t, a, Identity{Role: RoleAgent, Node: "node-a"}, dir, "agent")

	conn, err := dialAs(dir, "agent", srv.addr)
	require.NoError(t, err, "a client trusting the CA accepts the server's own certificate, and the server the client's")
	defer func() { _ = conn.Close() }()
	assert.Equal(t, "node-a", <-srv.clients)
	bundle, err := a.TrustBundle()
	require.NoError(t, err)
	assert.Equal(t, ca.CertPEM, bundle)

	// A certificate of another CA is refused.
	other, err := NewCA("other")
	require.NoError(t, err)
	stranger, err := other.IssueClient(Identity{Role: RoleScheduler})
	require.NoError(t, err)
	require.NoError(t, stranger.WriteFiles(dir, "stranger"))
	conn2, err := dialAs(dir, "stranger", srv.addr)
	if err == nil {
		// TLS 1.3: the client learns of the refusal on its first read.
		_, err = conn2.Read(make([]byte, 1))
	}
	assert.Error(t, err, "a client of another CA")
}

// TestAuthorityRotatesItsCAWithoutARestart puts a new CA on disk with the old one
// after it, as docs/operations.md's rotation does: the server presents a certificate
// of the new CA from the next connection, clients of both CAs are accepted, and the
// trust bundle holds both until the old one is removed.
func TestAuthorityRotatesItsCAWithoutARestart(t *testing.T) {
	dir := t.TempDir()
	oldCA, err := NewCA("old")
	require.NoError(t, err)
	require.NoError(t, oldCA.Pair().WriteFiles(dir, "ca"))
	a, err := NewAuthority(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	require.NoError(t, err)
	srv := startAuthorityServer(t, a)
	signedPair(t, a, Identity{Role: RoleScheduler}, dir, "old-client")

	newCA, err := NewCA("new")
	require.NoError(t, err)
	later := time.Now().Add(time.Minute)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), append(append([]byte{}, newCA.CertPEM...), oldCA.CertPEM...), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.key"), newCA.Pair().KeyPEM, 0o600))
	for _, f := range []string{"ca.crt", "ca.key"} {
		require.NoError(t, os.Chtimes(filepath.Join(dir, f), later, later))
	}
	signedPair(t, a, Identity{Role: RoleAgent, Node: "node-a"}, dir, "new-client")

	conn, err := dialAs(dir, "new-client", srv.addr)
	require.NoError(t, err, "a client of the new CA")
	_ = conn.Close()
	assert.Equal(t, "node-a", <-srv.clients)
	assert.Equal(t, "new", conn.ConnectionState().PeerCertificates[0].Issuer.CommonName, "the server's certificate is of the new CA")
	conn, err = dialAs(dir, "old-client", srv.addr)
	require.NoError(t, err, "a client of the old CA, until its certificate expires")
	_ = conn.Close()
	assert.Equal(t, "scheduler", <-srv.clients)
	bundle, err := a.TrustBundle()
	require.NoError(t, err)
	assert.Equal(t, string(newCA.CertPEM)+string(oldCA.CertPEM), string(bundle))
}

func TestAuthorityRefusesWhatItCannotSign(t *testing.T) {
	dir := t.TempDir()
	b, err := WriteBundle(dir, []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	_, err = NewAuthority(b.CertFile("server"), b.KeyFile("server"))
	assert.ErrorContains(t, err, "the first certificate is not a CA", "a serving certificate is no CA")

	a, err := NewAuthority(b.CAFile(), b.KeyFile("ca"))
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, err = a.SignClient(Identity{Role: RoleAgent}, &key.PublicKey, time.Now(), time.Now().Add(time.Hour))
	assert.ErrorContains(t, err, "role agent needs a node name")
	_, err = a.SignClient(Identity{Role: RoleScheduler}, &key.PublicKey, time.Now(), time.Now().Add(100*DefaultValidity))
	assert.ErrorContains(t, err, "would outlive its CA")
	_, err = a.ServerTLSConfig(nil, time.Hour)
	assert.ErrorContains(t, err, "at least one name")
}
