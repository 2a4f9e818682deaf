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
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

const gib = int64(1) << 30

func TestARecordFollowsItsClaimAndIsRemovedOnceReleased(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset()
	claims := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns")
	s := store.New(cs.DynamicMemoryV1alpha1(), "")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
		Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib,
		State:      v1alpha1.PhaseProvisioning,
		Extents:    []v1alpha1.Extent{{Offset: 0, Length: gib}},
		ReservedAt: at, ProvisioningAt: at, UpdatedAt: at,
	}

	require.NoError(t, s.Create(ctx, r))
	obj, err := claims.Get(ctx, "claim", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseProvisioning, obj.CurrentPhase(), "the record is written before the hardware acts")
	assert.Equal(t, r.Extents, obj.Spec.Extents, "with the extents the hardware is given")
	assert.Empty(t, obj.Status.Phase, "in one write: the status follows when the memory is online")
	assert.Empty(t, obj.Finalizers)

	r.State, r.OnlineAt = v1alpha1.PhaseOnline, at.Add(time.Second)
	require.NoError(t, s.Update(ctx, r))
	good, bad, err := s.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, bad)
	require.Len(t, good, 1)
	assert.Equal(t, v1alpha1.PhaseOnline, good[0].State)
	assert.Equal(t, r.Extents, good[0].Extents)

	r.State, r.ReleasingAt = v1alpha1.PhaseReleasing, at.Add(2*time.Second)
	require.NoError(t, s.Update(ctx, r))
	r.State, r.ReleasedAt = v1alpha1.PhaseReleased, at.Add(3*time.Second)
	require.NoError(t, s.Released(ctx, r))
	_, err = claims.Get(ctx, "claim", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the released record is gone: %v", err)
	require.NoError(t, s.Released(ctx, r), "again (a retry, or a restart after the removal)")

	r2 := r
	r2.Claim.UID, r2.State, r2.ReleasedAt = "uid-2", v1alpha1.PhaseProvisioning, time.Time{}
	require.NoError(t, s.Create(ctx, r2), "a new claim of the same name")
	obj, err = claims.Get(ctx, "claim", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "uid-2", obj.Labels[v1alpha1.LabelClaimUID])
	assert.Equal(t, v1alpha1.PhaseProvisioning, obj.CurrentPhase())
}

