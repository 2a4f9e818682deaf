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

package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
)

var (
	poolsGVR  = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemorypools")
	claimsGVR = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemoryclaims")
)

// TestFoundation starts the local cluster (kube-controller-manager, kwok, CRDs, two
// nodes) and checks that the API contract holds against a real kube-apiserver: the
// DeviceClass, DRA claims with consumable capacity, the CRDs and their validation.
func TestFoundation(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{
		Nodes:             2,
		ControllerManager: true,
		Kwok:              true,
		InstallCRDs:       true,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := c.Client()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	require.NoError(t, err)

	t.Run("nodes are Ready", func(t *testing.T) {
		for i := range 2 {
			node, err := client.CoreV1().Nodes().Get(ctx, c.NodeName(i), metav1.GetOptions{})
			require.NoError(t, err)
			assert.True(t, cluster.NodeReady(node), "node %s Ready", node.Name)
			assert.Equal(t, "16Gi", node.Status.Allocatable.Memory().String())
		}
	})

	t.Run("the DeviceClass selects the driver", func(t *testing.T) {
		dc, err := client.ResourceV1().DeviceClasses().Get(ctx, dra.DeviceClassName, metav1.GetOptions{})
		require.NoError(t, err)
		require.Len(t, dc.Spec.Selectors, 1)
		require.NotNil(t, dc.Spec.Selectors[0].CEL)
		assert.Equal(t, `device.driver == "`+dra.DriverName+`"`, dc.Spec.Selectors[0].CEL.Expression)
	})

	t.Run("a ResourceSlice keeps the consumable capacity and binding condition fields", func(t *testing.T) {
		// The DRA plugin's device shape: the apiserver drops these fields silently when
		// DRAConsumableCapacity or DRADeviceBindingConditions is off.
		block, window := resource.MustParse("256Mi"), resource.MustParse("32Gi")
		slice := &resourcev1.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "foundation-slice"},
			Spec: resourcev1.ResourceSliceSpec{
				Driver:   dra.DriverName,
				NodeName: ptr.To(c.NodeName(0)),
				Pool:     resourcev1.ResourcePool{Name: c.NodeName(0), ResourceSliceCount: 1},
				Devices: []resourcev1.Device{{
					Name:                     "pool-a",
					AllowMultipleAllocations: ptr.To(true),
					Capacity: map[resourcev1.QualifiedName]resourcev1.DeviceCapacity{
						dra.CapacityMemory: {
							Value: window,
							RequestPolicy: &resourcev1.CapacityRequestPolicy{
								Default:    ptr.To(block),
								ValidRange: &resourcev1.CapacityRequestPolicyRange{Min: ptr.To(block), Step: ptr.To(block), Max: ptr.To(window)},
							},
						},
					},
					BindsToNode:              ptr.To(true),
					BindingConditions:        []string{dra.ConditionOnline},
					BindingFailureConditions: []string{dra.ConditionProvisioningFailed},
				}},
			},
		}
		created, err := client.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{})
		require.NoError(t, err)
		dev := created.Spec.Devices[0]
		assert.Equal(t, ptr.To(true), dev.AllowMultipleAllocations, "allowMultipleAllocations dropped: DRAConsumableCapacity is off")
		require.NotNil(t, dev.Capacity[dra.CapacityMemory].RequestPolicy, "requestPolicy dropped: DRAConsumableCapacity is off")
		assert.Equal(t, "256Mi", dev.Capacity[dra.CapacityMemory].RequestPolicy.ValidRange.Step.String())
		assert.Equal(t, []string{dra.ConditionOnline}, dev.BindingConditions, "bindingConditions dropped: DRADeviceBindingConditions is off")
		assert.Equal(t, []string{dra.ConditionProvisioningFailed}, dev.BindingFailureConditions)
	})

	t.Run("a pod bound to a node runs", func(t *testing.T) {
		pods := client.CoreV1().Pods(metav1.NamespaceDefault)
		pod := newPod("plain")
		pod.Spec.NodeName = c.NodeName(1)
		_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		require.NoError(t, err)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			got, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
			require.NoError(ct, err)
			assert.Equal(ct, corev1.PodRunning, got.Status.Phase)
		}, time.Minute, 100*time.Millisecond)
	})

	t.Run("a pod with a claim template gets its ResourceClaim from the controller manager", func(t *testing.T) {
		tmpl := &resourcev1.ResourceClaimTemplate{
			ObjectMeta: metav1.ObjectMeta{Name: "memory-16gi", Namespace: metav1.NamespaceDefault},
			Spec: resourcev1.ResourceClaimTemplateSpec{
				Spec: resourcev1.ResourceClaimSpec{
					Devices: resourcev1.DeviceClaim{
						Requests: []resourcev1.DeviceRequest{{
							Name: "memory",
							Exactly: &resourcev1.ExactDeviceRequest{
								DeviceClassName: dra.DeviceClassName,
								Capacity: &resourcev1.CapacityRequirements{
									Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse("16Gi")},
								},
							},
						}},
					},
				},
			},
		}
		created, err := client.ResourceV1().ResourceClaimTemplates(metav1.NamespaceDefault).Create(ctx, tmpl, metav1.CreateOptions{})
		require.NoError(t, err, "consumable capacity (capacity.requests) must be served")
		got := created.Spec.Spec.Devices.Requests[0].Exactly
		require.NotNil(t, got.Capacity, "capacity.requests dropped: DRAConsumableCapacity is off")
		assert.Equal(t, "16Gi", ptr.To(got.Capacity.Requests[dra.CapacityMemory]).String())

		pod := newPod("with-memory")
		pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "memory", ResourceClaimTemplateName: ptr.To(tmpl.Name)}}
		pod.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "memory"}}
		_, err = client.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, pod, metav1.CreateOptions{})
		require.NoError(t, err)

		var claimName string
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			got, err := client.CoreV1().Pods(metav1.NamespaceDefault).Get(ctx, pod.Name, metav1.GetOptions{})
			require.NoError(ct, err)
			require.Len(ct, got.Status.ResourceClaimStatuses, 1)
			require.NotNil(ct, got.Status.ResourceClaimStatuses[0].ResourceClaimName)
			claimName = *got.Status.ResourceClaimStatuses[0].ResourceClaimName
		}, time.Minute, 100*time.Millisecond, "the resourceclaim controller did not create the pod's claim")
		claim, err := client.ResourceV1().ResourceClaims(metav1.NamespaceDefault).Get(ctx, claimName, metav1.GetOptions{})
		require.NoError(t, err)
		require.Len(t, claim.OwnerReferences, 1)
		assert.Equal(t, pod.Name, claim.OwnerReferences[0].Name)
		req := claim.Spec.Devices.Requests[0].Exactly
		require.NotNil(t, req)
		assert.Equal(t, dra.DeviceClassName, req.DeviceClassName)
		assert.Equal(t, "16Gi", ptr.To(req.Capacity.Requests[dra.CapacityMemory]).String())
	})

	t.Run("a DynamicMemoryPool is accepted", func(t *testing.T) {
		pool := validPool("pool-a")
		created, err := dyn.Resource(poolsGVR).Create(ctx, toUnstructured(t, pool), metav1.CreateOptions{})
		require.NoError(t, err)
		var got v1alpha1.DynamicMemoryPool
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(created.Object, &got))
		assert.Equal(t, pool.Spec.Capacity.String(), got.Spec.Capacity.String())
		assert.Equal(t, pool.Spec.Nodes, got.Spec.Nodes)
	})

	t.Run("a DynamicMemoryClaim is accepted and its status follows the phases", func(t *testing.T) {
		claim := validClaim("claim-a")
		created, err := dyn.Resource(claimsGVR).Namespace(metav1.NamespaceDefault).Create(ctx, toUnstructured(t, claim), metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedField(created.Object, string(v1alpha1.PhaseOnline), "status", "phase"))
		updated, err := dyn.Resource(claimsGVR).Namespace(metav1.NamespaceDefault).UpdateStatus(ctx, created, metav1.UpdateOptions{})
		require.NoError(t, err)
		phase, _, _ := unstructured.NestedString(updated.Object, "status", "phase")
		assert.Equal(t, string(v1alpha1.PhaseOnline), phase)
	})

	t.Run("invalid pools are rejected naming the field", func(t *testing.T) {
		tests := []struct {
			name      string
			mutate    func(*v1alpha1.DynamicMemoryPool)
			wantField string
			wantMsg   string
		}{
			{
				name:      "negative capacity",
				mutate:    func(p *v1alpha1.DynamicMemoryPool) { p.Spec.Capacity = resource.MustParse("-64Gi") },
				wantField: "spec.capacity",
				wantMsg:   "spec.capacity must be positive, for example 64Gi",
			},
			{
				name:      "block size not a power of two",
				mutate:    func(p *v1alpha1.DynamicMemoryPool) { p.Spec.BlockSize = resource.MustParse("3Mi") },
				wantField: "spec.blockSize",
				wantMsg:   "spec.blockSize must be a power of two between 2Mi and 1Ti, for example 128Mi or 1Gi",
			},
			{
				name:      "block size below 2Mi",
				mutate:    func(p *v1alpha1.DynamicMemoryPool) { p.Spec.BlockSize = resource.MustParse("1Mi") },
				wantField: "spec.blockSize",
				wantMsg:   "spec.blockSize must be a power of two between 2Mi and 1Ti, for example 128Mi or 1Gi",
			},
			{
				name:      "host window larger than the pool",
				mutate:    func(p *v1alpha1.DynamicMemoryPool) { p.Spec.HostWindow = resource.MustParse("128Gi") },
				wantField: "spec.hostWindow",
				wantMsg:   "spec.hostWindow must not exceed spec.capacity: a host cannot hold more than the pool has",
			},
			{
				name: "capacity not a multiple of the block size",
				mutate: func(p *v1alpha1.DynamicMemoryPool) {
					p.Spec.Capacity = resource.MustParse("33Gi")
					p.Spec.BlockSize = resource.MustParse("2Gi")
				},
				wantField: "spec.capacity",
				wantMsg:   "spec.capacity must be a multiple of spec.blockSize",
			},
			{
				name: "QEMU backend without its qemu section",
				mutate: func(p *v1alpha1.DynamicMemoryPool) {
					p.Spec.Backend = v1alpha1.PoolBackend{Type: v1alpha1.BackendQEMU}
				},
				wantField: "spec.backend",
				wantMsg:   "spec.backend.qemu is required when spec.backend.type is QEMU",
			},
			{
				name: "unknown latency class",
				mutate: func(p *v1alpha1.DynamicMemoryPool) {
					p.Spec.Attributes = map[string]string{v1alpha1.AttributeLatencyClass: "fastest"}
				},
				wantField: "spec.attributes",
				wantMsg:   "spec.attributes.latencyClass must be one of low, medium, high",
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				pool := validPool("invalid")
				tc.mutate(pool)
				_, err := dyn.Resource(poolsGVR).Create(ctx, toUnstructured(t, pool), metav1.CreateOptions{})
				assertInvalid(t, err, tc.wantField, tc.wantMsg)
			})
		}
	})

	t.Run("pool edits that would strand held memory are refused naming the field", func(t *testing.T) {
		dm, err := versioned.NewForConfig(c.RESTConfig())
		require.NoError(t, err)
		pools := dm.DynamicMemoryV1alpha1().DynamicMemoryPools()
		node0, node1 := cluster.NodeName(cluster.DefaultNodePrefix, 0), cluster.NodeName(cluster.DefaultNodePrefix, 1)
		created, err := pools.Create(ctx, validPool("holding"), metav1.CreateOptions{})
		require.NoError(t, err)
		// What the memory service writes while node 0 holds 4Gi of the pool.
		hold := func(reserved string) {
			t.Helper()
			p, err := pools.Get(ctx, "holding", metav1.GetOptions{})
			require.NoError(t, err)
			q := resource.MustParse(reserved)
			p.Status.Reserved = &q
			p.Status.Nodes = []v1alpha1.PoolNodeStatus{
				{Name: node0, Reserved: q, Online: q, Free: resource.MustParse("28Gi")},
				{Name: node1, Reserved: resource.MustParse("0"), Online: resource.MustParse("0"), Free: resource.MustParse("32Gi")},
			}
			_, err = pools.UpdateStatus(ctx, p, metav1.UpdateOptions{})
			require.NoError(t, err, "the memory service's status write is accepted")
		}
		require.Equal(t, "256Mi", created.Spec.BlockSize.String())
		hold("4Gi")
		tests := []struct {
			name      string
			mutate    func(*v1alpha1.DynamicMemoryPool)
			wantField string
			wantMsg   string
		}{
			{"another block size", func(p *v1alpha1.DynamicMemoryPool) { p.Spec.BlockSize = resource.MustParse("1Gi") },
				"spec.blockSize", "spec.blockSize cannot change while the pool holds memory"},
			{"a capacity below what is held", func(p *v1alpha1.DynamicMemoryPool) {
				p.Spec.Capacity, p.Spec.HostWindow = resource.MustParse("2Gi"), resource.MustParse("2Gi")
			}, "spec.capacity", "spec.capacity cannot be less than the memory the pool holds"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				p, err := pools.Get(ctx, "holding", metav1.GetOptions{})
				require.NoError(t, err)
				tc.mutate(p)
				_, err = pools.Update(ctx, p, metav1.UpdateOptions{})
				assertInvalid(t, err, tc.wantField, tc.wantMsg)
			})
		}

		edit := func(mutate func(*v1alpha1.DynamicMemoryPool)) error {
			p, err := pools.Get(ctx, "holding", metav1.GetOptions{})
			require.NoError(t, err)
			mutate(p)
			_, err = pools.Update(ctx, p, metav1.UpdateOptions{})
			return err
		}
		require.NoError(t, edit(func(p *v1alpha1.DynamicMemoryPool) { p.Spec.Capacity = resource.MustParse("128Gi") }), "growing is allowed")
		hold("200Gi") // a status the spec contradicts (written before an edit took effect) is still written
		assert.Error(t, edit(func(p *v1alpha1.DynamicMemoryPool) { p.Spec.Capacity = resource.MustParse("64Gi") }), "nor shrunk below it")
		hold("0")
		require.NoError(t, edit(func(p *v1alpha1.DynamicMemoryPool) { p.Spec.BlockSize = resource.MustParse("1Gi") }), "an empty pool may change its block size")
	})

	t.Run("invalid claims are rejected naming the field", func(t *testing.T) {
		tests := []struct {
			name      string
			status    func(*unstructured.Unstructured)
			mutate    func(*v1alpha1.DynamicMemoryClaim)
			wantField string
			wantMsg   string
		}{
			{
				name: "unknown phase",
				status: func(u *unstructured.Unstructured) {
					_ = unstructured.SetNestedField(u.Object, "Lost", "status", "phase")
				},
				wantField: "status.phase",
				wantMsg:   `Unsupported value: "Lost": supported values: "Reserved", "Provisioning", "Online", "Releasing", "Released", "Failed"`,
			},
			{
				name:      "zero size",
				mutate:    func(c *v1alpha1.DynamicMemoryClaim) { c.Spec.Size = resource.MustParse("0") },
				wantField: "spec.size",
				wantMsg:   "spec.size must be positive",
			},
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				claim := validClaim("invalid-" + string(rune('a'+i)))
				claims := dyn.Resource(claimsGVR).Namespace(metav1.NamespaceDefault)
				if tc.mutate != nil {
					tc.mutate(claim)
					_, err := claims.Create(ctx, toUnstructured(t, claim), metav1.CreateOptions{})
					assertInvalid(t, err, tc.wantField, tc.wantMsg)
					return
				}
				created, err := claims.Create(ctx, toUnstructured(t, claim), metav1.CreateOptions{})
				require.NoError(t, err)
				tc.status(created)
				_, err = claims.UpdateStatus(ctx, created, metav1.UpdateOptions{})
				assertInvalid(t, err, tc.wantField, tc.wantMsg)
			})
		}
	})

	t.Run("a claim's spec is immutable", func(t *testing.T) {
		claims := dyn.Resource(claimsGVR).Namespace(metav1.NamespaceDefault)
		created, err := claims.Create(ctx, toUnstructured(t, validClaim("immutable")), metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedField(created.Object, c.NodeName(1), "spec", "node"))
		_, err = claims.Update(ctx, created, metav1.UpdateOptions{})
		assertInvalid(t, err, "spec", "spec is immutable: a reservation cannot move; release it and reserve again")
	})
}

