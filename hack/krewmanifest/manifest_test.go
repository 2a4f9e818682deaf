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
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/krew/pkg/index"
	"sigs.k8s.io/yaml"
)

type entry struct {
	name string
	mode int64
}

// writeArchive writes a tar.gz of the entries into dir and returns its path and sha256.
func writeArchive(t *testing.T, dir, name string, entries ...entry) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		content := []byte("content of " + e.name)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(content)), Typeflag: tar.TypeReg}))
		_, err := tw.Write(content)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, zw.Close())
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	sum := sha256.Sum256(buf.Bytes())
	return path, hex.EncodeToString(sum[:])
}

var goodEntries = []entry{{binary, 0o755}, {licenseFile, 0o644}}

// TestGenerateDescribesEachArchive reads the manifest back as krew does, into krew's
// own types with unknown fields refused, and checks every platform against its archive.
func TestGenerateDescribesEachArchive(t *testing.T) {
	dir := t.TempDir()
	arm, armSum := writeArchive(t, dir, "kubectl-dynamic_memory-linux-arm64.tar.gz", goodEntries...)
	amd, amdSum := writeArchive(t, dir, "kubectl-dynamic_memory-linux-amd64.tar.gz", entry{"./" + binary, 0o755}, entry{"./" + licenseFile, 0o644})

	out, err := generate("v0.1.0", defaultURI, []string{arm, amd})
	require.NoError(t, err)
	var p index.Plugin
	require.NoError(t, yaml.UnmarshalStrict(out, &p), "the manifest in krew's types:\n%s", out)
	assert.NoError(t, validate(p))

	assert.Equal(t, "krew.googlecontainertools.github.com/v1alpha2", p.APIVersion)
	assert.Equal(t, "Plugin", p.Kind)
	assert.Equal(t, "dynamic-memory", p.Name)
	assert.Equal(t, "v0.1.0", p.Spec.Version)
	assert.Equal(t, "https://github.com/dynamicmemory/kube-dynamic-memory", p.Spec.Homepage)
	assert.NotEmpty(t, p.Spec.ShortDescription)
	files := []index.FileOperation{{From: "kubectl-dynamic_memory", To: "."}, {From: "LICENSE", To: "."}}
	assert.Equal(t, []index.Platform{{
		URI:      "https://github.com/dynamicmemory/kube-dynamic-memory/releases/download/v0.1.0/kubectl-dynamic_memory-linux-amd64.tar.gz",
		Sha256:   amdSum,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"os": "linux", "arch": "amd64"}},
		Files:    files,
		Bin:      "kubectl-dynamic_memory",
	}, {
		URI:      "https://github.com/dynamicmemory/kube-dynamic-memory/releases/download/v0.1.0/kubectl-dynamic_memory-linux-arm64.tar.gz",
		Sha256:   armSum,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"os": "linux", "arch": "arm64"}},
		Files:    files,
		Bin:      "kubectl-dynamic_memory",
	}}, p.Spec.Platforms, "one platform per archive, in order")
	assert.NotContains(t, string(out), "creationTimestamp", "no empty metadata fields")
}

func TestGenerateUsesTheURITemplate(t *testing.T) {
	amd, _ := writeArchive(t, t.TempDir(), "kubectl-dynamic_memory-linux-amd64.tar.gz", goodEntries...)
	out, err := generate("v0.2.0-rc.1", "https://mirror.example.com/{{.Version}}/files/{{.Archive}}", []string{amd})
	require.NoError(t, err)
	var p index.Plugin
	require.NoError(t, yaml.UnmarshalStrict(out, &p))
	require.Len(t, p.Spec.Platforms, 1)
	assert.Equal(t, "https://mirror.example.com/v0.2.0-rc.1/files/kubectl-dynamic_memory-linux-amd64.tar.gz", p.Spec.Platforms[0].URI)
}

