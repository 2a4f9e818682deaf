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
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

func TestObjectRoundTripsEveryState(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	base := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "0b7c3f6e-1d2a-4c5b-8e9f-000000000001", Namespace: "ns", Name: "claim"},
		Pod:   ledger.PodRef{Name: "pod", UID: "0b7c3f6e-1d2a-4c5b-8e9f-000000000002"},
		Node:  "node1", Pool: "cxl-a", Requested: 100 << 20, Bytes: 128 << 20,
		Extents:    []v1alpha1.Extent{{Offset: 0, Length: 128 << 20}},
		ReservedAt: at, ProvisioningAt: at.Add(time.Second), UpdatedAt: at.Add(2 * time.Second),
	}
	for _, state := range []v1alpha1.ClaimPhase{v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline, v1alpha1.PhaseReleasing, v1alpha1.PhaseReleased, v1alpha1.PhaseFailed} {
		t.Run(string(state), func(t *testing.T) {
			r := base
			r.State = state
			if state == v1alpha1.PhaseOnline {
				r.OnlineAt, r.NUMANodes = at.Add(1500*time.Millisecond), []int32{1}
			}
			obj := store.Object(r)
			assert.Equal(t, "claim", obj.Name)
			assert.Equal(t, "ns", obj.Namespace)
			assert.Equal(t, map[string]string{v1alpha1.LabelClaimUID: r.Claim.UID, v1alpha1.LabelNode: "node1", v1alpha1.LabelPool: "cxl-a"}, obj.Labels)
			assert.Empty(t, obj.Finalizers, "the admission policy, not a finalizer, keeps others from deleting it")
			assert.Empty(t, obj.OwnerReferences, "the memory service ends its records itself, not the garbage collector")
			assert.Equal(t, "128Mi", obj.Spec.Size.String())
			assert.Equal(t, state, obj.Status.Phase)
			online := obj.Status.Conditions[0]
			assert.Equal(t, "Online", online.Type)
			assert.Equal(t, state == v1alpha1.PhaseOnline, online.Status == metav1.ConditionTrue)
			if state == v1alpha1.PhaseOnline {
				assert.Equal(t, 500*time.Millisecond, obj.Status.ProvisioningDuration.Duration)
			}

			back, err := store.Reservation(obj)
			require.NoError(t, err)
			assert.Equal(t, r.Claim, back.Claim)
			assert.Equal(t, r.Pod, back.Pod)
			assert.Equal(t, state, back.State)
			assert.Equal(t, r.Extents, back.Extents)
			assert.Equal(t, r.Bytes, back.Bytes)
			assert.Equal(t, r.Requested, back.Requested)
			assert.Equal(t, r.ProvisioningAt, back.ProvisioningAt)
			assert.Equal(t, state != v1alpha1.PhaseReleased, back.OnHost, "release offlines first after a restart")
		})
	}
}

func TestAnIncompleteRecordIsRefused(t *testing.T) {
	obj := store.Object(ledger.Reservation{Claim: ledger.ClaimRef{UID: "u", Namespace: "ns", Name: "c"}, Node: "n", State: v1alpha1.PhaseOnline})
	_, err := store.Reservation(obj)
	assert.ErrorContains(t, err, "DynamicMemoryClaim ns/c is incomplete")
}

func TestARecordWithoutPhaseIsRestoredAsReserved(t *testing.T) {
	// The service died between creating the record and its first status write:
	// Create returns only after both, and hardware acts only after Create, so
	// nothing was added to a device or asked of an agent.
	const gib = 1 << 30
	obj := store.Object(ledger.Reservation{Claim: ledger.ClaimRef{UID: "u", Namespace: "ns", Name: "c"}, Node: "n", Pool: "p", Requested: gib, Bytes: gib})
	obj.Status = v1alpha1.DynamicMemoryClaimStatus{}
	r, err := store.Reservation(obj)
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseReserved, r.State)
	assert.False(t, r.OnHost, "no agent was asked to online it")
	l := ledger.New(clock.RealClock{}, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "p", Capacity: 4 * gib, BlockSize: gib, HostWindow: 4 * gib, Nodes: []string{"n"}}))
	require.NoError(t, l.Restore(r), "the rebuild restores it instead of setting it aside")
}
