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
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	dmclient "github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/typed/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

// recordsAs returns a DynamicMemoryClaims client of namespace that acts as as (the
// cluster's admin, in system:masters, when as is empty).
func recordsAs(t *testing.T, c *cluster.Cluster, namespace string, as rest.ImpersonationConfig) dmclient.DynamicMemoryClaimInterface {
	t.Helper()
	config := c.RESTConfig()
	config.Impersonate = as
	cs, err := versioned.NewForConfig(config)
	require.NoError(t, err)
	return cs.DynamicMemoryV1alpha1().DynamicMemoryClaims(namespace)
}

// testRecordPolicy checks v1alpha1.RecordPolicy: a DynamicMemoryClaim is deleted by
// the memory service alone (and the cluster's superusers). Anyone else, the namespace
// controller included, is refused with the reason, so a namespace being deleted waits
// until the memory service has removed its records.
func testRecordPolicy(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	const ns = "records"
	_, err := c.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	admin := recordsAs(t, c, ns, rest.ImpersonationConfig{})
	for i, name := range []string{"held", "known-gone"} {
		uid := "0a1b2c3d-0000-4000-8000-00000000000" + string(rune('1'+i))
		_, err := admin.Create(ctx, &v1alpha1.DynamicMemoryClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.LabelClaimUID: uid}},
			Spec: v1alpha1.DynamicMemoryClaimSpec{
				ClaimRef: v1alpha1.ClaimReference{Name: name, UID: types.UID(uid)},
				Node:     "dm-node-0", Pool: "cxl-a", Requested: resource.MustParse("2Gi"), Size: resource.MustParse("2Gi"),
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}

	namespaceController := recordsAs(t, c, ns, rest.ImpersonationConfig{
		UserName: "system:serviceaccount:kube-system:namespace-controller",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
	})
	err = namespaceController.Delete(ctx, "held", metav1.DeleteOptions{})
	require.Error(t, err, "the namespace controller may delete anything, but not a record")
	assert.True(t, apierrors.IsForbidden(err), "Forbidden, got %v", err)
	assert.Contains(t, err.Error(), "ValidatingAdmissionPolicy '"+v1alpha1.RecordPolicy+"'")
	assert.Contains(t, err.Error(), "DynamicMemoryClaim records/held is removed by the memory service once its memory (2Gi on node dm-node-0) "+
		"is offline and back in pool cxl-a; delete its pod or ResourceClaim instead")

	require.NoError(t, admin.Delete(ctx, "known-gone", metav1.DeleteOptions{}), "a superuser may remove a record")

	// The namespace waits for the memory service.
	require.NoError(t, c.Client().CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}))
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := c.Client().CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NamespaceDeletionContentFailure && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	}), "the namespace controller tried and was refused")
	_, err = admin.Get(ctx, "held", metav1.GetOptions{})
	require.NoError(t, err, "the record outlives its namespace's deletion")

	memservice := recordsAs(t, c, ns, rest.ImpersonationConfig{
		UserName: serviceAccountUser(deploy.MemoryServiceName), Groups: serviceAccountGroups(deploy.MemoryServiceName),
	})
	require.NoError(t, memservice.Delete(ctx, "held", metav1.DeleteOptions{}), "the memory service removes its record")
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client().CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}), "the namespace goes once the memory service removed its records")
}
