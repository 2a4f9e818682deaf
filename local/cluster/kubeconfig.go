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
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// contextName is the kubeconfig context of the local cluster.
const contextName = "dynamic-memory-local"

// writeKubeconfig writes a self-contained kubeconfig (certificates embedded) that
// authenticates to server as the client identity name of the cluster's PKI.
func writeKubeconfig(file, server string, p pkiFiles, name string) error {
	ca, err := os.ReadFile(p.caCert())
	if err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", file, err)
	}
	cert, err := os.ReadFile(p.clientCert(name))
	if err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", file, err)
	}
	key, err := os.ReadFile(p.clientKey(name))
	if err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", file, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[contextName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts[contextName] = &clientcmdapi.Context{Cluster: contextName, AuthInfo: name}
	cfg.CurrentContext = contextName
	if err := clientcmd.WriteToFile(*cfg, file); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", file, err)
	}
	return nil
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount namespace/name (a client certificate with its user name and groups)
// and returns its path. Our components run as processes, not pods, so they have no
// ServiceAccount token; one run with this kubeconfig is held to the RBAC and
// admission policies of its ServiceAccount as its pod would be.
func (c *Cluster) ServiceAccountKubeconfig(namespace, name string) (string, error) {
	p := c.pki()
	ca, err := pki.LoadCA(p.caCert(), p.caKey())
	if err != nil {
		return "", fmt.Errorf("kubeconfig of ServiceAccount %s/%s: %w", namespace, name, err)
	}
	// The user and groups the API server gives a token of this ServiceAccount.
	pair, err := ca.IssueUser("system:serviceaccount:"+namespace+":"+name, "system:serviceaccounts", "system:serviceaccounts:"+namespace)
	if err != nil {
		return "", fmt.Errorf("kubeconfig of ServiceAccount %s/%s: %w", namespace, name, err)
	}
	id := "serviceaccount-" + namespace + "-" + name
	if err := pair.WriteFiles(p.dir, id); err != nil {
		return "", fmt.Errorf("kubeconfig of ServiceAccount %s/%s: %w", namespace, name, err)
	}
	file := c.kubeconfigFor(id)
	if err := writeKubeconfig(file, c.state.Server, p, id); err != nil {
		return "", err
	}
	return file, nil
}
