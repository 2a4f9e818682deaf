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

package dynamicmemory

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2/ktesting"
	fwk "k8s.io/kube-scheduler/framework"

	v1alpha1 "github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// poolObject is a DynamicMemoryPool as the dynamic informer delivers it.
func poolObject(ready bool, nodes ...map[string]interface{}) *unstructured.Unstructured {
	list := make([]interface{}, 0, len(nodes))
	for _, n := range nodes {
		list = append(list, n)
	}
	status := "False"
	if ready {
		status = "True"
	}
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPool",
		"metadata": map[string]interface{}{"name": "pool-a"},
		"status": map[string]interface{}{
			"nodes":      list,
			"conditions": []interface{}{map[string]interface{}{"type": "Ready", "status": status}},
		},
	}}
}

func nodeStatus(node, free string, connected bool) map[string]interface{} {
	return map[string]interface{}{"name": node, "free": free, "reserved": "0", "online": "0", "agentConnected": connected}
}

func TestEventsToRegister(t *testing.T) {
	ctx := testContext(t)
	pl := newTestPlugin(t, ctx, newFakeService(t), newFakeHandle(t, ctx), nil)
	events, err := pl.EventsToRegister(ctx)
	require.NoError(t, err)
	resources := map[fwk.EventResource]fwk.ActionType{}
	for _, e := range events {
		resources[e.Event.Resource] = e.Event.ActionType
	}
	assert.Equal(t, map[fwk.EventResource]fwk.ActionType{
		"dynamicmemorypools.v1alpha1.dynamicmemory.io": fwk.Add | fwk.Update,
		fwk.Node:          fwk.Add,
		fwk.ResourceClaim: fwk.Add | fwk.Update,
	}, resources)
}

func TestIsSchedulableAfterPoolChange(t *testing.T) {
	tests := []struct {
		name     string
		old, new *unstructured.Unstructured
		want     fwk.QueueingHint
	}{
		{name: "new pool with room", new: poolObject(true, nodeStatus("n1", "16Gi", true)), want: fwk.Queue},
		{name: "freed enough on a node", old: poolObject(true, nodeStatus("n1", "2Gi", true)), new: poolObject(true, nodeStatus("n1", "8Gi", true)), want: fwk.Queue},
		{name: "freed, but less than the claim needs", old: poolObject(true, nodeStatus("n1", "1Gi", true)), new: poolObject(true, nodeStatus("n1", "3Gi", true)), want: fwk.QueueSkip},
		{name: "capacity shrank", old: poolObject(true, nodeStatus("n1", "8Gi", true)), new: poolObject(true, nodeStatus("n1", "6Gi", true)), want: fwk.QueueSkip},
		{name: "unchanged", old: poolObject(true, nodeStatus("n1", "8Gi", true)), new: poolObject(true, nodeStatus("n1", "8Gi", true)), want: fwk.QueueSkip},
		{name: "room on a node without agent does not help", old: poolObject(true, nodeStatus("n1", "0", true)), new: poolObject(true, nodeStatus("n1", "16Gi", false)), want: fwk.QueueSkip},
		{name: "agent connected", old: poolObject(true, nodeStatus("n1", "16Gi", false)), new: poolObject(true, nodeStatus("n1", "16Gi", true)), want: fwk.Queue},
		{name: "pool became ready", old: poolObject(false, nodeStatus("n1", "1Gi", true)), new: poolObject(true, nodeStatus("n1", "1Gi", true)), want: fwk.Queue},
	}
	ctx := testContext(t)
	pod := memPod("p", "c1")
	h := newFakeHandle(t, ctx, pod)
	h.dra.claims.set(memClaim("c1", "4Gi"))
	pl := newTestPlugin(t, ctx, newFakeService(t), h, nil)
	// typed is the pool as a typed informer would deliver it.
	typed := func(t *testing.T, u *unstructured.Unstructured) *v1alpha1.DynamicMemoryPool {
		pool := &v1alpha1.DynamicMemoryPool{}
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, pool))
		return pool
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, _ := ktesting.NewTestContext(t)
			var old interface{}
			if tc.old != nil {
				old = tc.old
			}
			got, err := pl.isSchedulableAfterPoolChange(logger, pod, old, tc.new)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got, "unstructured, from the framework's dynamic informer")

			old = nil
			if tc.old != nil {
				old = typed(t, tc.old)
			}
			got, err = pl.isSchedulableAfterPoolChange(logger, pod, old, typed(t, tc.new))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got, "typed")
		})
	}
}

func TestIsSchedulableAfterPoolChangeRefusesOtherObjects(t *testing.T) {
	ctx := testContext(t)
	pl := newTestPlugin(t, ctx, newFakeService(t), newFakeHandle(t, ctx), nil)
	logger, _ := ktesting.NewTestContext(t)
	got, err := pl.isSchedulableAfterPoolChange(logger, memPod("p"), nil, &resourceapi.ResourceClaim{})
	assert.ErrorContains(t, err, "DynamicMemoryPool event carries *v1.ResourceClaim")
	assert.Equal(t, fwk.Queue, got, "when in doubt, the pod is queued")
}

func TestIsSchedulableAfterClaimChange(t *testing.T) {
	pod := memPod("p", "c1")
	generated := memClaim("p-mem-x7", "1Gi")
	generated.OwnerReferences = []metav1.OwnerReference{{UID: pod.UID, Kind: "Pod", Name: "p"}}
	tests := []struct {
		name  string
		claim *resourceapi.ResourceClaim
		want  fwk.QueueingHint
	}{
		{name: "the pod's claim", claim: memClaim("c1", "1Gi"), want: fwk.Queue},
		{name: "claim generated for the pod", claim: generated, want: fwk.Queue},
		{name: "another pod's claim", claim: memClaim("c2", "1Gi"), want: fwk.QueueSkip},
	}
	ctx := testContext(t)
	pl := newTestPlugin(t, ctx, newFakeService(t), newFakeHandle(t, ctx), nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, _ := ktesting.NewTestContext(t)
			got, err := pl.isSchedulableAfterClaimChange(logger, pod, nil, tc.claim)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
