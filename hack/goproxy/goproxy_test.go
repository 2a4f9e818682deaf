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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/modfile"
)

const pluginModule = "github.com/dynamicmemory/kube-dynamic-memory/cmd/kubectl-dynamic_memory"

// repoRoot is the repository's root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	return root
}

// goEnv reads one setting of the go command.
func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// TestGoInstallFromProxy publishes the plugin and the api module into a proxy
// directory and installs the plugin with `go install MODULE@VERSION` from an empty
// GOPATH and module cache, outside the repository, without go.work. The modules of
// other projects come from the module cache's download directory, a file proxy of what
// this machine downloaded once (a user's go command gets them from proxy.golang.org).
// The checksum database is off because it cannot be reached offline; a user keeps it on
// and exempts only this project's modules (docs/user-guide.md).
func TestGoInstallFromProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("go install compiles the plugin and its dependencies from a fresh module cache: minutes")
	}
	root := repoRoot(t)
	proxy := t.TempDir()
	const version = "v0.1.0-test.1"
	_, err := publish(proxy, version, time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
		[]string{filepath.Join(root, "api"), filepath.Join(root, "cmd", "kubectl-dynamic_memory")})
	require.NoError(t, err)

	gopath := t.TempDir()
	install := exec.Command("go", "install", pluginModule+"@"+version)
	install.Dir = t.TempDir()
	install.Env = append(os.Environ(),
		"GOPATH="+gopath,
		"GOMODCACHE="+filepath.Join(gopath, "pkg", "mod"),
		"GOBIN="+filepath.Join(gopath, "bin"),
		"GOFLAGS=-modcacherw", // so that the test can remove the module cache
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		"GOPROXY=file://"+proxy+",file://"+filepath.Join(goEnv(t, "GOMODCACHE"), "cache", "download"),
		"GOSUMDB=off",
	)
	out, err := install.CombinedOutput()
	require.NoError(t, err, "go install:\n%s", out)

	var stdout bytes.Buffer
	plugin := exec.Command(filepath.Join(gopath, "bin", "kubectl-dynamic_memory"), "version", "--client")
	plugin.Stdout = &stdout
	require.NoError(t, plugin.Run())
	assert.Equal(t, "Client Version: "+version+"\n", stdout.String())
}

func TestPublishedModules(t *testing.T) {
	root := repoRoot(t)
	proxy := t.TempDir()
	const version = "v0.2.0"
	_, err := publish(proxy, version, time.Now(), []string{filepath.Join(root, "api"), filepath.Join(root, "cmd", "kubectl-dynamic_memory")})
	require.NoError(t, err)

	at := filepath.Join(proxy, "github.com", "dynamicmemory", "kube-dynamic-memory", "cmd", "kubectl-dynamic_memory", "@v")
	data, err := os.ReadFile(filepath.Join(at, version+".mod"))
	require.NoError(t, err)
	f, err := modfile.Parse("go.mod", data, nil)
	require.NoError(t, err)
	assert.Empty(t, f.Replace)
	var apiVersion string
	for _, r := range f.Require {
		if r.Mod.Path == "github.com/dynamicmemory/kube-dynamic-memory/api" {
			apiVersion = r.Mod.Version
		}
	}
	assert.Equal(t, version, apiVersion, "the plugin requires the api module published with it")
	list, err := os.ReadFile(filepath.Join(at, "list"))
	require.NoError(t, err)
	assert.Equal(t, version+"\n", string(list))

	// Publishing another version keeps the first in the list.
	_, err = publish(proxy, "v0.10.0", time.Now(), []string{filepath.Join(root, "api"), filepath.Join(root, "cmd", "kubectl-dynamic_memory")})
	require.NoError(t, err)
	list, err = os.ReadFile(filepath.Join(at, "list"))
	require.NoError(t, err)
	assert.Equal(t, "v0.2.0\nv0.10.0\n", string(list))
}

func TestPublishRefuses(t *testing.T) {
	root := repoRoot(t)
	tests := []struct {
		name    string
		version string
		dir     string
		want    string
	}{
		{
			name:    "a version that is not semantic",
			version: "db1976f",
			dir:     "api",
			want:    `-version "db1976f" is not a semantic version: give one such as v0.3.0 (make goproxy VERSION=v0.3.0)`,
		},
		{
			name:    "a module with replace directives",
			version: "v0.3.0",
			dir:     "memservice",
			want:    "which go install refuses",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := publish(t.TempDir(), tc.version, time.Now(), []string{filepath.Join(root, tc.dir)})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
