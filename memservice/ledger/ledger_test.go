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

package ledger_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

const (
	mi = int64(1) << 20
	gi = int64(1) << 30
)

func newLedger(t testing.TB, pools ...ledger.Pool) (*ledger.Ledger, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := ledger.New(clk, ledger.Options{ReservationTTL: time.Minute, ReleasedRetention: time.Hour})
	for _, p := range pools {
		require.NoError(t, l.SetPool(p))
		l.SetPoolReady(p.Name, true, "")
	}
	return l, clk
}

func poolA() ledger.Pool {
	return ledger.Pool{Name: "cxl-a", Capacity: 16 * gi, BlockSize: 128 * mi, HostWindow: 8 * gi, Nodes: []string{"node1", "node2"}}
}

func req(uid, node string, bytes int64) ledger.Request {
	return ledger.Request{Claim: ledger.ClaimRef{UID: uid, Namespace: "ns", Name: "claim-" + uid}, Node: node, Bytes: bytes}
}

func TestRoundUp(t *testing.T) {
	tests := []struct {
		name      string
		n, block  int64
		want      int64
		wantValid bool
	}{
		{"an exact multiple stays", 256 * mi, 128 * mi, 256 * mi, true},
		{"one byte over a block takes the next block", 128*mi + 1, 128 * mi, 256 * mi, true},
		{"one byte takes a block", 1, 128 * mi, 128 * mi, true},
		{"a gigabyte block", 3*gi + 5, gi, 4 * gi, true},
		{"overflow is reported", 1<<63 - 1, gi, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ledger.RoundUp(tc.n, tc.block)
			assert.Equal(t, tc.wantValid, ok)
			if tc.wantValid {
				assert.Equal(t, tc.want, got)
			}
		})
	}
}

func TestReserveRoundsUpToTheBlockSize(t *testing.T) {
	l, clk := newLedger(t, poolA())
	r, err := l.Reserve(req("u1", "node1", 100*mi))
	require.NoError(t, err)
	assert.Equal(t, int64(100*mi), r.Requested)
	assert.Equal(t, int64(128*mi), r.Bytes)
	assert.Equal(t, "cxl-a", r.Pool)
	assert.Equal(t, v1alpha1.PhaseReserved, r.State)
	assert.Equal(t, clk.Now().Add(time.Minute), r.ExpiresAt)
	s := l.Snapshot()
	assert.Equal(t, 16*gi-128*mi, s.Pools[0].Free)
	require.NoError(t, l.CheckInvariants())
}

func TestReserveIsIdempotent(t *testing.T) {
	l, clk := newLedger(t, poolA())
	first, err := l.Reserve(req("u1", "node1", gi))
	require.NoError(t, err)
	rev := l.Revision()
	clk.Step(10 * time.Second)
	again, err := l.Reserve(req("u1", "node1", gi))
	require.NoError(t, err)
	assert.Equal(t, first, again, "the second call returns the same reservation")
	assert.Equal(t, rev, l.Revision(), "the second call changes nothing")
	assert.Equal(t, 15*gi, l.Snapshot().Pools[0].Free)
}

