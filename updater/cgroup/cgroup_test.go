package cgroup

import (
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

			limit, err := l.Set(2 * gi)
			require.NoError(t, err)
			assert.Equal(t, 10*gi, limit)
			assert.Equal(t, "10737418240", readLimit(t, file))

			_, err = l.Set(3 * gi)
			require.NoError(t, err)
			assert.Equal(t, "11811160064", readLimit(t, file), "raised from the kubelet's base, not from the last value")

			_, err = l.Set(0)
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
	_, err = l.Set(2 * gi)
	require.NoError(t, err)
	assert.Equal(t, "10737418240", readLimit(t, file), "not raised twice")
	assert.Equal(t, State{Base: 8 * gi, Written: 10 * gi}, l.State())
}

func TestLimiterTakesKubeletRewriteAsNewBase(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "kubepods.slice/memory.max")
	writeLimit(t, file, "8589934592")
	l, err := New(root, "", State{})
	require.NoError(t, err)
	_, err = l.Set(1 * gi)
	require.NoError(t, err)

	writeLimit(t, file, "17179869184") // the kubelet restarted and wrote 16Gi
	_, err = l.Set(1 * gi)
	require.NoError(t, err)
	assert.Equal(t, "18253611008", readLimit(t, file))
	assert.Equal(t, 16*gi, l.State().Base)
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
			limit, err := l.Set(4 * gi)
			require.NoError(t, err)
			assert.Equal(t, int64(-1), limit)
			assert.Equal(t, tc.value, readLimit(t, file))
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
	_, err = l.Set(gi)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"garbage" is not a number`)
}
