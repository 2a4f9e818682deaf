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

package system

import (
	"context"
	"fmt"
	"sync"
	"time"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// Monitor watches the system while a scenario runs and records every moment a pool
// was over-committed: in the memory service's pool snapshots (reserved plus online
// above capacity, or above a node's host window) and in the DynamicMemoryClaims
// (the sizes of the claims not released above the pool's capacity or window). It
// survives memory service restarts.
type Monitor struct {
	s      *System
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	violations []string
	snapshots  int
	claimScans int
}

// maxViolations bounds what a Monitor keeps.
const maxViolations = 20

// StartMonitor starts watching until Stop.
func (s *System) StartMonitor(ctx context.Context) *Monitor {
	ctx, cancel := context.WithCancel(ctx)
	m := &Monitor{s: s, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() { m.watchPools(ctx) })
	wg.Go(func() { m.scanClaims(ctx) })
	go func() {
		wg.Wait()
		close(m.done)
	}()
	return m
}

// Stop stops watching and returns every violation seen, and how many pool snapshots
// and claim scans were checked.
func (m *Monitor) Stop() (violations []string, snapshots, claimScans int) {
	m.cancel()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.violations...), m.snapshots, m.claimScans
}

func (m *Monitor) record(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.violations) < maxViolations {
		m.violations = append(m.violations, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
}

func (m *Monitor) watchPools(ctx context.Context) {
	for ctx.Err() == nil {
		stream, err := m.s.admin.WatchPools(ctx, &memservicev1.WatchPoolsRequest{})
		for err == nil {
			var snap *memservicev1.PoolSnapshot
			if snap, err = stream.Recv(); err == nil {
				m.checkSnapshot(snap)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *Monitor) checkSnapshot(snap *memservicev1.PoolSnapshot) {
	m.mu.Lock()
	m.snapshots++
	m.mu.Unlock()
	for _, p := range snap.GetPools() {
		// reserved_bytes is everything held (online included).
		if p.GetReservedBytes() > p.GetCapacityBytes() || p.GetFreeBytes() < 0 ||
			p.GetReservedBytes()+p.GetFreeBytes() != p.GetCapacityBytes() || p.GetOnlineBytes() > p.GetReservedBytes() {
			m.record("memory service revision %d: pool %s of %s holds %s (%s online), %s free", snap.GetRevision(), p.GetName(),
				formatBytes(p.GetCapacityBytes()), formatBytes(p.GetReservedBytes()), formatBytes(p.GetOnlineBytes()), formatBytes(p.GetFreeBytes()))
		}
		for _, n := range p.GetNodes() {
			if n.GetReservedBytes() > p.GetHostWindowBytes() || n.GetOnlineBytes() > n.GetReservedBytes() {
				m.record("memory service revision %d: node %s holds %s (%s online) of pool %s, host window %s", snap.GetRevision(), n.GetNode(),
					formatBytes(n.GetReservedBytes()), formatBytes(n.GetOnlineBytes()), p.GetName(), formatBytes(p.GetHostWindowBytes()))
			}
		}
	}
}

func (m *Monitor) scanClaims(ctx context.Context) {
	capacity := map[string]int64{}
	window := map[string]int64{}
	for _, p := range m.s.Pools {
		capacity[p.Name] = p.Spec.Capacity.Value()
		window[p.Name] = p.Spec.HostWindow.Value()
	}
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		claims, err := m.s.ListClaims(ctx, "")
		if err != nil {
			continue
		}
		m.mu.Lock()
		m.claimScans++
		m.mu.Unlock()
		perPool := map[string]int64{}
		perNode := map[[2]string]int64{}
		for _, c := range claims {
			// Failed claims keep their capacity until released, as in the ledger.
			if c.CurrentPhase() == v1alpha1.PhaseReleased {
				continue
			}
			perPool[c.Spec.Pool] += c.Spec.Size.Value()
			perNode[[2]string{c.Spec.Pool, c.Spec.Node}] += c.Spec.Size.Value()
		}
		for pool, used := range perPool {
			if c, ok := capacity[pool]; ok && used > c {
				m.record("DynamicMemoryClaims hold %s of pool %s, capacity %s", formatBytes(used), pool, formatBytes(c))
			}
		}
		for key, used := range perNode {
			if w, ok := window[key[0]]; ok && used > w {
				m.record("DynamicMemoryClaims hold %s of pool %s on node %s, host window %s", formatBytes(used), key[0], key[1], formatBytes(w))
			}
		}
	}
}
