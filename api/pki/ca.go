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
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that issues the memory service's certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertPEM is the CA certificate, for clients' and the server's trust bundle.
	CertPEM []byte
	keyPEM  []byte
}

// Pair is a PEM-encoded certificate and its private key.
type Pair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// DefaultValidity is how long issued certificates are valid.
const DefaultValidity = 365 * 24 * time.Hour

// NewCA makes a self-signed CA.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * DefaultValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, CertPEM: pemBlock("CERTIFICATE", der), keyPEM: keyPEM}, nil
}

// LoadCA reads a CA certificate and key written by WriteFiles.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load CA %s: key is not ECDSA", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA %s: certificate is not a CA", certFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, CertPEM: certPEM, keyPEM: keyPEM}, nil
}

// Pair returns the CA's own certificate and key.
func (ca *CA) Pair() Pair { return Pair{CertPEM: ca.CertPEM, KeyPEM: ca.keyPEM} }

// IssueServer issues a serving certificate for the given DNS names and IPs.
func (ca *CA) IssueServer(commonName string, dnsNames []string, ips []net.IP) (Pair, error) {
	return ca.issue(serverTemplate(commonName, dnsNames, ips))
}

// splitNames sorts a serving certificate's names into DNS names and IP addresses.
func splitNames(names []string) (dns []string, ips []net.IP) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// serverTemplate is a serving certificate for the names.
func serverTemplate(commonName string, dnsNames []string, ips []net.IP) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// IssueClient issues a client certificate that names the identity.
func (ca *CA) IssueClient(id Identity) (Pair, error) {
	if err := id.Validate(); err != nil {
		return Pair{}, err
	}
	return ca.issue(clientTemplate(id))
}

// IssueUser issues a client certificate for a Kubernetes user: the common name is
// the user, the organizations its groups (the API server's x509 authenticator).
func (ca *CA) IssueUser(user string, groups ...string) (Pair, error) {
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (ca *CA) issue(tmpl *x509.Certificate) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("generate key: %w", err)
	}
	now := time.Now()
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(DefaultValidity)
	der, err := sign(tmpl, ca.cert, ca.key, &key.PublicKey)
	if err != nil {
		return Pair{}, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// WriteFiles writes dir/name.crt and dir/name.key (the key readable by its owner only).
func (p Pair) WriteFiles(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), p.CertPEM, 0o644); err != nil {
		return err
	}
	if len(p.KeyPEM) == 0 {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, name+".key"), p.KeyPEM, 0o600)
}

// TLSCertificate parses the pair for a tls.Config.
func (p Pair) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(p.CertPEM, p.KeyPEM)
}

// Bundle names the files of a development certificate bundle written by WriteBundle.
type Bundle struct {
	Dir string
}

// CAFile is the CA certificate.
func (b Bundle) CAFile() string { return filepath.Join(b.Dir, "ca.crt") }

// CertFile is the certificate of the named member ("server", "scheduler", "admin",
// "agent-<node>", "draplugin-<node>").
func (b Bundle) CertFile(name string) string { return filepath.Join(b.Dir, name+".crt") }

// KeyFile is the key of the named member.
func (b Bundle) KeyFile(name string) string { return filepath.Join(b.Dir, name+".key") }

// MemberName is the file name of an identity's certificate in a bundle.
func MemberName(id Identity) string {
	if id.Node == "" {
		return string(id.Role)
	}
	return string(id.Role) + "-" + id.Node
}

// WriteBundle writes a new CA, a server certificate for serverNames (DNS names or IP
// addresses), and client certificates for the scheduler, an admin, and an agent and a
// DRA plugin per node, into dir. An existing CA in dir is reused.
func WriteBundle(dir string, serverNames, nodes []string) (Bundle, error) {
	b := Bundle{Dir: dir}
	var ca *CA
	var err error
	if _, statErr := os.Stat(b.CAFile()); statErr == nil {
		ca, err = LoadCA(b.CAFile(), b.KeyFile("ca"))
	} else {
		ca, err = NewCA("dynamic-memory-ca")
		if err == nil {
			err = ca.Pair().WriteFiles(dir, "ca")
		}
	}
	if err != nil {
		return b, err
	}
	dns, ips := splitNames(serverNames)
	server, err := ca.IssueServer("memservice", dns, ips)
	if err != nil {
		return b, err
	}
	if err := server.WriteFiles(dir, "server"); err != nil {
		return b, err
	}
	ids := []Identity{{Role: RoleScheduler}, {Role: RoleAdmin}}
	for _, n := range nodes {
		ids = append(ids, Identity{Role: RoleAgent, Node: n}, Identity{Role: RoleDRAPlugin, Node: n})
	}
	for _, id := range ids {
		p, err := ca.IssueClient(id)
		if err != nil {
			return b, err
		}
		if err := p.WriteFiles(dir, MemberName(id)); err != nil {
			return b, err
		}
	}
	return b, nil
}

// sign signs tmpl (its validity set) for pub with the CA's certificate and key.
func sign(tmpl, caCert *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey) ([]byte, error) {
	tmpl.SerialNumber = serial()
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

// clientTemplate is the certificate that names the identity.
func clientTemplate(id Identity) *x509.Certificate {
	cn := id.Node
	if cn == "" {
		cn = string(id.Role)
	}
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{orgPrefix + string(id.Role)}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
