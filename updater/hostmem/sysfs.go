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
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Paths of the kernel's memory hotplug interface
// (Documentation/admin-guide/mm/memory-hotplug.rst).
const (
	memoryDir     = "/sys/devices/system/memory"
	blockSizeFile = memoryDir + "/block_size_bytes"
)

// Block states as the kernel reads and writes them in memoryN/state.
const (
	stateOnline        = "online"
	stateOffline       = "offline"
	stateOnlineMovable = "online_movable"
)

// SysfsConfig configures the sysfs backend.
type SysfsConfig struct {
	// FS is the host file system; DirFS{Root: "/"} on a real host.
	FS FS
	// Regions maps a pool name to the name of its region on this host: a CXL region
	// (regionN) or a DAX device (daxX.Y), whose address range NewSysfs reads.
	Regions map[string]string
	// RegionBases maps a pool name to the host physical address where its region
	// starts; NewSysfs fails unless a CXL region or DAX device of the host starts
	// there. A pool in neither map has no region: its commands fail and touch
	// nothing.
	RegionBases map[string]int64
	// Clock paces waits and retries.
	Clock clock.Clock
	// AppearTimeout bounds how long Online waits for the memory blocks of an extent
	// to show up after the device added it. Default 30s.
	AppearTimeout time.Duration
	// PollInterval is how often Online looks for blocks that have not appeared yet.
	// Default 100ms.
	PollInterval time.Duration
	// OfflineAttempts bounds how many times one block is asked to go offline while
	// the kernel answers EBUSY (pages still being migrated). Default 10.
	OfflineAttempts int
	// OfflineBackoff is the first wait after EBUSY; it doubles up to
	// OfflineMaxBackoff. Defaults 50ms and 2s.
	OfflineBackoff    time.Duration
	OfflineMaxBackoff time.Duration
}

func (c *SysfsConfig) defaults() {
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.AppearTimeout == 0 {
		c.AppearTimeout = 30 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.OfflineAttempts == 0 {
		c.OfflineAttempts = 10
	}
	if c.OfflineBackoff == 0 {
		c.OfflineBackoff = 50 * time.Millisecond
	}
	if c.OfflineMaxBackoff == 0 {
		c.OfflineMaxBackoff = 2 * time.Second
	}
}

// Sysfs onlines and offlines pool memory through the Linux memory hotplug sysfs
// interface, reconfiguring DAX devices to system RAM (the kmem driver) when the
// memory arrives as a DAX device.
type Sysfs struct {
	cfg       SysfsConfig
	blockSize int64
	// regions is the region of each configured pool, read from the host at start.
	regions map[string]Region
}

// NewSysfs reads the host's memory block size and the region of each configured
// pool, and returns the backend.
func NewSysfs(cfg SysfsConfig) (*Sysfs, error) {
	if cfg.FS == nil {
		return nil, errors.New("sysfs backend: no file system configured")
	}
	cfg.defaults()
	data, err := cfg.FS.ReadFile(blockSizeFile)
	if err != nil {
		return nil, fmt.Errorf("read memory block size (is memory hotplug enabled in this kernel? without it, run the node agent with --host-backend=simulated): %w", err)
	}
	bs, err := ParseBlockSize(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", blockSizeFile, err)
	}
	s := &Sysfs{cfg: cfg, blockSize: bs}
	if s.regions, err = s.resolveRegions(); err != nil {
		return nil, err
	}
	return s, nil
}

// ParseBlockSize parses block_size_bytes: a hexadecimal number without 0x prefix
// (the kernel prints it with %lx), a power of two.
func ParseBlockSize(data []byte) (int64, error) {
	s := strings.TrimSpace(string(data))
	s = strings.TrimPrefix(s, "0x")
	v, err := strconv.ParseUint(s, 16, 63)
	if err != nil {
		return 0, fmt.Errorf("block size %q is not a hexadecimal number", strings.TrimSpace(string(data)))
	}
	if v == 0 || v&(v-1) != 0 {
		return 0, fmt.Errorf("block size %#x is not a power of two", v)
	}
	return int64(v), nil
}

// BlockSize is the host's memory block size in bytes.
func (s *Sysfs) BlockSize() int64 { return s.blockSize }

// BlockInfo is what sysfs says about one memory block.
type BlockInfo struct {
	Number int
	// State is online, offline or going-offline.
	State string
	// ValidZones lists the zones the block can be onlined to (or is in, if online).
	ValidZones []string
	// Removable is the kernel's removable flag (always true on recent kernels).
	Removable bool
	// NUMANode is the node the block belongs to, -1 if sysfs does not say.
	NUMANode int32
}

func blockDir(n int) string { return fmt.Sprintf("%s/memory%d", memoryDir, n) }

// Block reads one memory block. The error wraps fs.ErrNotExist if the block is not
// present on the host.
func (s *Sysfs) Block(n int) (BlockInfo, error) {
	dir := blockDir(n)
	state, err := s.cfg.FS.ReadFile(dir + "/state")
	if err != nil {
		return BlockInfo{}, fmt.Errorf("read state of memory block %d: %w", n, err)
	}
	info := BlockInfo{Number: n, State: strings.TrimSpace(string(state)), NUMANode: -1}
	if zones, err := s.cfg.FS.ReadFile(dir + "/valid_zones"); err == nil {
		info.ValidZones = strings.Fields(string(zones))
	}
	if rem, err := s.cfg.FS.ReadFile(dir + "/removable"); err == nil {
		info.Removable = strings.TrimSpace(string(rem)) == "1"
	}
	entries, err := s.cfg.FS.ReadDir(dir)
	if err != nil {
		return BlockInfo{}, fmt.Errorf("list memory block %d: %w", n, err)
	}
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), "node"); ok {
			if v, err := strconv.ParseInt(id, 10, 32); err == nil {
				info.NUMANode = int32(v)
				break
			}
		}
	}
	return info, nil
}

