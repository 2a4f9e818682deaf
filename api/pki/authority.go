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
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Authority is a certificate authority whose certificate and key are files (a Secret
// mounted into the memory service), read again when they change. It signs the
// identities of PodCertificateRequests and the memory service's own serving
// certificate, and its certificate file is the trust bundle: during a CA rotation it
// holds the new CA first and the old one after it, so that certificates of both are
// trusted until the old ones have expired.
type Authority struct {
	src *source

	mu      sync.Mutex
	serving *tls.Certificate
	// servingCA is the CA certificate that signed serving.
	servingCA *x509.Certificate
}

// NewAuthority loads the CA in certFile (its first certificate; the ones after it are
// trusted too) and keyFile.
func NewAuthority(certFile, keyFile string) (*Authority, error) {
	src, err := newSource(certFile, keyFile, certFile)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	m, err := src.get()
	if err != nil {
		return nil, err
	}
	if err := checkCA(m); err != nil {
		return nil, fmt.Errorf("certificate authority %s: %w", certFile, err)
	}
	return &Authority{src: src}, nil
}

func checkCA(m *material) error {
	if !m.cert.Leaf.IsCA {
		return errors.New("the first certificate is not a CA (basic constraints CA:TRUE)")
	}
	if _, ok := m.cert.PrivateKey.(crypto.Signer); !ok {
		return errors.New("the key cannot sign")
	}
	return nil
}

// current is the CA as it is on disk now.
func (a *Authority) current() (*material, error) {
	m, err := a.src.get()
	if err != nil {
		return nil, err
	}
	if err := checkCA(m); err != nil {
		return nil, fmt.Errorf("certificate authority %s: %w", a.src.certFile, err)
	}
	return m, nil
}

// TrustBundle is the PEM of the CA certificates clients and the server trust.
func (a *Authority) TrustBundle() ([]byte, error) {
	m, err := a.current()
	if err != nil {
		return nil, err
	}
	return m.bundlePEM, nil
}

// SignClient issues a certificate naming id for the public key pub, valid from
// notBefore to notAfter, and returns it PEM-encoded.
func (a *Authority) SignClient(id Identity, pub crypto.PublicKey, notBefore, notAfter time.Time) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	m, err := a.current()
	if err != nil {
		return nil, err
	}
	if notAfter.After(m.cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate would outlive its CA (expires %s): rotate the CA", m.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl := clientTemplate(id)
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	der, err := sign(tmpl, m.cert.Leaf, m.cert.PrivateKey.(crypto.Signer), pub)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE", der), nil
}

// ServerTLSConfig is the memory service's TLS config when it holds the CA: it presents
// a serving certificate for names (DNS names or IP addresses) that it issues itself
// with the given lifetime, issues again when half of it has passed or the CA changed,
// and requires every client to present a certificate signed by the trust bundle.
func (a *Authority) ServerTLSConfig(names []string, lifetime time.Duration) (*tls.Config, error) {
	dns, ips := splitNames(names)
	if len(names) == 0 {
		return nil, errors.New("the serving certificate needs at least one name")
	}
	if lifetime < 2*time.Minute {
		return nil, fmt.Errorf("the serving certificate lifetime must be at least 2m, got %s", lifetime)
	}
	// Issue one now, so that a CA that cannot sign fails the start.
	if _, _, err := a.servingCertificate(dns, ips, lifetime); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool, err := a.servingCertificate(dns, ips, lifetime)
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
				MinVersion:   tls.VersionTLS13,
			}, nil
		},
	}, nil
}

// servingCertificate returns the serving certificate in use, issued again when half
// of its lifetime has passed or the CA changed, and the pool of trusted CAs.
func (a *Authority) servingCertificate(dns []string, ips []net.IP, lifetime time.Duration) (*tls.Certificate, *x509.CertPool, error) {
	m, err := a.current()
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.serving != nil && a.servingCA.Equal(m.cert.Leaf) &&
		now.Before(a.serving.Leaf.NotBefore.Add(a.serving.Leaf.NotAfter.Sub(a.serving.Leaf.NotBefore)/2)) {
		return a.serving, m.pool, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := serverTemplate("memservice", dns, ips)
	tmpl.NotBefore = now.Add(-time.Minute)
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(m.cert.Leaf.NotAfter) {
		tmpl.NotAfter = m.cert.Leaf.NotAfter
	}
	der, err := sign(tmpl, m.cert.Leaf, m.cert.PrivateKey.(crypto.Signer), &key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	a.serving = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	a.servingCA = m.cert.Leaf
	return a.serving, m.pool, nil
}
