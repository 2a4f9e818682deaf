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

// Package cgroup keeps the kubelet's pod cgroup limit in step with pool memory.
//
// The kubelet sizes the kubepods cgroup once, from the machine's memory at start.
// Memory onlined later from a pool would be invisible to pods behind that limit, so
// the agent raises it by the bytes it onlined and lowers it again when the memory
// goes offline. The limit is always set to base + online bytes, where base is the
// kubelet's own value: if the kubelet rewrites the limit (a restart), that value
// becomes the new base.
//
// The agent must never take its own raise for the kubelet's base, or a restart would
// raise the limit twice. So the state is handed to the agent to checkpoint before the
// limit is written, naming both the limit about to be written and the one in the
// file: after a crash on either side of the write, the file holds one of the two, and
// the resumed Limiter recognises it as its own.
package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// unlimitedV1 is the smallest value cgroup v1 reports for "no limit"
// (PAGE_COUNTER_MAX rounded to pages is 9223372036854771712).
const unlimitedV1 = int64(1) << 62

// Version is the cgroup hierarchy in use.
type Version int

const (
	V1 Version = 1
	V2 Version = 2
)

// State is what the Limiter needs to resume after a restart; the agent keeps it in
// its checkpoint.
type State struct {
	// Base is the limit the kubelet set, bytes; 0 when not known yet.
	Base int64 `json:"base"`
	// Written is the limit the agent last wrote, or is about to write, bytes.
	Written int64 `json:"written"`
	// Previous is the limit that was in the file when Written was decided: the
	// agent's own earlier value, or the kubelet's base. A crash before Written
	// reached the file leaves this one there.
	Previous int64 `json:"previous,omitempty"`
}

// ours tells whether a limit read from the file is one the agent wrote (or found in
// place and built on), rather than a new value from the kubelet.
func (s State) ours(limit int64) bool {
	return s.Written != 0 && (limit == s.Written || limit == s.Previous)
}

// Limiter sets the memory limit of the kubepods cgroup.
type Limiter struct {
	file    string
	version Version

	mu    sync.Mutex
	state State
}

// Candidates are the kubepods cgroup names tried when none is configured: the
// systemd cgroup driver's slice and the cgroupfs driver's directory.
var Candidates = []string{"kubepods.slice", "kubepods"}

// New finds the kubepods cgroup under root (normally /sys/fs/cgroup). name is the
// cgroup's path relative to the hierarchy root; empty tries Candidates. A v2 (unified)
// hierarchy is recognised by memory.max, v1 by memory/<name>/memory.limit_in_bytes.
func New(root, name string, state State) (*Limiter, error) {
	names := Candidates
	if name != "" {
		names = []string{name}
	}
	var tried []string
	for _, n := range names {
		for _, c := range []struct {
			file    string
			version Version
		}{
			{filepath.Join(root, n, "memory.max"), V2},
			{filepath.Join(root, "memory", n, "memory.limit_in_bytes"), V1},
		} {
			if _, err := os.Stat(c.file); err == nil {
				return &Limiter{file: c.file, version: c.version, state: state}, nil
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("look for the kubepods cgroup: %w", err)
			}
			tried = append(tried, c.file)
		}
	}
	return nil, fmt.Errorf("no kubepods cgroup found (tried %s): set --kubepods-cgroup to the kubelet's pod cgroup", strings.Join(tried, ", "))
}

// File is the limit file the limiter writes.
func (l *Limiter) File() string { return l.file }

// Version is the hierarchy of the limit file.
func (l *Limiter) Version() Version { return l.version }

// State returns what to checkpoint.
func (l *Limiter) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Set makes the limit the kubelet's base plus onlineBytes. An unlimited cgroup is
// left unlimited. Before it writes a new limit it hands the state naming that limit
// to persist (nil: nothing to persist), and writes nothing if persist fails: the
// limit is raised only once the agent can recognise it after a crash. It returns the
// limit in effect (-1 for unlimited).
func (l *Limiter) Set(onlineBytes int64, persist func(State) error) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	current, err := l.read()
	if err != nil {
		return 0, err
	}
	if current < 0 {
		l.state = State{}
		return -1, nil
	}
	if !l.state.ours(current) {
		// First time, or the kubelet rewrote the limit: its value is the base.
		l.state.Base = current
	}
	limit := l.state.Base + onlineBytes
	if limit == current {
		l.state.Written = limit
		return limit, nil
	}
	next := State{Base: l.state.Base, Written: limit, Previous: current}
	if persist != nil {
		if err := persist(next); err != nil {
			return 0, fmt.Errorf("record the kubepods memory limit %d before writing it (the limit stays %d): %w", limit, current, err)
		}
	}
	if err := os.WriteFile(l.file, []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		return 0, fmt.Errorf("set kubepods memory limit to %d bytes: %w", limit, err)
	}
	l.state = next
	return limit, nil
}

// Drifted tells whether the limit in the file is not the one Set last wrote (or
// found in place): someone else, the kubelet when it starts, has written it, and Set
// must run again. Before the first Set it is true.
func (l *Limiter) Drifted() (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	current, err := l.read()
	if err != nil {
		return false, err
	}
	if current < 0 {
		// Unlimited: Set leaves it so and forgets its state.
		return l.state.Written != 0, nil
	}
	return current != l.state.Written, nil
}

// read returns the current limit in bytes, -1 for no limit.
func (l *Limiter) read() (int64, error) {
	data, err := os.ReadFile(l.file)
	if err != nil {
		return 0, fmt.Errorf("read kubepods memory limit: %w", err)
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return -1, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read kubepods memory limit %s: %q is not a number", l.file, s)
	}
	if l.version == V1 && v >= unlimitedV1 {
		return -1, nil
	}
	return v, nil
}
