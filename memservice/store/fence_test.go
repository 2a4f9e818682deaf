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
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

// writers records the field manager of every write the fake API server receives.
type writers struct {
	mu  sync.Mutex
	got []string // "<verb> <subresource>: <field manager>"
}

func (w *writers) react(action k8stesting.Action) (bool, runtime.Object, error) {
	var manager string
	switch a := action.(type) {
	case k8stesting.CreateActionImpl:
		manager = a.GetCreateOptions().FieldManager
	case k8stesting.UpdateActionImpl:
		manager = a.GetUpdateOptions().FieldManager
	case k8stesting.PatchActionImpl:
		manager = a.GetPatchOptions().FieldManager
	default:
		return false, nil, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, action.GetVerb()+" "+action.GetSubresource()+": "+manager)
	return false, nil, nil
}

func TestEveryRecordWriteNamesTheLeader(t *testing.T) {
	for _, tc := range []struct {
		identity, manager string
	}{
		{"memservice-7d9f-abcde", "memservice/memservice-7d9f-abcde"},
		{"", "memservice"}, // no leader election
	} {
		t.Run(tc.manager, func(t *testing.T) {
			ctx := context.Background()
			cs := fake.NewSimpleClientset()
			w := &writers{}
			cs.PrependReactor("*", "dynamicmemoryclaims", w.react)
			s := store.New(cs.DynamicMemoryV1alpha1(), tc.identity)
			at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			r := ledger.Reservation{
				Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
				Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib,
				State: v1alpha1.PhaseProvisioning, Extents: []v1alpha1.Extent{{Offset: 0, Length: gib}},
				ReservedAt: at, ProvisioningAt: at, UpdatedAt: at,
			}
			require.NoError(t, s.Create(ctx, r))
			require.NoError(t, s.SetAside(ctx, r, "a test"))
			r.State, r.ReleasedAt = v1alpha1.PhaseReleased, at.Add(time.Second)
			require.NoError(t, s.Released(ctx, r))
			r2 := r
			r2.Claim.UID, r2.State = "uid-2", v1alpha1.PhaseProvisioning
			require.NoError(t, s.Create(ctx, r2), "a new claim of the same name")

			// Released's delete carries no field manager (DeleteOptions have none):
			// it is preconditioned on the record's UID, and not fenced
			// (docs/architecture.md, "Records fenced by the Lease").
			want := []string{
				"create : " + tc.manager,       // Create: one write
				"update status: " + tc.manager, // SetAside
				"create : " + tc.manager,       // the new claim's record
			}
			assert.Equal(t, want, w.got)
		})
	}
}

func TestAWriteTheLeaderPolicyRefusesIsFenced(t *testing.T) {
	ctx := context.Background()
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "claim"},
		Node:  "node1", Pool: "cxl-a", Requested: gib, Bytes: gib, State: v1alpha1.PhaseOnline,
	}
	gr := v1alpha1.Resource("dynamicmemoryclaims")
	for _, tc := range []struct {
		name   string
		err    error
		fenced bool
	}{
		{"refused by the leader policy", apierrors.NewForbidden(gr, "claim", errors.New(
			"ValidatingAdmissionPolicy '"+store.LeaderPolicy+"' with binding '"+store.LeaderPolicy+"' denied request: "+
				"the memory service instance b is not the holder of its Lease (a is)")), true},
		{"refused by RBAC", apierrors.NewForbidden(gr, "claim", errors.New(`User "system:serviceaccount:dynamic-memory-system:memservice" cannot patch resource`)), false},
		{"a conflict", apierrors.NewConflict(gr, "claim", errors.New("changed")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewSimpleClientset(store.Object(r))
			cs.PrependReactor("patch", "dynamicmemoryclaims", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tc.err
			})
			err := store.New(cs.DynamicMemoryV1alpha1(), "b").Update(ctx, r)
			require.Error(t, err)
			assert.Equal(t, tc.fenced, errors.Is(err, provision.ErrFenced), "fenced: %v", err)
			assert.Equal(t, apierrors.ReasonForError(tc.err), apierrors.ReasonForError(err), "the API server's error is kept")
		})
	}
}
