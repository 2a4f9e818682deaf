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

package manifests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	dradriver "github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
)

const (
	systemNamespace = "dynamic-memory-system"
	fieldManager    = "manifests-test"
	nodeNameExtra   = "authentication.kubernetes.io/node-name"
)

// applier server-side applies unstructured objects to the local cluster.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, c *cluster.Cluster) *applier {
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	require.NoError(t, err)
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Client().Discovery()))}
}

// apply server-side applies obj, as a dry run when dryRun is set. It reports
// meta.NoKindMatchError when the server does not serve the kind.
func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	gvk := obj.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		mapping, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = a.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Apply(ctx, obj.GetName(), obj, opts)
	return err
}

// TestManifestsOnLocalCluster needs the local cluster (bin/etcd and bin/kube-apiserver:
// make cluster-bins). It checks that the API server
// accepts every manifest (server-side dry run, with CRD schemas, CEL rules and
// admission), that each ServiceAccount can do what its component needs and not more
// (SubjectAccessReview), and that the node policies confine the node components to
// their own node.
func TestManifestsOnLocalCluster(t *testing.T) {
	// kube-controller-manager aggregates the user roles into view, edit and admin.
	c := clustertest.Start(t, cluster.Options{InstallCRDs: true, ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a := newApplier(t, c)

	t.Run("server-side dry run accepts every object", func(t *testing.T) {
		var objs []*unstructured.Unstructured
		for _, dir := range []string{"manifests", "manifests/samples", "manifests/monitoring"} {
			objs = append(objs, build(t, dir)...)
		}
		// The chart's renders of its other value sets.
		for _, set := range valueSets {
			objs = append(objs, render(t, "-f", valuesFile(t, set))...)
		}
		// Namespaced objects can only be dry-run into namespaces that exist.
		for _, o := range objs {
			if o.GetKind() == "Namespace" {
				require.NoError(t, a.apply(ctx, o, false), "create namespace %s", o.GetName())
			}
		}
		// Pods need their ServiceAccount; without kube-controller-manager nobody
		// creates the namespaces' default one.
		for _, ns := range []string{deploy.Namespace, deploy.NodeNamespace, "dynamic-memory-demo"} {
			createDefaultServiceAccount(ctx, t, c.Client(), ns)
		}
		var skipped []string
		for _, o := range objs {
			err := a.apply(ctx, o, true)
			if meta.IsNoMatchError(err) && o.GroupVersionKind().Group == "monitoring.coreos.com" {
				// The Prometheus operator's CRDs are not part of this project.
				if name := o.GetKind() + "/" + o.GetName(); !slices.Contains(skipped, name) {
					skipped = append(skipped, name)
				}
				continue
			}
			assert.NoError(t, err, "%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
		}
		assert.ElementsMatch(t, []string{
			"ServiceMonitor/memservice", "ServiceMonitor/dynamic-memory-scheduler",
			"PodMonitor/node-agent", "PodMonitor/dra-plugin", "PrometheusRule/dynamic-memory",
		}, skipped, "only the Prometheus operator's kinds are skipped")
	})

	// From here on the RBAC of manifests/rbac is applied for real.
	for _, dir := range []string{"manifests/namespace", "manifests/rbac"} {
		for _, o := range build(t, dir) {
			require.NoError(t, a.apply(ctx, o, false), "apply %s %s", o.GetKind(), o.GetName())
		}
	}

	t.Run("every pod passes its namespace's Pod Security level", func(t *testing.T) {
		// Pod Security enforces on pods, not on their controllers: dry-run each
		// workload's pod template as a pod in its namespace (with its ServiceAccount,
		// which the RBAC manifests create).
		podOf := func(o *unstructured.Unstructured, ns string) *corev1.Pod {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: o.GetName() + "-pod-security", Namespace: ns}, Spec: podSpec(t, o)}
			pod.Spec.NodeName = ""
			return pod
		}
		for _, o := range build(t, "manifests") {
			if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
				continue
			}
			_, err := c.Client().CoreV1().Pods(o.GetNamespace()).Create(ctx, podOf(o, o.GetNamespace()), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			assert.NoError(t, err, "a pod of %s %s in %s", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		// The levels are enforced: the node agent's pod is refused where the memory
		// service runs.
		misplaced := podOf(find(t, build(t, "manifests"), "DaemonSet", "node-agent"), deploy.Namespace)
		misplaced.Spec.ServiceAccountName = deploy.MemoryServiceName
		_, err := c.Client().CoreV1().Pods(deploy.Namespace).Create(ctx, misplaced, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		require.Error(t, err, "a privileged pod in the restricted namespace")
		assert.Contains(t, err.Error(), `violates PodSecurity "restricted:latest"`)
	})

	t.Run("each ServiceAccount can do what it needs and nothing more", func(t *testing.T) {
		testRBAC(ctx, t, c.Client())
	})
	t.Run("node components act only for their own node", func(t *testing.T) {
		testNodeRestriction(ctx, t, c)
	})
	t.Run("namespace users read their claims and the pools", func(t *testing.T) {
		testUserRoles(ctx, t, c.Client())
	})
	t.Run("only the memory service deletes a record", func(t *testing.T) {
		testRecordPolicy(ctx, t, c)
	})
}

// testUserRoles binds a user to the built-in view (and another to edit) in one
// namespace: they read that namespace's DynamicMemoryClaims, every pool and the memory
// service's Lease (its version), write none of them, and read no other namespace's
// claims.
func testUserRoles(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: userNS}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	groups := []string{"system:authenticated"}
	for user, role := range map[string]string{"viewer": "view", "editor": "edit"} {
		_, err := client.RbacV1().RoleBindings(userNS).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		// The aggregation controller and the authorizer's informers: wait for the grants.
		for _, a := range []access{
			{verb: "list", group: dm, resource: "dynamicmemoryclaims", namespace: userNS},
			{verb: "watch", group: dm, resource: "dynamicmemoryclaims", namespace: userNS},
			{verb: "get", group: dm, resource: "dynamicmemoryclaims", namespace: userNS, name: "claim-1"},
			{verb: "list", group: dm, resource: "dynamicmemorypools"},
			{verb: "get", group: dm, resource: "dynamicmemorypools", name: "cxl-a"},
			{verb: "get", group: "coordination.k8s.io", resource: "leases", namespace: deploy.Namespace, name: deploy.MemoryServiceName},
		} {
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				return reviewAs(ctx, client, user, groups, a)
			})
			assert.NoError(t, err, "%s (%s in %s) can %s", user, role, userNS, a)
		}
		for _, a := range []access{
			{verb: "list", group: dm, resource: "dynamicmemoryclaims", namespace: "other"},
			{verb: "update", group: dm, resource: "dynamicmemoryclaims", namespace: userNS, name: "claim-1"},
			{verb: "delete", group: dm, resource: "dynamicmemoryclaims", namespace: userNS, name: "claim-1"},
			{verb: "patch", group: dm, resource: "dynamicmemoryclaims", subresource: "status", namespace: userNS, name: "claim-1"},
			{verb: "update", group: dm, resource: "dynamicmemorypools", name: "cxl-a"},
			{verb: "create", group: dm, resource: "dynamicmemorypools"},
			{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: deploy.Namespace, name: deploy.MemoryServiceName},
			{verb: "list", group: "coordination.k8s.io", resource: "leases", namespace: deploy.Namespace},
		} {
			allowed, err := reviewAs(ctx, client, user, groups, a)
			require.NoError(t, err)
			assert.False(t, allowed, "%s (%s in %s) must not be able to %s", user, role, userNS, a)
		}
	}
}

func createDefaultServiceAccount(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
	_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err, "create ServiceAccount %s/default", ns)
	}
}

