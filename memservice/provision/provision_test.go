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
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision/provisiontest"
)

const gi = int64(1) << 30

// flakyDevice fails its first releaseFailures releases and records adds.
type flakyDevice struct {
	mu              sync.Mutex
	releaseFailures int
	releases        int
	adds            int
	addErr          error
	releaseErr      error // the error of failing releases (default "device busy")
}

func (d *flakyDevice) Check(context.Context) (backend.Capacity, error) {
	return backend.Capacity{}, nil
}
func (d *flakyDevice) List(context.Context) ([]backend.HostExtent, error) {
	return nil, backend.ErrNotSupported
}

func (d *flakyDevice) Add(context.Context, int32, string, []v1alpha1.Extent) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.adds++
	return d.addErr
}

func (d *flakyDevice) Release(context.Context, int32, string, []v1alpha1.Extent) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.releases++
	if d.releases <= d.releaseFailures {
		if d.releaseErr != nil {
			return d.releaseErr
		}
		return errors.New("device busy")
	}
	return nil
}

// agents answers every command at once.
type agents struct {
	mu       sync.Mutex
	offlines int
	// pools are the pools the offline commands named.
	pools []string
	// onlines are the online commands sent.
	onlines []*memservicev1.OnlineCommand
}

func (a *agents) Online(_ context.Context, _ string, cmd *memservicev1.OnlineCommand) (*memservicev1.CommandResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onlines = append(a.onlines, cmd)
	return &memservicev1.CommandResult{Outcome: memservicev1.CommandResult_OUTCOME_ONLINE, NumaNodes: []int32{3}}, nil
}

func (a *agents) Offline(_ context.Context, _ string, cmd *memservicev1.OfflineCommand) (*memservicev1.CommandResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.offlines++
	a.pools = append(a.pools, cmd.GetPool())
	return &memservicev1.CommandResult{Outcome: memservicev1.CommandResult_OUTCOME_OFFLINE}, nil
}

type states struct {
	mu  sync.Mutex
	log []v1alpha1.ClaimPhase
	// hold, when set, holds every Update until it is closed; holdRemoval every
	// Released, which first sends on removing, when set.
	hold, holdRemoval chan struct{}
	removing          chan struct{}
}

func (s *states) add(r ledger.Reservation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, r.State)
	return nil
}

// wait waits until the channel *hold names, if any, is closed.
func (s *states) wait(hold *chan struct{}) {
	s.mu.Lock()
	h := *hold
	s.mu.Unlock()
	if h != nil {
		<-h
	}
}

func (s *states) Create(_ context.Context, r ledger.Reservation) error { return s.add(r) }
func (s *states) Update(_ context.Context, r ledger.Reservation) error {
	s.wait(&s.hold)
	return s.add(r)
}

// Released logs the record's removal as PhaseReleased.
func (s *states) Released(_ context.Context, r ledger.Reservation) error {
	s.mu.Lock()
	removing := s.removing
	s.mu.Unlock()
	if removing != nil {
		removing <- struct{}{}
	}
	s.wait(&s.holdRemoval)
	r.State = v1alpha1.PhaseReleased
	return s.add(r)
}