// assertInvalid checks that err is an Invalid API error with a cause on field whose
// message contains msg.
func assertInvalid(t *testing.T, err error, field, msg string) {
	t.Helper()
	require.Error(t, err, "the apiserver accepted an invalid object")
	var status apierrors.APIStatus
	require.True(t, errors.As(err, &status), "not an API error: %v", err)
	require.True(t, apierrors.IsInvalid(err), "want Invalid, got %v", err)
	details := status.Status().Details
	require.NotNil(t, details, "no details in %v", err)
	var causes []string
	for _, cause := range details.Causes {
		if cause.Field == field && strings.Contains(cause.Message, msg) {
			return
		}
		causes = append(causes, cause.Field+": "+cause.Message)
	}
	t.Errorf("no cause on field %q with message %q; causes:\n%v", field, msg, causes)
}

func newPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
}

func validPool(name string) *v1alpha1.DynamicMemoryPool {
	return &v1alpha1.DynamicMemoryPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryPool"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.DynamicMemoryPoolSpec{
			Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
			Capacity:   resource.MustParse("64Gi"),
			BlockSize:  resource.MustParse("256Mi"),
			HostWindow: resource.MustParse("32Gi"),
			Nodes: []v1alpha1.PoolNode{
				{Name: cluster.NodeName(cluster.DefaultNodePrefix, 0)},
				{Name: cluster.NodeName(cluster.DefaultNodePrefix, 1), HostID: 1},
			},
			Attributes: map[string]string{v1alpha1.AttributeLatencyClass: "low"},
		},
	}
}

func validClaim(name string) *v1alpha1.DynamicMemoryClaim {
	return &v1alpha1.DynamicMemoryClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec: v1alpha1.DynamicMemoryClaimSpec{
			ClaimRef:  v1alpha1.ClaimReference{Name: "memory-claim", UID: "6f1c2a9e-0000-4000-8000-000000000001"},
			Node:      cluster.NodeName(cluster.DefaultNodePrefix, 0),
			Pool:      "pool-a",
			Requested: resource.MustParse("15Gi"),
			Size:      resource.MustParse("16Gi"),
		},
	}
}

func toUnstructured(t *testing.T, obj runtime.Object) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	require.NoError(t, err)
	u := &unstructured.Unstructured{Object: m}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	return u
}
