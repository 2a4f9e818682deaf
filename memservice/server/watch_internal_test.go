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

package server

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

func TestASlowSubscriberSkipsSnapshotsAndBlocksNothing(t *testing.T) {
	var builds atomic.Int64
	h := newHub(func() *memservicev1.PoolSnapshot {
		builds.Add(1)
		return &memservicev1.PoolSnapshot{}
	}, clock.RealClock{}, DefaultSnapshotInterval, nil)
	slow := h.subscribe()
	fast := h.subscribe()

	done := make(chan struct{})
	go func() {
		for range 1000 {
			h.publish()
		}
		close(done)
	}()
	var got []uint64
	for len(got) == 0 || got[len(got)-1] < 1000 {
		snap := <-fast.mailbox
		got = append(got, snap.GetRevision())
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publishing blocked on a subscriber that does not read")
	}
	for i := 1; i < len(got); i++ {
		assert.Greater(t, got[i], got[i-1], "revisions grow")
	}
	require.Len(t, slow.mailbox, 1)
	assert.Equal(t, uint64(1000), (<-slow.mailbox).GetRevision(), "the slow subscriber gets the latest snapshot only")

	h.unsubscribe(slow)
	h.unsubscribe(fast)
	before := builds.Load()
	h.publish()
	assert.Equal(t, before, builds.Load(), "no snapshot is built for nobody")
}

const testSnapshotInterval = 50 * time.Millisecond

// hubTest runs a hub on a fake clock. Its snapshots carry the "ledger state" set by
// change as their ledger revision.
type hubTest struct {
	t      *testing.T
	clock  *clocktesting.FakeClock
	hub    *hub
	state  atomic.Uint64
	builds atomic.Int64
	// Build number held (0: none): it signals building and waits for release.
	hold              int64
	building, release chan struct{}
}

func newHubTest(t *testing.T, hold int64) *hubTest {
	ht := &hubTest{
		t: t, clock: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		hold: hold, building: make(chan struct{}), release: make(chan struct{}),
	}
	ht.hub = newHub(func() *memservicev1.PoolSnapshot {
		snap := &memservicev1.PoolSnapshot{LedgerRevision: ht.state.Load()}
		if ht.builds.Add(1) == ht.hold {
			close(ht.building)
			<-ht.release
		}
		return snap
	}, ht.clock, testSnapshotInterval, nil)
	return ht
}

// start runs the hub until the test ends.
func (ht *hubTest) start() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ht.hub.run(ctx) })
	ht.t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

func (ht *hubTest) change(state uint64) {
	ht.state.Store(state)
	ht.hub.Notify()
}

// waitTimer waits until the hub waits out the interval.
func (ht *hubTest) waitTimer() {
	ht.t.Helper()
	require.Eventually(ht.t, ht.clock.HasWaiters, 10*time.Second, time.Millisecond, "the hub waits for the interval to end")
}

func (ht *hubTest) receive(s *subscriber) *memservicev1.PoolSnapshot {
	ht.t.Helper()
	select {
	case snap := <-s.mailbox:
		return snap
	case <-time.After(10 * time.Second):
		ht.t.Fatal("no snapshot")
		return nil
	}
}

func TestABurstOfChangesIsOneSnapshotOfTheLastState(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes uint64
	}{
		{"one change", 1},
		{"two changes", 2},
		{"a thousand changes", 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ht := newHubTest(t, 0)
			sub := ht.hub.subscribe()
			ht.start()
			require.Equal(t, uint64(0), ht.receive(sub).GetLedgerRevision(), "the first snapshot")

			for i := range tc.changes {
				ht.change(i + 1)
			}
			ht.waitTimer()
			ht.clock.Step(testSnapshotInterval - time.Nanosecond)
			assert.True(t, ht.clock.HasWaiters(), "the hub still waits")
			assert.Empty(t, sub.mailbox, "no snapshot within the interval")

			ht.clock.Step(time.Nanosecond)
			snap := ht.receive(sub)
			assert.Equal(t, tc.changes, snap.GetLedgerRevision(), "the snapshot shows the last state")
			assert.Equal(t, uint64(2), snap.GetRevision())
			assert.Equal(t, int64(2), ht.builds.Load(), "snapshots built: the first and one for the burst")
		})
	}
}

func TestAChangeAfterAQuietIntervalIsPublishedAtOnce(t *testing.T) {
	ht := newHubTest(t, 0)
	sub := ht.hub.subscribe()
	ht.start()
	ht.receive(sub)

	ht.clock.Step(testSnapshotInterval)
	ht.change(1)
	assert.Equal(t, uint64(1), ht.receive(sub).GetLedgerRevision(), "published without the clock moving on")
}

func TestAChangeWhileASnapshotIsBuiltIsPublishedAfterTheInterval(t *testing.T) {
	ht := newHubTest(t, 2)
	sub := ht.hub.subscribe()
	ht.start()
	ht.receive(sub)

	ht.change(1)
	ht.waitTimer()
	ht.clock.Step(testSnapshotInterval)
	<-ht.building
	ht.change(2)
	close(ht.release)
	assert.Equal(t, uint64(1), ht.receive(sub).GetLedgerRevision(), "the snapshot being built when the change came")

	ht.waitTimer()
	assert.Empty(t, sub.mailbox, "no snapshot within the interval")
	ht.clock.Step(testSnapshotInterval)
	assert.Equal(t, uint64(2), ht.receive(sub).GetLedgerRevision(), "the last change is published")
	assert.Equal(t, int64(3), ht.builds.Load())
}

func TestANewSubscriberGetsASnapshotAtOnce(t *testing.T) {
	t.Run("while the hub waits out the interval", func(t *testing.T) {
		ht := newHubTest(t, 0)
		first := ht.hub.subscribe()
		ht.start()
		ht.receive(first)
		ht.change(1)
		ht.waitTimer()

		second := ht.hub.subscribe()
		require.Len(t, second.mailbox, 1, "the latest snapshot, offered on subscribing")
		assert.Equal(t, uint64(0), (<-second.mailbox).GetLedgerRevision())

		ht.clock.Step(testSnapshotInterval)
		assert.Equal(t, uint64(1), ht.receive(first).GetLedgerRevision())
		assert.Equal(t, uint64(1), ht.receive(second).GetLedgerRevision())
	})
	t.Run("after the last subscriber left", func(t *testing.T) {
		ht := newHubTest(t, 0)
		first := ht.hub.subscribe()
		ht.start()
		ht.receive(first)
		ht.hub.unsubscribe(first)
		ht.change(1)
		ht.waitTimer()
		ht.clock.Step(testSnapshotInterval)
		require.Eventually(t, func() bool {
			ht.hub.mu.Lock()
			defer ht.hub.mu.Unlock()
			return ht.hub.latest == nil
		}, 10*time.Second, time.Millisecond, "the hub drops its snapshot in a round without subscribers")

		second := ht.hub.subscribe()
		assert.Equal(t, uint64(1), ht.receive(second).GetLedgerRevision(), "a fresh snapshot without the clock moving on")
		assert.Equal(t, int64(2), ht.builds.Load())
	})
}
