// Command memservice runs the dynamic memory service: the source of truth for the
// capacity of CXL Dynamic Capacity Device pools, reachable over mutual-TLS gRPC.
//
//	memservice --kubeconfig ~/.kube/config --tls-dir certs/
//	memservice certs --dir certs/ --server-names memservice,127.0.0.1 --nodes node1,node2
package main

import (
	"os"

	"github.com/dynamicmemory/kube-dynamic-memory/api/command"
)

func main() { os.Exit(command.Run(newCommand())) }
