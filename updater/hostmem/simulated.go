package hostmem

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// SimulatedConfig configures a simulated host.
type SimulatedConfig struct {
	// BlockSize is the memory block size; default 128 MiB like most x86 hosts.
	BlockSize int64
	// NUMANode is the node all pool memory lands in (a CXL memory expander is its
	// own CPU-less NUMA node); default 1.
	NUMANode int32
	// BlockLatency is how long onlining or offlining one block takes.
	BlockLatency time.Duration
	// Clock paces the latency.
	Clock clock.Clock
}

// Simulated is a host without hardware: it keeps which blocks are online, with the
// same alignment rules and idempotency as Sysfs. The local cluster's agents run it.
type Simulated struct {
	cfg SimulatedConfig

	mu     sync.Mutex
	online map[int]bool
}

// NewSimulated returns a simulated host with no pool memory online.
func NewSimulated(cfg SimulatedConfig) *Simulated {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 128 << 20
	}
	if cfg.NUMANode == 0 {
		cfg.NUMANode = 1
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Simulated{cfg: cfg, online: map[int]bool{}}
}

// BlockSize is the simulated memory block size.
func (s *Simulated) BlockSize() int64 { return s.cfg.BlockSize }

// Online marks the request's blocks online.
func (s *Simulated) Online(ctx context.Context, req Request, progress Progress) (Result, error) {
	blocks, err := blockRange(req, 0, s.cfg.BlockSize)
	if err != nil {
		return Result{}, err
	}
	for i, n := range blocks {
		if err := s.sleep(ctx); err != nil {
			return Result{}, fmt.Errorf("claim %s: online memory block %d: %w", req.ClaimUID, n, err)
		}
		s.mu.Lock()
		s.online[n] = true
		s.mu.Unlock()
		if progress != nil {
			progress(Step{Done: i + 1, Total: len(blocks), Message: fmt.Sprintf("block %d online", n)})
		}
	}
	return s.result(blocks), nil
}

// Offline marks the request's blocks offline.
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
		s.mu.Lock()
		delete(s.online, n)
		s.mu.Unlock()
		if progress != nil {
			progress(Step{Done: i + 1, Total: len(blocks), Message: fmt.Sprintf("block %d offline", n)})
		}
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
		if !s.online[n] {
			return Result{}, fmt.Errorf("claim %s: memory block %d is offline: %w", req.ClaimUID, n, ErrNotOnline)
		}
	}
	return s.result(blocks), nil
}

// OnlineBlocks is the number of blocks online.
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
