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

package main

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// run executes the CLI in-process and returns its output with the parts that change
// from run to run (directory, port, pids) replaced by placeholders.
func run(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--dir", dir))
	err := cmd.ExecuteContext(ctx)
	s := strings.ReplaceAll(out.String(), dir, "<dir>")
	s = regexp.MustCompile(`https://127\.0\.0\.1:\d+`).ReplaceAllString(s, "https://127.0.0.1:<port>")
	s = regexp.MustCompile(`(?m)^(\S+)\s+\d+\s+(<dir>\S+)$`).ReplaceAllString(s, "$1 <pid> $2")
	s = regexp.MustCompile(`(?m)^PROCESS\s+PID\s+LOG$`).ReplaceAllString(s, "PROCESS PID LOG")
	return s, err
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(file, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err, "run 'go test ./local/cmd/local-cluster -update' to create it")
	assert.Equal(t, string(want), got)
}

// TestUpStatusDownWithRealBinaries runs the CLI against real etcd, kube-apiserver,
// kube-controller-manager and kwok, detached as `make cluster-up` runs them.
func TestUpStatusDownWithRealBinaries(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() {
		// Never leak a detached cluster, whatever failed.
		if c, _ := cluster.Attach(dir); c != nil {
			_ = c.Stop()
		}
	})

	out, err := run(t, dir, "up", "--nodes", "2", "--node-memory", "8Gi", "--port", "0")
	require.NoError(t, err, out)
	golden(t, "up", out)

	out, err = run(t, dir, "up", "--nodes", "2", "--port", "0")
	require.NoError(t, err, out)
	golden(t, "up-again", out)

	out, err = run(t, dir, "status")
	require.NoError(t, err, out)
	golden(t, "status", out)

	c, err := cluster.Attach(dir)
	require.NoError(t, err)
	procs := c.Processes()
	require.Len(t, procs, 4)

	out, err = run(t, dir, "down")
	require.NoError(t, err, out)
	golden(t, "down", out)
	for _, p := range procs {
		// The processes were started by this test process, which reaps them in the
		// background: allow a moment for the zombie to go.
		assert.Eventually(t, func() bool {
			_, err := os.Stat("/proc/" + strconv.Itoa(p.Pid))
			return os.IsNotExist(err)
		}, 5*time.Second, 10*time.Millisecond, "%s (pid %d) left behind by down", p.Name, p.Pid)
	}

	out, err = run(t, dir, "status")
	require.Error(t, err)
	assert.Equal(t, "local cluster not running in <dir>", strings.ReplaceAll(err.Error(), dir, "<dir>"))

	out, err = run(t, dir, "down")
	require.NoError(t, err, out)
	golden(t, "down-again", out)
}

func TestUpOnATakenPortNamesIt(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)

	_, err = run(t, t.TempDir(), "up", "--port", port)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "apiserver port "+port+" on 127.0.0.1 is taken")
	assert.Contains(t, err.Error(), "choose another port (--port")
}
