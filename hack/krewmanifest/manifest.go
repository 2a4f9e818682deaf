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
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/krew/pkg/constants"
	"sigs.k8s.io/krew/pkg/index"
	"sigs.k8s.io/yaml"
)

const (
	// pluginName is the plugin's name in krew: `kubectl krew install dynamic-memory`.
	pluginName        = "dynamic-memory"
	manifestExtension = constants.ManifestExtension
	// binary is the plugin's executable in each archive; kubectl finds it as
	// `kubectl dynamic-memory`.
	binary      = "kubectl-dynamic_memory"
	licenseFile = "LICENSE"
	homepage    = "https://github.com/dynamicmemory/kube-dynamic-memory"
)

// archiveName is how make release names an archive: the binary, the platform, .tar.gz.
var archiveName = regexp.MustCompile(`^` + regexp.QuoteMeta(binary) + `-([a-z0-9]+)-([a-z0-9]+)\.tar\.gz$`)

// generate returns the manifest, as YAML, of the plugin at version with one platform per
// archive.
func generate(version, uriTemplate string, archives []string) ([]byte, error) {
	if len(archives) == 0 {
		return nil, errors.New("no archives given: want the paths of " + binary + "-OS-ARCH.tar.gz (make release writes them into dist/)")
	}
	uri, err := template.New("uri").Option("missingkey=error").Parse(uriTemplate)
	if err != nil {
		return nil, fmt.Errorf("-uri %q: %w", uriTemplate, err)
	}
	plugin := index.Plugin{
		TypeMeta:   metav1.TypeMeta{APIVersion: constants.CurrentAPIVersion, Kind: constants.PluginKind},
		ObjectMeta: metav1.ObjectMeta{Name: pluginName},
		Spec: index.PluginSpec{
			Version:          version,
			Homepage:         homepage,
			ShortDescription: "Show elastic CXL memory of pods, pools and nodes",
			Description: "Shows the elastic memory kube-dynamic-memory gives pods from shared CXL\n" +
				"Dynamic Capacity Device pools: the DynamicMemoryClaims that hold pool memory,\n" +
				"the DynamicMemoryPools, static and dynamic memory per node, and why a pod is\n" +
				"Pending or what memory it got.\n" +
				"  kubectl dynamic-memory get claims -A\n" +
				"  kubectl dynamic-memory get pools\n" +
				"  kubectl dynamic-memory top nodes\n" +
				"  kubectl dynamic-memory describe claim NAME\n" +
				"  kubectl dynamic-memory why POD\n",
			Caveats: "The cluster must run kube-dynamic-memory (its DynamicMemoryClaim and\n" +
				"DynamicMemoryPool resources): see " + homepage + ".\n",
		},
	}
	for _, archive := range archives {
		p, err := platform(archive, version, uri)
		if err != nil {
			return nil, err
		}
		plugin.Spec.Platforms = append(plugin.Spec.Platforms, p)
	}
	sort.Slice(plugin.Spec.Platforms, func(i, j int) bool {
		return plugin.Spec.Platforms[i].URI < plugin.Spec.Platforms[j].URI
	})
	if err := validate(plugin); err != nil {
		return nil, err
	}
	return yaml.Marshal(plugin)
}

// platformOf reads the os and arch from an archive's name.
func platformOf(archive string) (goos, arch string, err error) {
	m := archiveName.FindStringSubmatch(filepath.Base(archive))
	if m == nil {
		return "", "", fmt.Errorf("archive %s: want the name %s-OS-ARCH.tar.gz, e.g. %s-linux-amd64.tar.gz", archive, binary, binary)
	}
	return m[1], m[2], nil
}

// platform describes one archive: where it is downloaded from, its sha256, the files
// krew installs from it.
func platform(archive, version string, uri *template.Template) (index.Platform, error) {
	goos, arch, err := platformOf(archive)
	if err != nil {
		return index.Platform{}, err
	}
	sum, err := checkArchive(archive)
	if err != nil {
		return index.Platform{}, fmt.Errorf("archive %s: %w", archive, err)
	}
	var u strings.Builder
	if err := uri.Execute(&u, struct{ Version, Archive string }{version, filepath.Base(archive)}); err != nil {
		return index.Platform{}, fmt.Errorf("-uri: %w", err)
	}
	return index.Platform{
		URI:      u.String(),
		Sha256:   sum,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"os": goos, "arch": arch}},
		Files:    []index.FileOperation{{From: binary, To: "."}, {From: licenseFile, To: "."}},
		Bin:      binary,
	}, nil
}

// checkArchive returns the archive's sha256 after checking that it holds the plugin, an
// executable, and the license at its top.
func checkArchive(archive string) (string, error) {
	data, err := os.ReadFile(archive)
	if err != nil {
		return "", err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("not a gzip-compressed tar archive: %w", err)
	}
	found := map[string]bool{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read the tar archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		switch path.Clean(h.Name) { // "./LICENSE" is at the top too
		case binary:
			if h.Mode&0o111 == 0 {
				return "", fmt.Errorf("%s is not executable (mode %o)", binary, h.Mode)
			}
			found[binary] = true
		case licenseFile:
			found[licenseFile] = true
		}
	}
	for _, want := range []string{binary, licenseFile} {
		if !found[want] {
			return "", fmt.Errorf("%s is missing: krew installs the plugin %s and the %s from the archive's top directory", want, binary, licenseFile)
		}
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
