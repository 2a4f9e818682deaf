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

package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const gi = int64(1) << 30

func writeLimit(t *testing.T, file, value string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	require.NoError(t, os.WriteFile(file, []byte(value+"\n"), 0o644))
}

func readLimit(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	return strings.TrimSpace(string(data))
}

func TestLimiterRaisesAndRestores(t *testing.T) {
	tests := []struct {
		name    string
		file    string // relative to the cgroup root
		version Version
	}{
		{"cgroup v2, systemd driver", "kubepods.slice/memory.max", V2},
		{"cgroup v2, cgroupfs driver", "kubepods/memory.max", V2},
		{"cgroup v1", "memory/kubepods/memory.limit_in_bytes", V1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			file := filepath.Join(root, tc.file)
			writeLimit(t, file, "8589934592") // 8Gi set by the kubelet
			l, err := New(root, "", State{})
			require.NoError(t, err)
			assert.Equal(t, tc.version, l.Version())
			assert.Equal(t, file, l.File())

			limit, err := l.Set(2*gi, nil)
			require.NoError(t, err)
			assert.Equal(t, 10*gi, limit)
			assert.Equal(t, "10737418240", readLimit(t, file))

			_, err = l.Set(3*gi, nil)
			require.NoError(t, err)
			assert.Equal(t, "11811160064", readLimit(t, file), "raised from the kubelet's base, not from the last value")

			_, err = l.Set(0, nil)
			require.NoError(t, err)
			assert.Equal(t, "8589934592", readLimit(t, file), "all memory offline: the kubelet's limit again")
		})
	}
}

func TestLimiterResumesFromCheckpoint(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "kubepods/memory.max")
	writeLimit(t, file, "10737418240") // 8Gi + 2Gi written before the agent restarted
	l, err := New(root, "kubepods", State{Base: 8 * gi, Written: 10 * gi})
	require.NoError(t, err)
	_, err = l.Set(2*gi, nil)
	require.NoError(t, err)
	assert.Equal(t, "10737418240", readLimit(t, file), "not raised twice")
	assert.Equal(t, State{Base: 8 * gi, Written: 10 * gi}, l.State())
}

// The agent checkpoints the state Set hands it before the limit is written. Resumed
// from that checkpoint after a crash on either side of the write, the limiter takes
// the limit in the file for its own and raises it once, never twice.
func TestLimiterResumesAfterACrashAroundTheWrite(t *testing.T) {
	for _, written := range []bool{false, true} {
		t.Run(fmt.Sprintf("limit written before the crash: %v", written), func(t *testing.T) {
			root := t.TempDir()
			file := filepath.Join(root, "kubepods/memory.max")
			writeLimit(t, file, "8589934592") // the kubelet's 8Gi
			l, err := New(root, "kubepods", State{})
			require.NoError(t, err)
			_, err = l.Set(gi, nil)
			require.NoError(t, err)
			checkpoint := l.State()

			_, err = l.Set(3*gi, func(s State) error {
				assert.Equal(t, "9663676416", readLimit(t, file), "persisted before the write")
				checkpoint = s
				return nil
			})
			require.NoError(t, err)
			assert.Equal(t, State{Base: 8 * gi, Written: 11 * gi, Previous: 9 * gi}, checkpoint)
			if !written {
				writeLimit(t, file, "9663676416") // the crash came before the write
			}

			resumed, err := New(root, "kubepods", checkpoint)
			require.NoError(t, err)
			limit, err := resumed.Set(3*gi, nil)
			require.NoError(t, err)
			assert.Equal(t, 11*gi, limit, "8Gi from the kubelet + 3Gi online")
			assert.Equal(t, "11811160064", readLimit(t, file))
		})
	}
}

func TestLimiterWritesNothingItCouldNotPersist(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "kubepods/memory.max")
	writeLimit(t, file, "8589934592")
	l, err := New(root, "kubepods", State{})
	require.NoError(t, err)
	_, err = l.Set(gi, func(State) error { return errors.New("disk full") })
	require.ErrorContains(t, err, "record the kubepods memory limit 9663676416 before writing it (the limit stays 8589934592): disk full")
	assert.Equal(t, "8589934592", readLimit(t, file))

	_, err = l.Set(gi, nil)
	require.NoError(t, err)
	assert.Equal(t, "9663676416", readLimit(t, file), "the next change raises it once")
}

func TestLimiterTakesKubeletRewriteAsNewBase(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "kubepods.slice/memory.max")
	writeLimit(t, file, "8589934592")
	l, err := New(root, "", State{})
	require.NoError(t, err)
	_, err = l.Set(1*gi, nil)
	require.NoError(t, err)

	drifted, err := l.Drifted()
	require.NoError(t, err)
	assert.False(t, drifted, "the limit is the one Set wrote")

	writeLimit(t, file, "17179869184") // the kubelet restarted and wrote 16Gi
	drifted, err = l.Drifted()
	require.NoError(t, err)
	assert.True(t, drifted, "the kubelet's value is not the limiter's")
	_, err = l.Set(1*gi, nil)
	require.NoError(t, err)
	assert.Equal(t, "18253611008", readLimit(t, file))
	assert.Equal(t, 16*gi, l.State().Base)
	drifted, err = l.Drifted()
	require.NoError(t, err)
	assert.False(t, drifted)
}

func TestLimiterLeavesUnlimitedCgroupAlone(t *testing.T) {
	tests := []struct {
		name, file, value string
	}{
		{"v2 max", "kubepods/memory.max", "max"},
		{"v1 unlimited", "memory/kubepods/memory.limit_in_bytes", "9223372036854771712"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			file := filepath.Join(root, tc.file)
			writeLimit(t, file, tc.value)
			l, err := New(root, "", State{})
			require.NoError(t, err)
			limit, err := l.Set(4*gi, nil)
			require.NoError(t, err)
			assert.Equal(t, int64(-1), limit)
			assert.Equal(t, tc.value, readLimit(t, file))
			drifted, err := l.Drifted()
			require.NoError(t, err)
			assert.False(t, drifted, "an unlimited cgroup stays as it is, nothing to set again")
		})
	}
}

func TestNewNamesWhatItTried(t *testing.T) {
	root := t.TempDir()
	_, err := New(root, "", State{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(root, "kubepods.slice/memory.max"))
	assert.Contains(t, err.Error(), filepath.Join(root, "memory/kubepods/memory.limit_in_bytes"))
	assert.Contains(t, err.Error(), "set --kubepods-cgroup")

	writeLimit(t, filepath.Join(root, "kubepods/memory.max"), "garbage")
	l, err := New(root, "kubepods", State{})
	require.NoError(t, err)
	_, err = l.Set(gi, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"garbage" is not a number`)
}
