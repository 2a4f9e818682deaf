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

package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

// A release whose memory cannot be taken offline shows on the record as condition
// ReleaseBlocked, beside the rest of its status, until the memory goes offline.
func TestAReleaseBlockedByBusyMemoryShowsOnTheRecord(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset()
	claims := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns")
	s := store.New(cs.DynamicMemoryV1alpha1(), "")
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
		Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib,
		State: v1alpha1.PhaseReleasing, Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
	}
	require.NoError(t, s.Create(ctx, r))
	require.NoError(t, s.Update(ctx, r), "the record as it is while releasing")
	condition := func() *metav1.Condition {
		obj, err := claims.Get(ctx, "claim", metav1.GetOptions{})
		require.NoError(t, err)
		require.NotNil(t, meta.FindStatusCondition(obj.Status.Conditions, dra.ConditionOnline), "the rest of the status is kept")
		return meta.FindStatusCondition(obj.Status.Conditions, v1alpha1.ClaimConditionReleaseBlocked)
	}

	require.NoError(t, s.ReleaseUnblocked(ctx, r))
	assert.Nil(t, condition(), "nothing to clear on a release that was never blocked")

	require.NoError(t, s.ReleaseBlocked(ctx, r, "memory of this claim cannot be taken back from node node1"))
	c := condition()
	require.NotNil(t, c)
	assert.Equal(t, metav1.ConditionTrue, c.Status)
	assert.Equal(t, v1alpha1.ReasonMemoryBusy, c.Reason)
	assert.Equal(t, "memory of this claim cannot be taken back from node node1", c.Message)

	other := r
	other.Claim.UID = "uid-2"
	require.NoError(t, s.ReleaseUnblocked(ctx, other), "a write for another claim of the same name")
	assert.Equal(t, metav1.ConditionTrue, condition().Status, "is not this record's")

	require.NoError(t, s.ReleaseUnblocked(ctx, r))
	c = condition()
	require.NotNil(t, c)
	assert.Equal(t, metav1.ConditionFalse, c.Status)
	assert.Equal(t, v1alpha1.ReasonMemoryOfflined, c.Reason)
}
