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
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/zip"
)

// published is a module written to the proxy, with the go.sum lines that a module
// requiring it needs.
type published struct {
	path    string
	sumLine []string
}

// publish writes the modules in dirs at version into the proxy directory out, in the
// order given, and returns them.
func publish(out, version string, t time.Time, dirs []string) ([]published, error) {
	if !semver.IsValid(version) || semver.Canonical(version) != version {
		return nil, fmt.Errorf("-version %q is not a semantic version: give one such as v0.3.0 (make goproxy VERSION=v0.3.0)", version)
	}
	done := map[string]published{}
	var all []published
	for _, dir := range dirs {
		p, err := publishModule(out, version, t, dir, done)
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", dir, err)
		}
		done[p.path] = p
		all = append(all, p)
	}
	return all, nil
}

// publishModule writes one module: its go.mod with the requirements on modules in
// done set to version, its go.sum with their checksums, its zip, .info and list.
func publishModule(out, version string, t time.Time, dir string, done map[string]published) (published, error) {
	modPath := filepath.Join(dir, "go.mod")
	data, err := os.ReadFile(modPath)
	if err != nil {
		return published{}, err
	}
	f, err := modfile.Parse(modPath, data, nil)
	if err != nil {
		return published{}, err
	}
	if len(f.Replace) > 0 {
		return published{}, fmt.Errorf("%s has replace directives (%s => %s, ...), which go install refuses: requirements on this repository's modules must be by version, with go.work joining them in development",
			modPath, f.Replace[0].Old.Path, f.Replace[0].New.Path)
	}
	path := f.Module.Mod.Path
	if err := module.Check(path, version); err != nil {
		return published{}, err
	}
	var sums []string
	for _, r := range f.Require {
		p, ok := done[r.Mod.Path]
		if !ok {
			continue
		}
		if err := f.AddRequire(r.Mod.Path, version); err != nil {
			return published{}, err
		}
		sums = append(sums, p.sumLine...)
	}
	f.Cleanup()
	goMod, err := f.Format()
	if err != nil {
		return published{}, err
	}
	goSum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil && !os.IsNotExist(err) {
		return published{}, err
	}

	// The zip is made from a copy of the module with the new go.mod and go.sum.
	stage, err := os.MkdirTemp("", "goproxy-")
	if err != nil {
		return published{}, err
	}
	defer os.RemoveAll(stage)
	if err := os.CopyFS(stage, os.DirFS(dir)); err != nil {
		return published{}, fmt.Errorf("copy the module: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stage, "go.mod"), goMod, 0o644); err != nil {
		return published{}, err
	}
	if err := os.WriteFile(filepath.Join(stage, "go.sum"), mergeSums(goSum, sums), 0o644); err != nil {
		return published{}, err
	}

	escPath, err := module.EscapePath(path)
	if err != nil {
		return published{}, err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return published{}, err
	}
	at := filepath.Join(out, filepath.FromSlash(escPath), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		return published{}, err
	}
	zipPath := filepath.Join(at, escVersion+".zip")
	if err := writeZip(zipPath, module.Version{Path: path, Version: version}, stage); err != nil {
		return published{}, err
	}
	if err := os.WriteFile(filepath.Join(at, escVersion+".mod"), goMod, 0o644); err != nil {
		return published{}, err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, t})
	if err != nil {
		return published{}, err
	}
	if err := os.WriteFile(filepath.Join(at, escVersion+".info"), info, 0o644); err != nil {
		return published{}, err
	}
	if err := addToList(filepath.Join(at, "list"), version); err != nil {
		return published{}, err
	}

	zipHash, err := dirhash.HashZip(zipPath, dirhash.Hash1)
	if err != nil {
		return published{}, err
	}
	modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(goMod)), nil
	})
	if err != nil {
		return published{}, err
	}
	return published{path: path, sumLine: []string{
		fmt.Sprintf("%s %s %s", path, version, zipHash),
		fmt.Sprintf("%s %s/go.mod %s", path, version, modHash),
	}}, nil
}

func writeZip(name string, m module.Version, dir string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := zip.CreateFromDir(f, m, dir); err != nil {
		f.Close()
		return fmt.Errorf("zip the module: %w", err)
	}
	return f.Close()
}

// mergeSums adds lines to a go.sum, sorted, without duplicates.
func mergeSums(goSum []byte, lines []string) []byte {
	all := slices.DeleteFunc(strings.Split(string(goSum), "\n"), func(s string) bool { return s == "" })
	all = slices.Compact(slices.Sorted(slices.Values(append(all, lines...))))
	if len(all) == 0 {
		return nil
	}
	return []byte(strings.Join(all, "\n") + "\n")
}

// addToList adds version to a proxy's list file of versions.
func addToList(name, version string) error {
	data, err := os.ReadFile(name)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	versions := slices.DeleteFunc(strings.Split(string(data), "\n"), func(s string) bool { return s == "" })
	if !slices.Contains(versions, version) {
		versions = append(versions, version)
	}
	semver.Sort(versions)
	return os.WriteFile(name, []byte(strings.Join(versions, "\n")+"\n"), 0o644)
}
