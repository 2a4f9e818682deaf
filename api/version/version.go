// Package version is the project's version, stamped at build time with
// -ldflags "-X github.com/dynamicmemory/kube-dynamic-memory/api/version.Version=...".
package version

// Version of the binaries; "dev" when not stamped.
var Version = "dev"