// Blocks lists the memory block numbers present on the host, ascending.
func (s *Sysfs) Blocks() ([]int, error) {
	entries, err := s.cfg.FS.ReadDir(memoryDir)
	if err != nil {
		return nil, fmt.Errorf("list memory blocks: %w", err)
	}
	var blocks []int
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), "memory"); ok {
			if v, err := strconv.Atoi(id); err == nil {
				blocks = append(blocks, v)
			}
		}
	}
	slices.Sort(blocks)
	return blocks, nil
}

// blocks is the request's memory blocks and host physical address ranges, in its
// pool's region; extents that do not fit in the region are refused.
func (s *Sysfs) blocks(req Request) ([]int, []addrRange, error) {
	region, err := s.region(req)
	if err != nil {
		return nil, nil, err
	}
	blocks, err := blockRange(req, region.Start, s.blockSize)
	if err != nil {
		return nil, nil, err
	}
	if err := within(req, region); err != nil {
		return nil, nil, err
	}
	return blocks, hostRanges(req, region.Start), nil
}

// hostRanges turns a request's extents into host physical address ranges.
func hostRanges(req Request, base int64) []addrRange {
	ranges := make([]addrRange, 0, len(req.Extents))
	for _, e := range req.Extents {
		ranges = append(ranges, addrRange{start: base + e.Offset, end: base + e.Offset + e.Length})
	}
	return ranges
}

// Online makes the request's memory system RAM and onlines its blocks into
// ZONE_MOVABLE, so that it can be offlined again when the claim ends. A block that is
// online before anything is done is refused (ErrOnlineNotOurs, nothing is touched)
// unless the request resumes the claim's own onlining (Resume): then it is left as it
// is, and Online is idempotent.
func (s *Sysfs) Online(ctx context.Context, req Request, progress Progress) (Result, error) {
	logger := klog.FromContext(ctx)
	blocks, ranges, err := s.blocks(req)
	if err != nil {
		return Result{}, err
	}
	if !req.Resume {
		online, err := s.onlineOf(blocks)
		if err != nil {
			return Result{}, fmt.Errorf("claim %s: %w", req.ClaimUID, err)
		}
		if len(online) > 0 {
			return Result{}, notOurs(req, online)
		}
	}
	if err := s.attachDAX(ctx, ranges); err != nil {
		return Result{}, fmt.Errorf("claim %s: %w", req.ClaimUID, err)
	}
	if err := s.waitForBlocks(ctx, blocks); err != nil {
		return Result{}, fmt.Errorf("claim %s: %w", req.ClaimUID, err)
	}
	for i, n := range blocks {
		if err := s.onlineBlock(n); err != nil {
			return Result{}, fmt.Errorf("claim %s: %w", req.ClaimUID, err)
		}
		if progress != nil {
			progress(Step{Done: i + 1, Total: len(blocks), Message: fmt.Sprintf("block %d online", n)})
		}
	}
	res, err := s.result(blocks)
	if err != nil {
		return Result{}, fmt.Errorf("claim %s: %w", req.ClaimUID, err)
	}
	logger.V(2).Info("Memory online", "claim", req.ClaimUID, "blocks", len(blocks), "bytes", res.Bytes, "numaNodes", res.NUMANodes)
	return res, nil
}

