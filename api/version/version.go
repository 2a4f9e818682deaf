// Package version is the project's version, stamped at build time with
// -ldflags "-X github.com/dynamicmemory/kube-dynamic-memory/api/version.Version=...".
package version

import "runtime/debug"

// Version of the binaries: the stamped value; else, for a binary built by
// `go install MODULE@VERSION`, the version of its module; else "dev".
var Version = "dev"

func init() {
	if Version != "dev" {
		return
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		Version = info.Main.Version
	}
}
