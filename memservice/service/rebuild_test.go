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

package service

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2/ktesting"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

// listingDevice is a device that lists what it holds and counts releases.
type listingDevice struct {
	provision.Backend // not called
	held              []backend.HostExtent
	released          []backend.HostExtent
}

func (d *listingDevice) List(context.Context) ([]backend.HostExtent, error) { return d.held, nil }

func (d *listingDevice) Release(_ context.Context, host int32, tag string, ext []v1alpha1.Extent) error {
	for _, e := range ext {
		d.released = append(d.released, backend.HostExtent{HostID: host, Tag: tag, Extent: e})
	}
	return nil
}

type oneDevice struct {
	dev     provision.Backend
	hostIDs map[string]int32
}

func (o oneDevice) Devices(string) (provision.Backend, map[string]int32, bool) {
	return o.dev, o.hostIDs, true
}

type noFlights struct{}

func (noFlights) Resume(ledger.Reservation) {}
func (noFlights) ResumeRelease(string)      {}

type fixedLease struct{ err error }

func (l fixedLease) Check() error { return l.err }

func TestRebuildReleasesAnExtentNoClaimOwnsOnlyWhileLeading(t *testing.T) {
	orphan := backend.HostExtent{HostID: 1, Tag: "0b7c3f6e-1d2a-4c5b-8e9f-00000000beef", Extent: v1alpha1.Extent{Offset: 4 * gi, Length: gi}}
	for _, tc := range []struct {
		name  string
		lease error
		want  []backend.HostExtent
	}{
		{name: "leading", want: []backend.HostExtent{orphan}},
		{name: "lease lost", lease: fmt.Errorf("%w: the Lease names another holder", provision.ErrFenced)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := ledger.New(nil, ledger.Options{})
			require.NoError(t, l.SetPool(ledger.Pool{Name: "cxl-a", Capacity: 16 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"node1", "node2"}}))
			dev := &listingDevice{held: []backend.HostExtent{orphan}}
			rb := &rebuilder{
				store: store.New(fake.NewSimpleClientset().DynamicMemoryV1alpha1(), "a"), ledger: l,
				devices: oneDevice{dev: dev, hostIDs: map[string]int32{"node1": 0, "node2": 1}},
				flights: noFlights{}, metrics: metrics.New(l, func() []string { return nil }), lease: fixedLease{tc.lease},
			}
			_, ctx := ktesting.NewTestContext(t)
			require.NoError(t, rb.rebuild(ctx))
			assert.Equal(t, tc.want, dev.released)
		})
	}
}