// onlineOf lists the blocks that are present and not offline (online, or on their
// way offline).
func (s *Sysfs) onlineOf(blocks []int) ([]int, error) {
	var online []int
	for _, n := range blocks {
		info, err := s.Block(n)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if info.State != stateOffline {
			online = append(online, n)
		}
	}
	return online, nil
}

// onlineBlock onlines one block as movable unless it is online already.
func (s *Sysfs) onlineBlock(n int) error {
	info, err := s.Block(n)
	if err != nil {
		return fmt.Errorf("online memory block %d: %w", n, err)
	}
	if info.State == stateOnline {
		return nil
	}
	if err := s.cfg.FS.WriteFile(blockDir(n)+"/state", []byte(stateOnlineMovable)); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("online memory block %d as movable (valid zones: %s; movable onlining needs a block above the last Normal zone block): %w", n, strings.Join(info.ValidZones, " "), err)
		}
		return fmt.Errorf("online memory block %d: %w", n, err)
	}
	return nil
}

// waitForBlocks waits until every block's directory exists: memory added by the
// device shows up as new blocks once the kernel has hot-added it.
func (s *Sysfs) waitForBlocks(ctx context.Context, blocks []int) error {
	deadline := s.cfg.Clock.Now().Add(s.cfg.AppearTimeout)
	for {
		missing := -1
		for _, n := range blocks {
			if _, err := s.cfg.FS.Stat(blockDir(n)); err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("look for memory block %d: %w", n, err)
				}
				missing = n
				break
			}
		}
		if missing < 0 {
			return nil
		}
		if !s.cfg.Clock.Now().Before(deadline) {
			return fmt.Errorf("memory block %d (host address %#x) did not appear within %s: the device has not added this extent to the host", missing, int64(missing)*s.blockSize, s.cfg.AppearTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for memory block %d: %w", missing, context.Cause(ctx))
		case <-s.cfg.Clock.After(s.cfg.PollInterval):
		}
	}
}

func (s *Sysfs) result(blocks []int) (Result, error) {
	res := Result{Blocks: blocks, Bytes: int64(len(blocks)) * s.blockSize}
	for _, n := range blocks {
		info, err := s.Block(n)
		if err != nil {
			return Result{}, err
		}
		if info.NUMANode >= 0 && !slices.Contains(res.NUMANodes, info.NUMANode) {
			res.NUMANodes = append(res.NUMANodes, info.NUMANode)
		}
	}
	slices.Sort(res.NUMANodes)
	return res, nil
}

// Check reports the request's memory if all of it is online, and an error wrapping
// ErrNotOnline otherwise. The agent uses it after a restart to learn what is still
// online.
func (s *Sysfs) Check(_ context.Context, req Request) (Result, error) {
	blocks, _, err := s.blocks(req)
	if err != nil {
		return Result{}, err
	}
	for _, n := range blocks {
		info, err := s.Block(n)
		if errors.Is(err, fs.ErrNotExist) {
			return Result{}, fmt.Errorf("claim %s: memory block %d is not present: %w", req.ClaimUID, n, ErrNotOnline)
		}
		if err != nil {
			return Result{}, fmt.Errorf("claim %s: %w", req.ClaimUID, err)
		}
		if info.State != stateOnline {
			return Result{}, fmt.Errorf("claim %s: memory block %d is %s: %w", req.ClaimUID, n, info.State, ErrNotOnline)
		}
	}
	return s.result(blocks)
}

