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

// Package hack holds the tests of the scripts in hack/ (the Go programs have their own
// packages below it).
package hack

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/modfile"
)

const wantForm = "vMAJOR.MINOR.PATCH, optionally followed by -PRERELEASE and +BUILD (semver.org), e.g. v0.1.0, v0.2.0-rc.1 or v0.1.0-5-g1a2b3c4"

// versionScript runs hack/version.sh in dir and returns its stdout, stderr and exit code.
func versionScript(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	script, err := filepath.Abs("version.sh")
	require.NoError(t, err)
	cmd := exec.Command(script, args...)
	cmd.Dir = dir
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if exitErr, ok := err.(*exec.ExitError); ok {
		return out.String(), errOut.String(), exitErr.ExitCode()
	}
	require.NoError(t, err)
	return out.String(), errOut.String(), 0
}

func TestVersionCheck(t *testing.T) {
	valid := []string{"v0.1.0", "v1.20.300", "v0.2.0-rc.1", "v0.1.0-5-g1a2b3c4", "v0.1.0-5-g1a2b3c4-dirty",
		"v0.0.0-69-g5d425a5", "v1.0.0-alpha.0.1+build.7", "v1.0.0+20260101"}
	for _, v := range valid {
		t.Run(v, func(t *testing.T) {
			_, stderr, code := versionScript(t, ".", "check", v)
			assert.Equal(t, 0, code, stderr)
		})
	}
	invalid := []string{"0.1.0", "v0.1", "v01.2.3", "v1.2.3-", "v1.2.3-01", "v1.2.3+", "v1.2.3-rc..1", "dev", "v1.2.3 ", "v1.2.3\nv1.2.4"}
	for _, v := range invalid {
		t.Run(v, func(t *testing.T) {
			stdout, stderr, code := versionScript(t, ".", "check", v)
			assert.Equal(t, 1, code)
			assert.Empty(t, stdout)
			assert.Equal(t, "version: VERSION \""+v+"\" is not a semantic version: want "+wantForm+"\n", stderr)
		})
	}
	t.Run("empty", func(t *testing.T) {
		_, stderr, code := versionScript(t, ".", "check", "")
		assert.Equal(t, 1, code)
		assert.Equal(t, "version: VERSION is empty: set it to "+wantForm+"\n", stderr)
	})
}

func TestVersionLdflagsStampTheVersionAndTheKubernetesRelease(t *testing.T) {
	data, err := os.ReadFile("../go.mod")
	require.NoError(t, err)
	mod, err := modfile.Parse("go.mod", data, nil)
	require.NoError(t, err)
	var kube string
	for _, r := range mod.Require {
		if r.Mod.Path == "k8s.io/kubernetes" {
			kube = r.Mod.Version
		}
	}
	require.NotEmpty(t, kube, "go.mod requires k8s.io/kubernetes")

	stdout, stderr, code := versionScript(t, ".", "ldflags", "v0.1.0")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "-X k8s.io/component-base/version.gitVersion="+kube+"-dynamicmemory-v0.1.0"+
		" -X github.com/dynamicmemory/kube-dynamic-memory/api/version.Version=v0.1.0\n", stdout)

	stdout, stderr, code = versionScript(t, ".", "ldflags", "0.1.0")
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout, "no flags for a version that is not one")
	assert.Contains(t, stderr, `VERSION "0.1.0" is not a semantic version`)
}

// TestVersionOfACheckout follows a repository from its first commit through a release
// tag to the commits after it.
func TestVersionOfACheckout(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git:", err)
	}
	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
		return strings.TrimSpace(string(out))
	}
	commit := func(content string) string {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), []byte(content), 0o644))
		git("add", "file")
		git("commit", "-q", "-m", content)
		return git("rev-parse", "--short", "HEAD")
	}
	version := func() string {
		t.Helper()
		stdout, stderr, code := versionScript(t, dir)
		require.Equal(t, 0, code, stderr)
		v := strings.TrimSpace(stdout)
		_, stderr, code = versionScript(t, dir, "check", v)
		assert.Equal(t, 0, code, "the version of a checkout passes the check: %s", stderr)
		return v
	}

	_, stderr, code := versionScript(t, dir)
	assert.Equal(t, 1, code)
	assert.Equal(t, "version: not a git checkout, so the version is unknown: set VERSION to "+wantForm+"\n", stderr)

	git("init", "-q")
	first := commit("one")
	second := commit("two")
	assert.Equal(t, "v0.0.0-2-g"+second, version(), "before the first tag")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), []byte("changed"), 0o644))
	assert.Equal(t, "v0.0.0-2-g"+second+"-dirty", version())
	git("checkout", "-q", "file")

	git("tag", "-a", "v0.1.0", "-m", "v0.1.0", first)
	assert.Equal(t, "v0.1.0-1-g"+second, version(), "a commit after the release")
	git("tag", "-a", "v0.1.1", "-m", "v0.1.1")
	assert.Equal(t, "v0.1.1", version(), "the release itself")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), []byte("changed"), 0o644))
	assert.Equal(t, "v0.1.1-dirty", version(), "the release with uncommitted changes")
}
