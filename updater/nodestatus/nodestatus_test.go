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

package nodestatus

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"
)

func TestUpdatePatchesCapacityAndCondition(t *testing.T) {
	ctx := context.Background()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("24Gi")},
			Allocatable: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("23Gi")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	client := fake.NewClientset(node)
	start := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	clk := testingclock.NewFakeClock(start)
	u := New(client, "node-1", clk)

	require.NoError(t, u.Update(ctx, Status{OnlineBytes: 2 << 30, Ready: true, Reason: "SessionEstablished", Message: "connected to memservice:8443"}))
	got, err := client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	require.NoError(t, err)
	want := resource.MustParse("2147483648")
	assert.True(t, want.Equal(got.Status.Capacity[ResourceName]), "capacity %v", got.Status.Capacity)
	assert.True(t, want.Equal(got.Status.Allocatable[ResourceName]), "allocatable %v", got.Status.Allocatable)
	assert.True(t, resource.MustParse("24Gi").Equal(got.Status.Capacity[corev1.ResourceMemory]), "the kubelet's memory is kept")
	require.Len(t, got.Status.Conditions, 2, "NodeReady is kept")
	cond := agentCondition(t, got)
	assert.Equal(t, corev1.ConditionTrue, cond.Status)
	assert.Equal(t, "SessionEstablished", cond.Reason)
	assert.Equal(t, start, cond.LastTransitionTime.UTC())

	// Same status again: no request.
	client.ClearActions()
	require.NoError(t, u.Update(ctx, Status{OnlineBytes: 2 << 30, Ready: true, Reason: "SessionEstablished", Message: "connected to memservice:8443"}))
	assert.Empty(t, client.Actions())

	// More memory, still ready: the transition time stays.
	clk.Step(time.Minute)
	require.NoError(t, u.Update(ctx, Status{OnlineBytes: 3 << 30, Ready: true, Reason: "SessionEstablished", Message: "connected"}))
	got, err = client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, start, agentCondition(t, got).LastTransitionTime.UTC())
	assert.Equal(t, start.Add(time.Minute), agentCondition(t, got).LastHeartbeatTime.UTC())

	// Session lost: the condition turns False with a new transition time.
	clk.Step(time.Minute)
	require.NoError(t, u.Update(ctx, Status{OnlineBytes: 3 << 30, Ready: false, Reason: "SessionLost", Message: "memory service unreachable"}))
	got, err = client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	require.NoError(t, err)
	cond = agentCondition(t, got)
	assert.Equal(t, corev1.ConditionFalse, cond.Status)
	assert.Equal(t, start.Add(2*time.Minute), cond.LastTransitionTime.UTC())
	assert.Equal(t, "memory service unreachable", cond.Message)
}

func TestUpdateNamesTheNodeOnError(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("get", "nodes", func(clienttesting.Action) (bool, runtime.Object, error) {
		return false, nil, nil
	})
	u := New(client, "missing", testingclock.NewFakeClock(time.Now()))
	err := u.Update(context.Background(), Status{Ready: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "node missing")
}

func agentCondition(t *testing.T, node *corev1.Node) corev1.NodeCondition {
	t.Helper()
	for _, c := range node.Status.Conditions {
		if c.Type == ConditionAgentReady {
			return c
		}
	}
	t.Fatalf("node %s has no %s condition: %v", node.Name, ConditionAgentReady, node.Status.Conditions)
	return corev1.NodeCondition{}
}
