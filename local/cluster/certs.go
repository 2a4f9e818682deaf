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
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// pkiFiles names the certificates and keys of a local cluster, all under Dir/pki,
// as pki.Pair.WriteFiles writes them.
type pkiFiles struct {
	dir string
}

func (p pkiFiles) caCert() string             { return filepath.Join(p.dir, "ca.crt") }
func (p pkiFiles) caKey() string              { return filepath.Join(p.dir, "ca.key") }
func (p pkiFiles) servingCert() string        { return filepath.Join(p.dir, "apiserver.crt") }
func (p pkiFiles) servingKey() string         { return filepath.Join(p.dir, "apiserver.key") }
func (p pkiFiles) saPublicKey() string        { return filepath.Join(p.dir, "sa.pub") }
func (p pkiFiles) saPrivateKey() string       { return filepath.Join(p.dir, "sa.key") }
func (p pkiFiles) clientCert(n string) string { return filepath.Join(p.dir, n+".crt") }
func (p pkiFiles) clientKey(n string) string  { return filepath.Join(p.dir, n+".key") }

// Client identities of the local cluster's components. The admin (also used by kwok
// and the tests) is in system:masters; the controller manager has its own identity and
// its controllers use service-account credentials, as in a real cluster.
var clientIdentities = map[string]pkix.Name{
	"admin":                   {CommonName: "kubernetes-admin", Organization: []string{"system:masters"}},
	"kube-controller-manager": {CommonName: "system:kube-controller-manager"},
	"kwok":                    {CommonName: "kwok", Organization: []string{"system:masters"}},
}

// writePKI generates a CA, the apiserver's serving certificate for 127.0.0.1 and
// localhost, client certificates for every identity in clientIdentities and the
// service-account signing key pair.
func writePKI(p pkiFiles) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", p.dir, err)
	}
	ca, err := pki.NewCA("dynamic-memory-local-cluster-ca")
	if err != nil {
		return err
	}
	if err := ca.Pair().WriteFiles(p.dir, "ca"); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	serving, err := ca.IssueServer("kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return err
	}
	if err := serving.WriteFiles(p.dir, "apiserver"); err != nil {
		return fmt.Errorf("write apiserver certificate: %w", err)
	}
	for name, subject := range clientIdentities {
		pair, err := ca.IssueUser(subject.CommonName, subject.Organization...)
		if err != nil {
			return err
		}
		if err := pair.WriteFiles(p.dir, name); err != nil {
			return fmt.Errorf("write %s certificate: %w", name, err)
		}
	}

	// Service-account tokens are signed with RSA (RS256), which every verifier supports.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate service-account signing key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return fmt.Errorf("encode service-account public key: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return fmt.Errorf("encode service-account signing key: %w", err)
	}
	if err := writePEM(p.saPublicKey(), "PUBLIC KEY", pubDER, 0o644); err != nil {
		return err
	}
	return writePEM(p.saPrivateKey(), "PRIVATE KEY", keyDER, 0o600)
}

func writePEM(file, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(file, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}
