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
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/record"
	testingclock "k8s.io/utils/clock/testing"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision/provisiontest"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

// pinnedAgents answers offline commands as a node agent does while a memory block of
// the claim stays busy (pinned is set): BUSY, the memory still online.
type pinnedAgents struct {
	*agents
	mu     sync.Mutex
	pinned bool
	busy   int // busy answers given
}

func (a *pinnedAgents) pin(v bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pinned = v
}

func (a *pinnedAgents) busyAnswers() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.busy
}

func (a *pinnedAgents) Offline(ctx context.Context, node string, cmd *memservicev1.OfflineCommand) (*memservicev1.CommandResult, error) {
	a.mu.Lock()
	pinned := a.pinned
	if pinned {
		a.busy++
	}
	a.mu.Unlock()
	if pinned {
		msg := "offline memory block 9: still busy after 10 attempts"
		return &memservicev1.CommandResult{Outcome: memservicev1.CommandResult_OUTCOME_BUSY, Message: msg},
			fmt.Errorf("%w: node %s, claim %s: %s", session.ErrMemoryBusy, node, cmd.GetClaimUid(), msg)
	}
	return a.agents.Offline(ctx, node, cmd)
}

// pauses is a fake clock that records every pause (After) a flight takes.
type pauses struct {
	*testingclock.FakeClock
	mu    sync.Mutex
	taken []time.Duration
}

func (p *pauses) After(d time.Duration) <-chan time.Time {
	p.mu.Lock()
	p.taken = append(p.taken, d)
	p.mu.Unlock()
	return p.FakeClock.After(d)
}

func (p *pauses) list() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.taken...)
}

func nextEvent(t *testing.T, events *record.FakeRecorder) string {
	t.Helper()
	select {
	case e := <-events.Events:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event recorded")
		return ""
	}
}

// When the node agent cannot offline a claim's memory because a block stays busy,
// the claim ends in a clear state (condition ReleaseBlocked, a Warning event, the
// ReleasesBlocked gauge), the agent is asked again only every BusyRetryInterval (no
// online/offline churn every 30 s), and the release completes once the block goes
// offline, clearing the marks.
func TestABusyReleaseIsMarkedRetriedSlowlyAndCompletesOnceTheMemoryGoesOffline(t *testing.T) {
	l := ledger.New(nil, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "p", Capacity: 8 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"n"}}))
	l.SetPoolReady("p", true, "")
	ag := &pinnedAgents{agents: &agents{}}
	conditions := &provisiontest.Conditions{}
	events := record.NewFakeRecorder(10)
	met := metrics.New(l, nil)
	clk := &pauses{FakeClock: testingclock.NewFakeClock(time.Now())}
	m := provision.New(provision.Config{Ledger: l, Devices: provisiontest.Devices{Pool: "p", Backend: &flakyDevice{}, HostIDs: map[string]int32{"n": 0}},
		Agents: ag, Store: &states{}, Conditions: conditions, Events: events, Metrics: met, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	m.Start(ctx)
	t.Cleanup(func() {
		cancel()
		m.Wait()
	})
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	require.Equal(t, v1alpha1.PhaseOnline, r.State)

	ag.pin(true)
	_, _, err = m.RemoveMemory(context.Background(), "u", false)
	require.NoError(t, err)
	waitForPauses := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return len(clk.list()) == n && clk.HasWaiters() }, 10*time.Second, time.Millisecond)
	}
	waitForPauses(1)
	want := "memory of this claim cannot be taken back from node n: node agent cannot offline memory, a block stays busy: node n, claim u: offline memory block 9: still busy after 10 attempts. " +
		"It stays online and whole; the node agent is asked again every 10m0s. To free it, find and stop the process or driver pinning its pages " +
		"(the node's kernel log says \"page dumped because: unmovable page\"), or drain node n; the release then completes on its own"
	assert.Equal(t, []string{"u ReleaseBlocked=True: " + want}, conditions.Writes())
	assert.Equal(t, "Warning MemoryBusy "+want, nextEvent(t, events))
	assert.Equal(t, float64(1), testutil.ToFloat64(met.ReleasesBlocked.WithLabelValues("p", "n")))
	cur, _ := l.Get("u")
	assert.Equal(t, v1alpha1.PhaseReleasing, cur.State)
	assert.Equal(t, want, cur.Message, "the claim's message says it too")

	clk.Step(provision.DefaultBusyRetryInterval)
	waitForPauses(2)
	assert.Equal(t, []time.Duration{provision.DefaultBusyRetryInterval, provision.DefaultBusyRetryInterval}, clk.list(), "a busy answer is asked again after the long interval, not the release backoff")
	assert.Equal(t, 2, ag.busyAnswers())
	assert.Len(t, conditions.Writes(), 2)
	assert.Equal(t, float64(1), testutil.ToFloat64(met.ReleasesBlocked.WithLabelValues("p", "n")), "one claim, counted once")

	ag.pin(false)
	clk.Step(provision.DefaultBusyRetryInterval)
	r, _, err = m.RemoveMemory(context.Background(), "u", true)
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseReleased, r.State)
	assert.Equal(t, 1, ag.offlines, "the memory went offline once the block was free")
	assert.Equal(t, "u ReleaseBlocked=False", conditions.Writes()[2])
	nextEvent(t, events) // the second busy answer's
	assert.Equal(t, "Normal MemoryOfflined memory offlined on node n after being busy; the release goes on", nextEvent(t, events))
	assert.Equal(t, float64(0), testutil.ToFloat64(met.ReleasesBlocked.WithLabelValues("p", "n")))
	assert.Equal(t, 8*gi, l.Snapshot().Pools[0].Free)
}
