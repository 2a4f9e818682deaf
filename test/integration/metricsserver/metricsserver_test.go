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

// Package metricsserver_test serves metrics with api/metricsserver against a real
// kube-apiserver (the local cluster, with the installation's RBAC), as each component
// does with its own ServiceAccount: the API server's TokenReview and
// SubjectAccessReview decide who reads them.
package metricsserver_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
)

const metricsText = "dynamic_memory_test_metric 1\n"

// TestOnlyTheMetricsReaderRoleReadsMetrics runs a metrics server as each component's
// ServiceAccount (so that the installation's RBAC must let it review tokens and
// access) and reads it without a token, with a forged one, with the token of a
// ServiceAccount without the role, and with the local cluster's metrics reader.
func TestOnlyTheMetricsReaderRoleReadsMetrics(t *testing.T) {
	cl := clustertest.Start(t, cluster.Options{InstallRBAC: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reader, err := cl.MetricsClient(ctx)
	require.NoError(t, err)
	stranger := serviceAccountToken(ctx, t, cl.Client(), metav1.NamespaceDefault, "stranger")
	// Trusts the servers' self-signed certificates; sends the token it is given.
	plain := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test's self-signed servers

	for _, sa := range []struct{ namespace, name string }{
		{deploy.Namespace, deploy.MemoryServiceName},
		{deploy.NodeNamespace, deploy.NodeAgentServiceAccount},
		{deploy.NodeNamespace, deploy.DRAPluginServiceAccount},
	} {
		t.Run(sa.name, func(t *testing.T) {
			kubeconfig, err := cl.ServiceAccountKubeconfig(sa.namespace, sa.name)
			require.NoError(t, err)
			restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			require.NoError(t, err)
			srv, err := metricsserver.New(metricsserver.Config{
				Options: metricsserver.Options{Address: "127.0.0.1:0"},
				Kube:    kubernetes.NewForConfigOrDie(restConfig),
				Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(metricsText)) }),
			})
			require.NoError(t, err)
			srvCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- srv.Serve(srvCtx) }()
			defer func() {
				stop()
				assert.NoError(t, <-done)
			}()
			url := "https://" + srv.Addr()

			// RBAC reaches the authorizer through informers: wait for the first read.
			var code int
			var body string
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
				if code, body = get(t, reader, url+metricsserver.Path, ""); code == http.StatusOK || time.Now().After(deadline) {
					break
				}
			}
			require.Equal(t, http.StatusOK, code, "the metrics reader reads the metrics: %s", body)
			assert.Equal(t, metricsText, body)

			code, body = get(t, plain, url+metricsserver.Path, "")
			assert.Equal(t, http.StatusUnauthorized, code, "no token")
			assert.Contains(t, body, "needs a bearer token")
			code, body = get(t, plain, url+metricsserver.Path, "forged-token")
			assert.Equal(t, http.StatusUnauthorized, code, "a token the API server does not accept")
			assert.Contains(t, body, "did not accept the bearer token")
			code, body = get(t, plain, url+metricsserver.Path, stranger)
			assert.Equal(t, http.StatusForbidden, code, "the token of a ServiceAccount without the role")
			assert.Contains(t, body, `user "system:serviceaccount:default:stranger" may not get /metrics (bind the ClusterRole `+metricsserver.ReaderClusterRole+` to it)`)

			for _, probe := range []string{"/healthz", "/readyz"} {
				code, body = get(t, plain, url+probe, "")
				assert.Equal(t, http.StatusOK, code, "%s without a token", probe)
				assert.Equal(t, "ok\n", body)
			}
		})
	}
}

// serviceAccountToken creates the ServiceAccount namespace/name, bound to no role, and
// returns a token of it.
func serviceAccountToken(ctx context.Context, t *testing.T, kube kubernetes.Interface, namespace, name string) string {
	t.Helper()
	_, err := kube.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	tr, err := kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	require.NoError(t, err)
	return tr.Status.Token
}

// get GETs url with client, with the bearer token if not empty.
func get(t *testing.T, client *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(data)
}
