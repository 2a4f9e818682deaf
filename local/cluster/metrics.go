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
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/oauth2"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/transport"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
)

// MetricsReader is the ServiceAccount, in deploy.Namespace, whose token reads the
// components' metrics on the local cluster, as Prometheus's does in a real one: it is
// bound to the ClusterRole metricsserver.ReaderClusterRole of manifests/rbac.
const MetricsReader = "metrics-reader"

// metricsTokenLifetime is how long a token of MetricsReader is valid; it is renewed a
// minute before it expires.
const metricsTokenLifetime = time.Hour

// MetricsClient returns an HTTP client that reads the components' /metrics on a
// cluster started with InstallRBAC (which applies the ClusterRole): it sends a bearer
// token of the ServiceAccount MetricsReader, which it creates and binds to the role
// when missing, made with the TokenRequest API and renewed before it expires. It does
// not verify serving certificates: the components' are self-signed, made at start.
func (c *Cluster) MetricsClient(ctx context.Context) (*http.Client, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: MetricsReader, Namespace: deploy.Namespace}}
	if _, err := c.client.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create ServiceAccount %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: metricsserver.ReaderClusterRole + ":local-cluster"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: metricsserver.ReaderClusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}},
	}
	if _, err := c.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("bind ServiceAccount %s/%s to %s: %w", sa.Namespace, sa.Name, metricsserver.ReaderClusterRole, err)
	}
	tokens := transport.NewCachedTokenSource(&metricsTokenSource{c: c})
	base := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the components' self-signed serving certificates, on 127.0.0.1
	return &http.Client{Transport: transport.ResettableTokenSourceWrapTransport(tokens)(base)}, nil
}

// metricsTokenSource requests tokens of MetricsReader.
type metricsTokenSource struct{ c *Cluster }

func (ts *metricsTokenSource) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(metricsTokenLifetime / time.Second))}}
	tr, err := ts.c.client.CoreV1().ServiceAccounts(deploy.Namespace).CreateToken(ctx, MetricsReader, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token of ServiceAccount %s/%s: %w", deploy.Namespace, MetricsReader, err)
	}
	return &oauth2.Token{AccessToken: tr.Status.Token, TokenType: "Bearer", Expiry: tr.Status.ExpirationTimestamp.Add(-time.Minute)}, nil
}