func TestReserveRefusals(t *testing.T) {
	tests := []struct {
		name     string
		prepare  func(*ledger.Ledger)
		req      ledger.Request
		wantCode ledger.Code
		wantMsg  string
	}{
		{name: "zero bytes", req: req("u1", "node1", 0), wantCode: ledger.CodeInvalid, wantMsg: "bytes: must be positive, got 0"},
		{name: "negative bytes", req: req("u1", "node1", -5), wantCode: ledger.CodeInvalid, wantMsg: "bytes: must be positive"},
		{name: "no claim UID", req: req("", "node1", gi), wantCode: ledger.CodeInvalid, wantMsg: "claim.uid: required"},
		{name: "no node", req: req("u1", "", gi), wantCode: ledger.CodeInvalid, wantMsg: "node: required"},
		{name: "unknown node", req: req("u1", "node9", gi), wantCode: ledger.CodeNotFound, wantMsg: `node "node9" is not attached to any pool`},
		{name: "unknown pool", req: func() ledger.Request { r := req("u1", "node1", gi); r.Pool = "nope"; return r }(), wantCode: ledger.CodeNotFound, wantMsg: `pool "nope" does not exist`},
		{name: "over the host window", req: req("u1", "node1", 9*gi), wantCode: ledger.CodeExhausted, wantMsg: "node node1 can take 8Gi more from pool cxl-a (window 8Gi), claim needs 9Gi"},
		{
			name: "over the pool capacity",
			prepare: func(l *ledger.Ledger) {
				_, _ = l.Reserve(req("a", "node1", 8*gi))
				_, _ = l.Reserve(req("b", "node2", 6*gi))
			},
			req: req("u1", "node2", 3*gi), wantCode: ledger.CodeExhausted, wantMsg: "pool cxl-a has 2Gi free, claim needs 3Gi",
		},
		{
			name:    "same claim on another node",
			prepare: func(l *ledger.Ledger) { _, _ = l.Reserve(req("u1", "node1", gi)) },
			req:     req("u1", "node2", gi), wantCode: ledger.CodeConflict, wantMsg: "already reserved on node node1, not node2",
		},
		{
			name:    "same claim with another size",
			prepare: func(l *ledger.Ledger) { _, _ = l.Reserve(req("u1", "node1", gi)) },
			req:     req("u1", "node1", 2*gi), wantCode: ledger.CodeConflict, wantMsg: "already reserved for",
		},
		{
			name:    "pool not ready",
			prepare: func(l *ledger.Ledger) { l.SetPoolReady("cxl-a", false, "QMP socket refused") },
			req:     req("u1", "node1", gi), wantCode: ledger.CodeUnavailable, wantMsg: "QMP socket refused",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newLedger(t, poolA())
			if tc.prepare != nil {
				tc.prepare(l)
			}
			before := l.List()
			beforeSnap := l.Snapshot()
			_, err := l.Reserve(tc.req)
			require.Error(t, err)
			assert.Equal(t, tc.wantCode, ledger.CodeOf(err), "code of %v", err)
			assert.Contains(t, err.Error(), tc.wantMsg)
			assert.Equal(t, before, l.List(), "a refused call changes no reservation")
			assert.Equal(t, beforeSnap, l.Snapshot(), "a refused call changes no pool")
			require.NoError(t, l.CheckInvariants())
		})
	}
}

func TestReservePacksIntoTheFullestPool(t *testing.T) {
	b := poolA()
	b.Name = "cxl-b"
	l, _ := newLedger(t, poolA(), b)
	_, err := l.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: "x"}, Node: "node2", Pool: "cxl-b", Bytes: 2 * gi})
	require.NoError(t, err)
	r, err := l.Reserve(req("u1", "node1", gi))
	require.NoError(t, err)
	assert.Equal(t, "cxl-b", r.Pool, "the fuller pool is preferred")
}

