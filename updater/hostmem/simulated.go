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

package hostmem

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// SimulatedBlockSize is the simulated host's default memory block size, 128 MiB like
// most x86 hosts.
const SimulatedBlockSize = 128 << 20

// SimulatedConfig configures a simulated host.
type SimulatedConfig struct {
	// BlockSize is the memory block size; default SimulatedBlockSize.
	BlockSize int64
	// NUMANode is the node all pool memory lands in (a CXL memory expander is its
	// own CPU-less NUMA node); default 1.
	NUMANode int32
	// BlockLatency is how long onlining or offlining one block takes.
	BlockLatency time.Duration
	// Clock paces the latency and stamps the journal.
	Clock clock.Clock
}

// simBlock is a memory block of the simulated host: pools are separate regions, each
// with its blocks numbered from 0.
type simBlock struct {
	pool  string
	block int
}

// Simulated is a host without hardware: it keeps which blocks are online, with the
// same alignment rules and refusals as Sysfs. The local cluster's agents run it.
type Simulated struct {
	cfg SimulatedConfig
	// journal is the file of OpenSimulated ("" for NewSimulated).
	journal string

	mu     sync.Mutex
	online map[simBlock]bool
}

// NewSimulated returns a simulated host with no pool memory online, kept in memory
// only.
func NewSimulated(cfg SimulatedConfig) *Simulated {
	return newSimulated(cfg, "")
}

// OpenSimulated returns a simulated host whose memory is kept in the journal file,
// as a real host's memory outlives its node agent: its memory is what the journal
// says (none for a missing file), and every block that goes online or offline is
// appended to it (a JournalEntry) before the host's state changes. A last line cut
// short by a crash is cut from the file, so that the next entry starts a line of
// its own.
func OpenSimulated(cfg SimulatedConfig, journal string) (*Simulated, error) {
	s := newSimulated(cfg, journal)
	entries, whole, err := readJournal(journal)
	if err != nil {
		return nil, err
	}
	if info, err := os.Stat(journal); err == nil && info.Size() > whole {
		if err := os.Truncate(journal, whole); err != nil {
			return nil, fmt.Errorf("cut the partial last line of host journal %s: %w", journal, err)
		}
	}
	for _, e := range entries {
		b := simBlock{pool: e.Pool, block: e.Block}
		if e.Op == JournalOnline {
			s.online[b] = true
		} else {
			delete(s.online, b)
		}
	}
	return s, nil
}

func newSimulated(cfg SimulatedConfig, journal string) *Simulated {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = SimulatedBlockSize
	}
	if cfg.NUMANode == 0 {
		cfg.NUMANode = 1
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Simulated{cfg: cfg, journal: journal, online: map[simBlock]bool{}}
}

// BlockSize is the simulated memory block size.
func (s *Simulated) BlockSize() int64 { return s.cfg.BlockSize }

// Online marks the request's blocks online. Without req.Resume, a block online
// already is refused: all blocks are checked before the first is onlined
// (ErrOnlineNotOurs, nothing onlined), and again as each is onlined (a block that
// came online meanwhile fails the call), so memory is never onlined twice.
func (s *Simulated) Online(ctx context.Context, req Request, progress Progress) (Result, error) {
	blocks, err := blockRange(req, 0, s.cfg.BlockSize)
	if err != nil {
		return Result{}, err
	}
	if !req.Resume {
		s.mu.Lock()
		online := s.onlineOf(req.Pool, blocks)
		s.mu.Unlock()
		if len(online) > 0 {
			return Result{}, notOurs(req, online)
		}
	}
	for i, n := range blocks {
		if err := s.sleep(ctx); err != nil {
			return Result{}, fmt.Errorf("claim %s: online memory block %d: %w", req.ClaimUID, n, err)
		}
		if err := s.set(req, n, true); err != nil {
			return Result{}, err
		}
		if progress != nil {
			progress(Step{Done: i + 1, Total: len(blocks), Message: fmt.Sprintf("block %d online", n)})
		}
	}
	return s.result(blocks), nil
}

// Offline marks the request's blocks offline, highest first.
func (s *Simulated) Offline(ctx context.Context, req Request, progress Progress) error {
	blocks, err := blockRange(req, 0, s.cfg.BlockSize)
	if err != nil {
		return err
	}
	slices.Reverse(blocks)
	for i, n := range blocks {
		if err := s.sleep(ctx); err != nil {
			return fmt.Errorf("claim %s: offline memory block %d: %w", req.ClaimUID, n, err)
		}
		if err := s.set(req, n, false); err != nil {
			return err
		}
		if progress != nil {
			progress(Step{Done: i + 1, Total: len(blocks), Message: fmt.Sprintf("block %d offline", n)})
		}
	}
	return nil
}

// set puts one block of the request's pool in a state. A transition is journaled
// before it is made; a block already in the state is left alone, except that a block
// online already fails a request without Resume.
func (s *Simulated) set(req Request, n int, online bool) error {
	b := simBlock{pool: req.Pool, block: n}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.online[b] == online {
		if online && !req.Resume {
			return fmt.Errorf("claim %s: memory block %d of pool %s came online while the claim's memory was being onlined; it is not taken", req.ClaimUID, n, req.Pool)
		}
		return nil
	}
	if s.journal != "" {
		op := JournalOffline
		if online {
			op = JournalOnline
		}
		if err := appendJournal(s.journal, JournalEntry{Time: s.cfg.Clock.Now().UTC(), Op: op, Pool: req.Pool, Block: n, Claim: req.ClaimUID}); err != nil {
			return fmt.Errorf("claim %s: %s memory block %d: %w", req.ClaimUID, op, n, err)
		}
	}
	if online {
		s.online[b] = true
	} else {
		delete(s.online, b)
	}
	return nil
}

// Check reports the request's memory if all its blocks are online.
func (s *Simulated) Check(_ context.Context, req Request) (Result, error) {
	blocks, err := blockRange(req, 0, s.cfg.BlockSize)
	if err != nil {
		return Result{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range blocks {
		if !s.online[simBlock{pool: req.Pool, block: n}] {
			return Result{}, fmt.Errorf("claim %s: memory block %d of pool %s is offline: %w", req.ClaimUID, n, req.Pool, ErrNotOnline)
		}
	}
	return s.result(blocks), nil
}

// Offlined tells whether every block of the request is offline: nil if so, an error
// wrapping ErrStillOnline naming the blocks online otherwise.
func (s *Simulated) Offlined(_ context.Context, req Request) error {
	blocks, err := blockRange(req, 0, s.cfg.BlockSize)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if online := s.onlineOf(req.Pool, blocks); len(online) > 0 {
		return stillOnline(req, online)
	}
	return nil
}

// onlineOf lists the blocks of a pool that are online. Called with mu held.
func (s *Simulated) onlineOf(pool string, blocks []int) []int {
	var online []int
	for _, n := range blocks {
		if s.online[simBlock{pool: pool, block: n}] {
			online = append(online, n)
		}
	}
	return online
}

// OnlineBlocks is the number of blocks online, in all pools.
func (s *Simulated) OnlineBlocks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.online)
}

func (s *Simulated) result(blocks []int) Result {
	return Result{Blocks: blocks, NUMANodes: []int32{s.cfg.NUMANode}, Bytes: int64(len(blocks)) * s.cfg.BlockSize}
}

func (s *Simulated) sleep(ctx context.Context) error {
	if s.cfg.BlockLatency <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-s.cfg.Clock.After(s.cfg.BlockLatency):
		return nil
	}
}
