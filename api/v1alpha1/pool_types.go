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

package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackendType names the driver the memory service uses to move a pool's capacity.
// +kubebuilder:validation:Enum=Simulated;QEMU
type BackendType string

const (
	// BackendSimulated is an in-process model of a Dynamic Capacity Device.
	BackendSimulated BackendType = "Simulated"
	// BackendQEMU drives QEMU's CXL type-3 DCD emulation over QMP.
	BackendQEMU BackendType = "QEMU"
)

// Well-known pool attribute keys. Attributes are published on the pool's DRA devices
// and read by the scheduler plugin's locality scoring.
const (
	// AttributeLatencyClass is the pool's access latency class: low, medium or high.
	AttributeLatencyClass = "latencyClass"
)

// PoolConditionReady is the DynamicMemoryPool condition the memory service keeps:
// True when the pool's backend answers and the pool serves reservations.
const PoolConditionReady = "Ready"

// DynamicMemoryPool is a CXL Dynamic Capacity Device pool shared by a set of nodes.
// The spec is written by the cluster admin; the status by the memory service.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=dmpool,categories=dynamicmemory
// +kubebuilder:metadata:annotations="helm.sh/resource-policy=keep"
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Backend",type=string,JSONPath=`.spec.backend.type`
// +kubebuilder:printcolumn:name="Capacity",type=string,JSONPath=`.spec.capacity`
// +kubebuilder:printcolumn:name="Free",type=string,JSONPath=`.status.free`
// +kubebuilder:printcolumn:name="Online",type=string,JSONPath=`.status.online`
// +kubebuilder:printcolumn:name="Block",type=string,JSONPath=`.spec.blockSize`,priority=1
// +kubebuilder:printcolumn:name="Window",type=string,JSONPath=`.spec.hostWindow`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
//
// Edits that would strand memory the pool holds are refused, going by the status the
// memory service writes (which also refuses them while it runs): the memory service
// rebuilds from the spec after a restart, so the spec must stay one it accepted.
// Detaching a node or changing its host ID while it holds memory is refused by the
// running service only: a rule comparing spec.nodes with status.nodes exceeds the
// apiserver's CEL cost budget for 256 nodes. The rules compare with the old spec, so
// the service's own status writes always pass them.
// +kubebuilder:validation:XValidation:rule="!has(self.status) || !has(self.status.reserved) || quantity(string(self.status.reserved)).compareTo(quantity('0')) == 0 || quantity(string(self.spec.blockSize)).compareTo(quantity(string(oldSelf.spec.blockSize))) == 0",message="spec.blockSize cannot change while the pool holds memory (status.reserved): release it first, or create another pool",fieldPath=".spec.blockSize"
// +kubebuilder:validation:XValidation:rule="!has(self.status) || !has(self.status.reserved) || quantity(string(self.spec.capacity)).compareTo(quantity(string(oldSelf.spec.capacity))) >= 0 || quantity(string(self.spec.capacity)).compareTo(quantity(string(self.status.reserved))) >= 0",message="spec.capacity cannot be less than the memory the pool holds (status.reserved): release memory first",fieldPath=".spec.capacity"
type DynamicMemoryPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DynamicMemoryPoolSpec   `json:"spec"`
	Status DynamicMemoryPoolStatus `json:"status,omitempty"`
}

// DynamicMemoryPoolSpec describes a pool: where its capacity comes from, how much there
// is, in what granularity, and which nodes can receive it.
//
// +kubebuilder:validation:XValidation:rule="quantity(string(self.hostWindow)).compareTo(quantity(string(self.capacity))) <= 0",message="spec.hostWindow must not exceed spec.capacity: a host cannot hold more than the pool has",fieldPath=".hostWindow"
// +kubebuilder:validation:XValidation:rule="quantity(string(self.capacity)).asInteger() % quantity(string(self.blockSize)).asInteger() == 0",message="spec.capacity must be a multiple of spec.blockSize",fieldPath=".capacity"
// +kubebuilder:validation:XValidation:rule="quantity(string(self.hostWindow)).asInteger() % quantity(string(self.blockSize)).asInteger() == 0",message="spec.hostWindow must be a multiple of spec.blockSize",fieldPath=".hostWindow"
type DynamicMemoryPoolSpec struct {
	// Backend is the device driver that adds and releases the pool's extents.
	// +required
	Backend PoolBackend `json:"backend"`

	// Capacity is the total memory of the pool, for example 128Gi.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="spec.capacity must be positive, for example 64Gi"
	Capacity resource.Quantity `json:"capacity"`

	// BlockSize is the allocation granularity: every reservation is rounded up to a
	// multiple of it. A power of two, at least 2Mi (the device's region block size and
	// a multiple of the host's memory block size, usually 128Mi or more).
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('2Mi')) >= 0 && quantity(string(self)).compareTo(quantity('1Ti')) <= 0 && 1099511627776 % quantity(string(self)).asInteger() == 0",message="spec.blockSize must be a power of two between 2Mi and 1Ti, for example 128Mi or 1Gi"
	BlockSize resource.Quantity `json:"blockSize"`

	// HostWindow is the most memory from this pool one node may hold at a time.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="spec.hostWindow must be positive, for example 16Gi"
	HostWindow resource.Quantity `json:"hostWindow"`

	// Nodes lists the nodes attached to the pool.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Nodes []PoolNode `json:"nodes"`

	// Attributes are published on the pool's DRA devices, for example
	// latencyClass: low|medium|high.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="!('latencyClass' in self) || self.latencyClass in ['low', 'medium', 'high']",message="spec.attributes.latencyClass must be one of low, medium, high"
	Attributes map[string]string `json:"attributes,omitempty"`
}

