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

// Package version is the project's version, stamped at build time with
// -ldflags "-X github.com/dynamicmemory/kube-dynamic-memory/api/version.Version=...".
package version

import "runtime/debug"

// unstamped is Version when the build did not stamp it.
const unstamped = "v0.0.0-dev"

// Version of the binaries (hack/version.sh stamps it); else, for a binary built by
// `go install MODULE@VERSION`, the version of its module; else "v0.0.0-dev".
var Version = unstamped

func init() {
	if Version != unstamped {
		return
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		Version = info.Main.Version
	}
}