func TestGenerateRefuses(t *testing.T) {
	dir := t.TempDir()
	good, _ := writeArchive(t, dir, "kubectl-dynamic_memory-linux-amd64.tar.gz", goodEntries...)
	twin, _ := writeArchive(t, t.TempDir(), "kubectl-dynamic_memory-linux-amd64.tar.gz", goodEntries...)
	noLicense, _ := writeArchive(t, dir, "kubectl-dynamic_memory-linux-arm64.tar.gz", entry{binary, 0o755})
	notExecutable, _ := writeArchive(t, dir, "kubectl-dynamic_memory-darwin-arm64.tar.gz", entry{binary, 0o644}, entry{licenseFile, 0o644})
	nested, _ := writeArchive(t, dir, "kubectl-dynamic_memory-darwin-amd64.tar.gz", entry{"dir/" + binary, 0o755}, entry{licenseFile, 0o644})
	badName, _ := writeArchive(t, dir, "kubectl-dynamic_memory_linux_amd64.tar.gz", goodEntries...)
	notGzip := filepath.Join(dir, "kubectl-dynamic_memory-windows-amd64.tar.gz")
	require.NoError(t, os.WriteFile(notGzip, []byte("plain"), 0o644))

	cases := []struct {
		name     string
		version  string
		uri      string
		archives []string
		want     string
	}{
		{"no archives", "v0.1.0", defaultURI, nil, "no archives given"},
		{"a name without the platform", "v0.1.0", defaultURI, []string{badName},
			"archive " + badName + ": want the name kubectl-dynamic_memory-OS-ARCH.tar.gz, e.g. kubectl-dynamic_memory-linux-amd64.tar.gz"},
		{"no license", "v0.1.0", defaultURI, []string{noLicense},
			"archive " + noLicense + ": LICENSE is missing: krew installs the plugin kubectl-dynamic_memory and the LICENSE from the archive's top directory"},
		{"the plugin not executable", "v0.1.0", defaultURI, []string{notExecutable}, "kubectl-dynamic_memory is not executable (mode 644)"},
		{"the plugin in a directory", "v0.1.0", defaultURI, []string{nested}, "kubectl-dynamic_memory is missing"},
		{"not gzip", "v0.1.0", defaultURI, []string{notGzip}, "not a gzip-compressed tar archive"},
		{"a version without v", "0.1.0", defaultURI, []string{good}, `spec.version: Invalid value: "0.1.0": want a semantic version with a leading 'v'`},
		{"the same platform twice", "v0.1.0", defaultURI, []string{good, twin}, "spec.platforms[1].selector: Duplicate value"},
		{"a template naming an unknown field", "v0.1.0", "https://example.com/{{.Tag}}", []string{good}, "-uri"},
		{"a plain http address", "v0.1.0", "http://example.com/{{.Archive}}", []string{good}, "spec.platforms[0].uri: Invalid value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := generate(tc.version, tc.uri, tc.archives)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestValidate(t *testing.T) {
	amd, _ := writeArchive(t, t.TempDir(), "kubectl-dynamic_memory-linux-amd64.tar.gz", goodEntries...)
	out, err := generate("v0.1.0", defaultURI, []string{amd})
	require.NoError(t, err)
	valid := func() index.Plugin {
		var p index.Plugin
		require.NoError(t, yaml.UnmarshalStrict(out, &p))
		return p
	}
	require.NoError(t, validate(valid()))

	cases := []struct {
		name   string
		mutate func(*index.Plugin)
		want   string
	}{
		{"another apiVersion", func(p *index.Plugin) { p.APIVersion = "krew.googlecontainertools.github.com/v1alpha1" }, "apiVersion: Unsupported value"},
		{"another kind", func(p *index.Plugin) { p.Kind = "Receipt" }, "kind: Unsupported value"},
		{"an upper-case name", func(p *index.Plugin) { p.Name = "Dynamic-Memory" }, "metadata.name: Invalid value"},
		{"krew's name", func(p *index.Plugin) { p.Name = "krew" }, "metadata.name: Forbidden"},
		{"a version that is not semantic", func(p *index.Plugin) { p.Spec.Version = "v1.2" }, "spec.version: Invalid value"},
		{"no short description", func(p *index.Plugin) { p.Spec.ShortDescription = "" }, "spec.shortDescription: Required value"},
		{"no platforms", func(p *index.Plugin) { p.Spec.Platforms = nil }, "spec.platforms: Required value"},
		{"no sha256", func(p *index.Plugin) { p.Spec.Platforms[0].Sha256 = "" }, "spec.platforms[0].sha256: Invalid value"},
		{"an upper-case sha256", func(p *index.Plugin) { p.Spec.Platforms[0].Sha256 = "AB" + p.Spec.Platforms[0].Sha256[2:] }, "spec.platforms[0].sha256"},
		{"no bin", func(p *index.Plugin) { p.Spec.Platforms[0].Bin = "" }, "spec.platforms[0].bin: Required value"},
		{"no selector", func(p *index.Plugin) { p.Spec.Platforms[0].Selector = nil }, "spec.platforms[0].selector: Required value"},
		{"a file without its target", func(p *index.Plugin) { p.Spec.Platforms[0].Files[1].To = "" }, "spec.platforms[0].files[1]: Required value"},
		{"no uri", func(p *index.Plugin) { p.Spec.Platforms[0].URI = "" }, "spec.platforms[0].uri: Invalid value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := valid()
			tc.mutate(&p)
			err := validate(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRunWritesTheManifestNamedAfterThePlugin(t *testing.T) {
	dir := t.TempDir()
	amd, _ := writeArchive(t, dir, "kubectl-dynamic_memory-linux-amd64.tar.gz", goodEntries...)
	err := run("v0.1.0", defaultURI, filepath.Join(dir, "plugin.yaml"), []string{amd})
	assert.EqualError(t, err, "-o "+filepath.Join(dir, "plugin.yaml")+`: krew wants the manifest of plugin "dynamic-memory" in a file named dynamic-memory.yaml`)

	require.NoError(t, run("v0.1.0", defaultURI, filepath.Join(dir, "dynamic-memory.yaml"), []string{amd}))
	written, err := os.ReadFile(filepath.Join(dir, "dynamic-memory.yaml"))
	require.NoError(t, err)
	want, err := generate("v0.1.0", defaultURI, []string{amd})
	require.NoError(t, err)
	assert.Equal(t, string(want), string(written))
}
