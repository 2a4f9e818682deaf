package cluster

import (
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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
