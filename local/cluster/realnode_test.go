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
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The cleanup of a dead real node finds its leftovers by the node's name, in any run
// directory; it must never touch a real node whose kubelet or containerd still runs
// for another cluster.
func TestCleanRealNodesLeavesALiveNodeAlone(t *testing.T) {
	const name = "dm-real-test"
	live := exec.Command("sh", "-c", "sleep 60", "--config=/elsewhere/real-nodes/"+name+"/containerd.toml")
	require.NoError(t, live.Start())
	t.Cleanup(func() { _ = live.Process.Kill(); _ = live.Wait() })

	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "real-nodes", name), 0o755))
	err := CleanRealNodes(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("real node %s: it still runs in another cluster (pid %d)", name, live.Process.Pid))
	assert.NoError(t, syscall.Kill(live.Process.Pid, 0), "the live node's process still runs")
}

func TestUnescapeMountPath(t *testing.T) {
	assert.Equal(t, "/tmp/a b/c", unescapeMountPath(`/tmp/a\040b/c`))
	assert.Equal(t, "/plain", unescapeMountPath("/plain"))
	assert.Equal(t, `/odd\x`, unescapeMountPath(`/odd\x`))
}
