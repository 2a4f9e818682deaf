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

package dynamicmemory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

// poolCache holds the memory service's latest pool snapshot, kept current by the
// WatchPools stream, plus the reservations this scheduler made that the snapshot does
// not show yet. Filter and Score read it; they never call the memory service.
type poolCache struct {
	client memservicev1.MemoryServiceClient
	clock  clock.Clock
	// backoff paces reconnects; it restarts from its first step after a snapshot.
	backoff wait.Backoff
	// onFreed is called, outside the lock, when capacity may have become available:
	// a snapshot shows more free memory, a pool became ready, an agent connected, the
	// stream (re)connected, or an in-flight reservation was dropped.
	onFreed func(logger klog.Logger, v *cacheView)

	mu        sync.Mutex
	snapshot  *poolIndex
	connected bool
	// changed is when connected last flipped (the start time before any snapshot).
	changed time.Time
	lastErr error
	// inflight are reservations made by this scheduler that no snapshot received
	// since shows: Filter subtracts them.
	inflight map[types.UID]inflightReservation
}

type inflightReservation struct {
	pool, node string
	bytes      int64
	// answered is set once the memory service granted the reservation. Until then
	// no snapshot can show it, so none drops it.
	answered bool
	// ledgerRevision is the memory service's ledger revision that includes the
	// reservation (from ReserveResponse): a snapshot at that revision or later
	// counts it, so the in-flight copy is dropped then.
	ledgerRevision uint64
}

func newPoolCache(client memservicev1.MemoryServiceClient, clk clock.Clock) *poolCache {
	return &poolCache{
		client:   client,
		clock:    clk,
		backoff:  wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6, Cap: 10 * time.Second},
		changed:  clk.Now(),
		inflight: map[types.UID]inflightReservation{},
	}
}

// run keeps the cache current until ctx ends: it watches pools, and reconnects with
// exponential backoff when the stream breaks.
func (c *poolCache) run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("poolcache")
	trackCache(c)
	defer untrackCache(c)
	backoff := c.backoff
	for {
		received, err := c.watch(ctx, logger)
		if ctx.Err() != nil {
			c.stopped(ctx.Err())
			return
		}
		c.disconnect(logger, err)
		if received {
			backoff = c.backoff
		}
		delay := backoff.Step()
		logger.V(2).Info("Pool watch ended, reconnecting", "err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return
		case <-c.clock.After(delay):
		}
	}
}

// watch reads one WatchPools stream until it fails. received tells whether at least
// one snapshot arrived.
func (c *poolCache) watch(ctx context.Context, logger klog.Logger) (received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.client.WatchPools(ctx, &memservicev1.WatchPoolsRequest{})
	if err != nil {
		return false, fmt.Errorf("watch pools: %w", err)
	}
	for {
		snap, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("memory service closed the pool watch")
			}
			return received, fmt.Errorf("watch pools: %w", err)
		}
		received = true
		c.update(logger, snap)
	}
}

// update installs a snapshot.
func (c *poolCache) update(logger klog.Logger, snap *memservicev1.PoolSnapshot) {
	next := indexSnapshot(snap)
	c.mu.Lock()
	prev, wasConnected := c.snapshot, c.connected
	c.snapshot = next
	if !c.connected {
		c.connected, c.changed, c.lastErr = true, c.clock.Now(), nil
	}
	for uid, r := range c.inflight {
		// A new stream may come from a new service instance whose ledger revisions
		// start again: its first snapshot is authoritative for what was granted.
		if r.answered && (!wasConnected || next.ledgerRevision >= r.ledgerRevision) {
			delete(c.inflight, uid)
		}
	}
	view := c.viewLocked()
	c.mu.Unlock()

	poolCacheConnected.Set(1)
	poolCacheRevision.Set(float64(snap.GetRevision()))
	if !wasConnected {
		logger.Info("Pool cache connected to the memory service", "revision", snap.GetRevision(), "pools", len(snap.GetPools()))
	}
	logger.V(5).Info("Pool snapshot", "revision", snap.GetRevision())
	if c.onFreed != nil && (!wasConnected || next.frees(prev)) {
		c.onFreed(logger, view)
	}
}

func (c *poolCache) disconnect(logger klog.Logger, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connected {
		logger.Info("Pool cache lost the memory service; dynamic-memory pods wait until it is back", "err", err)
		c.connected, c.changed = false, c.clock.Now()
	}
	c.lastErr = err
	poolCacheConnected.Set(0)
}

// stopped marks the cache disconnected when it stops running, quietly.
func (c *poolCache) stopped(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected, c.changed, c.lastErr = false, c.clock.Now(), err
	poolCacheConnected.Set(0)
}

// addPending records a reservation asked of the memory service and not answered yet.
func (c *poolCache) addPending(uid types.UID, pool, node string, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight[uid] = inflightReservation{pool: pool, node: node, bytes: bytes}
}

