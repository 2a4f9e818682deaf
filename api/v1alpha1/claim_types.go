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
	"k8s.io/apimachinery/pkg/types"
)

// ClaimPhase is the state of a reservation in its lifecycle:
// Reserved → Provisioning → Online → Releasing → Released, or Failed.
// +kubebuilder:validation:Enum=Reserved;Provisioning;Online;Releasing;Released;Failed
type ClaimPhase string

const (
	// PhaseReserved: capacity is held in the ledger; no hardware action yet.
	PhaseReserved ClaimPhase = "Reserved"
	// PhaseProvisioning: extents are being added to the host and onlined.
	PhaseProvisioning ClaimPhase = "Provisioning"
	// PhaseOnline: the memory is online on the node.
	PhaseOnline ClaimPhase = "Online"
	// PhaseReleasing: the memory is being offlined and its extents released.
	PhaseReleasing ClaimPhase = "Releasing"
	// PhaseReleased: the extents are back in the pool. The memory service removes the
	// record then; only records of older versions show it.
	PhaseReleased ClaimPhase = "Released"
	// PhaseFailed: provisioning or release failed; see message and conditions.
	PhaseFailed ClaimPhase = "Failed"
)

// ConditionMessageMaxLength is the bound metav1.Condition puts on a condition's
// message (of a DynamicMemoryClaim and of a ResourceClaim's device alike).
const ConditionMessageMaxLength = 32768

// ClaimConditionSetAside is True on a DynamicMemoryClaim that the memory service could
// not restore after a restart (reason ReasonRestoreRefused, message why). The service
// does not serve it: its memory is neither offlined nor released, and the device
// ranges it names are withheld from the pool until a person resolves it.
const (
	ClaimConditionSetAside = "SetAside"
	ReasonRestoreRefused   = "RestoreRefused"
)

// ClaimConditionReleaseBlocked is True on a DynamicMemoryClaim being released whose
// memory its node agent cannot take offline (reason ReasonMemoryBusy: a memory block
// stays busy, its pages in use and not movable). The memory cannot be taken back: it
// stays online and whole, and the service asks the agent again at a long interval
// (the message says which blocks, how often, and what an operator can do). It turns
// False (reason ReasonMemoryOfflined) once the memory went offline.
const (
	ClaimConditionReleaseBlocked = "ReleaseBlocked"
	ReasonMemoryBusy             = "MemoryBusy"
	ReasonMemoryOfflined         = "MemoryOfflined"
)

// Finalizer was held on a DynamicMemoryClaim until its extents were back in the pool,
// by versions before the admission policy RecordPolicy kept anyone but the memory
// service from deleting records. The memory service removes it from the records of
// those versions when it removes them.
const Finalizer = "dynamicmemory.io/release-extents"

// RecordPolicy is the ValidatingAdmissionPolicy that refuses the deletion of a
// DynamicMemoryClaim by anyone but the memory service (and the cluster's superusers,
// system:masters): a record is the only account of memory on a host, and the service
// removes it once the memory is back in the pool.
const RecordPolicy = "dynamic-memory-claim-records"

// Label keys set on DynamicMemoryClaims. Node and pool names longer than a label value
// are shortened by LabelValue; the spec holds them in full.
const (
	LabelClaimUID = "dynamicmemory.io/claim-uid"
	LabelNode     = "dynamicmemory.io/node"
	LabelPool     = "dynamicmemory.io/pool"
)

// DynamicMemoryClaim records one reservation of pool memory for one ResourceClaim.
// The memory service writes it before any hardware action, writes its status when
// the memory is online and when its release begins, and removes it (it holds a
// finalizer until then) when the memory is back in the pool.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=dmclaim,categories=dynamicmemory
// +kubebuilder:metadata:annotations="helm.sh/resource-policy=keep"
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.spec.size`
// +kubebuilder:printcolumn:name="Provisioning",type=string,JSONPath=`.status.provisioningDuration`,priority=1
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.podRef.name`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DynamicMemoryClaim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DynamicMemoryClaimSpec   `json:"spec"`
	Status DynamicMemoryClaimStatus `json:"status,omitempty"`
}

