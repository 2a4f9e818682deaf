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
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ServerTLSConfig is the memory service's TLS config: it presents certFile and requires
// every client to present a certificate signed by caFile. The files are read again
// when they change (see source): each new connection uses what they hold then.
func ServerTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	src, err := newSource(certFile, keyFile, caFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Each connection's config comes from GetConfigForClient; this one says what
		// they all require.
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m, err := src.get()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				Certificates: []tls.Certificate{m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.pool,
				MinVersion:   tls.VersionTLS13,
			}, nil
		},
	}, nil
}

// ClientTLSConfig is a client's TLS config: it presents certFile and trusts servers
// signed by caFile. serverName overrides the name checked in the server certificate
// (empty: the host of the dialed address). The files are read again when they change
// (see source): each new connection uses what they hold then.
func ClientTLSConfig(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	src, err := newSource(certFile, keyFile, caFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return &tls.Config{
		ServerName: serverName,
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m, err := src.get()
			if err != nil {
				return nil, err
			}
			return &m.cert, nil
		},
		// The trusted CAs change with caFile, which a static RootCAs cannot follow:
		// the standard verification is done in VerifyConnection instead, against the
		// CA bundle of the moment, with the same checks (chain, usage, name).
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			m, err := src.get()
			if err != nil {
				return err
			}
			return verifyServer(cs, m.pool)
		},
	}, nil
}

// verifyServer checks the server's chain against roots and its name, as crypto/tls
// does when it verifies.
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server presented no certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		DNSName:       cs.ServerName,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: verify the server's certificate: %w", err)
	}
	return nil
}

// source is a certificate, its key and a CA bundle on disk, read again when one of the
// files changes (modification time or size; a projected volume's atomic swap changes
// both): a certificate renewed on disk is used by the next connection with no
// restart, and connections already open keep theirs. While the files do not load (a
// renewal half written), the last good ones stay in use and the load is tried again on
// the next connection. A certificate that has expired is not presented: the connection
// fails with an error that says so.
type source struct {
	certFile, keyFile, caFile string

	mu      sync.Mutex
	stamps  []fileStamp
	current *material
	// lastErr is the last load error logged, so that one is logged once.
	lastErr string
}

type material struct {
	cert tls.Certificate
	pool *x509.CertPool
	// bundlePEM is the CA bundle file as read.
	bundlePEM []byte
}

type fileStamp struct {
	modTime time.Time
	size    int64
}

// newSource returns the process's source of the three files, loading them.
func newSource(certFile, keyFile, caFile string) (*source, error) {
	return sources.get(certFile, keyFile, caFile)
}

// get returns the material of the files as they are now (or the last good one).
func (s *source) get() (*material, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stamps, statErr := s.stat()
	if statErr != nil || s.current == nil || !slices.Equal(stamps, s.stamps) {
		m, err := s.load()
		switch {
		case err == nil:
			if s.current != nil {
				klog.Background().Info("Certificate files changed, using them for new connections", "certFile", s.certFile, "caFile", s.caFile, "notAfter", m.cert.Leaf.NotAfter)
			}
			s.current, s.stamps, s.lastErr = m, stamps, ""
		case s.current == nil:
			return nil, err
		case err.Error() != s.lastErr:
			s.lastErr = err.Error()
			klog.Background().Error(err, "Certificate files changed but do not load; the previous ones stay in use", "certFile", s.certFile)
		}
	}
	if now := time.Now(); now.After(s.current.cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %s expired at %s (%s ago): renew it; the new one is used as soon as it is on disk",
			s.certFile, s.current.cert.Leaf.NotAfter.UTC().Format(time.RFC3339), now.Sub(s.current.cert.Leaf.NotAfter).Round(time.Second))
	}
	return s.current, nil
}

func (s *source) stat() ([]fileStamp, error) {
	var stamps []fileStamp
	for _, f := range []string{s.certFile, s.keyFile, s.caFile} {
		st, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		stamps = append(stamps, fileStamp{modTime: st.ModTime(), size: st.Size()})
	}
	return stamps, nil
}

func (s *source) load() (*material, error) {
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s and key %s: %w", s.certFile, s.keyFile, err)
	}
	data, err := os.ReadFile(s.caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", s.caFile)
	}
	return &material{cert: cert, pool: pool, bundlePEM: data}, nil
}

// notAfter is when the certificate in use expires.
func (s *source) notAfter() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.cert.Leaf.NotAfter
}

// sources are the process's sources, for CertificateExpiries.
var sources sourceSet

type sourceSet struct {
	mu   sync.Mutex
	list []*source
}

// get returns the source of the three files, made and loaded the first time: a
// process that dials again with the same files shares it.
func (ss *sourceSet) get(certFile, keyFile, caFile string) (*source, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, s := range ss.list {
		if s.certFile == certFile && s.keyFile == keyFile && s.caFile == caFile {
			if _, err := s.get(); err != nil {
				return nil, err
			}
			return s, nil
		}
	}
	s := &source{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	ss.list = append(ss.list, s)
	return s, nil
}

// CertificateExpiries gives, for each certificate file this process presents (server
// or client), when the certificate in use expires.
func CertificateExpiries() map[string]time.Time {
	sources.mu.Lock()
	list := slices.Clone(sources.list)
	sources.mu.Unlock()
	out := map[string]time.Time{}
	for _, s := range list {
		out[s.certFile] = s.notAfter()
	}
	return out
}
