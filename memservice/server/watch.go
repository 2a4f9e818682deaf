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
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

// hub fans pool snapshots out to WatchPools streams. The ledger only signals a change
// (a non-blocking send); the hub builds one snapshot per round, at most one per
// interval, and hands it to every subscriber's one-slot mailbox, replacing a snapshot
// not yet taken: a slow receiver skips intermediate snapshots and never holds up the
// ledger or other receivers.
type hub struct {
	build    func() *memservicev1.PoolSnapshot
	clock    clock.Clock
	interval time.Duration // least time between two snapshots
	kick     chan struct{}

	mu       sync.Mutex
	subs     map[*subscriber]struct{}
	latest   *memservicev1.PoolSnapshot
	revision uint64
	onCount  func(int)
}

type subscriber struct {
	mailbox chan *memservicev1.PoolSnapshot
}

func newHub(build func() *memservicev1.PoolSnapshot, clk clock.Clock, interval time.Duration, onCount func(int)) *hub {
	return &hub{
		build: build, clock: clk, interval: interval, kick: make(chan struct{}, 1),
		subs: map[*subscriber]struct{}{}, onCount: onCount,
	}
}

// Notify says something changed; it never blocks.
func (h *hub) Notify() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// run publishes snapshots until ctx ends. After a change it publishes at once if the
// last snapshot is at least an interval old, else when the interval is over: the
// changes made meanwhile are all in that one snapshot, so the last state of a burst
// is always published. Only built snapshots count: after a round without
// subscribers, a new subscriber gets its first snapshot at once.
func (h *hub) run(ctx context.Context) {
	var built time.Time // when the last snapshot was built
	for {
		if now := h.clock.Now(); h.publish() {
			built = now
		}
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		}
		if wait := h.interval - h.clock.Since(built); wait > 0 {
			t := h.clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
		}
	}
}

// publish builds a snapshot and offers it to every subscriber. With none, it builds
// nothing and drops the latest snapshot, so that the next subscriber gets a fresh
// one. It reports whether it built a snapshot.
func (h *hub) publish() bool {
	// Changes signalled until now are in the snapshot built below.
	select {
	case <-h.kick:
	default:
	}
	h.mu.Lock()
	idle := len(h.subs) == 0
	if idle {
		h.latest = nil
	}
	h.mu.Unlock()
	if idle {
		return false
	}
	snap := h.build()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.revision++
	snap.Revision = h.revision
	h.latest = snap
	for s := range h.subs {
		s.offer(snap)
	}
	return true
}

// offer puts snap in the mailbox, dropping an older snapshot not yet taken.
func (s *subscriber) offer(snap *memservicev1.PoolSnapshot) {
	for {
		select {
		case s.mailbox <- snap:
			return
		default:
		}
		select {
		case <-s.mailbox:
		default:
		}
	}
}

func (h *hub) subscribe() *subscriber {
	s := &subscriber{mailbox: make(chan *memservicev1.PoolSnapshot, 1)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	fresh := h.latest == nil
	if !fresh {
		s.offer(h.latest)
	}
	n := len(h.subs)
	h.mu.Unlock()
	if fresh {
		h.Notify()
	}
	if h.onCount != nil {
		h.onCount(n)
	}
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	n := len(h.subs)
	h.mu.Unlock()
	if h.onCount != nil {
		h.onCount(n)
	}
}

// WatchPools streams snapshots until the client goes away.
func (s *Server) WatchPools(_ *memservicev1.WatchPoolsRequest, stream memservicev1.MemoryService_WatchPoolsServer) error {
	sub := s.hub.subscribe()
	defer s.hub.unsubscribe(sub)
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the memory service is stopping; watch again")
		case snap := <-sub.mailbox:
			// Snapshots are shared between subscribers; marshalling only reads them.
			if err := stream.Send(snap); err != nil {
				return err
			}
		}
	}
}
