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
