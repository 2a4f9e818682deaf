// Package deploy names where the system runs in a cluster, as the manifests install
// it: the namespace of its components, the memory service's Service and port, and its
// leader-election Lease. Flag defaults and the shipped configuration take these names
// from here, so a component started without flags finds the others.
package deploy

import (
	"net"
	"strconv"
)

const (
	// Namespace holds the memory service, the scheduler and the node components
	// (manifests/namespace).
	Namespace = "dynamic-memory-system"
	// MemoryServiceName is the memory service's Service and its Lease.
	MemoryServiceName = "memservice"
	// MemoryServicePort is the memory service's gRPC port (mutual TLS).
	MemoryServicePort = 8443
	// NodeLabel, with the value "true", marks the nodes attached to a CXL memory
	// pool: the node agent and DRA plugin DaemonSets run there only
	// (manifests/node; docs/operations.md has a Node Feature Discovery rule for it).
	NodeLabel = "dynamicmemory.io/cxl-attached"
)

// MemoryServiceAddress is the memory service's gRPC address inside the cluster.
var MemoryServiceAddress = net.JoinHostPort(MemoryServiceName+"."+Namespace+".svc", strconv.Itoa(MemoryServicePort))
