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

package memservice_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/signer"
)

// TestPodCertificatesGiveEachNodeItsOwnIdentity runs the memory service as its
// ServiceAccount, holding the CA, and asks it for certificates the way kubelets do:
// PodCertificateRequests created as the node (impersonating system:node:<name>, with
// the API server's Node authorizer and NodeRestriction admission). The agent pod on
// node1 gets node1's agent identity, which opens node1's AgentSession and not node2's;
// node1 cannot ask for node2's agent pod; a pod of another ServiceAccount, and a
// request naming a pod that is not where it says, are denied with a reason.
func TestPodCertificatesGiveEachNodeItsOwnIdentity(t *testing.T) {
	e := setup(t)
	caDir := t.TempDir()
	ca, err := pki.NewCA("dynamic-memory-signer-test")
	require.NoError(t, err)
	require.NoError(t, ca.Pair().WriteFiles(caDir, "ca"))
	const lifetime = 2 * time.Hour
	svc, _ := e.startAsServiceAccount("signer", func(cfg *service.Config) {
		cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = "", "", ""
		cfg.Signer.CAFile, cfg.Signer.CAKeyFile = filepath.Join(caDir, "ca.crt"), filepath.Join(caDir, "ca.key")
		cfg.Signer.ServingNames = []string{"127.0.0.1"}
		cfg.Signer.Name = deploy.SignerName
		cfg.Signer.Lifetime = lifetime
		cfg.Signer.ServiceAccounts = map[types.NamespacedName]pki.Role{
			{Namespace: deploy.NodeNamespace, Name: deploy.NodeAgentServiceAccount}: pki.RoleAgent,
			{Namespace: deploy.NodeNamespace, Name: deploy.DRAPluginServiceAccount}: pki.RoleDRAPlugin,
			{Namespace: deploy.Namespace, Name: deploy.SchedulerServiceAccount}:     pki.RoleScheduler,
		}
	})

	nodes := map[string]*corev1.Node{}
	for _, name := range []string{"node1", "node2"} {
		n, err := e.kube.CoreV1().Nodes().Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		require.NoError(t, err)
		nodes[name] = n
	}
	agentOn1 := e.createPod("agent-node1", deploy.NodeAgentServiceAccount, "node1")
	agentOn2 := e.createPod("agent-node2", deploy.NodeAgentServiceAccount, "node2")
	intruder := e.createPod("intruder-node1", "default", "node1")
	node1 := e.asNode("node1")

	// The CA reaches clients as the signer's ClusterTrustBundle.
	var bundle *certificatesv1.ClusterTrustBundle
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		bundle, err = e.kube.CertificatesV1().ClusterTrustBundles().Get(ctx, signer.TrustBundleName(deploy.SignerName), metav1.GetOptions{})
		return err == nil, nil
	}), "the signer publishes its ClusterTrustBundle: %v", err)
	assert.Equal(t, deploy.SignerName, bundle.Spec.SignerName)
	assert.Equal(t, string(ca.CertPEM), bundle.Spec.TrustBundle)

	t.Run("the agent pod on node1 gets node1's agent identity, which opens node1's session only", func(t *testing.T) {
		key, req := e.podCertificateRequest(agentOn1, nodes["node1"])
		created, err := node1.CertificatesV1().PodCertificateRequests(deploy.NodeNamespace).Create(e.ctx, req, metav1.CreateOptions{})
		require.NoError(t, err, "node1 asks for its agent pod")
		answered := e.waitAnswered(created)
		issued := meta.FindStatusCondition(answered.Status.Conditions, certificatesv1.PodCertificateRequestConditionTypeIssued)
		require.NotNil(t, issued, "issued: %+v", answered.Status.Conditions)
		block, _ := pem.Decode([]byte(answered.Status.CertificateChain))
		require.NotNil(t, block)
		cert, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		id, err := pki.IdentityFromCert(cert)
		require.NoError(t, err)
		assert.Equal(t, pki.Identity{Role: pki.RoleAgent, Node: "node1"}, id)
		assert.Equal(t, lifetime, cert.NotAfter.Sub(cert.NotBefore), "the configured lifetime")
		assert.True(t, cert.NotBefore.Add(lifetime/2).Equal(answered.Status.BeginRefreshAt.Time), "the kubelet renews from half of it on: %s", answered.Status.BeginRefreshAt)

		// What the kubelet would write into the pod's volume: the chain and key, and
		// the trust bundle.
		dir := t.TempDir()
		keyDER, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), []byte(answered.Status.CertificateChain), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), []byte(bundle.Spec.TrustBundle), 0o600))
		c, err := client.Dial(e.ctx, client.Config{Address: svc.Addr(), CAFile: filepath.Join(dir, "ca.crt"),
			CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })

		hello := func(node string) (*memservicev1.AgentCommand, error) {
			ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
			t.Cleanup(cancel)
			stream, err := c.AgentSession(ctx)
			require.NoError(t, err)
			unknown := "0b7c3f6e-1d2a-4c5b-8e9f-00000000beef"
			require.NoError(t, stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: &memservicev1.AgentHello{
				Node: node, HostState: &memservicev1.HostState{Online: []*memservicev1.OnlineClaim{{ClaimUid: unknown, Bytes: gi}}, OnlineBytes: gi},
			}}}))
			return stream.Recv()
		}
		cmd, err := hello("node1")
		require.NoError(t, err, "node1's agent session opens")
		assert.NotNil(t, cmd.GetOffline(), "the service answers node1's agent (memory of no claim: offline it), got %v", cmd)
		_, err = hello("node2")
		require.Error(t, err, "node1's certificate opened node2's session")
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), `certificate is for node "node1", cannot act for node "node2"`)
	})

	t.Run("node1 cannot ask for the agent pod of node2", func(t *testing.T) {
		_, req := e.podCertificateRequest(agentOn2, nodes["node2"])
		_, err := node1.CertificatesV1().PodCertificateRequests(deploy.NodeNamespace).Create(e.ctx, req, metav1.CreateOptions{})
		require.Error(t, err, "the API server let node1 ask for node2's pod")
		assert.True(t, apierrors.IsForbidden(err), "%v", err)
		assert.Contains(t, err.Error(), `which is not the requesting node "node1"`)
	})

	t.Run("a pod of another ServiceAccount is denied with the reason", func(t *testing.T) {
		_, req := e.podCertificateRequest(intruder, nodes["node1"])
		created, err := node1.CertificatesV1().PodCertificateRequests(deploy.NodeNamespace).Create(e.ctx, req, metav1.CreateOptions{})
		require.NoError(t, err, "the API server admits it: the pod is on node1")
		answered := e.waitAnswered(created)
		denied := meta.FindStatusCondition(answered.Status.Conditions, certificatesv1.PodCertificateRequestConditionTypeDenied)
		require.NotNil(t, denied, "denied: %+v", answered.Status.Conditions)
		assert.Equal(t, signer.ReasonServiceAccountRefused, denied.Reason)
		assert.Contains(t, denied.Message, "ServiceAccount dynamic-memory-node/default gets no identity from this signer")
		assert.Empty(t, answered.Status.CertificateChain)
	})

	t.Run("a request that is not the node's names a pod where it is not: denied", func(t *testing.T) {
		// Created by someone allowed to create requests who is not a kubelet (here
		// the admin): NodeRestriction does not apply, the signer's own check does.
		_, req := e.podCertificateRequest(agentOn2, nodes["node1"])
		created, err := e.kube.CertificatesV1().PodCertificateRequests(deploy.NodeNamespace).Create(e.ctx, req, metav1.CreateOptions{})
		require.NoError(t, err)
		answered := e.waitAnswered(created)
		denied := meta.FindStatusCondition(answered.Status.Conditions, certificatesv1.PodCertificateRequestConditionTypeDenied)
		require.NotNil(t, denied, "denied: %+v", answered.Status.Conditions)
		assert.Equal(t, signer.ReasonPodMismatch, denied.Reason)
		assert.Contains(t, denied.Message, `runs on node "node2", the request names node "node1"`)
	})
}

