package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
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

// pkiFiles names the certificates and keys of a local cluster, all under Dir/pki.
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

const certValidity = 365 * 24 * time.Hour

// writePKI generates a CA, the apiserver's serving certificate for 127.0.0.1 and
// localhost, client certificates for every identity in clientIdentities and the
// service-account signing key pair.
func writePKI(p pkiFiles) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", p.dir, err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "dynamic-memory-local-cluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parse CA certificate: %w", err)
	}
	if err := writeCertAndKey(p.caCert(), p.caKey(), caDER, caKey); err != nil {
		return err
	}

	issue := func(certFile, keyFile string, tmpl *x509.Certificate) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generate key for %s: %w", tmpl.Subject.CommonName, err)
		}
		tmpl.SerialNumber = serialNumber()
		tmpl.NotBefore = now.Add(-time.Hour)
		tmpl.NotAfter = now.Add(certValidity)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("sign certificate for %s: %w", tmpl.Subject.CommonName, err)
		}
		return writeCertAndKey(certFile, keyFile, der, key)
	}

	if err := issue(p.servingCert(), p.servingKey(), &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return err
	}
	for name, subject := range clientIdentities {
		if err := issue(p.clientCert(name), p.clientKey(name), &x509.Certificate{
			Subject:     subject,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err != nil {
			return err
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
	if err := writePEM(p.saPublicKey(), "PUBLIC KEY", pubDER, 0o644); err != nil {
		return err
	}
	return writeKey(p.saPrivateKey(), saKey)
}

func writeCertAndKey(certFile, keyFile string, der []byte, key crypto.Signer) error {
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(keyFile, key)
}

func writeKey(file string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", file, err)
	}
	return writePEM(file, "PRIVATE KEY", der, 0o600)
}

func writePEM(file, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(file, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

func serialNumber() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial would still be valid.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