// DynamicMemoryClaimSpec is what was reserved, for which claim, where. It does not
// change after creation.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: a reservation cannot move; release it and reserve again"
type DynamicMemoryClaimSpec struct {
	// ClaimRef is the ResourceClaim (in the same namespace) this memory is for.
	// +required
	ClaimRef ClaimReference `json:"claimRef"`

	// PodRef is the pod the claim was reserved for, when known.
	// +optional
	PodRef *PodReference `json:"podRef,omitempty"`

	// Node is the node that receives the memory.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// Pool is the DynamicMemoryPool the memory comes from.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pool string `json:"pool"`

	// Requested is the size the claim asked for.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="spec.requested must be positive"
	Requested resource.Quantity `json:"requested"`

	// Size is Requested rounded up to the pool's block size: what the pool gives.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="spec.size must be positive"
	Size resource.Quantity `json:"size"`

	// Extents are the device ranges reserved for the claim, decided before the record
	// is written. The record is written once, right before the hardware acts; until
	// its status is written (when the memory is online, or failed) it is being
	// provisioned with these (CurrentPhase).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1024
	Extents []Extent `json:"extents,omitempty"`
}

// CurrentPhase is the record's phase: its status's, or Provisioning for a record whose
// status is not written yet (the memory service creates the record with its extents
// right before the hardware acts, and writes the status when the memory is online or
// failed). A record without extents and without status was cut short by an older
// version between its two writes: nothing was done for it.
func (c *DynamicMemoryClaim) CurrentPhase() ClaimPhase {
	if c.Status.Phase == "" && len(c.Spec.Extents) > 0 {
		return PhaseProvisioning
	}
	return c.Status.Phase
}

// ClaimReference names a ResourceClaim.
type ClaimReference struct {
	// Name of the ResourceClaim.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// UID of the ResourceClaim: the key of the reservation everywhere.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	UID types.UID `json:"uid"`
}

// PodReference names a pod.
type PodReference struct {
	// Name of the pod.
	Name string `json:"name"`
	// UID of the pod.
	// +optional
	UID types.UID `json:"uid,omitempty"`
}

// Extent is a contiguous range of device memory (DPA range) added to a host.
type Extent struct {
	// Offset is the start of the range within the dynamic capacity region, in bytes.
	// +kubebuilder:validation:Minimum=0
	Offset int64 `json:"offset"`
	// Length of the range in bytes.
	// +kubebuilder:validation:Minimum=1
	Length int64 `json:"length"`
}

// ClaimMessageMaxLength is the most characters status.message may hold (its
// MaxLength marker below, which cannot name a constant); a longer message makes the
// write of the whole status fail, so writers truncate to it.
const ClaimMessageMaxLength = 4096

// DynamicMemoryClaimStatus follows every state change of the reservation.
type DynamicMemoryClaimStatus struct {
	// Phase is Reserved, Provisioning, Online, Releasing, Released or Failed.
	// +optional
	Phase ClaimPhase `json:"phase,omitempty"`

	// Extents are the device ranges that make up this reservation's memory.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1024
	Extents []Extent `json:"extents,omitempty"`

	// NUMANodes are the host NUMA nodes the memory was onlined into.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	NUMANodes []int32 `json:"numaNodes,omitempty"`

	// ReservedAt is when the capacity was reserved.
	// +optional
	ReservedAt *metav1.Time `json:"reservedAt,omitempty"`
	// ProvisioningAt is when the hardware action started.
	// +optional
	ProvisioningAt *metav1.Time `json:"provisioningAt,omitempty"`
	// OnlineAt is when the node agent reported the memory online.
	// +optional
	OnlineAt *metav1.Time `json:"onlineAt,omitempty"`
	// ReleasingAt is when release started.
	// +optional
	ReleasingAt *metav1.Time `json:"releasingAt,omitempty"`
	// ReleasedAt is when the extents went back to the pool.
	// +optional
	ReleasedAt *metav1.Time `json:"releasedAt,omitempty"`

	// ProvisioningDuration is OnlineAt minus ProvisioningAt.
	// +optional
	ProvisioningDuration *metav1.Duration `json:"provisioningDuration,omitempty"`

	// Message says, for a person, what happened last (errors in particular).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Message string `json:"message,omitempty"`

	// Conditions of the claim.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// DynamicMemoryClaimList is a list of claims.
//
// +kubebuilder:object:root=true
type DynamicMemoryClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DynamicMemoryClaim `json:"items"`
}