func TestEveryStateTransition(t *testing.T) {
	l, clk := newLedger(t, poolA())
	_, err := l.Reserve(req("u1", "node1", 300*mi))
	require.NoError(t, err)

	clk.Step(time.Second)
	r, started, err := l.Provision(req("u1", "node1", 300*mi))
	require.NoError(t, err)
	assert.True(t, started)
	assert.Equal(t, v1alpha1.PhaseProvisioning, r.State)
	assert.Equal(t, []v1alpha1.Extent{{Offset: 0, Length: 384 * mi}}, r.Extents)
	assert.True(t, r.ExpiresAt.IsZero(), "a provisioned claim does not expire")

	again, started, err := l.Provision(req("u1", "node1", 300*mi))
	require.NoError(t, err)
	assert.False(t, started, "provisioning twice starts nothing")
	assert.Equal(t, r, again)

	_, err = l.MarkReleased("u1")
	assert.Equal(t, ledger.CodeConflict, ledger.CodeOf(err), "a Provisioning claim cannot be marked released")

	clk.Step(time.Second)
	r, err = l.MarkOnline("u1", []int32{1})
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseOnline, r.State)
	assert.Equal(t, []int32{1}, r.NUMANodes)
	assert.Equal(t, 384*mi, l.Snapshot().Pools[0].Online)

	r, found, pending := l.BeginRelease("u1")
	assert.True(t, found)
	assert.True(t, pending)
	assert.Equal(t, v1alpha1.PhaseReleasing, r.State)
	assert.Zero(t, l.Snapshot().Pools[0].Online, "releasing memory is not counted online")
	assert.Equal(t, 384*mi, l.Snapshot().Pools[0].Reserved, "releasing memory still holds capacity")

	_, _, pending = l.BeginRelease("u1")
	assert.True(t, pending, "a second release waits for the one in flight")

	r, err = l.MarkReleased("u1")
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseReleased, r.State)
	assert.Equal(t, 16*gi, l.Snapshot().Pools[0].Free)
	require.NoError(t, l.CheckInvariants())

	r, found, pending = l.BeginRelease("u1")
	assert.True(t, found)
	assert.False(t, pending, "releasing a released claim is a no-op")
	assert.Equal(t, v1alpha1.PhaseReleased, r.State)

	// A released claim can be reserved again (DRA may allocate the same claim again).
	r, err = l.Reserve(req("u1", "node2", gi))
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseReserved, r.State)
	require.NoError(t, l.CheckInvariants())
}

func TestFailedProvisioningKeepsCapacityUntilReleased(t *testing.T) {
	l, _ := newLedger(t, poolA())
	_, _, err := l.Provision(req("u1", "node1", gi))
	require.NoError(t, err)
	r, err := l.MarkFailed("u1", "backend: add extents: device busy")
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseFailed, r.State)
	assert.Equal(t, "backend: add extents: device busy", r.Message)
	assert.Equal(t, 15*gi, l.Snapshot().Pools[0].Free)

	again, started, err := l.Provision(req("u1", "node1", gi))
	require.NoError(t, err)
	assert.False(t, started, "a failed claim is not provisioned again until released")
	assert.Equal(t, v1alpha1.PhaseFailed, again.State)

	_, _, pending := l.BeginRelease("u1")
	require.True(t, pending)
	_, err = l.MarkReleased("u1")
	require.NoError(t, err)
	assert.Equal(t, 16*gi, l.Snapshot().Pools[0].Free)
	require.NoError(t, l.CheckInvariants())
}

func TestReleaseOfAReservedEntryIsImmediate(t *testing.T) {
	l, _ := newLedger(t, poolA())
	_, err := l.Reserve(req("u1", "node1", gi))
	require.NoError(t, err)
	r, found, pending := l.BeginRelease("u1")
	assert.True(t, found)
	assert.False(t, pending)
	assert.Equal(t, v1alpha1.PhaseReleased, r.State)
	_, ok := l.Get("u1")
	assert.False(t, ok)
	_, found, _ = l.BeginRelease("unknown")
	assert.False(t, found)
	assert.Equal(t, 16*gi, l.Snapshot().Pools[0].Free)
}

func TestReservedEntriesExpireAfterTheTTL(t *testing.T) {
	l, clk := newLedger(t, poolA())
	_, err := l.Reserve(req("old", "node1", gi))
	require.NoError(t, err)
	clk.Step(30 * time.Second)
	_, err = l.Reserve(req("young", "node1", gi))
	require.NoError(t, err)
	_, _, err = l.Provision(req("provisioned", "node2", gi))
	require.NoError(t, err)

	assert.Empty(t, l.Expire(), "nothing is due yet")
	clk.Step(30 * time.Second)
	expired := l.Expire()
	require.Len(t, expired, 1)
	assert.Equal(t, "old", expired[0].Claim.UID)
	assert.Equal(t, v1alpha1.PhaseReleased, expired[0].State)
	assert.Contains(t, expired[0].Message, "expired after 1m0s")

	clk.Step(time.Hour)
	expired = l.Expire()
	require.Len(t, expired, 1)
	assert.Equal(t, "young", expired[0].Claim.UID)
	_, ok := l.Get("provisioned")
	assert.True(t, ok, "a provisioned claim never expires")
	assert.Equal(t, 15*gi, l.Snapshot().Pools[0].Free)
	require.NoError(t, l.CheckInvariants())
}