func setup(t *testing.T, dev *flakyDevice) (*provision.Manager, *ledger.Ledger, *agents, *states) {
	t.Helper()
	l := ledger.New(nil, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "p", Capacity: 8 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"n"}}))
	l.SetPoolReady("p", true, "")
	ag, st := &agents{}, &states{}
	m := provision.New(provision.Config{Ledger: l, Devices: provisiontest.Devices{Pool: "p", Backend: dev, HostIDs: map[string]int32{"n": 0}}, Agents: ag, Store: st, RetryInterval: time.Millisecond, MaxRetryInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	m.Start(ctx)
	t.Cleanup(func() {
		cancel()
		m.Wait()
	})
	return m, l, ag, st
}

func req(uid string) ledger.Request {
	return ledger.Request{Claim: ledger.ClaimRef{UID: uid, Namespace: "ns", Name: uid}, Node: "n", Bytes: gi}
}

func TestReleaseRetriesTheDeviceUntilItAnswers(t *testing.T) {
	dev := &flakyDevice{releaseFailures: 3}
	m, l, ag, st := setup(t, dev)
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	require.Equal(t, v1alpha1.PhaseOnline, r.State)
	assert.Equal(t, []int32{3}, r.NUMANodes)

	r, found, err := m.RemoveMemory(context.Background(), "u", true)
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, v1alpha1.PhaseReleased, r.State)
	assert.Equal(t, 4, dev.releases, "three failures, then success")
	assert.Equal(t, 1, ag.offlines, "the agent offlined once, before the device released")
	require.NotEmpty(t, r.Pool)
	assert.Equal(t, []string{r.Pool}, ag.pools, "the offline command names the pool, so the agent finds its region")
	assert.Equal(t, []v1alpha1.ClaimPhase{v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline, v1alpha1.PhaseReleasing, v1alpha1.PhaseReleased}, st.log)
	assert.Equal(t, 8*gi, l.Snapshot().Pools[0].Free)
}

// The pool gets the memory back only once the record is gone. Freed before, the
// capacity (or the very claim, allocated again elsewhere) could be granted anew while
// the old record still named it: a restart in between would rebuild both, more than
// the pool holds (found by the chaos suite's over-commit check).
func TestTheMemoryIsFreedOnlyOnceItsRecordIsRemoved(t *testing.T) {
	m, l, _, st := setup(t, &flakyDevice{})
	_, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	st.mu.Lock()
	st.holdRemoval, st.removing = make(chan struct{}), make(chan struct{}, 1)
	st.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, err := m.RemoveMemory(context.Background(), "u", true)
		assert.NoError(t, err)
	}()
	select {
	case <-st.removing: // the device released; the removal is held
	case <-time.After(5 * time.Second):
		t.Fatal("the record's removal was not started")
	}
	r, ok := l.Get("u")
	require.True(t, ok)
	assert.Equal(t, v1alpha1.PhaseReleasing, r.State, "the record is not removed yet")
	assert.Equal(t, 7*gi, l.Snapshot().Pools[0].Free)
	_, err = l.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: "u", Namespace: "ns", Name: "u"}, Node: "n2", Bytes: gi})
	assert.Error(t, err, "the claim cannot be granted anew while its record is there")

	close(st.holdRemoval)
	<-done
	r, _ = l.Get("u")
	assert.Equal(t, v1alpha1.PhaseReleased, r.State)
	assert.Equal(t, 8*gi, l.Snapshot().Pools[0].Free)
}

func TestAFailedAddIsRecordedAndReleasedWithoutTheAgent(t *testing.T) {
	dev := &flakyDevice{addErr: backend.ErrMisaligned}
	m, l, ag, st := setup(t, dev)
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseFailed, r.State)
	assert.Contains(t, r.Message, "extent is not aligned to the region block size")
	assert.False(t, r.OnHost)

	_, _, err = m.RemoveMemory(context.Background(), "u", true)
	require.NoError(t, err)
	assert.Zero(t, ag.offlines, "memory never reached the host: no offline")
	assert.Equal(t, []v1alpha1.ClaimPhase{v1alpha1.PhaseProvisioning, v1alpha1.PhaseFailed, v1alpha1.PhaseReleasing, v1alpha1.PhaseReleased}, st.log)
	assert.Equal(t, 8*gi, l.Snapshot().Pools[0].Free)
}

func TestResumeFinishesARestoredProvisioning(t *testing.T) {
	dev := &flakyDevice{}
	m, l, _, st := setup(t, dev)
	restored := ledger.Reservation{Claim: ledger.ClaimRef{UID: "u", Namespace: "ns", Name: "u"}, Node: "n", Pool: "p",
		Requested: gi, Bytes: gi, State: v1alpha1.PhaseProvisioning, Extents: []v1alpha1.Extent{{Offset: 0, Length: gi}}, OnHost: true}
	require.NoError(t, l.Restore(restored))
	m.Resume(restored)
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err, "AddMemory waits for the resumed flight")
	assert.Equal(t, v1alpha1.PhaseOnline, r.State)
	assert.Equal(t, 1, dev.adds, "the extents were added again (a no-op for the device if they were there)")
	m.Wait()
	assert.Equal(t, []v1alpha1.ClaimPhase{v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline}, st.log, "the record is written again before the device adds")
}