// Records an older version left behind when it released them (it wrote Released and
// dropped the finalizer, and the garbage collector deleted the record only once its
// ResourceClaim was gone) hold no memory: a new record of the same name replaces one,
// and Released removes one (a rebuild finishes them so).
func TestARecordAnOlderVersionReleasedIsReplacedOrRemoved(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		act  func(s *store.Store, r ledger.Reservation) error
	}{
		{"replaced by a new claim's record", func(s *store.Store, r ledger.Reservation) error {
			r.Claim.UID = "uid-2"
			return s.Create(ctx, r)
		}},
		{"removed", func(s *store.Store, r ledger.Reservation) error { return s.Released(ctx, r) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := store.Object(ledger.Reservation{
				Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
				Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib, State: v1alpha1.PhaseReleased,
				Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
			})
			old.Finalizers = nil
			old.OwnerReferences = []metav1.OwnerReference{{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaim", Name: "claim", UID: "uid-1"}}
			cs := fake.NewSimpleClientset(old)
			s := store.New(cs.DynamicMemoryV1alpha1(), "")
			r, err := store.Reservation(old)
			require.NoError(t, err)
			r.State, r.Extents = v1alpha1.PhaseProvisioning, []v1alpha1.Extent{{Offset: gib, Length: gib}}
			require.NoError(t, tc.act(s, r))
			obj, err := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Get(ctx, "claim", metav1.GetOptions{})
			if tc.name == "removed" {
				assert.True(t, apierrors.IsNotFound(err), "%v", err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "uid-2", obj.Labels[v1alpha1.LabelClaimUID])
			assert.Empty(t, obj.OwnerReferences)
		})
	}
}

// Node and pool names may be as long as the API allows (253 characters: FQDN hosts),
// longer than a label value; the record's labels still are valid and its spec keeps
// the full names.
func TestARecordOfALongNodeNameHasValidLabels(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset()
	s := store.New(cs.DynamicMemoryV1alpha1(), "")
	node := strings.Repeat("rack-12.", 24) + "example.com"
	pool := strings.Repeat("pool.", 20) + "cxl"
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
		Node:  node, Pool: pool, Requested: gib, Bytes: gib,
		State: v1alpha1.PhaseProvisioning, Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
	}
	require.NoError(t, s.Create(ctx, r))
	obj, err := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Get(ctx, "claim", metav1.GetOptions{})
	require.NoError(t, err)
	for k, v := range obj.Labels {
		assert.Empty(t, validation.IsValidLabelValue(v), "label %s=%q", k, v)
	}
	assert.Equal(t, node, obj.Spec.Node)
	assert.Equal(t, pool, obj.Spec.Pool)
	good, bad, err := s.List(ctx)
	require.NoError(t, err)
	require.Empty(t, bad)
	assert.Equal(t, node, good[0].Node, "read back with the full name")
}

// A record is written only for the claim it belongs to: once claim A's record was
// replaced by claim B's of the same name (the ResourceClaim was recreated), A's late
// status write and A's release leave B's record alone.
func TestWritesOfAnOldClaimDoNotTouchANewRecordOfTheSameName(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset()
	claims := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns")
	s := store.New(cs.DynamicMemoryV1alpha1(), "")
	a := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-a", Namespace: "ns", Name: "claim"},
		Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib,
		State: v1alpha1.PhaseProvisioning, Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
	}
	require.NoError(t, s.Create(ctx, a))
	a.State = v1alpha1.PhaseReleased
	require.NoError(t, s.Released(ctx, a))

	b := a
	b.Claim.UID, b.State, b.Extents = "uid-b", v1alpha1.PhaseProvisioning, []v1alpha1.Extent{{Offset: gib, Length: gib}}
	require.NoError(t, s.Create(ctx, b))

	a.State, a.Message = v1alpha1.PhaseFailed, "late write of claim A"
	assert.Error(t, s.Update(ctx, a), "A's status write is refused")
	assert.NoError(t, s.Released(ctx, a), "A's record is gone: nothing of A's is left to release")
	obj, err := claims.Get(ctx, "claim", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "uid-b", obj.Labels[v1alpha1.LabelClaimUID])
	assert.Equal(t, v1alpha1.PhaseProvisioning, obj.CurrentPhase(), "B's status is B's")
	assert.Equal(t, []v1alpha1.Extent{{Offset: gib, Length: gib}}, obj.Spec.Extents)
}

// A record of the same claim that still holds memory is the truth about that memory:
// a second reservation of the claim that differs from it (another node, pool or size)
// is refused and leaves it as it is; the same reservation again (a retry after a
// crash between the two writes of Create) is taken up.
func TestARecordThatHoldsMemoryIsNotOverwrittenByAnotherReservationOfItsClaim(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset()
	claims := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns")
	s := store.New(cs.DynamicMemoryV1alpha1(), "")
	held := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
		Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib,
		State: v1alpha1.PhaseProvisioning, Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
	}
	require.NoError(t, s.Create(ctx, held))
	held.State = v1alpha1.PhaseOnline
	require.NoError(t, s.Update(ctx, held))

	for name, change := range map[string]func(*ledger.Reservation){
		"node": func(r *ledger.Reservation) { r.Node = "node2" },
		"pool": func(r *ledger.Reservation) { r.Pool = "cxl-b" },
		"size": func(r *ledger.Reservation) { r.Requested, r.Bytes = 2*gib, 2*gib },
	} {
		other := held
		other.State, other.Extents = v1alpha1.PhaseProvisioning, []v1alpha1.Extent{{Offset: 4 * gib, Length: other.Bytes}}
		change(&other)
		err := s.Create(ctx, other)
		require.Error(t, err, "another %s", name)
		assert.Contains(t, err.Error(), "still holds memory")
		obj, err := claims.Get(ctx, "claim", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "node1", obj.Spec.Node)
		assert.Equal(t, "cxl-a", obj.Spec.Pool)
		assert.Equal(t, gib, obj.Spec.Size.Value())
		assert.Equal(t, v1alpha1.PhaseOnline, obj.Status.Phase)
		assert.Equal(t, held.Extents, obj.Status.Extents)
	}

	held.State = v1alpha1.PhaseProvisioning
	require.NoError(t, s.Create(ctx, held), "the same reservation again")
}

