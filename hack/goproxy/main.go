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

// Command goproxy writes a Go module proxy directory (served as GOPROXY=file://DIR, or by
// any static web server) that holds modules of this repository at one version, so that
// `go install MODULE/cmd@VERSION` builds them without the repository. Inside the
// repository the modules find each other through go.work; published, each module's
// requirement on another module published with it is set to VERSION and that module's
// checksums are added to its go.sum. A module whose go.mod has replace directives cannot
// be installed with `go install` and is refused.
//
//	go run ./hack/goproxy -version v0.3.0 -out dist/goproxy api cmd/kubectl-dynamic_memory
//	GOPROXY=file://$PWD/dist/goproxy,https://proxy.golang.org GONOSUMDB=github.com/dynamicmemory/kube-dynamic-memory \
//	  go install github.com/dynamicmemory/kube-dynamic-memory/cmd/kubectl-dynamic_memory@v0.3.0
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	version := flag.String("version", "", "Version to publish the modules at: a semantic version such as v0.3.0.")
	out := flag.String("out", "", "Proxy directory to write (created if absent; other versions in it are kept).")
	when := flag.String("time", "", "Time recorded for the version (RFC 3339, e.g. the commit time); empty means now.")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "Usage: goproxy -version VERSION -out DIR MODULE_DIR...  (dependencies before the modules that require them)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*version, *out, *when, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "goproxy:", err)
		os.Exit(1)
	}
}

func run(version, out, when string, dirs []string) error {
	if out == "" {
		return fmt.Errorf("-out is required: the proxy directory to write")
	}
	if len(dirs) == 0 {
		return fmt.Errorf("name at least one module directory to publish, e.g. api cmd/kubectl-dynamic_memory")
	}
	t := time.Now().UTC()
	if when != "" {
		var err error
		if t, err = time.Parse(time.RFC3339, when); err != nil {
			return fmt.Errorf("-time %q is not an RFC 3339 time such as 2026-12-01T08:00:00Z", when)
		}
	}
	_, err := publish(out, version, t.UTC(), dirs)
	return err
}