// addInflight records a reservation the memory service granted at ledgerRevision
// (replacing its pending entry), unless the cache already holds a snapshot that
// counts it.
func (c *poolCache) addInflight(uid types.UID, pool, node string, bytes int64, ledgerRevision uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snapshot != nil && c.snapshot.ledgerRevision >= ledgerRevision {
		delete(c.inflight, uid)
		return
	}
	c.inflight[uid] = inflightReservation{pool: pool, node: node, bytes: bytes, answered: true, ledgerRevision: ledgerRevision}
}

// dropInflight forgets a reservation that was released.
func (c *poolCache) dropInflight(logger klog.Logger, uid types.UID) {
	c.mu.Lock()
	_, ok := c.inflight[uid]
	delete(c.inflight, uid)
	view := c.viewLocked()
	c.mu.Unlock()
	if ok && c.onFreed != nil {
		c.onFreed(logger, view)
	}
}

// view returns what Filter and Score work from during one scheduling cycle.
func (c *poolCache) view() *cacheView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.viewLocked()
}

func (c *poolCache) viewLocked() *cacheView {
	v := &cacheView{
		index:     c.snapshot,
		connected: c.connected,
		lastErr:   c.lastErr,
		poolUsed:  map[string]int64{},
		nodeUsed:  map[poolNode]int64{},
	}
	for _, r := range c.inflight {
		v.poolUsed[r.pool] += r.bytes
		v.nodeUsed[poolNode{r.pool, r.node}] += r.bytes
	}
	return v
}

// staleness is how long the cache has not been known current: 0 while connected.
func (c *poolCache) staleness() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connected {
		return 0
	}
	return c.clock.Since(c.changed)
}

// poolIndex is one snapshot, indexed by node. It is never modified.
type poolIndex struct {
	revision       uint64
	ledgerRevision uint64
	pools          map[string]*memservicev1.PoolStatus
	// shares lists each node's share of every pool it is attached to, by pool name.
	shares map[string][]share
}

type share struct {
	pool *memservicev1.PoolStatus
	node *memservicev1.NodeShare
}

type poolNode struct{ pool, node string }

func indexSnapshot(snap *memservicev1.PoolSnapshot) *poolIndex {
	idx := &poolIndex{
		revision:       snap.GetRevision(),
		ledgerRevision: snap.GetLedgerRevision(),
		pools:          make(map[string]*memservicev1.PoolStatus, len(snap.GetPools())),
		shares:         map[string][]share{},
	}
	for _, p := range snap.GetPools() {
		idx.pools[p.GetName()] = p
		for _, n := range p.GetNodes() {
			idx.shares[n.GetNode()] = append(idx.shares[n.GetNode()], share{pool: p, node: n})
		}
	}
	return idx
}

// frees tells whether idx may admit a claim prev did not: a node's free share grew,
// a pool became ready, or an agent connected.
func (idx *poolIndex) frees(prev *poolIndex) bool {
	if prev == nil {
		return true
	}
	old := map[poolNode]*memservicev1.NodeShare{}
	for node, ss := range prev.shares {
		for _, s := range ss {
			old[poolNode{s.pool.GetName(), node}] = s.node
		}
	}
	for node, ss := range idx.shares {
		for _, s := range ss {
			o, ok := old[poolNode{s.pool.GetName(), node}]
			if !ok || s.node.GetFreeBytes() > o.GetFreeBytes() ||
				(s.node.GetAgentConnected() && !o.GetAgentConnected()) {
				return true
			}
			if s.pool.GetReady() && !prev.pools[s.pool.GetName()].GetReady() {
				return true
			}
		}
	}
	return false
}

// cacheView is the cache as one scheduling cycle sees it.
type cacheView struct {
	index     *poolIndex // nil before the first snapshot
	connected bool
	lastErr   error
	// poolUsed and nodeUsed sum the in-flight reservations per pool and per pool share.
	poolUsed map[string]int64
	nodeUsed map[poolNode]int64
}

// maxFree is the most any connected node can take from one ready pool.
func (v *cacheView) maxFree() int64 {
	if v.index == nil {
		return 0
	}
	var best int64
	for node, ss := range v.index.shares {
		for _, s := range ss {
			if s.pool.GetReady() && s.node.GetAgentConnected() {
				best = max(best, v.free(s, node))
			}
		}
	}
	return best
}

// connectedAgents is how many nodes attached to a pool have their agent connected.
func (v *cacheView) connectedAgents() int {
	if v.index == nil {
		return 0
	}
	n := 0
	for _, ss := range v.index.shares {
		if slices.ContainsFunc(ss, func(s share) bool { return s.node.GetAgentConnected() }) {
			n++
		}
	}
	return n
}

// blockRounded is bytes rounded up to pool's block size, as the memory service
// reserves them.
func (v *cacheView) blockRounded(pool string, bytes int64) int64 {
	if v.index == nil {
		return bytes
	}
	return roundUp(bytes, v.index.pools[pool].GetBlockSizeBytes())
}

// free is what node may still take from the pool of s, in-flight reservations
// subtracted.
func (v *cacheView) free(s share, node string) int64 {
	pool := s.pool.GetName()
	byPool := s.pool.GetFreeBytes() - v.poolUsed[pool]
	byNode := s.node.GetFreeBytes() - v.nodeUsed[poolNode{pool, node}]
	return max(0, min(byPool, byNode))
}