// Removing a released record costs the API server one delete, preconditioned on the
// record's UID as its create returned it, and no read. A record this instance did not
// write or list (it was restarted, and the rebuild did not see it) is read first; one
// of an earlier version holds the finalizer, which goes before the delete.
func TestRemovingAReleasedRecordIsOneDelete(t *testing.T) {
	ctx := context.Background()
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
		Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib,
		State: v1alpha1.PhaseOnline, Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
	}
	legacy := store.Object(r)
	legacy.Finalizers = []string{v1alpha1.Finalizer}
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, cs *fake.Clientset, s *store.Store)
		want    []string
	}{
		{"written by this instance", func(t *testing.T, _ *fake.Clientset, s *store.Store) {
			require.NoError(t, s.Create(ctx, r))
		}, []string{"delete "}},
		{"listed by this instance", func(t *testing.T, cs *fake.Clientset, s *store.Store) {
			_, err := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Create(ctx, store.Object(r), metav1.CreateOptions{})
			require.NoError(t, err)
			_, _, err = s.List(ctx)
			require.NoError(t, err)
		}, []string{"delete "}},
		{"not seen by this instance", func(t *testing.T, cs *fake.Clientset, _ *store.Store) {
			_, err := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Create(ctx, store.Object(r), metav1.CreateOptions{})
			require.NoError(t, err)
		}, []string{"get ", "delete "}},
		{"an earlier version's, with the finalizer", func(t *testing.T, cs *fake.Clientset, s *store.Store) {
			_, err := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Create(ctx, legacy, metav1.CreateOptions{})
			require.NoError(t, err)
			_, _, err = s.List(ctx)
			require.NoError(t, err)
		}, []string{"get ", "patch ", "delete "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewSimpleClientset()
			s := store.New(cs.DynamicMemoryV1alpha1(), "")
			tc.prepare(t, cs, s)
			cs.ClearActions()
			released := r
			released.State = v1alpha1.PhaseReleased
			require.NoError(t, s.Released(ctx, released))
			var verbs []string
			for _, a := range cs.Actions() {
				verbs = append(verbs, a.GetVerb()+" "+a.GetSubresource())
			}
			assert.Equal(t, tc.want, verbs)
			_, err := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Get(ctx, "claim", metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "%v", err)
		})
	}
}

// A service killed between the two writes of a removal leaves the record without its
// finalizer, not deleted. Released again (the restarted service resumes the release)
// deletes it; a record of another claim under the name is left alone.
func TestARemovalCutShortIsFinished(t *testing.T) {
	ctx := context.Background()
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
		Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib, State: v1alpha1.PhaseReleasing,
		Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
	}
	cutShort := store.Object(r)
	cutShort.Finalizers = nil
	cs := fake.NewSimpleClientset(cutShort)
	s := store.New(cs.DynamicMemoryV1alpha1(), "")

	other := r
	other.Claim.UID = "uid-2"
	require.NoError(t, s.Released(ctx, other))
	_, err := cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Get(ctx, "claim", metav1.GetOptions{})
	require.NoError(t, err, "another claim's removal leaves the record alone")

	r.State = v1alpha1.PhaseReleased
	require.NoError(t, s.Released(ctx, r))
	_, err = cs.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Get(ctx, "claim", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the record is deleted: %v", err)
}
