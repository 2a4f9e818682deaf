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
	"sync"
	"time"

	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

// leaseHold is this instance's own view of its hold on the leader Lease: the guard
// right before every device call (provision.Lease). It wraps the Lease lock of the
// leader elector and notes when each write naming this instance was sent: the hold
// runs from then for the lease duration. The API server stored the write later, and
// another candidate waits a full lease duration from when it saw it, so the hold
// ends before anyone else can take the Lease over.
type leaseHold struct {
	resourcelock.Interface
	clock    clock.PassiveClock
	duration time.Duration

	mu       sync.Mutex
	until    time.Time
	isLeader func() bool // the elector's view of the Lease's holder; nil until it runs
}

func newLeaseHold(lock resourcelock.Interface, c clock.PassiveClock, duration time.Duration) *leaseHold {
	return &leaseHold{Interface: lock, clock: c, duration: duration}
}

// Create implements resourcelock.Interface.
func (h *leaseHold) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	return h.write(ler, func() error { return h.Interface.Create(ctx, ler) })
}

// Update implements resourcelock.Interface.
func (h *leaseHold) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	return h.write(ler, func() error { return h.Interface.Update(ctx, ler) })
}

func (h *leaseHold) write(ler resourcelock.LeaderElectionRecord, fn func() error) error {
	sent := h.clock.Now()
	err := fn()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err != nil:
		// Perhaps stored, perhaps not: the hold runs out as it was.
	case ler.HolderIdentity == h.Identity():
		h.until = sent.Add(h.duration)
	default:
		h.until = time.Time{} // released
	}
	return err
}

// follow makes the hold end as soon as the elector sees another holder.
func (h *leaseHold) follow(isLeader func() bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.isLeader = isLeader
}

// lose ends the hold: the elector stopped leading.
func (h *leaseHold) lose() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.until = time.Time{}
}

// Check implements provision.Lease.
func (h *leaseHold) Check() error {
	h.mu.Lock()
	until, isLeader := h.until, h.isLeader
	h.mu.Unlock()
	if isLeader != nil && !isLeader() {
		return fmt.Errorf("%w: the Lease %s names another holder", provision.ErrFenced, h.Describe())
	}
	if until.IsZero() {
		return fmt.Errorf("%w: this instance does not hold the Lease %s", provision.ErrFenced, h.Describe())
	}
	if now := h.clock.Now(); !now.Before(until) {
		return fmt.Errorf("%w: this instance's hold on the Lease %s ran out %s ago, unrenewed", provision.ErrFenced, h.Describe(), now.Sub(until).Round(time.Millisecond))
	}
	return nil
}