// access is one request a ServiceAccount makes.
type access struct {
	verb, group, resource, subresource, namespace, name string
}

func (a access) String() string {
	r := a.resource
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.group != "" {
		r += "." + a.group
	}
	s := a.verb + " " + r
	if a.name != "" {
		s += " " + a.name
	}
	if a.namespace != "" {
		s += " in " + a.namespace
	}
	return s
}

const (
	dm       = "dynamicmemory.io"
	dra      = "resource.k8s.io"
	coord    = "coordination.k8s.io"
	certs    = "certificates.k8s.io"
	driver   = "dcd.dynamicmemory.io"
	userNS   = "shop"
	kubeSys  = "kube-system"
	someNode = "dm-node-0"
)

func testRBAC(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	tests := []struct {
		serviceAccount string
		can, cannot    []access
	}{
		{
			serviceAccount: "memservice",
			can: []access{
				{verb: "watch", group: dm, resource: "dynamicmemorypools"},
				{verb: "update", group: dm, resource: "dynamicmemorypools", subresource: "status", name: "cxl-a"},
				{verb: "create", group: dm, resource: "dynamicmemoryclaims", namespace: userNS},
				{verb: "patch", group: dm, resource: "dynamicmemoryclaims", subresource: "status", namespace: userNS},
				{verb: "update", group: dm, resource: "dynamicmemoryclaims", subresource: "finalizers", namespace: userNS},
				{verb: "delete", group: dm, resource: "dynamicmemoryclaims", namespace: userNS},
				{verb: "watch", group: dra, resource: "resourceclaims"},
				{verb: "create", resource: "events", namespace: userNS},
				{verb: "create", group: "events.k8s.io", resource: "events", namespace: userNS},
				{verb: "create", group: coord, resource: "leases", namespace: systemNamespace},
				{verb: "update", group: coord, resource: "leases", namespace: systemNamespace, name: "memservice"},
				// The signer of its clients' identities.
				{verb: "watch", group: certs, resource: "podcertificaterequests"},
				{verb: "update", group: certs, resource: "podcertificaterequests", subresource: "status", namespace: deploy.NodeNamespace},
				{verb: "sign", group: certs, resource: "signers", name: deploy.SignerName},
				{verb: "attest", group: certs, resource: "signers", name: deploy.SignerName},
				{verb: "create", group: certs, resource: "clustertrustbundles"},
				{verb: "get", resource: "pods", namespace: deploy.NodeNamespace, name: "node-agent-x"},
				// Delegated authentication and authorization of /metrics.
				{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
				{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
			},
			cannot: []access{
				{verb: "update", group: dm, resource: "dynamicmemorypools", name: "cxl-a"},
				{verb: "create", group: dm, resource: "dynamicmemorypools"},
				{verb: "update", group: dra, resource: "resourceclaims", subresource: "status", namespace: userNS},
				{verb: "get", resource: "secrets", namespace: systemNamespace},
				{verb: "update", group: coord, resource: "leases", namespace: kubeSys, name: "kube-scheduler"},
				{verb: "update", group: coord, resource: "leases", namespace: systemNamespace, name: "other"},
				{verb: "patch", resource: "nodes", subresource: "status", name: someNode},
				{verb: "create", resource: "pods", namespace: userNS},
				{verb: "sign", group: certs, resource: "signers", name: "kubernetes.io/kube-apiserver-client"},
				{verb: "attest", group: certs, resource: "signers", name: "example.com/other"},
				{verb: "create", group: certs, resource: "podcertificaterequests", namespace: deploy.NodeNamespace},
				{verb: "get", resource: "secrets", namespace: deploy.NodeNamespace},
			},
		},
		{
			serviceAccount: "scheduler",
			can: []access{
				{verb: "create", resource: "pods", subresource: "binding", namespace: userNS},
				{verb: "update", group: dra, resource: "resourceclaims", subresource: "status", namespace: userNS},
				{verb: "update", group: dra, resource: "resourceclaims", subresource: "binding"},
				{verb: "list", group: dra, resource: "resourceslices"},
				{verb: "watch", group: dra, resource: "deviceclasses"},
				{verb: "watch", group: dm, resource: "dynamicmemorypools"},
				{verb: "update", group: coord, resource: "leases", namespace: kubeSys, name: "kube-scheduler"},
				{verb: "get", resource: "configmaps", namespace: kubeSys, name: "extension-apiserver-authentication"},
				{verb: "update", resource: "persistentvolumes", name: "pv-1"},
			},
			cannot: []access{
				{verb: "update", group: dm, resource: "dynamicmemorypools", subresource: "status", name: "cxl-a"},
				{verb: "create", group: dm, resource: "dynamicmemoryclaims", namespace: userNS},
				{verb: "get", resource: "secrets", namespace: kubeSys},
				{verb: "patch", resource: "nodes", subresource: "status", name: someNode},
				{verb: "create", group: dra, resource: "resourceslices"},
				{verb: "associated-node:update", group: dra, resource: "resourceclaims", subresource: "driver", namespace: userNS, name: driver},
				{verb: "sign", group: certs, resource: "signers", name: deploy.SignerName},
				{verb: "update", group: certs, resource: "podcertificaterequests", subresource: "status", namespace: deploy.NodeNamespace},
			},
		},
		{
			serviceAccount: "node-agent",
			can: []access{
				{verb: "get", resource: "nodes", name: someNode},
				{verb: "patch", resource: "nodes", subresource: "status", name: someNode},
				// Delegated authentication and authorization of /metrics.
				{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
				{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
			},
			cannot: []access{
				// ResourceClaims are the memory service's to write (their device
				// conditions): a node's credentials cannot touch them.
				{verb: "get", group: dra, resource: "resourceclaims", namespace: userNS, name: "claim-1"},
				{verb: "patch", group: dra, resource: "resourceclaims", subresource: "status", namespace: userNS},
				{verb: "associated-node:patch", group: dra, resource: "resourceclaims", subresource: "driver", namespace: userNS, name: driver},
				{verb: "watch", group: dra, resource: "resourceclaims"},
				{verb: "list", group: dra, resource: "resourceclaims", namespace: userNS},
				{verb: "arbitrary-node:patch", group: dra, resource: "resourceclaims", subresource: "driver", namespace: userNS, name: driver},
				{verb: "associated-node:patch", group: dra, resource: "resourceclaims", subresource: "driver", namespace: userNS, name: "gpu.example.com"},
				{verb: "patch", resource: "nodes", name: someNode},
				{verb: "update", group: dra, resource: "resourceclaims", subresource: "binding"},
				{verb: "update", group: dra, resource: "resourceclaims", namespace: userNS},
				{verb: "create", group: dra, resource: "resourceslices"},
				{verb: "delete", resource: "pods", namespace: userNS},
				{verb: "get", resource: "secrets", namespace: systemNamespace},
				{verb: "update", group: dm, resource: "dynamicmemoryclaims", subresource: "status", namespace: userNS},
				{verb: "list", resource: "nodes"},
				{verb: "create", resource: "events", namespace: userNS},
				{verb: "sign", group: certs, resource: "signers", name: deploy.SignerName},
				{verb: "create", group: certs, resource: "clustertrustbundles"},
				{verb: "create", group: certs, resource: "podcertificaterequests", namespace: deploy.NodeNamespace},
			},
		},
		{
			serviceAccount: "dra-plugin",
			can: []access{
				{verb: "create", group: dra, resource: "resourceslices"},
				{verb: "update", group: dra, resource: "resourceslices", name: "slice-1"},
				{verb: "delete", group: dra, resource: "resourceslices", name: "slice-1"},
				{verb: "watch", group: dra, resource: "resourceslices"},
				{verb: "get", group: dra, resource: "resourceclaims", namespace: userNS, name: "claim-1"},
				{verb: "get", resource: "nodes", name: someNode},
				{verb: "watch", group: dm, resource: "dynamicmemorypools"},
				// Delegated authentication and authorization of /metrics.
				{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
				{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
			},
			cannot: []access{
				{verb: "list", group: dra, resource: "resourceclaims", namespace: userNS},
				{verb: "update", group: dra, resource: "resourceclaims", subresource: "status", namespace: userNS},
				{verb: "patch", resource: "nodes", subresource: "status", name: someNode},
				{verb: "list", resource: "secrets", namespace: systemNamespace},
				{verb: "update", group: dm, resource: "dynamicmemorypools", subresource: "status", name: "cxl-a"},
				{verb: "associated-node:patch", group: dra, resource: "resourceclaims", subresource: "driver", namespace: userNS, name: driver},
				{verb: "sign", group: certs, resource: "signers", name: deploy.SignerName},
				{verb: "get", resource: "secrets", namespace: deploy.Namespace, name: "memservice-ca"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.serviceAccount, func(t *testing.T) {
			// RBAC reaches the authorizer through informers: wait for the first grant.
			for _, a := range tc.can {
				var allowed bool
				err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
					var err error
					allowed, err = review(ctx, client, tc.serviceAccount, a)
					return allowed, err
				})
				assert.NoError(t, err, "%s can %s", tc.serviceAccount, a)
			}
			for _, a := range tc.cannot {
				allowed, err := review(ctx, client, tc.serviceAccount, a)
				require.NoError(t, err)
				assert.False(t, allowed, "%s must not be able to %s", tc.serviceAccount, a)
			}
		})
	}
}

// namespaceOf is the namespace of a component's ServiceAccount: the node components
// have their own.
func namespaceOf(serviceAccount string) string {
	if serviceAccount == deploy.NodeAgentServiceAccount || serviceAccount == deploy.DRAPluginServiceAccount {
		return deploy.NodeNamespace
	}
	return deploy.Namespace
}

func serviceAccountUser(name string) string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", namespaceOf(name), name)
}

func serviceAccountGroups(name string) []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + namespaceOf(name), "system:authenticated"}
}

// review asks whether a component's ServiceAccount may do a.
func review(ctx context.Context, client kubernetes.Interface, serviceAccount string, a access) (bool, error) {
	return reviewAs(ctx, client, serviceAccountUser(serviceAccount), serviceAccountGroups(serviceAccount), a)
}

func reviewAs(ctx context.Context, client kubernetes.Interface, user string, groups []string, a access) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: a.namespace, Verb: a.verb, Group: a.group, Resource: a.resource,
			Subresource: a.subresource, Name: a.name,
		},
	}}
	res, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("review %s for %s: %w", a, user, err)
	}
	return res.Status.Allowed, nil
}

