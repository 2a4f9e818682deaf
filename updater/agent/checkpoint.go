package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/cgroup"
)

// onlineClaim is one claim's memory the agent onlined.
type onlineClaim struct {
	Pool      string            `json:"pool"`
	Extents   []v1alpha1.Extent `json:"extents"`
	Bytes     int64             `json:"bytes"`
	NUMANodes []int32           `json:"numaNodes,omitempty"`
}

// checkpoint is what the agent keeps on disk so that after a restart it knows which
// claims own the memory online on the host, and what it did to the pod cgroup.
type checkpoint struct {
	Claims map[string]onlineClaim `json:"claims"`
	// Pools remembers the pool of every claim an online command was received for,
	// until its memory is offline: an offline command does not name the pool, and
	// memory half onlined by a failed command must be offlined in the right region.
	Pools  map[string]string `json:"pools,omitempty"`
	Cgroup cgroup.State      `json:"cgroup"`
}

// loadCheckpoint reads the checkpoint; a missing file is an empty checkpoint.
func loadCheckpoint(file string) (checkpoint, error) {
	cp := checkpoint{Claims: map[string]onlineClaim{}, Pools: map[string]string{}}
	if file == "" {
		return cp, nil
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return cp, nil
	}
	if err != nil {
		return cp, fmt.Errorf("read agent checkpoint: %w", err)
	}
	if err := json.Unmarshal(data, &cp); err != nil {
		return cp, fmt.Errorf("read agent checkpoint %s: %w", file, err)
	}
	if cp.Claims == nil {
		cp.Claims = map[string]onlineClaim{}
	}
	if cp.Pools == nil {
		cp.Pools = map[string]string{}
	}
	return cp, nil
}

// encode is the checkpoint's file content.
func (cp checkpoint) encode() ([]byte, error) {
	data, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode agent checkpoint: %w", err)
	}
	return data, nil
}

// writeAtomically replaces file with data: a temp file, synced, renamed over the old.
func writeAtomically(file string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".tmp*")
	if err != nil {
		return fmt.Errorf("write agent checkpoint: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write agent checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write agent checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write agent checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("write agent checkpoint: %w", err)
	}
	return nil
}

// CgroupState reads what the agent last did to the pod cgroup from its checkpoint,
// so the limiter resumes without raising the limit twice.
func CgroupState(file string) (cgroup.State, error) {
	cp, err := loadCheckpoint(file)
	return cp.Cgroup, err
}
