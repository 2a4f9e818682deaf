package server

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

func TestASlowSubscriberSkipsSnapshotsAndBlocksNothing(t *testing.T) {
	var builds atomic.Int64
	h := newHub(func() *memservicev1.PoolSnapshot {
		builds.Add(1)
		return &memservicev1.PoolSnapshot{}
	}, nil)
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
