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

package cluster

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func startShell(t *testing.T, dir, name, script string, detach bool) *Process {
	t.Helper()
	p, err := startProcess(processSpec{
		name:   name,
		bin:    "/bin/sh",
		args:   []string{"-c", script},
		logDir: filepath.Join(dir, "logs"),
		pidDir: filepath.Join(dir, "pids"),
		detach: detach,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Kill() })
	return p
}

// groupGone tells whether no live process is left in the process group pgid.
func groupGone(pgid int) bool { return len(groupMembers(pgid)) == 0 }

func TestStopEndsTheWholeProcessGroup(t *testing.T) {
	for _, detach := range []bool{false, true} {
		t.Run(map[bool]string{false: "child", true: "detached"}[detach], func(t *testing.T) {
			dir := t.TempDir()
			p := startShell(t, dir, "parent", "sleep 600 & echo started; wait", detach)
			require.Eventually(t, func() bool { return p.LogTail(1) == "started" }, 10*time.Second, 10*time.Millisecond)
			require.FileExists(t, filepath.Join(dir, "pids", "parent.pid"))

			require.NoError(t, p.Stop())
			assert.False(t, p.Running())
			assert.True(t, groupGone(p.Pid), "the background sleep of the group survived Stop")
			assert.NoFileExists(t, filepath.Join(dir, "pids", "parent.pid"))
			require.NoError(t, p.Stop(), "a second Stop is a no-op")
		})
	}
}

func TestTerminateKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	p := startShell(t, t.TempDir(), "stubborn", `trap "" TERM; echo trapped; while :; do sleep 1; done`, false)
	require.Eventually(t, func() bool { return p.LogTail(1) == "trapped" }, 10*time.Second, 10*time.Millisecond)

	start := time.Now()
	require.NoError(t, p.terminate(syscall.SIGTERM, 300*time.Millisecond))
	assert.False(t, p.Running())
	assert.True(t, groupGone(p.Pid))
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestLoadProcessFindsLiveProcessesOnly(t *testing.T) {
	dir := t.TempDir()
	p := startShell(t, dir, "sleeper", "exec sleep 600", true)

	found, err := loadProcess(filepath.Join(dir, "pids", "sleeper.pid"), filepath.Join(dir, "logs"))
	require.NoError(t, err)
	require.NotNil(t, found, "a live process is found from its pid file")
	assert.Equal(t, p.Pid, found.Pid)
	assert.Equal(t, "sleeper", found.Name)
	assert.True(t, found.Running())

	// A process found on disk is not our child: stopping it polls /proc.
	require.NoError(t, found.Stop())
	assert.Eventually(t, func() bool { return !p.Running() }, 5*time.Second, 10*time.Millisecond)

	tests := []struct {
		name   string
		record pidRecord
	}{
		{name: "exited process", record: found.record},
		{name: "pid reused by another process", record: pidRecord{Pid: os.Getpid(), StartTicks: 1, Bin: "/bin/sh"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "x.pid")
			data, err := json.Marshal(tc.record)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(file, data, 0o644))
			found, err := loadProcess(file, t.TempDir())
			require.NoError(t, err)
			assert.Nil(t, found, "a stale pid file must never lead to signalling a process")
		})
	}
}

func TestStartProcessMissingBinary(t *testing.T) {
	dir := t.TempDir()
	_, err := startProcess(processSpec{name: "ghost", bin: filepath.Join(dir, "nope"), logDir: dir, pidDir: dir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "start ghost")
	assert.Contains(t, err.Error(), "nope")
}
