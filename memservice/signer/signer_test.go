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

package signer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
)

const (
	signerName = "dynamicmemory.io/memservice"
	nodeNS     = "dynamic-memory-node"
)

// now is the signer's (fake) clock. It follows the real one: the CA a fixture makes
// is valid from an hour before the real time, and a chain is verified at now.
var now = time.Now().UTC().Truncate(time.Minute)

type fixture struct {
	signer *Signer
	client *fake.Clientset
	ca     *pki.CA
}

func newFixture(t *testing.T, lifetime time.Duration) *fixture {
	t.Helper()
	ca, err := pki.NewCA("test")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, ca.Pair().WriteFiles(dir, "ca"))
	authority, err := pki.NewAuthority(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	require.NoError(t, err)
	client := fake.NewClientset(
		pod("agent-a", "node-agent", "node-a"),
		pod("plugin-a", "dra-plugin", "node-a"),
		pod("other-a", "default", "node-a"),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "dynamic-memory-system", Name: "scheduler-0", UID: "uid-scheduler-0"},
			Spec: corev1.PodSpec{ServiceAccountName: "scheduler", NodeName: "node-c"}},
	)
	s, err := New(Config{
		Client: client, Authority: authority, Name: signerName, Lifetime: lifetime,
		ServiceAccounts: map[types.NamespacedName]pki.Role{
			{Namespace: nodeNS, Name: "node-agent"}:                 pki.RoleAgent,
			{Namespace: nodeNS, Name: "dra-plugin"}:                 pki.RoleDRAPlugin,
			{Namespace: "dynamic-memory-system", Name: "scheduler"}: pki.RoleScheduler,
		},
		Metrics: metrics.New(ledger.New(clocktesting.NewFakeClock(now), ledger.Options{}), func() []string { return nil }),
		Clock:   clocktesting.NewFakeClock(now),
	})
	require.NoError(t, err)
	return &fixture{signer: s, client: client, ca: ca}
}

func pod(name, serviceAccount, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{ServiceAccountName: serviceAccount, NodeName: node},
	}
}

// request is what the kubelet of node would ask for the pod name: podUID and
// serviceAccount as the pod has them unless changed.
func request(t *testing.T, namespace, name, serviceAccount, node string, change func(*certificatesv1.PodCertificateRequest)) *certificatesv1.PodCertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	req := &certificatesv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name + "-req"},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: signerName, PodName: name, PodUID: types.UID("uid-" + name),
			ServiceAccountName: serviceAccount, NodeName: types.NodeName(node),
			MaxExpirationSeconds: ptr.To[int32](86400), StubPKCS10Request: csr,
		},
	}
	if change != nil {
		change(req)
	}
	return req
}

// answer runs the signer on req as it is stored and returns the stored answer.
func (f *fixture) answer(t *testing.T, req *certificatesv1.PodCertificateRequest) *certificatesv1.PodCertificateRequest {
	t.Helper()
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig()))
	_, err := f.client.CertificatesV1().PodCertificateRequests(req.Namespace).Create(ctx, req, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, f.signer.informer.GetIndexer().Add(req))
	require.NoError(t, f.signer.handle(ctx, req.Namespace+"/"+req.Name))
	got, err := f.client.CertificatesV1().PodCertificateRequests(req.Namespace).Get(ctx, req.Name, metav1.GetOptions{})
	require.NoError(t, err)
	return got
}