// A record of an older version (its extents in its status only) whose creation was
// cut short before its first status write holds nothing: that version acted only
// after both writes. Restored as a reservation, it held bytes without extents, and a
// record set aside next to it broke the ledger's invariants: the service crash-looped
// (chaos seed 2).
func TestRebuildFinishesARecordCutShortBeforeItsFirstStatusWrite(t *testing.T) {
	claim := func(uid, node string, bytes int64, extents ...v1alpha1.Extent) ledger.Reservation {
		return ledger.Reservation{
			Claim: ledger.ClaimRef{UID: uid, Namespace: "ns", Name: "claim-" + uid[len(uid)-4:]},
			Node:  node, Pool: "cxl-a", Requested: bytes, Bytes: bytes, State: v1alpha1.PhaseOnline, Extents: extents,
		}
	}
	online := claim("0b7c3f6e-1d2a-4c5b-8e9f-00000000000a", "node1", 8*gi, v1alpha1.Extent{Offset: 0, Length: 8 * gi})
	cutShort := claim("0b7c3f6e-1d2a-4c5b-8e9f-00000000000b", "node2", 8*gi, v1alpha1.Extent{Offset: 8 * gi, Length: 8 * gi})
	other := claim("0b7c3f6e-1d2a-4c5b-8e9f-00000000000c", "node2", 4*gi, v1alpha1.Extent{Offset: 12 * gi, Length: 4 * gi})
	unwritten := store.Object(cutShort)
	unwritten.Status = v1alpha1.DynamicMemoryClaimStatus{}
	unwritten.Spec.Extents = nil // an older version's record
	client := fake.NewSimpleClientset(store.Object(online), unwritten, store.Object(other))

	l := ledger.New(nil, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "cxl-a", Capacity: 16 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"node1", "node2"}}))
	rb := &rebuilder{
		store: store.New(client.DynamicMemoryV1alpha1(), ""), ledger: l,
		devices: oneDevice{dev: &listingDevice{held: []backend.HostExtent{
			{HostID: 0, Tag: online.Claim.UID, Extent: online.Extents[0]}, {HostID: 1, Tag: other.Claim.UID, Extent: other.Extents[0]},
		}}, hostIDs: map[string]int32{"node1": 0, "node2": 1}},
		flights: noFlights{}, metrics: metrics.New(l, func() []string { return nil }),
	}
	_, ctx := ktesting.NewTestContext(t)
	require.NoError(t, rb.rebuild(ctx))

	_, ok := l.Get(cutShort.Claim.UID)
	assert.False(t, ok, "the record cut short holds nothing in the ledger")
	for _, r := range []ledger.Reservation{online, other} {
		got, ok := l.Get(r.Claim.UID)
		require.True(t, ok, "claim %s restored", r.Claim.UID)
		assert.Equal(t, v1alpha1.PhaseOnline, got.State)
	}
	assert.Empty(t, l.SetAsideClaims())
	require.NoError(t, l.CheckInvariants())
	_, err := client.DynamicMemoryV1alpha1().DynamicMemoryClaims("ns").Get(ctx, unwritten.Name, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the record that holds nothing is removed: %v", err)
}

// resumed records the flights a rebuild resumes.
type resumed struct {
	noFlights
	claims []ledger.Reservation
}

func (r *resumed) Resume(res ledger.Reservation) { r.claims = append(r.claims, res) }

// A record is created with its extents right before the hardware acts, and its
// status is written only when the memory is online: a record without status may have
// had its extents added and onlined. The rebuild restores it as Provisioning with
// those extents, held in the ledger, and resumes its provisioning (adding extents the
// device holds already is a no-op; the agent onlines what is not online yet).
func TestRebuildResumesARecordCreatedWithItsExtentsBeforeItsStatus(t *testing.T) {
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "0b7c3f6e-1d2a-4c5b-8e9f-00000000000d", Namespace: "ns", Name: "claim-d"},
		Node:  "node2", Pool: "cxl-a", Requested: 4 * gi, Bytes: 4 * gi, State: v1alpha1.PhaseProvisioning,
		Extents: []v1alpha1.Extent{{Offset: 4 * gi, Length: 4 * gi}},
	}
	created := store.Object(r)
	created.Status = v1alpha1.DynamicMemoryClaimStatus{}
	client := fake.NewSimpleClientset(created)
	l := ledger.New(nil, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "cxl-a", Capacity: 16 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"node1", "node2"}}))
	flights := &resumed{}
	rb := &rebuilder{
		store: store.New(client.DynamicMemoryV1alpha1(), ""), ledger: l,
		devices: oneDevice{dev: &listingDevice{held: []backend.HostExtent{{HostID: 1, Tag: r.Claim.UID, Extent: r.Extents[0]}}},
			hostIDs: map[string]int32{"node1": 0, "node2": 1}},
		flights: flights, metrics: metrics.New(l, func() []string { return nil }),
	}
	_, ctx := ktesting.NewTestContext(t)
	require.NoError(t, rb.rebuild(ctx))

	got, ok := l.Get(r.Claim.UID)
	require.True(t, ok)
	assert.Equal(t, v1alpha1.PhaseProvisioning, got.State)
	assert.Equal(t, r.Extents, got.Extents, "its extents held")
	require.Len(t, flights.claims, 1, "its provisioning resumed")
	assert.Equal(t, r.Claim.UID, flights.claims[0].Claim.UID)
	assert.Equal(t, 12*gi, l.Snapshot().Pools[0].Free)
	require.NoError(t, l.CheckInvariants())
}