func TestProvisionMovesAReservationToTheAllocatedPool(t *testing.T) {
	b := poolA()
	b.Name = "cxl-b"
	l, _ := newLedger(t, poolA(), b)
	r, err := l.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: "u1"}, Node: "node1", Pool: "cxl-a", Bytes: gi})
	require.NoError(t, err)
	require.Equal(t, "cxl-a", r.Pool)
	r, _, err = l.Provision(ledger.Request{Claim: ledger.ClaimRef{UID: "u1"}, Node: "node1", Pool: "cxl-b", Bytes: gi})
	require.NoError(t, err)
	assert.Equal(t, "cxl-b", r.Pool)
	s := l.Snapshot()
	assert.Equal(t, 16*gi, s.Pools[0].Free)
	assert.Equal(t, 15*gi, s.Pools[1].Free)
	require.NoError(t, l.CheckInvariants())
}

func TestExtentsFragmentAndMerge(t *testing.T) {
	p := ledger.Pool{Name: "small", Capacity: 4 * gi, BlockSize: gi, HostWindow: 4 * gi, Nodes: []string{"n"}}
	l, _ := newLedger(t, p)
	for _, uid := range []string{"a", "b", "c", "d"} {
		_, _, err := l.Provision(req(uid, "n", gi))
		require.NoError(t, err)
	}
	for _, uid := range []string{"a", "c"} {
		l.BeginRelease(uid)
		_, err := l.MarkReleased(uid)
		require.NoError(t, err)
	}
	r, _, err := l.Provision(req("e", "n", 2*gi))
	require.NoError(t, err)
	assert.Equal(t, []v1alpha1.Extent{{Offset: 0, Length: gi}, {Offset: 2 * gi, Length: gi}}, r.Extents)
	require.NoError(t, l.CheckInvariants())
}

func TestRestoreRebuildsTotals(t *testing.T) {
	l, clk := newLedger(t, poolA())
	online := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "u1"}, Node: "node1", Pool: "cxl-a", Requested: gi, Bytes: gi,
		State: v1alpha1.PhaseOnline, Extents: []v1alpha1.Extent{{Offset: 2 * gi, Length: gi}}, ReservedAt: clk.Now(),
	}
	require.NoError(t, l.Restore(online))
	err := l.Restore(ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "u2"}, Node: "node2", Pool: "cxl-a", Requested: gi, Bytes: gi,
		State: v1alpha1.PhaseProvisioning, Extents: []v1alpha1.Extent{{Offset: 2 * gi, Length: gi}},
	})
	assert.Equal(t, ledger.CodeConflict, ledger.CodeOf(err), "overlapping extents are refused: %v", err)
	s := l.Snapshot()
	assert.Equal(t, gi, s.Pools[0].Online)
	assert.Equal(t, 15*gi, s.Pools[0].Free)
	require.NoError(t, l.CheckInvariants())
}

