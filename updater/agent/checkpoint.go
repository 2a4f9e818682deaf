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

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

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

// pendingClaim is the agent's intent to online one claim's memory, recorded before it
// touches a block: whatever of these extents is online is the claim's. Extents are
// missing from intents an older agent recorded (it kept the pool only).
type pendingClaim struct {
	Pool    string            `json:"pool"`
	Extents []v1alpha1.Extent `json:"extents,omitempty"`
}

// checkpoint is what the agent keeps on disk so that after a restart it knows which
// claims own the memory online on the host, and what it did to the pod cgroup. It
// is the agent's only proof that memory is a claim's: memory it has no record of is
// never onlined for a claim if it is online already, and never offlined.
type checkpoint struct {
	// Claims are the claims whose memory is online, reported to the service.
	Claims map[string]onlineClaim `json:"claims"`
	// Pending are the claims whose memory may be partly online: an online command
	// was received and has not succeeded (or the memory was found no longer wholly
	// online at a restart). A claim is in Claims or in Pending until its memory is
	// offline, never in both.
	Pending map[string]pendingClaim `json:"pending,omitempty"`
	Cgroup  cgroup.State            `json:"cgroup"`
}

// checkpointFile is the file's format: the checkpoint, and the pools an older agent
// recorded (read as intents without extents, never written).
type checkpointFile struct {
	checkpoint
	Pools map[string]string `json:"pools,omitempty"`
}

// errCorrupt marks a checkpoint file that exists but cannot be parsed.
var errCorrupt = errors.New("corrupt agent checkpoint")

func emptyCheckpoint() checkpoint {
	return checkpoint{Claims: map[string]onlineClaim{}, Pending: map[string]pendingClaim{}}
}

// loadCheckpoint reads the checkpoint; a missing file is an empty checkpoint, a file
// that cannot be parsed an error wrapping errCorrupt.
func loadCheckpoint(file string) (checkpoint, error) {
	if file == "" {
		return emptyCheckpoint(), nil
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return emptyCheckpoint(), nil
	}
	if err != nil {
		return checkpoint{}, fmt.Errorf("read agent checkpoint: %w", err)
	}
	var f checkpointFile
	if err := json.Unmarshal(data, &f); err != nil {
		return checkpoint{}, fmt.Errorf("%w %s: %w", errCorrupt, file, err)
	}
	cp := f.checkpoint
	if cp.Claims == nil {
		cp.Claims = map[string]onlineClaim{}
	}
	if cp.Pending == nil {
		cp.Pending = map[string]pendingClaim{}
	}
	for uid, pool := range f.Pools {
		if _, online := cp.Claims[uid]; !online {
			cp.Pending[uid] = pendingClaim{Pool: pool}
		}
	}
	return cp, nil
}

// setAside renames a corrupt checkpoint out of the way, keeping it for a person to
// look at, and returns its new name.
func setAside(file string, now time.Time) (string, error) {
	kept := file + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(file, kept); err != nil {
		return "", fmt.Errorf("set the corrupt agent checkpoint aside: %w", err)
	}
	return kept, nil
}

// clone copies the checkpoint's maps, so that it can be encoded outside the lock.
func (cp checkpoint) clone() checkpoint {
	return checkpoint{Claims: maps.Clone(cp.Claims), Pending: maps.Clone(cp.Pending), Cgroup: cp.Cgroup}
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
// so the limiter resumes without raising the limit twice. A checkpoint that cannot
// be parsed gives the zero state (the limit in force is taken as the kubelet's); New
// sets the file aside.
func CgroupState(file string) (cgroup.State, error) {
	cp, err := loadCheckpoint(file)
	if errors.Is(err, errCorrupt) {
		return cgroup.State{}, nil
	}
	return cp.Cgroup, err
}

// CheckpointClaims lists, sorted, the claims an agent checkpoint holds memory for:
// online, or possibly partly online. After every claim of a node is released it is
// empty.
func CheckpointClaims(file string) ([]string, error) {
	cp, err := loadCheckpoint(file)
	if err != nil {
		return nil, err
	}
	uids := append(slices.Collect(maps.Keys(cp.Claims)), slices.Collect(maps.Keys(cp.Pending))...)
	slices.Sort(uids)
	return uids, nil
}
