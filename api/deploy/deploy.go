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

// Package deploy names where the system runs in a cluster, as the manifests install
// it: the namespace of its components, the memory service's Service and port, and its
// leader-election Lease. Flag defaults and the shipped configuration take these names
// from here, so a component started without flags finds the others.
package deploy

import (
	"net"
	"strconv"
	"strings"
)

const (
	// Namespace holds the memory service and the scheduler, under the restricted Pod
	// Security level (manifests/namespace).
	Namespace = "dynamic-memory-system"
	// NodeNamespace holds the node agent and the DRA plugin, which need host access:
	// the privileged Pod Security level, kept apart from the other components.
	NodeNamespace = "dynamic-memory-node"
	// The ServiceAccounts of the memory service's clients (manifests/rbac): the
	// scheduler's in Namespace, the node components' in NodeNamespace. The memory
	// service's certificate signer gives their pods the matching identity.
	SchedulerServiceAccount = "scheduler"
	NodeAgentServiceAccount = "node-agent"
	DRAPluginServiceAccount = "dra-plugin"
	// SignerName is the memory service's PodCertificateRequest signer: pods of the
	// ServiceAccounts above mount a podCertificate volume of it, and its CA reaches
	// them as ClusterTrustBundles of this signer (a clusterTrustBundle volume).
	SignerName = "dynamicmemory.io/memservice"
	// MemoryServiceName is the memory service's Service and its Lease.
	MemoryServiceName = "memservice"
	// VersionLabel, on the memory service's Lease, names the version of the instance
	// holding it: `kubectl dynamic-memory version` reads it with the user's credentials.
	VersionLabel = "dynamicmemory.io/version"
	// MemoryServicePort is the memory service's gRPC port (mutual TLS).
	MemoryServicePort = 8443
	// NodeLabel, with the value "true", marks the nodes attached to a CXL memory
	// pool: the node agent and DRA plugin DaemonSets run there only
	// (manifests/node; docs/operations.md has a Node Feature Discovery rule for it).
	NodeLabel = "dynamicmemory.io/cxl-attached"
)

// MemoryServiceAddress is the memory service's gRPC address inside the cluster.
var MemoryServiceAddress = net.JoinHostPort(MemoryServiceName+"."+Namespace+".svc", strconv.Itoa(MemoryServicePort))

// VersionLabelValue is version as the value of VersionLabel. A label value holds at
// most 63 letters, digits, '-', '_' and '.', beginning and ending with a letter or
// digit: any other character is written as '_' ("api/v0.3.0" as "api_v0.3.0"), and a
// longer version is cut.
func VersionLabelValue(version string) string {
	v := []byte(version)
	for i, c := range v {
		if !isAlphanumeric(c) && c != '-' && c != '.' {
			v[i] = '_'
		}
	}
	s := string(v)
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "-_.")
}

func isAlphanumeric(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
