// Command etcd is etcd's server, built from its Go module for the local cluster and
// the integration tests (no prebuilt binary is downloaded).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