// impersonate returns a client acting as a service account of a pod on node.
func impersonate(t *testing.T, c *cluster.Cluster, serviceAccount, node string) kubernetes.Interface {
	t.Helper()
	config := c.RESTConfig()
	config.Impersonate = rest.ImpersonationConfig{
		UserName: serviceAccountUser(serviceAccount),
		Groups:   serviceAccountGroups(serviceAccount),
		Extra:    map[string][]string{nodeNameExtra: {node}},
	}
	client, err := kubernetes.NewForConfig(config)
	require.NoError(t, err)
	return client
}

func testNodeRestriction(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	for _, name := range []string{"dm-node-0", "dm-node-1"} {
		_, err := c.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}
	dryRun := []string{metav1.DryRunAll}

	t.Run("node agent patches only its node's status", func(t *testing.T) {
		agent := impersonate(t, c, "node-agent", "dm-node-0")
		patch := []byte(`{"status":{"capacity":{"dynamicmemory.io/online-memory":"1Gi"},"allocatable":{"dynamicmemory.io/online-memory":"1Gi"}}}`)
		patchStatus := func(node string) error {
			_, err := agent.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{DryRun: dryRun}, "status")
			return err
		}
		// The policy reaches admission through an informer: wait until it denies.
		var err error
		_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			err = patchStatus("dm-node-1")
			return err != nil && strings.Contains(err.Error(), "only update the status of its own node"), nil
		})
		require.Error(t, err, "the agent of dm-node-0 patched dm-node-1")
		assert.Contains(t, err.Error(), "the dynamic memory node agent may only update the status of its own node (dm-node-0), not node dm-node-1")
		assert.NoError(t, patchStatus("dm-node-0"), "the agent patches its own node")
	})

	t.Run("node agent cannot write device conditions, the memory service can on any node", func(t *testing.T) {
		_, err := c.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: userNS}}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
		claim := allocatedClaim(ctx, t, c.Client(), "on-dm-node-0", "dm-node-0")
		setOnline := func(as kubernetes.Interface, allocatedOn string) error {
			apply := dradriver.ApplyDeviceState(claim, dradriver.Devices(claim, allocatedOn), dradriver.DeviceState{Online: true, Reason: "MemoryOnline", Message: "1Gi online", Since: time.Now()})
			_, err := as.ResourceV1().ResourceClaims(userNS).ApplyStatus(ctx, apply, metav1.ApplyOptions{FieldManager: "test", Force: true, DryRun: dryRun})
			return err
		}
		agent := impersonate(t, c, "node-agent", "dm-node-0")
		err = setOnline(agent, "dm-node-0")
		require.Error(t, err, "the agent of dm-node-0 wrote the status of its node's claim")
		assert.True(t, apierrors.IsForbidden(err), "got %v", err)
		memservice := impersonate(t, c, "memservice", "dm-node-1")
		assert.NoError(t, setOnline(memservice, "dm-node-0"), "the memory service marks a claim of any node Online")
	})

	t.Run("DRA plugin writes only its node's ResourceSlices", func(t *testing.T) {
		plugin := impersonate(t, c, "dra-plugin", "dm-node-0")
		create := func(node string) error {
			slice := &resourcev1.ResourceSlice{
				ObjectMeta: metav1.ObjectMeta{GenerateName: node + "-" + driver + "-"},
				Spec: resourcev1.ResourceSliceSpec{
					Driver:   driver,
					NodeName: ptr.To(node),
					Pool:     resourcev1.ResourcePool{Name: node, ResourceSliceCount: 1},
					Devices:  []resourcev1.Device{{Name: "cxl-a"}},
				},
			}
			_, err := plugin.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{DryRun: dryRun})
			return err
		}
		var err error
		_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			err = create("dm-node-1")
			return err != nil && strings.Contains(err.Error(), "only write ResourceSlices of its own node"), nil
		})
		require.Error(t, err, "the plugin of dm-node-0 wrote a slice of dm-node-1")
		assert.Contains(t, err.Error(), "the dynamic memory DRA plugin may only write ResourceSlices of its own node (dm-node-0), not of node 'dm-node-1'")
		assert.NoError(t, create("dm-node-0"), "the plugin writes its own node's slice")
	})
}

// allocatedClaim creates a ResourceClaim for 1Gi of dynamic memory and allocates it,
// as the scheduler would, on node.
func allocatedClaim(ctx context.Context, t *testing.T, client kubernetes.Interface, name, node string) *resourcev1.ResourceClaim {
	t.Helper()
	claim := &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: userNS},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "memory",
			Exactly: &resourcev1.ExactDeviceRequest{
				DeviceClassName: "dynamic-memory.dynamicmemory.io",
				Capacity: &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{
					"memory": resource.MustParse("1Gi"),
				}},
			},
		}}}},
	}
	claim, err := client.ResourceV1().ResourceClaims(userNS).Create(ctx, claim, metav1.CreateOptions{})
	require.NoError(t, err)
	claim.Status.Allocation = &resourcev1.AllocationResult{
		Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
			Request: "memory", Driver: driver, Pool: node, Device: "cxl-a",
		}}},
		NodeSelector: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
		}}},
	}
	claim, err = client.ResourceV1().ResourceClaims(userNS).UpdateStatus(ctx, claim, metav1.UpdateOptions{})
	require.NoError(t, err, "allocate claim %s on %s", name, node)
	return claim
}
