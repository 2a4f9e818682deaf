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
	"context"
	_ "embed"
	"fmt"
	"os"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// startEtcd starts etcd on c.state.EtcdURL and waits for /health.
func (c *Cluster) startEtcd(ctx context.Context, bin string, peerPort int) error {
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	p, err := c.StartProcess(ctx, Etcd, bin,
		"--name=local",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+c.state.EtcdURL,
		"--advertise-client-urls="+c.state.EtcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=local="+peerURL,
		"--unsafe-no-fsync", // a throwaway cluster; fsync makes a busy disk the bottleneck
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	return p.WaitReady(ctx, readyTimeout, HTTPReady(c.state.EtcdURL+"/health"))
}

// auditPolicy records every request with its metadata (user, user agent, verb,
// resource), once, when its response is complete.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
- level: Metadata
`

// startAPIServer starts kube-apiserver on 127.0.0.1:port and waits for /readyz; with
// audit, it writes its audit log to AuditLogPath.
func (c *Cluster) startAPIServer(ctx context.Context, bin string, port int, audit bool) error {
	pki := c.pki()
	var auditFlags []string
	if audit {
		policy := c.path("audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
			return fmt.Errorf("write audit policy: %w", err)
		}
		auditFlags = []string{
			"--audit-policy-file=" + policy, "--audit-log-path=" + c.AuditLogPath(), "--audit-log-format=json",
			// Batched, so that writing the log does not hold requests up.
			"--audit-log-mode=batch", "--audit-log-maxsize=0",
		}
	}
	p, err := c.StartProcess(ctx, KubeAPIServer, bin, append([]string{
		"--etcd-servers=" + c.state.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + pki.servingCert(),
		"--tls-private-key-file=" + pki.servingKey(),
		"--client-ca-file=" + pki.caCert(),
		"--service-account-key-file=" + pki.saPublicKey(),
		"--service-account-signing-key-file=" + pki.saPrivateKey(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		// As every production cluster: a kubelet may only ask for what concerns its
		// own node (PodCertificateRequests of its pods included).
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range=10.96.0.0/16",
		// A real node's kubelet (logs, exec) is reached at its address, as the admin:
		// the kubelet authenticates the cluster's CA and asks the API server.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-client-certificate=" + pki.clientCert("admin"),
		"--kubelet-client-key=" + pki.clientKey("admin"),
		"--allow-privileged=true",
		// The "kubernetes" Service cannot point at a loopback address.
		"--endpoint-reconciler-type=none",
		"--feature-gates=" + FeatureGates,
		"--profiling=false",
	}, auditFlags...)...)
	if err != nil {
		return err
	}
	if err := p.WaitReady(ctx, readyTimeout, func(ctx context.Context) error {
		_, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	klog.FromContext(ctx).V(2).Info("kube-apiserver ready", "server", c.state.Server)
	return nil
}

// startControllerManager starts kube-controller-manager and waits until the default
// ServiceAccount exists: pods are admitted only then.
func (c *Cluster) startControllerManager(ctx context.Context, bin string, port int) error {
	pki := c.pki()
	kubeconfig := c.kubeconfigFor(KubeControllerManager)
	p, err := c.StartProcess(ctx, KubeControllerManager, bin,
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		// The apiserver has no front proxy, so there is no request-header CA to look up.
		"--authentication-skip-lookup=true",
		"--client-ca-file="+pki.caCert(),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki.saPrivateKey(),
		"--root-ca-file="+pki.caCert(),
		"--cluster-signing-cert-file="+pki.caCert(),
		"--cluster-signing-key-file="+pki.caKey(),
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+c.path("kcm"),
		"--leader-elect=false",
		"--controllers=*",
		// The default client rate (20 QPS, burst 30) makes the resourceclaim controller
		// the bottleneck of a burst of pods with claim templates: it writes a claim and
		// the pod's status per pod. Clusters running DRA workloads raise it likewise.
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--feature-gates="+FeatureGates,
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	return p.WaitReady(ctx, readyTimeout, func(ctx context.Context) error {
		_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// kwokConfig holds kwok's stages: how nodes and pods move through their lifecycle.
//
//go:embed kwok.yaml
var kwokConfig []byte

// startKwok starts kwok with the stages of kwok.yaml, managing the nodes annotated
// KwokNodeAnnotation=fake.
func (c *Cluster) startKwok(ctx context.Context, bin string) error {
	if err := os.WriteFile(c.path("kwok.yaml"), kwokConfig, 0o644); err != nil {
		return fmt.Errorf("write kwok configuration: %w", err)
	}
	_, err := c.StartProcess(ctx, Kwok, bin,
		"--kubeconfig="+c.kubeconfigFor(Kwok),
		"--config="+c.path("kwok.yaml"),
		"--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"=fake",
		"--cidr=10.244.0.0/16",
		"--node-ip=10.0.0.1",
	)
	return err
}
