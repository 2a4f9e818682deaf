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

package config

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// PluginName is the name of the plugin these args configure, in the scheduler
// configuration's plugins and pluginConfig.
const PluginName = "DynamicMemory"

// SchemeGroupVersion is the apiVersion of DynamicMemoryArgs: the group and version of
// the KubeSchedulerConfiguration the args are part of, as for every plugin's args.
var SchemeGroupVersion = schema.GroupVersion{Group: "kubescheduler.config.k8s.io", Version: "v1"}

// Kind is the kind of DynamicMemoryArgs.
const Kind = "DynamicMemoryArgs"

// ScoringStrategyType says how Score ranks the nodes that can get the memory.
type ScoringStrategyType string

const (
	// MostAllocated prefers the fullest pool: it packs pools and keeps whole pools
	// (and the hosts behind them) free for large claims.
	MostAllocated ScoringStrategyType = "MostAllocated"
	// LeastAllocated prefers the emptiest pool: it spreads claims across pools.
	LeastAllocated ScoringStrategyType = "LeastAllocated"
)

// DynamicMemoryArgs configures the DynamicMemory plugin. In a KubeSchedulerConfiguration
// it is the args of the plugin's pluginConfig entry:
//
//	pluginConfig:
//	- name: DynamicMemory
//	  args:
//	    apiVersion: kubescheduler.config.k8s.io/v1
//	    kind: DynamicMemoryArgs
//	    address: memservice.dynamic-memory-system.svc:8443
//	    caFile: /etc/dynamic-memory/tls/ca.crt
//	    certFile: /etc/dynamic-memory/tls/scheduler.crt
//	    keyFile: /etc/dynamic-memory/tls/scheduler.key
//	    reserveTimeout: 5s
//	    releaseTimeout: 5s
//	    provisionTimeout: 2m
//	    scoringStrategy: {type: MostAllocated, localityWeight: 20}
type DynamicMemoryArgs struct {
	// TypeMeta may name the apiVersion (kubescheduler.config.k8s.io/v1) and kind
	// (DynamicMemoryArgs); neither is required.
	metav1.TypeMeta `json:",inline"`

	// Address is host:port of the memory service's gRPC endpoint. Required.
	Address string `json:"address"`
	// CAFile is the CA bundle that signed the memory service's certificate. Required.
	CAFile string `json:"caFile"`
	// CertFile and KeyFile are the scheduler's client certificate (role scheduler,
	// see api/pki) and key. Required.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// ServerName overrides the name checked in the memory service's certificate
	// (default: the host of Address).
	ServerName string `json:"serverName,omitempty"`

	// ReserveTimeout bounds each Reserve call to the memory service (default 5s).
	// The calls run in the background after the Reserve extension point; Permit
	// holds the pod until they are answered.
	ReserveTimeout *metav1.Duration `json:"reserveTimeout,omitempty"`
	// ReleaseTimeout bounds each call that gives a claim's memory back to the
	// memory service: Unreserve's, and the release of a stale reservation before a
	// Reserve is repeated (default 5s). When it passes, the memory service releases
	// the memory when its reservation expires.
	ReleaseTimeout *metav1.Duration `json:"releaseTimeout,omitempty"`
	// PermitTimeout bounds how long Permit holds a pod for its reservations; when
	// it passes the pod is rejected and retried. Unset (the default): long enough
	// for every reservation of the pod to wait for a release of the claim from an
	// earlier cycle, a Reserve, a release of a stale reservation and a second
	// Reserve, that is n×(2×reserveTimeout + releaseTimeout) + releaseTimeout.
	PermitTimeout *metav1.Duration `json:"permitTimeout,omitempty"`
	// ProvisionTimeout bounds PreBind's wait for the memory to come online on the
	// node (default 2m). When it passes, the pod is retried and its memory released.
	ProvisionTimeout *metav1.Duration `json:"provisionTimeout,omitempty"`

	// ScoringStrategy ranks the nodes that can get the memory.
	ScoringStrategy *ScoringStrategy `json:"scoringStrategy,omitempty"`
}

// ScoringStrategy ranks feasible nodes by the pool their memory would come from.
type ScoringStrategy struct {
	// Type is MostAllocated (default) or LeastAllocated.
	Type ScoringStrategyType `json:"type,omitempty"`
	// LocalityWeight, 0 to 100, is the share of the score given to the pool's
	// latencyClass attribute (low > medium > high); the rest is given to Type.
	// Default 0.
	LocalityWeight int32 `json:"localityWeight,omitempty"`
}

// DeepCopy returns a copy of args.
func (args *DynamicMemoryArgs) DeepCopy() *DynamicMemoryArgs {
	out := *args
	for _, d := range []**metav1.Duration{&out.ReserveTimeout, &out.ReleaseTimeout, &out.PermitTimeout, &out.ProvisionTimeout} {
		if *d != nil {
			c := **d
			*d = &c
		}
	}
	if args.ScoringStrategy != nil {
		s := *args.ScoringStrategy
		out.ScoringStrategy = &s
	}
	return &out
}

// DeepCopyObject makes DynamicMemoryArgs a runtime.Object, so it can be handed to
// the plugin factory directly (tests, benchmarks).
func (args *DynamicMemoryArgs) DeepCopyObject() runtime.Object { return args.DeepCopy() }
