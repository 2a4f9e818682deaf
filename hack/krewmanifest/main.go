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

// Command krewmanifest writes the krew plugin manifest of `kubectl dynamic-memory` from
// its release archives (make release): one platform for each archive
// kubectl-dynamic_memory-OS-ARCH.tar.gz, with the archive's sha256 and the address it is
// downloaded from once published. It refuses archives without the plugin or the license
// and a manifest krew would refuse.
//
//	go run ./hack/krewmanifest -version v0.1.0 -o dist/dynamic-memory.yaml dist/kubectl-dynamic_memory-*.tar.gz
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// defaultURI is where a GitHub release of the project serves its assets.
const defaultURI = "https://github.com/dynamicmemory/kube-dynamic-memory/releases/download/{{.Version}}/{{.Archive}}"

func main() {
	version := flag.String("version", "", "the release's version, vX.Y.Z (make release: VERSION)")
	output := flag.String("o", "", "the manifest file, named after the plugin ("+pluginName+manifestExtension+"); standard output when empty")
	uri := flag.String("uri", defaultURI, "where each archive is downloaded from: a Go template of {{.Version}} and {{.Archive}} (the archive's file name)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: krewmanifest -version vX.Y.Z [-o FILE] [-uri TEMPLATE] ARCHIVE...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*version, *uri, *output, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "krewmanifest:", err)
		os.Exit(1)
	}
}

func run(version, uri, output string, archives []string) error {
	if output != "" {
		if base := filepath.Base(output); base != pluginName+manifestExtension {
			return fmt.Errorf("-o %s: krew wants the manifest of plugin %q in a file named %s", output, pluginName, pluginName+manifestExtension)
		}
	}
	manifest, err := generate(version, uri, archives)
	if err != nil {
		return err
	}
	if output == "" {
		_, err = os.Stdout.Write(manifest)
		return err
	}
	if err := os.WriteFile(output, manifest, 0o644); err != nil {
		return err
	}
	fmt.Printf("krewmanifest: %s, %s for %s\n", output, version, strings.Join(platformNames(archives), ", "))
	return nil
}

// platformNames names the platforms of the archives, for the summary line.
func platformNames(archives []string) []string {
	var names []string
	for _, a := range archives {
		if goos, arch, err := platformOf(a); err == nil {
			names = append(names, goos+"/"+arch)
		}
	}
	return names
}