func leaf(t *testing.T, chain string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(chain))
	require.NotNil(t, block, "a PEM certificate")
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func TestSignerIssuesTheIdentityOfThePodsServiceAccountAndNode(t *testing.T) {
	tests := []struct {
		name   string
		req    func(t *testing.T) *certificatesv1.PodCertificateRequest
		want   pki.Identity
		expiry time.Duration
	}{{
		name: "a node agent pod gets the agent identity of its node",
		req: func(t *testing.T) *certificatesv1.PodCertificateRequest {
			return request(t, nodeNS, "agent-a", "node-agent", "node-a", nil)
		},
		want: pki.Identity{Role: pki.RoleAgent, Node: "node-a"}, expiry: 6 * time.Hour,
	}, {
		name: "a DRA plugin pod gets the draplugin identity of its node",
		req: func(t *testing.T) *certificatesv1.PodCertificateRequest {
			return request(t, nodeNS, "plugin-a", "dra-plugin", "node-a", nil)
		},
		want: pki.Identity{Role: pki.RoleDRAPlugin, Node: "node-a"}, expiry: 6 * time.Hour,
	}, {
		name: "a scheduler pod gets the scheduler identity, bound to no node",
		req: func(t *testing.T) *certificatesv1.PodCertificateRequest {
			return request(t, "dynamic-memory-system", "scheduler-0", "scheduler", "node-c", nil)
		},
		want: pki.Identity{Role: pki.RoleScheduler}, expiry: 6 * time.Hour,
	}, {
		name: "a request's shorter maxExpirationSeconds shortens the lifetime",
		req: func(t *testing.T) *certificatesv1.PodCertificateRequest {
			return request(t, nodeNS, "agent-a", "node-agent", "node-a", func(r *certificatesv1.PodCertificateRequest) {
				r.Spec.MaxExpirationSeconds = ptr.To[int32](3600)
			})
		},
		want: pki.Identity{Role: pki.RoleAgent, Node: "node-a"}, expiry: time.Hour,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 6*time.Hour)
			got := f.answer(t, tc.req(t))
			issued := meta.FindStatusCondition(got.Status.Conditions, certificatesv1.PodCertificateRequestConditionTypeIssued)
			require.NotNil(t, issued, "issued: %+v", got.Status.Conditions)
			cert := leaf(t, got.Status.CertificateChain)
			id, err := pki.IdentityFromCert(cert)
			require.NoError(t, err)
			assert.Equal(t, tc.want, id)
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(f.ca.CertPEM)
			_, err = cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			assert.NoError(t, err, "a client certificate of the CA")
			// What the API server checks on the status.
			assert.Equal(t, cert.NotBefore, got.Status.NotBefore.Time)
			assert.Equal(t, cert.NotAfter, got.Status.NotAfter.Time)
			assert.Equal(t, tc.expiry, cert.NotAfter.Sub(cert.NotBefore))
			assert.WithinDuration(t, now, cert.NotBefore, 5*time.Minute)
			assert.Equal(t, cert.NotBefore.Add(tc.expiry/2), got.Status.BeginRefreshAt.Time, "renewed from half the lifetime on")
			pub, err := publicKey(got)
			require.NoError(t, err)
			assert.True(t, pub.(*ecdsa.PublicKey).Equal(cert.PublicKey), "issued to the requested key")
		})
	}
}

