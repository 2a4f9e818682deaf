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

// Command memory-probe is the test workload of the local cluster's real node: it
// prints what a container sees of the dynamic memory given to its pod, one
// NAME=value line each, then waits until it is stopped:
//
//	DYNAMIC_MEMORY_BYTES=...       the bytes of the pod's claims (from the CDI device)
//	DYNAMIC_MEMORY_NUMA_NODES=...  the NUMA nodes that hold them (from the CDI device)
//	NUMA_NODES_ONLINE=...          /sys/devices/system/node/online
//	NUMA_NODES_WITH_MEMORY=...     /sys/devices/system/node/has_memory
//	MEMORY_LIMIT_BYTES=...         the container's memory cgroup limit
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	for _, name := range []string{"DYNAMIC_MEMORY_BYTES", "DYNAMIC_MEMORY_NUMA_NODES"} {
		fmt.Printf("%s=%s\n", name, os.Getenv(name))
	}
	for _, f := range []struct{ name, file string }{
		{"NUMA_NODES_ONLINE", "/sys/devices/system/node/online"},
		{"NUMA_NODES_WITH_MEMORY", "/sys/devices/system/node/has_memory"},
		// cgroup v2, then v1.
		{"MEMORY_LIMIT_BYTES", "/sys/fs/cgroup/memory.max"},
		{"MEMORY_LIMIT_BYTES", "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
	} {
		if data, err := os.ReadFile(f.file); err == nil {
			fmt.Printf("%s=%s\n", f.name, strings.TrimSpace(string(data)))
		}
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}