func TestPoolChangesThatStrandReservationsAreRefused(t *testing.T) {
	l, _ := newLedger(t, poolA())
	_, err := l.Reserve(req("u1", "node1", 4*gi))
	require.NoError(t, err)
	tests := []struct {
		name   string
		mutate func(*ledger.Pool)
		want   string
	}{
		{"smaller capacity than reserved", func(p *ledger.Pool) { p.Capacity = 2 * gi; p.HostWindow = 2 * gi }, "capacity 2Gi is less than the 4Gi reserved"},
		{"another block size", func(p *ledger.Pool) { p.BlockSize = gi }, "block size cannot change"},
		{"detach a node that holds memory", func(p *ledger.Pool) { p.Nodes = []string{"node2"} }, "node node1 cannot be detached"},
		{"a window below what a node holds", func(p *ledger.Pool) { p.HostWindow = 2 * gi }, "host window 2Gi is less than the 4Gi node node1 holds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := poolA()
			tc.mutate(&p)
			err := l.SetPool(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	p := poolA()
	p.Capacity = 32 * gi
	p.Nodes = append(p.Nodes, "node3")
	require.NoError(t, l.SetPool(p), "growing a pool and attaching a node is fine")
	assert.Equal(t, 28*gi, l.Snapshot().Pools[0].Free)
	require.NoError(t, l.CheckInvariants())
	assert.Error(t, l.RemovePool("cxl-a"))
}

func ExampleFormatBytes() {
	fmt.Println(ledger.FormatBytes(16*gi), ledger.FormatBytes(384*mi))
	// Output: 16Gi 384Mi
}

// A record that cannot be restored is refused whole, with a code and a message naming
// what is wrong, and leaves the ledger as it was: the next records restore, the free
// list is intact, and the invariants hold (a rebuild never fails on one bad record).
func TestRestoreIsAllOrNothingPerRecord(t *testing.T) {
	base := func(uid string) ledger.Reservation {
		return ledger.Reservation{
			Claim: ledger.ClaimRef{UID: uid, Namespace: "ns", Name: "c-" + uid}, Node: "node1", Pool: "cxl-a",
			Requested: gi, Bytes: gi, State: v1alpha1.PhaseOnline,
			Extents: []v1alpha1.Extent{{Offset: 4 * gi, Length: gi}},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*ledger.Reservation)
		code    ledger.Code
		message string
	}{
		{"its second extent overlaps one it already took", func(r *ledger.Reservation) {
			r.Bytes, r.Requested = 2*gi, 2*gi
			r.Extents = []v1alpha1.Extent{{Offset: 4 * gi, Length: gi}, {Offset: 4*gi + 512*mi, Length: gi}}
		}, ledger.CodeInvalid, "overlaps"},
		{"its second extent overlaps another claim's", func(r *ledger.Reservation) {
			r.Bytes, r.Requested = 2*gi, 2*gi
			r.Extents = []v1alpha1.Extent{{Offset: 4 * gi, Length: gi}, {Offset: 0, Length: gi}}
		}, ledger.CodeConflict, "is not free"},
		{"an extent past the capacity", func(r *ledger.Reservation) {
			r.Extents = []v1alpha1.Extent{{Offset: 16 * gi, Length: gi}}
		}, ledger.CodeInvalid, "outside the pool's region"},
		{"an extent not aligned to the block", func(r *ledger.Reservation) {
			r.Extents = []v1alpha1.Extent{{Offset: 4*gi + mi, Length: gi}}
		}, ledger.CodeInvalid, "not aligned to the pool's block size"},
		{"bytes not a multiple of the block", func(r *ledger.Reservation) {
			r.Bytes, r.Requested = gi+mi, gi+mi
			r.Extents = []v1alpha1.Extent{{Offset: 4 * gi, Length: gi + mi}}
		}, ledger.CodeInvalid, "multiple of the pool's block size"},
		{"bytes that are not the request rounded up", func(r *ledger.Reservation) {
			r.Requested = 128 * mi
		}, ledger.CodeInvalid, "rounded up"},
		{"a negative extent", func(r *ledger.Reservation) {
			r.Extents = []v1alpha1.Extent{{Offset: -gi, Length: gi}}
		}, ledger.CodeInvalid, "outside the pool's region"},
		{"no bytes", func(r *ledger.Reservation) {
			r.Bytes, r.Requested, r.Extents = 0, 0, nil
		}, ledger.CodeInvalid, "holds no memory"},
		{"an unknown phase", func(r *ledger.Reservation) {
			r.State = "Lost"
			r.Extents = []v1alpha1.Extent{{Offset: 4 * gi, Length: gi}}
		}, ledger.CodeInvalid, "phase"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newLedger(t, poolA())
			other := base("other")
			other.Extents = []v1alpha1.Extent{{Offset: 0, Length: gi}}
			require.NoError(t, l.Restore(other))
			before := l.Snapshot().Pools[0]

			bad := base("bad")
			tc.mutate(&bad)
			err := l.Restore(bad)
			require.Error(t, err)
			assert.Equal(t, tc.code, ledger.CodeOf(err), "%v", err)
			assert.Contains(t, err.Error(), tc.message)
			assert.Contains(t, err.Error(), "bad", "the error names the claim")

			_, ok := l.Get("bad")
			assert.False(t, ok, "a refused record is not in the ledger")
			assert.Equal(t, before, l.Snapshot().Pools[0], "a refused record changes nothing")
			require.NoError(t, l.CheckInvariants())
			// Every byte the bad record named and no one holds is still free.
			good := base("good")
			good.Bytes, good.Requested = 2*gi, 2*gi
			good.Extents = []v1alpha1.Extent{{Offset: 4 * gi, Length: 2 * gi}}
			require.NoError(t, l.Restore(good), "the next record restores")
			require.NoError(t, l.CheckInvariants())
		})
	}
}

// A record set aside is not served and the free ranges it names are withheld from its
// pool, rounded out to blocks and clipped to the region, so they are never given to
// another claim; what others hold stays theirs.
func TestSetAsideWithholdsWhatTheRecordNames(t *testing.T) {
	l, _ := newLedger(t, poolA())
	other := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "other"}, Node: "node2", Pool: "cxl-a", Requested: gi, Bytes: gi,
		State: v1alpha1.PhaseOnline, Extents: []v1alpha1.Extent{{Offset: 0, Length: gi}},
	}
	require.NoError(t, l.Restore(other))
	bad := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "bad"}, Node: "node1", Pool: "cxl-a", Requested: 3 * gi, Bytes: 3 * gi,
		State: v1alpha1.PhaseOnline, Extents: []v1alpha1.Extent{
			{Offset: 512 * mi, Length: gi + mi},  // overlaps other's, misaligned end
			{Offset: 15 * gi, Length: 4 * gi},    // past the capacity
			{Offset: 15 * gi, Length: 1<<63 - 1}, // hostile: Offset+Length overflows
		},
	}
	err := l.Restore(bad)
	require.Error(t, err)
	a, ok := l.SetAside(bad, err.Error())
	require.True(t, ok)
	assert.Equal(t, []v1alpha1.Extent{{Offset: gi, Length: 640 * mi}, {Offset: 15 * gi, Length: gi}}, a.Withheld,
		"free blocks the record names: other's gigabyte stays other's, the rest is rounded to blocks and clipped")
	require.NoError(t, l.CheckInvariants())
	s := l.Snapshot().Pools[0]
	assert.Equal(t, gi+640*mi, s.Withheld)
	assert.Equal(t, 16*gi-gi-gi-640*mi, s.Free)

	_, ok = l.Get("bad")
	assert.False(t, ok, "a set-aside record is not served")
	_, err = l.Reserve(req("bad", "node1", gi))
	assert.Equal(t, ledger.CodeConflict, ledger.CodeOf(err), "its claim cannot be reserved again: %v", err)
	_, _, err = l.Provision(req("bad", "node1", gi))
	assert.Equal(t, ledger.CodeConflict, ledger.CodeOf(err), "nor provisioned: %v", err)
	assert.Len(t, l.SetAsideClaims(), 1)

	// What is left can be reserved and provisioned to the last byte, never from a
	// withheld range.
	for i := 0; ; i++ {
		r, _, err := l.Provision(req(fmt.Sprintf("u%d", i), []string{"node1", "node2"}[i%2], 128*mi))
		if err != nil {
			assert.Equal(t, ledger.CodeExhausted, ledger.CodeOf(err), "%v", err)
			break
		}
		for _, e := range r.Extents {
			for _, w := range a.Withheld {
				require.False(t, e.Overlaps(w), "extent %s of %s is withheld", e, r.Claim.UID)
			}
		}
	}
	require.NoError(t, l.CheckInvariants())

	err = l.SetPool(ledger.Pool{Name: "cxl-a", Capacity: 32 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"node1", "node2"}})
	assert.Equal(t, ledger.CodeConflict, ledger.CodeOf(err), "the block size does not change under withheld ranges: %v", err)
	assert.Error(t, l.RemovePool("cxl-a"), "a pool with withheld ranges is not removed")
}

