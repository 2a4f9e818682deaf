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

package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWritePKIIssuesWhatTheComponentsNeed checks the cluster's certificates without
// starting a cluster: each chains to the CA, the apiserver's serves 127.0.0.1 and
// kubernetes.default.svc, each client's names its Kubernetes user and groups.
func TestWritePKIIssuesWhatTheComponentsNeed(t *testing.T) {
	p := pkiFiles{dir: t.TempDir()}
	require.NoError(t, writePKI(p))

	caPEM, err := os.ReadFile(p.caCert())
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	_, err = tls.LoadX509KeyPair(p.caCert(), p.caKey())
	require.NoError(t, err, "CA key pair (kube-controller-manager signs with it)")

	load := func(certFile, keyFile string) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		require.NoError(t, err)
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		require.NoError(t, err)
		return cert
	}

	serving := load(p.servingCert(), p.servingKey())
	for _, host := range []string{"127.0.0.1", "localhost", "kubernetes.default.svc"} {
		_, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		assert.NoError(t, err, "apiserver certificate for %s", host)
	}

	for name, want := range map[string]struct{ user, group string }{
		"admin":               {"kubernetes-admin", "system:masters"},
		KubeControllerManager: {"system:kube-controller-manager", ""},
		Kwok:                  {"kwok", "system:masters"},
	} {
		cert := load(p.clientCert(name), p.clientKey(name))
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		assert.NoError(t, err, "%s client certificate", name)
		assert.Equal(t, want.user, cert.Subject.CommonName, "%s user", name)
		if want.group == "" {
			assert.Empty(t, cert.Subject.Organization, "%s groups", name)
		} else {
			assert.Equal(t, []string{want.group}, cert.Subject.Organization, "%s groups", name)
		}
	}

	for _, f := range []string{p.saPublicKey(), p.saPrivateKey()} {
		assert.FileExists(t, f)
	}
	for _, f := range []string{p.caKey(), p.servingKey(), p.clientKey("admin"), p.saPrivateKey()} {
		st, err := os.Stat(f)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "%s readable by its owner only", f)
	}
}