// Each provisioning that ends, Online or Failed, is told to Settled (the reconciler
// writes the claim's device conditions then), once the ledger holds the outcome.
func TestEveryProvisioningThatEndsIsToldToSettled(t *testing.T) {
	l := ledger.New(nil, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "p", Capacity: 8 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"n"}}))
	l.SetPoolReady("p", true, "")
	var mu sync.Mutex
	var settled []string
	dev := &flakyDevice{}
	m := provision.New(provision.Config{
		Ledger: l, Devices: provisiontest.Devices{Pool: "p", Backend: dev, HostIDs: map[string]int32{"n": 0}}, Agents: &agents{}, Store: &states{},
		Settled: func(uid string) {
			r, _ := l.Get(uid)
			mu.Lock()
			defer mu.Unlock()
			settled = append(settled, uid+" "+string(r.State))
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	m.Start(ctx)
	defer func() {
		cancel()
		m.Wait()
	}()
	_, err := m.AddMemory(context.Background(), req("online"))
	require.NoError(t, err)
	dev.mu.Lock()
	dev.addErr = errors.New("no capacity left on the device")
	dev.mu.Unlock()
	r, err := m.AddMemory(context.Background(), req("failed"))
	require.NoError(t, err)
	require.Equal(t, v1alpha1.PhaseFailed, r.State, r.Message)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"online Online", "failed Failed"}, settled)
}

// TestAddMemoryAnswersBeforeTheOnlineRecord: the ledger is authoritative, so
// AddMemory answers once the memory is online there; the DynamicMemoryClaim's
// status follows.
func TestAddMemoryAnswersBeforeTheOnlineRecord(t *testing.T) {
	m, _, _, st := setup(t, &flakyDevice{})
	st.mu.Lock()
	st.hold = make(chan struct{})
	st.mu.Unlock()
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseOnline, r.State, "answered while the Online record is still being written")
	st.mu.Lock()
	assert.Equal(t, []v1alpha1.ClaimPhase{v1alpha1.PhaseProvisioning}, st.log)
	st.mu.Unlock()
	close(st.hold)
	m.Wait()
	assert.Equal(t, []v1alpha1.ClaimPhase{v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline}, st.log, "the Online record is written after the answer")
}

// A device's error can be any length; the claim's message is written to
// status.message, which the CRD bounds, so it is cut to fit.
func TestDeviceErrorsAreCutToFitTheClaimMessage(t *testing.T) {
	long := strings.Repeat("é", 3*v1alpha1.ClaimMessageMaxLength)
	dev := &flakyDevice{addErr: fmt.Errorf("%w: %s", backend.ErrMisaligned, long), releaseFailures: math.MaxInt, releaseErr: errors.New(long)}
	m, l, _, _ := setup(t, dev)
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseFailed, r.State)
	assert.Contains(t, r.Message, "extent is not aligned to the region block size")
	assert.LessOrEqual(t, utf8.RuneCountInString(r.Message), v1alpha1.ClaimMessageMaxLength)
	assert.True(t, utf8.ValidString(r.Message))

	_, _, err = m.RemoveMemory(context.Background(), "u", false)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cur, _ := l.Get("u")
		return strings.Contains(cur.Message, "release extents from node n")
	}, 5*time.Second, time.Millisecond, "a failing release step is said in the message")
	cur, _ := l.Get("u")
	assert.LessOrEqual(t, utf8.RuneCountInString(cur.Message), v1alpha1.ClaimMessageMaxLength)
	assert.True(t, utf8.ValidString(cur.Message))
}
