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

package manifests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
)

// kindCluster is the part of kind's v1alpha4 Cluster that kind/cluster.yaml uses;
// decoding is strict, so a misspelt or misplaced field fails the test.
type kindCluster struct {
	Kind                    string          `json:"kind"`
	APIVersion              string          `json:"apiVersion"`
	Name                    string          `json:"name"`
	FeatureGates            map[string]bool `json:"featureGates"`
	ContainerdConfigPatches []string        `json:"containerdConfigPatches"`
	Nodes                   []kindNode      `json:"nodes"`
}

type kindNode struct {
	Role   string            `json:"role"`
	Image  string            `json:"image"`
	Labels map[string]string `json:"labels"`
}

func TestKindClusterConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "kind", "cluster.yaml"))
	require.NoError(t, err)
	var c kindCluster
	require.NoError(t, yaml.UnmarshalStrict(data, &c), "kind/cluster.yaml")

	assert.Equal(t, "Cluster", c.Kind)
	assert.Equal(t, "kind.x-k8s.io/v1alpha4", c.APIVersion)
	assert.Equal(t, "dynamic-memory", c.Name, "kind/demo.sh and the sample pool use this name")
	for _, gate := range []string{"DynamicResourceAllocation", "DRAConsumableCapacity", "DRAResourceClaimDeviceStatus", "DRADeviceBindingConditions"} {
		assert.True(t, c.FeatureGates[gate], "feature gate %s enabled", gate)
	}
	require.Len(t, c.ContainerdConfigPatches, 1)
	assert.Contains(t, c.ContainerdConfigPatches[0], "enable_cdi = true", "containerd injects CDI devices")

	var workers []string
	for i, n := range c.Nodes {
		assert.Contains(t, []string{"control-plane", "worker"}, n.Role, "nodes[%d].role", i)
		assert.True(t, strings.HasPrefix(n.Image, "kindest/node:v1.37."), "nodes[%d].image %s is a 1.37 node image", i, n.Image)
		if n.Role == "worker" {
			assert.Equal(t, "true", n.Labels[deploy.NodeLabel], "nodes[%d] is attached to the pools: the node DaemonSets run there", i)
			// kind names workers <cluster>-worker, <cluster>-worker2, ...
			name := c.Name + "-worker"
			if len(workers) > 0 {
				name += fmt.Sprint(len(workers) + 1)
			}
			workers = append(workers, name)
		}
	}
	require.NotEmpty(t, workers)

	// The sample pool is attached to exactly the kind workers.
	pool := find(t, build(t, "manifests/samples"), "DynamicMemoryPool", "cxl-pool-a")
	nodes, _, err := unstructured.NestedSlice(pool.Object, "spec", "nodes")
	require.NoError(t, err)
	var poolNodes []string
	for _, n := range nodes {
		poolNodes = append(poolNodes, n.(map[string]any)["name"].(string))
	}
	assert.Equal(t, workers, poolNodes)
}

// TestScriptsFailFastWithoutDocker runs kind/demo.sh and hack/images.sh where docker
// is missing and where no engine answers: both must stop at once with a clear reason.
func TestScriptsFailFastWithoutDocker(t *testing.T) {
	root := repoRoot(t)
	fakeBin := t.TempDir()
	// A docker CLI whose engine is not running, and kind/kubectl/go that would fail
	// loudly if the scripts went further.
	write := func(name, body string) string {
		path := filepath.Join(fakeBin, name)
		require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
		return path
	}
	deadDocker := write("dead-docker", `echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2; exit 1`)
	for _, tool := range []string{"kind", "kubectl", "go"} {
		write(tool, `echo "`+tool+` must not run" >&2; exit 3`)
	}
	tests := []struct {
		name   string
		script string
		docker string
		want   string
	}{
		{"demo without docker", "kind/demo.sh", "no-such-docker-cli", "demo: 'no-such-docker-cli' not found: the kind demo needs docker, kind, kubectl and go on PATH. Without Docker, run the local cluster demo: make demo"},
		{"demo without engine", "kind/demo.sh", deadDocker, "demo: no Docker engine is running ('" + deadDocker + " info' failed): start the Docker daemon and retry, or run the local cluster demo: make demo"},
		{"images without docker", "hack/images.sh", "no-such-docker-cli", "images: 'no-such-docker-cli' not found: building images needs Docker (or set DOCKER to a compatible CLI). Without one, use the local cluster: make demo"},
		{"images without engine", "hack/images.sh", deadDocker, "images: no Docker engine is running ('" + deadDocker + " info' failed): start the Docker daemon and retry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(root, tc.script))
			cmd.Env = append(os.Environ(), "DOCKER="+tc.docker, "PATH="+fakeBin+":"+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			var exitErr *exec.ExitError
			require.ErrorAs(t, err, &exitErr, "output: %s", out)
			assert.Equal(t, 1, exitErr.ExitCode())
			assert.Equal(t, tc.want+"\n", string(out))
		})
	}
}

// TestImagesRefusesAVersionThatIsNotSemantic runs hack/images.sh with a docker CLI whose
// engine answers: a VERSION that is not a semantic version stops it before any build.
func TestImagesRefusesAVersionThatIsNotSemantic(t *testing.T) {
	fakeBin := t.TempDir()
	docker := filepath.Join(fakeBin, "docker")
	require.NoError(t, os.WriteFile(docker, []byte("#!/bin/sh\n[ \"$1\" = info ] && exit 0\necho \"docker $1 must not run\" >&2; exit 3\n"), 0o755))
	cmd := exec.Command(filepath.Join(repoRoot(t), "hack/images.sh"), "ghcr.io/dynamicmemory", "dev")
	cmd.Env = append(os.Environ(), "DOCKER="+docker)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr, "output: %s", out)
	assert.Equal(t, 1, exitErr.ExitCode())
	assert.Equal(t, "version: VERSION \"dev\" is not a semantic version: want vMAJOR.MINOR.PATCH, optionally followed by -PRERELEASE and +BUILD (semver.org), e.g. v0.1.0, v0.2.0-rc.1 or v0.1.0-5-g1a2b3c4\n", string(out))
}

func TestScriptsParse(t *testing.T) {
	for _, script := range []string{"kind/demo.sh", "hack/images.sh"} {
		out, err := exec.Command("bash", "-n", filepath.Join(repoRoot(t), script)).CombinedOutput()
		assert.NoError(t, err, "bash -n %s: %s", script, out)
	}
}