// PoolNode is one node attached to a pool.
type PoolNode struct {
	// Name is the Kubernetes node name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// HostID is the host's index on the device (QMP host-id of a multi-headed DCD).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	HostID int32 `json:"hostID,omitempty"`
}

// PoolBackend selects and configures the device driver of a pool.
//
// +kubebuilder:validation:XValidation:rule="self.type != 'QEMU' || has(self.qemu)",message="spec.backend.qemu is required when spec.backend.type is QEMU"
// +kubebuilder:validation:XValidation:rule="self.type == 'QEMU' || !has(self.qemu)",message="spec.backend.qemu may only be set when spec.backend.type is QEMU"
// +kubebuilder:validation:XValidation:rule="self.type == 'Simulated' || !has(self.simulated)",message="spec.backend.simulated may only be set when spec.backend.type is Simulated"
type PoolBackend struct {
	// Type is Simulated or QEMU.
	// +required
	Type BackendType `json:"type"`

	// QEMU configures the QEMU backend.
	// +optional
	QEMU *QEMUBackend `json:"qemu,omitempty"`

	// Simulated configures the simulated backend.
	// +optional
	Simulated *SimulatedBackend `json:"simulated,omitempty"`
}

// QEMUBackend addresses a CXL type-3 DCD device of a QEMU machine over QMP.
type QEMUBackend struct {
	// SocketPath is the QMP Unix socket of the QEMU process, as seen by the memory service.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	SocketPath string `json:"socketPath"`

	// DevicePath is the QOM path of the cxl-type3 device.
	// +optional
	// +kubebuilder:default="/machine/peripheral/cxl-dcd0"
	// +kubebuilder:validation:MaxLength=1024
	DevicePath string `json:"devicePath,omitempty"`

	// Region is the dynamic capacity region the pool's extents come from.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=7
	Region int32 `json:"region,omitempty"`
}

// SimulatedBackend tunes the in-process device model (latency and fault injection).
type SimulatedBackend struct {
	// AddLatency is how long adding extents to a host takes.
	// +optional
	AddLatency *metav1.Duration `json:"addLatency,omitempty"`

	// ReleaseLatency is how long releasing extents takes.
	// +optional
	ReleaseLatency *metav1.Duration `json:"releaseLatency,omitempty"`

	// FailurePercent is the share of add operations that fail, 0 to 100.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	FailurePercent int32 `json:"failurePercent,omitempty"`

	// Seed makes injected faults reproducible.
	// +optional
	Seed int64 `json:"seed,omitempty"`
}

// DynamicMemoryPoolStatus is the memory service's view of the pool.
type DynamicMemoryPoolStatus struct {
	// ObservedGeneration is the spec generation the service last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Free is capacity not reserved by any claim.
	// +optional
	Free *resource.Quantity `json:"free,omitempty"`

	// Reserved is capacity held by claims in any state but Released.
	// +optional
	Reserved *resource.Quantity `json:"reserved,omitempty"`

	// Online is capacity added to hosts and online there.
	// +optional
	Online *resource.Quantity `json:"online,omitempty"`

	// Nodes is the per-node view of the pool.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	Nodes []PoolNodeStatus `json:"nodes,omitempty"`

	// Conditions: Ready (the backend answers and the pool serves reservations).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PoolNodeStatus is one node's share of a pool.
type PoolNodeStatus struct {
	// Name is the node name.
	Name string `json:"name"`
	// Reserved is the pool memory held for claims on this node.
	Reserved resource.Quantity `json:"reserved"`
	// Online is the pool memory online on this node.
	Online resource.Quantity `json:"online"`
	// Free is what this node can still take: its window minus reserved, bounded by the pool's free capacity.
	Free resource.Quantity `json:"free"`
	// AgentConnected tells whether the node agent holds a session with the service.
	AgentConnected bool `json:"agentConnected"`
}

// DynamicMemoryPoolList is a list of pools.
//
// +kubebuilder:object:root=true
type DynamicMemoryPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DynamicMemoryPool `json:"items"`
}