func TestSetAsideOfARestoredClaimChangesNothing(t *testing.T) {
	l, _ := newLedger(t, poolA())
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "u1"}, Node: "node1", Pool: "cxl-a", Requested: gi, Bytes: gi,
		State: v1alpha1.PhaseOnline, Extents: []v1alpha1.Extent{{Offset: 0, Length: gi}},
	}
	require.NoError(t, l.Restore(r))
	_, ok := l.SetAside(r, "a second record with the same UID")
	assert.False(t, ok)
	assert.Empty(t, l.SetAsideClaims())
	require.NoError(t, l.CheckInvariants())
}

func TestSetAsideOfAnUnknownPoolWithholdsNothing(t *testing.T) {
	l, _ := newLedger(t, poolA())
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "u1"}, Node: "node1", Pool: "gone", Requested: gi, Bytes: gi,
		State: v1alpha1.PhaseOnline, Extents: []v1alpha1.Extent{{Offset: 0, Length: gi}},
	}
	err := l.Restore(r)
	assert.Equal(t, ledger.CodeNotFound, ledger.CodeOf(err))
	a, ok := l.SetAside(r, err.Error())
	require.True(t, ok)
	assert.Empty(t, a.Withheld)
	assert.Equal(t, int64(0), l.Snapshot().Pools[0].Withheld)
	require.NoError(t, l.CheckInvariants())
}