// Offlined tells whether every block of the request is offline or absent: nil if so,
// an error wrapping ErrStillOnline naming the blocks online otherwise. It touches
// nothing; the agent uses it to answer an offline command for memory it has no
// record of.
func (s *Sysfs) Offlined(_ context.Context, req Request) error {
	blocks, _, err := s.blocks(req)
	if err != nil {
		return err
	}
	online, err := s.onlineOf(blocks)
	if err != nil {
		return fmt.Errorf("claim %s: %w", req.ClaimUID, err)
	}
	if len(online) > 0 {
		return stillOnline(req, online)
	}
	return nil
}

// Offline takes the request's memory blocks offline, highest first, retrying with
// backoff while the kernel answers EBUSY (it is migrating pages away). If a block
// stays busy after the configured attempts, the blocks this call offlined are
// onlined again, so the claim's memory stays whole and usable, and the error, which
// wraps ErrBusy, says which block was busy. Blocks that are offline or absent already are skipped:
// Offline is idempotent. DAX devices reconfigured to system RAM by Online are given
// back to the device_dax driver at the end.
func (s *Sysfs) Offline(ctx context.Context, req Request, progress Progress) error {
	logger := klog.FromContext(ctx)
	blocks, ranges, err := s.blocks(req)
	if err != nil {
		return err
	}
	slices.Reverse(blocks)
	var done []int
	for i, n := range blocks {
		offlined, err := s.offlineBlock(ctx, n, i, len(blocks), progress)
		if err != nil {
			if rerr := s.restore(done); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return fmt.Errorf("claim %s: %w", req.ClaimUID, err)
		}
		if offlined {
			done = append(done, n)
		}
		if progress != nil {
			progress(Step{Done: i + 1, Total: len(blocks), Message: fmt.Sprintf("block %d offline", n)})
		}
	}
	if err := s.detachDAX(ctx, ranges); err != nil {
		return fmt.Errorf("claim %s: %w", req.ClaimUID, err)
	}
	logger.V(2).Info("Memory offline", "claim", req.ClaimUID, "blocks", len(blocks))
	return nil
}

// offlineBlock offlines one block, retrying on EBUSY. It reports whether it changed
// the block's state.
func (s *Sysfs) offlineBlock(ctx context.Context, n, index, total int, progress Progress) (bool, error) {
	info, err := s.Block(n)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("offline memory block %d: %w", n, err)
	}
	if info.State == stateOffline {
		return false, nil
	}
	wait := s.cfg.OfflineBackoff
	for attempt := 1; ; attempt++ {
		err := s.cfg.FS.WriteFile(blockDir(n)+"/state", []byte(stateOffline))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return false, fmt.Errorf("offline memory block %d: %w", n, err)
		}
		if attempt >= s.cfg.OfflineAttempts {
			return false, fmt.Errorf("offline memory block %d: %w after %d attempts (pages in use that cannot be migrated): %w", n, ErrBusy, attempt, err)
		}
		if progress != nil {
			progress(Step{Done: index, Total: total, Busy: true, Message: fmt.Sprintf("block %d busy, retry %d/%d in %s", n, attempt, s.cfg.OfflineAttempts-1, wait)})
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("offline memory block %d: %w", n, context.Cause(ctx))
		case <-s.cfg.Clock.After(wait):
		}
		wait = min(2*wait, s.cfg.OfflineMaxBackoff)
	}
}

// restore onlines blocks again after a failed offline: movable if the kernel
// allows, in whatever zone it allows otherwise, never left offline.
func (s *Sysfs) restore(blocks []int) error {
	var errs []error
	for _, n := range blocks {
		state := blockDir(n) + "/state"
		if err := s.cfg.FS.WriteFile(state, []byte(stateOnlineMovable)); err != nil {
			if err := s.cfg.FS.WriteFile(state, []byte(stateOnline)); err != nil {
				errs = append(errs, fmt.Errorf("restore memory block %d online: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}