// createPod makes a pod of a ServiceAccount bound to a node in the node namespace.
func (e *env) createPod(name, serviceAccount, node string) *corev1.Pod {
	e.t.Helper()
	// kube-controller-manager makes the namespace's default ServiceAccount.
	require.NoError(e.t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.kube.CoreV1().ServiceAccounts(deploy.NodeNamespace).Get(ctx, serviceAccount, metav1.GetOptions{})
		return err == nil, nil
	}), "ServiceAccount %s/%s", deploy.NodeNamespace, serviceAccount)
	pod, err := e.kube.CoreV1().Pods(deploy.NodeNamespace).Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: serviceAccount, NodeName: node,
			Containers: []corev1.Container{{Name: "c", Image: "registry.example/agent",
				VolumeMounts: []corev1.VolumeMount{{Name: "identity", MountPath: "/etc/dynamic-memory/identity"}}}},
			// The API server admits a kubelet's request only for a pod that mounts a
			// volume of the signer.
			Volumes: []corev1.Volume{{Name: "identity", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{PodCertificate: &corev1.PodCertificateProjection{
					SignerName: deploy.SignerName, KeyType: "ECDSAP256", CertificateChainPath: "tls.crt", KeyPath: "tls.key",
				}}},
			}}}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return pod
}

// asNode is a client acting as the kubelet of node.
func (e *env) asNode(node string) kubernetes.Interface {
	e.t.Helper()
	config := e.cl.RESTConfig()
	config.Impersonate = rest.ImpersonationConfig{UserName: "system:node:" + node, Groups: []string{"system:nodes", "system:authenticated"}}
	c, err := kubernetes.NewForConfig(config)
	require.NoError(e.t, err)
	return c
}

// podCertificateRequest is the request a kubelet on node makes for pod: a new key
// and a stub CSR signed with it.
func (e *env) podCertificateRequest(pod *corev1.Pod, node *corev1.Node) (*ecdsa.PrivateKey, *certificatesv1.PodCertificateRequest) {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(e.t, err)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(e.t, err)
	sa, err := e.kube.CoreV1().ServiceAccounts(pod.Namespace).Get(e.ctx, pod.Spec.ServiceAccountName, metav1.GetOptions{})
	require.NoError(e.t, err)
	return key, &certificatesv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: strings.TrimSuffix(pod.Name, "-") + "-", Namespace: pod.Namespace},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: deploy.SignerName,
			PodName:    pod.Name, PodUID: pod.UID,
			ServiceAccountName: sa.Name, ServiceAccountUID: sa.UID,
			NodeName: types.NodeName(node.Name), NodeUID: node.UID,
			MaxExpirationSeconds: ptr.To[int32](86400),
			StubPKCS10Request:    csr,
		},
	}
}

// waitAnswered waits until the signer has answered the request.
func (e *env) waitAnswered(req *certificatesv1.PodCertificateRequest) *certificatesv1.PodCertificateRequest {
	e.t.Helper()
	var got *certificatesv1.PodCertificateRequest
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = e.kube.CertificatesV1().PodCertificateRequests(req.Namespace).Get(ctx, req.Name, metav1.GetOptions{})
		return err == nil && len(got.Status.Conditions) > 0, nil
	})
	require.NoError(e.t, err, "PodCertificateRequest %s answered", req.Name)
	return got
}
