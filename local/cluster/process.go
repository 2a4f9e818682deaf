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
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a process may take to exit after SIGTERM before it is killed.
const stopGrace = 15 * time.Second

// Process is one component the cluster started. It runs in its own process group
// (its own session when detached), writes stdout and stderr to LogFile, and has a pid
// file in the run directory so that a later `local-cluster down` can stop it.
type Process struct {
	Name    string
	Pid     int
	LogFile string

	record  pidRecord
	pidFile string

	// cmd is nil for a process found on disk by Attach: it is not our child.
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit error, set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// pidRecord is the content of a pid file. StartTicks (the process start time from
// /proc/<pid>/stat) tells the process apart from a later one that reuses its pid.
type pidRecord struct {
	Pid        int       `json:"pid"`
	StartTicks uint64    `json:"startTicks"`
	Bin        string    `json:"bin"`
	Args       []string  `json:"args"`
	Started    time.Time `json:"started"`
}

type processSpec struct {
	name, bin string
	args      []string
	logDir    string
	pidDir    string
	detach    bool
}

func startProcess(spec processSpec) (*Process, error) {
	if _, err := os.Stat(spec.bin); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	for _, dir := range []string{spec.logDir, spec.pidDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.name, err)
		}
	}
	logFile := filepath.Join(spec.logDir, spec.name+".log")
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", spec.name, err)
	}
	defer out.Close() // the child has its own descriptor

	cmd := exec.Command(spec.bin, spec.args...)
	cmd.Stdout = out
	cmd.Stderr = out
	if spec.detach {
		// A new session: the process outlives the caller and its terminal.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		// Its own group, so that Stop reaches any children, and killed with us.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	fmt.Fprintf(out, "\n==== %s %s %s\n", time.Now().UTC().Format(time.RFC3339), spec.bin, strings.Join(spec.args, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", spec.name, spec.bin, err)
	}
	p := &Process{
		Name:    spec.name,
		Pid:     cmd.Process.Pid,
		LogFile: logFile,
		record:  pidRecord{Pid: cmd.Process.Pid, Bin: spec.bin, Args: spec.args, Started: time.Now()},
		pidFile: filepath.Join(spec.pidDir, spec.name+".pid"),
		cmd:     cmd,
		done:    make(chan struct{}),
	}
	// Read before the process can be reaped: our child's /proc entry stays until Wait.
	p.record.StartTicks, _ = procStat(p.Pid).startTicks()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	data, err := json.Marshal(p.record)
	if err == nil {
		err = os.WriteFile(p.pidFile, data, 0o644)
	}
	if err != nil {
		_ = p.Kill()
		return nil, fmt.Errorf("start %s: write pid file: %w", spec.name, err)
	}
	return p, nil
}

// loadProcess reads a pid file. It returns nil when the recorded process is gone (or
// the pid now belongs to another program).
func loadProcess(pidFile, logDir string) (*Process, error) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, err
	}
	var rec pidRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("read pid file %s: %w", pidFile, err)
	}
	if !processMatches(rec) {
		return nil, nil
	}
	name := strings.TrimSuffix(filepath.Base(pidFile), ".pid")
	return &Process{
		Name:    name,
		Pid:     rec.Pid,
		LogFile: filepath.Join(logDir, name+".log"),
		record:  rec,
		pidFile: pidFile,
	}, nil
}

// processMatches tells whether rec's process is alive: its pid exists, is not a
// zombie, and started when rec says (so it is not another process reusing the pid).
func processMatches(rec pidRecord) bool {
	st := procStat(rec.Pid)
	if !st.alive() {
		return false
	}
	ticks, ok := st.startTicks()
	return ok && ticks == rec.StartTicks
}

// alive tells whether pid exists and is not a zombie.
func alive(pid int) bool { return procStat(pid).alive() }

// statFields are the fields of /proc/<pid>/stat after "pid (comm)": fields[0] is the
// state, fields[2] the process group, fields[19] the start time in clock ticks.
type statFields []string

func procStat(pid int) statFields {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	// comm may hold spaces and parentheses: the fields start after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}

func (f statFields) alive() bool {
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func (f statFields) group() (int, bool) {
	if len(f) < 3 {
		return 0, false
	}
	g, err := strconv.Atoi(f[2])
	return g, err == nil
}

func (f statFields) startTicks() (uint64, bool) {
	if len(f) < 20 {
		return 0, false
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return t, err == nil
}

// Running tells whether the process is still running.
func (p *Process) Running() bool {
	if p.cmd != nil {
		select {
		case <-p.done:
			return false
		default:
			return true
		}
	}
	return processMatches(p.record)
}

// Done is closed when a process this program started has exited. For a process found
// by Attach it is nil.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits until the process has exited and returns its exit error (nil for a
// process found by Attach).
func (p *Process) Wait() error {
	if p.cmd != nil {
		<-p.done
		return p.err
	}
	for p.Running() {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Stop sends SIGTERM to the process group, waits for the process to exit (SIGKILL
// after a grace period), then kills whatever is left in its group and removes the pid
// file. Calling it again returns the first result.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.terminate(syscall.SIGTERM, stopGrace) })
	return p.stopErr
}

// Kill kills the process group with SIGKILL and waits for the process to exit.
func (p *Process) Kill() error {
	p.stopOnce.Do(func() { p.stopErr = p.terminate(syscall.SIGKILL, stopGrace) })
	return p.stopErr
}

func (p *Process) terminate(sig syscall.Signal, grace time.Duration) error {
	defer os.Remove(p.pidFile)
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(-p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.Pid, err)
	}
	if !p.waitExit(grace) {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		if !p.waitExit(grace) {
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, p.Pid)
		}
	}
	// The leader is gone; take down anything it left in its group.
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(grace)
	for {
		left := groupMembers(p.Pid)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: processes %v of its group survived SIGKILL", p.Name, left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// groupMembers lists the live (not zombie) processes of the process group pgid.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st := procStat(pid)
		if g, ok := st.group(); ok && g == pgid && st.alive() {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (p *Process) waitExit(timeout time.Duration) bool {
	if p.cmd != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(p.Pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !alive(p.Pid)
}

// exitDescription says how a child process ended, for error messages.
func (p *Process) exitDescription() string {
	if p.err != nil {
		return p.err.Error()
	}
	return "exit status 0"
}

// LogTail returns the last n lines of the process's log file.
func (p *Process) LogTail(n int) string {
	return tailFile(p.LogFile, n)
}

func tailFile(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", file, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