func TestWithholdAddsOnlyFreeRangesOfASetAsideClaim(t *testing.T) {
	l, _ := newLedger(t, poolA())
	r := ledger.Reservation{
		Claim: ledger.ClaimRef{UID: "bad"}, Node: "node1", Pool: "cxl-a", Requested: gi, Bytes: gi + mi,
		State: v1alpha1.PhaseOnline, Extents: []v1alpha1.Extent{{Offset: 0, Length: gi + mi}},
	}
	err := l.Restore(r)
	require.Error(t, err)
	_, ok := l.SetAside(r, err.Error())
	require.True(t, ok)
	require.NoError(t, l.Withhold("bad", []v1alpha1.Extent{{Offset: 512 * mi, Length: 2 * gi}}))
	require.NoError(t, l.Withhold("bad", []v1alpha1.Extent{{Offset: 512 * mi, Length: 2 * gi}}), "again: nothing more")
	a := l.SetAsideClaims()[0]
	assert.Equal(t, []v1alpha1.Extent{{Offset: 0, Length: gi + 128*mi}, {Offset: gi + 128*mi, Length: gi + 384*mi}}, a.Withheld)
	assert.Equal(t, int64(2*gi+512*mi), l.Snapshot().Pools[0].Withheld)
	require.NoError(t, l.CheckInvariants())
	assert.Equal(t, ledger.CodeNotFound, ledger.CodeOf(l.Withhold("other", nil)))
}

func TestMessagesAreCutToWhatTheRecordHolds(t *testing.T) {
	l, _ := newLedger(t, poolA())
	_, _, err := l.Provision(req("u1", "node1", gi))
	require.NoError(t, err)
	long := strings.Repeat("é", v1alpha1.ClaimMessageMaxLength)
	l.SetMessage("u1", long)
	r, _ := l.Get("u1")
	assert.LessOrEqual(t, len(r.Message), v1alpha1.ClaimMessageMaxLength)
	assert.True(t, utf8.ValidString(r.Message), "cut on a character boundary")
	assert.True(t, strings.HasSuffix(r.Message, "(cut)"))
	failed, err := l.MarkFailed("u1", long)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(failed.Message), v1alpha1.ClaimMessageMaxLength)
	assert.Equal(t, "short", ledger.Cut("short", 10))
}
