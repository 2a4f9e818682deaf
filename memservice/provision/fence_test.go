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

package provision_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision/provisiontest"
)

// lease is a provision.Lease that a test takes away.
type lease struct{ lost atomic.Bool }

func (l *lease) Check() error {
	if l.lost.Load() {
		return fmt.Errorf("%w: the Lease passed to another instance", provision.ErrFenced)
	}
	return nil
}

// orderedStore logs its writes in the order they happen beside the device's calls,
// and refuses, as fenced, the writes of the phases in refuse.
type orderedStore struct {
	mu     sync.Mutex
	log    []string
	refuse map[v1alpha1.ClaimPhase]bool
}

func (s *orderedStore) write(r ledger.Reservation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse[r.State] {
		s.log = append(s.log, "store refused "+string(r.State))
		return fmt.Errorf("update status to %s: %w", r.State, provision.ErrFenced)
	}
	s.log = append(s.log, "store "+string(r.State))
	return nil
}

func (s *orderedStore) event(e string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, e)
}

func (s *orderedStore) events() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

func (s *orderedStore) Create(_ context.Context, r ledger.Reservation) error { return s.write(r) }
func (s *orderedStore) Update(_ context.Context, r ledger.Reservation) error { return s.write(r) }

// Released logs the record's removal as PhaseReleased.
func (s *orderedStore) Released(_ context.Context, r ledger.Reservation) error {
	r.State = v1alpha1.PhaseReleased
	return s.write(r)
}

// ReleaseBlocked and ReleaseUnblocked log the condition writes (provision.Conditions).
func (s *orderedStore) ReleaseBlocked(context.Context, ledger.Reservation, string) error {
	s.event("condition ReleaseBlocked=True")
	return nil
}

func (s *orderedStore) ReleaseUnblocked(context.Context, ledger.Reservation) error {
	s.event("condition ReleaseBlocked=False")
	return nil
}

// loggingDevice logs its calls into the store's log.
type loggingDevice struct {
	flakyDevice
	log *orderedStore
}

func (d *loggingDevice) Add(ctx context.Context, host int32, tag string, ext []v1alpha1.Extent) error {
	d.log.event("device add")
	return d.flakyDevice.Add(ctx, host, tag, ext)
}

func (d *loggingDevice) Release(ctx context.Context, host int32, tag string, ext []v1alpha1.Extent) error {
	d.log.event("device release")
	return d.flakyDevice.Release(ctx, host, tag, ext)
}

func fencedSetup(t *testing.T) (*provision.Manager, *ledger.Ledger, *agents, *orderedStore, *loggingDevice, *lease) {
	t.Helper()
	l := ledger.New(nil, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "p", Capacity: 8 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"n"}}))
	l.SetPoolReady("p", true, "")
	st := &orderedStore{refuse: map[v1alpha1.ClaimPhase]bool{}}
	dev, ag, ls := &loggingDevice{log: st}, &agents{}, &lease{}
	m := provision.New(provision.Config{Ledger: l, Devices: provisiontest.Devices{Pool: "p", Backend: dev, HostIDs: map[string]int32{"n": 0}},
		Agents: ag, Store: st, Lease: ls, RetryInterval: time.Millisecond, MaxRetryInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	m.Start(ctx)
	t.Cleanup(func() {
		cancel()
		m.Wait()
	})
	return m, l, ag, st, dev, ls
}

func TestAnInstanceThatLostItsLeaseAddsNoExtents(t *testing.T) {
	m, _, _, st, _, ls := fencedSetup(t)
	ls.lost.Store(true)
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseFailed, r.State)
	assert.Contains(t, r.Message, "fenced")
	m.Wait()
	assert.NotContains(t, st.events(), "device add")
}

func TestAnInstanceThatLostItsLeaseReleasesNoExtents(t *testing.T) {
	m, l, ag, st, _, ls := fencedSetup(t)
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	require.Equal(t, v1alpha1.PhaseOnline, r.State)

	ls.lost.Store(true)
	_, _, err = m.RemoveMemory(context.Background(), "u", false)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cur, _ := l.Get("u")
		return strings.Contains(cur.Message, "fenced")
	}, 5*time.Second, time.Millisecond, "the release step says why it waits")
	assert.Equal(t, 1, ag.offlines, "the agent offlined: the record said Releasing first")
	assert.NotContains(t, st.events(), "device release", "the device keeps the extents while the lease is lost")
	cur, _ := l.Get("u")
	assert.Equal(t, v1alpha1.PhaseReleasing, cur.State)
}

func TestAReleaseRefusedAsFencedByTheAPIServerTouchesNothing(t *testing.T) {
	m, l, ag, st, _, _ := fencedSetup(t)
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	require.Equal(t, v1alpha1.PhaseOnline, r.State)
	m.Wait() // the Online record is written

	st.mu.Lock()
	st.refuse[v1alpha1.PhaseReleasing] = true
	st.mu.Unlock()
	_, _, err = m.RemoveMemory(context.Background(), "u", true)
	require.NoError(t, err)
	assert.Equal(t, []string{"store Provisioning", "device add", "store Online", "store refused Releasing"}, st.events())
	assert.Zero(t, ag.offlines, "the agent was not asked to offline")
	cur, _ := l.Get("u")
	assert.Equal(t, v1alpha1.PhaseReleasing, cur.State, "left for the leader to release")
}

func TestAResumedProvisioningWritesItsRecordBeforeTheDeviceAdds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse bool
		want   []string
	}{
		{"written", false, []string{"store Provisioning", "device add", "store Online"}},
		{"refused as fenced", true, []string{"store refused Provisioning", "store Failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, l, _, st, _, _ := fencedSetup(t)
			st.refuse[v1alpha1.PhaseProvisioning] = tc.refuse
			restored := ledger.Reservation{Claim: ledger.ClaimRef{UID: "u", Namespace: "ns", Name: "u"}, Node: "n", Pool: "p",
				Requested: gi, Bytes: gi, State: v1alpha1.PhaseProvisioning, Extents: []v1alpha1.Extent{{Offset: 0, Length: gi}}, OnHost: true}
			require.NoError(t, l.Restore(restored))
			m.Resume(restored)
			m.Wait()
			assert.Equal(t, tc.want, st.events())
		})
	}
}