func TestSignerDeniesWithTheReason(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	rsaCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	require.NoError(t, err)
	tests := []struct {
		name, namespace, pod, serviceAccount, node string
		change                                     func(*certificatesv1.PodCertificateRequest)
		reason, message                            string
	}{
		{
			name: "a ServiceAccount the signer is not configured with", namespace: nodeNS, pod: "other-a", serviceAccount: "default", node: "node-a",
			reason:  ReasonServiceAccountRefused,
			message: "ServiceAccount dynamic-memory-node/default gets no identity from this signer; only dynamic-memory-node/dra-plugin=draplugin, dynamic-memory-node/node-agent=agent, dynamic-memory-system/scheduler=scheduler do",
		},
		{
			name: "an allowed ServiceAccount's name in another namespace", namespace: "default", pod: "agent-a", serviceAccount: "node-agent", node: "node-a",
			reason: ReasonServiceAccountRefused, message: "ServiceAccount default/node-agent gets no identity",
		},
		{
			name: "a pod that does not exist", namespace: nodeNS, pod: "gone", serviceAccount: "node-agent", node: "node-a",
			reason: ReasonPodMismatch, message: "pod dynamic-memory-node/gone does not exist",
		},
		{
			name: "a pod with another UID (deleted and made again)", namespace: nodeNS, pod: "agent-a", serviceAccount: "node-agent", node: "node-a",
			change: func(r *certificatesv1.PodCertificateRequest) { r.Spec.PodUID = "uid-old" },
			reason: ReasonPodMismatch, message: "pod dynamic-memory-node/agent-a has UID uid-agent-a, the request names uid-old",
		},
		{
			name: "a node that is not the pod's", namespace: nodeNS, pod: "agent-a", serviceAccount: "node-agent", node: "node-b",
			reason: ReasonPodMismatch, message: `pod dynamic-memory-node/agent-a runs on node "node-a", the request names node "node-b"`,
		},
		{
			name: "an allowed ServiceAccount the pod does not run as", namespace: nodeNS, pod: "other-a", serviceAccount: "node-agent", node: "node-a",
			reason: ReasonPodMismatch, message: `pod dynamic-memory-node/other-a runs as ServiceAccount "default", the request names "node-agent"`,
		},
		{
			name: "annotations the signer does not take", namespace: nodeNS, pod: "agent-a", serviceAccount: "node-agent", node: "node-a",
			change: func(r *certificatesv1.PodCertificateRequest) {
				r.Spec.UnverifiedUserAnnotations = map[string]string{"example.com/role": "scheduler"}
			},
			reason: certificatesv1.PodCertificateRequestConditionInvalidUserConfig, message: "remove example.com/role",
		},
		{
			name: "an RSA key shorter than 3072 bits", namespace: nodeNS, pod: "agent-a", serviceAccount: "node-agent", node: "node-a",
			change: func(r *certificatesv1.PodCertificateRequest) { r.Spec.StubPKCS10Request = rsaCSR },
			reason: certificatesv1.PodCertificateRequestConditionUnsupportedKeyType, message: "use keyType ECDSAP256",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 0)
			got := f.answer(t, request(t, tc.namespace, tc.pod, tc.serviceAccount, tc.node, tc.change))
			denied := meta.FindStatusCondition(got.Status.Conditions, certificatesv1.PodCertificateRequestConditionTypeDenied)
			require.NotNil(t, denied, "denied: %+v", got.Status.Conditions)
			assert.Equal(t, tc.reason, denied.Reason)
			assert.Contains(t, denied.Message, tc.message)
			assert.Empty(t, got.Status.CertificateChain, "no certificate")
			assert.Len(t, got.Status.Conditions, 1, "one final condition")
		})
	}
}

func TestSignerAnswersARequestOnce(t *testing.T) {
	f := newFixture(t, 0)
	req := request(t, nodeNS, "agent-a", "node-agent", "node-a", nil)
	first := f.answer(t, req)
	require.NotEmpty(t, first.Status.CertificateChain)
	// The same request seen again (a resync, a second instance's queue).
	require.NoError(t, f.signer.informer.GetIndexer().Update(first))
	f.client.ClearActions()
	require.NoError(t, f.signer.handle(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), req.Namespace+"/"+req.Name))
	assert.Empty(t, f.client.Actions(), "an answered request is left alone")
}

func TestConfigValidation(t *testing.T) {
	base := func() Config {
		return Config{
			Client: fake.NewClientset(), Authority: &pki.Authority{}, Name: signerName,
			ServiceAccounts: map[types.NamespacedName]pki.Role{{Namespace: "ns", Name: "sa"}: pki.RoleAgent},
			Metrics:         &metrics.Metrics{},
		}
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"a signer name without a path", func(c *Config) { c.Name = "dynamicmemory.io" }, `signer name must be <domain>/<path>, got "dynamicmemory.io"`},
		{"no ServiceAccount", func(c *Config) { c.ServiceAccounts = nil }, "at least one ServiceAccount"},
		{"the admin role", func(c *Config) {
			c.ServiceAccounts = map[types.NamespacedName]pki.Role{{Namespace: "ns", Name: "ops"}: pki.RoleAdmin}
		}, `ServiceAccount ns/ops: role "admin" cannot be given to pods`},
		{"a lifetime under an hour", func(c *Config) { c.Lifetime = 30 * time.Minute }, "certificate lifetime must be at least 1h0m0s (the API server refuses shorter), got 30m0s"},
	}
	require.NoError(t, func() error { c := base(); return c.Validate() }())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
