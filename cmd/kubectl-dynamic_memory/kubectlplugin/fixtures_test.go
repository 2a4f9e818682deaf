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

package kubectlplugin

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// now is the fixed time of every test; fixture times are relative to it.
var now = time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

func agoPtr(d time.Duration) *metav1.Time { t := ago(d); return &t }

func gi(n int64) resource.Quantity { return *resource.NewQuantity(n<<30, resource.BinarySI) }

func giPtr(n int64) *resource.Quantity { q := gi(n); return &q }

// The fixture cluster: four 16Gi nodes; pool cxl-a (64Gi) shared by all four, pool
// cxl-b (128Gi) by node-3 and node-4. Pod shop/web-0 runs on node-1 with 16Gi online,
// shop/web-1 is being provisioned on node-2, shop/big asks for 200Gi and is Pending,
// default/plain uses no dynamic memory, and default/batch's memory failed to provision.

func fixtureNodes() []*corev1.Node {
	node := func(name string, online int64) *corev1.Node {
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: ago(3 * time.Hour)},
			Status: corev1.NodeStatus{
				Capacity:    corev1.ResourceList{corev1.ResourceMemory: gi(16), corev1.ResourceCPU: resource.MustParse("8")},
				Allocatable: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("16000Mi"), corev1.ResourceCPU: resource.MustParse("8")},
			},
		}
		if name != "node-5" {
			n.Labels = map[string]string{deploy.NodeLabel: "true"}
		}
		if online > 0 {
			n.Status.Capacity[OnlineMemoryResource] = gi(online)
			n.Status.Allocatable[OnlineMemoryResource] = gi(online)
		}
		return n
	}
	return []*corev1.Node{node("node-1", 16), node("node-2", 8), node("node-3", 0), node("node-4", 0), node("node-5", 0)}
}

func fixturePools() []*v1alpha1.DynamicMemoryPool {
	ready := []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "BackendReady", LastTransitionTime: ago(3 * time.Hour)}}
	share := func(name string, reserved, online, free int64, connected bool) v1alpha1.PoolNodeStatus {
		return v1alpha1.PoolNodeStatus{Name: name, Reserved: gi(reserved), Online: gi(online), Free: gi(free), AgentConnected: connected}
	}
	return []*v1alpha1.DynamicMemoryPool{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "cxl-a", CreationTimestamp: ago(3 * time.Hour), Generation: 1, Labels: map[string]string{"example.com/rack": "r1"}},
			Spec: v1alpha1.DynamicMemoryPoolSpec{
				Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
				Capacity:   gi(64),
				BlockSize:  gi(1),
				HostWindow: gi(32),
				Nodes:      []v1alpha1.PoolNode{{Name: "node-1"}, {Name: "node-2", HostID: 1}, {Name: "node-3", HostID: 2}, {Name: "node-4", HostID: 3}},
				Attributes: map[string]string{v1alpha1.AttributeLatencyClass: "low"},
			},
			Status: v1alpha1.DynamicMemoryPoolStatus{
				ObservedGeneration: 1,
				Free:               giPtr(40),
				Reserved:           giPtr(24),
				Online:             giPtr(16),
				Nodes: []v1alpha1.PoolNodeStatus{
					share("node-1", 16, 16, 16, true), share("node-2", 8, 0, 24, true),
					share("node-3", 0, 0, 32, true), share("node-4", 0, 0, 32, false),
				},
				Conditions: ready,
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "cxl-b", CreationTimestamp: ago(2 * time.Hour), Generation: 1},
			Spec: v1alpha1.DynamicMemoryPoolSpec{
				Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendQEMU, QEMU: &v1alpha1.QEMUBackend{SocketPath: "/run/qemu/qmp.sock"}},
				Capacity:   gi(128),
				BlockSize:  resource.MustParse("256Mi"),
				HostWindow: gi(64),
				Nodes:      []v1alpha1.PoolNode{{Name: "node-3"}, {Name: "node-4", HostID: 1}},
			},
			Status: v1alpha1.DynamicMemoryPoolStatus{
				ObservedGeneration: 1,
				Free:               giPtr(128),
				Reserved:           giPtr(0),
				Online:             giPtr(0),
				Nodes:              []v1alpha1.PoolNodeStatus{share("node-3", 0, 0, 64, true)},
				Conditions:         []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: "BackendUnreachable", LastTransitionTime: ago(time.Hour)}},
			},
		},
	}
}

func fixtureClaims() []*v1alpha1.DynamicMemoryClaim {
	return []*v1alpha1.DynamicMemoryClaim{
		{
			ObjectMeta: metav1.ObjectMeta{
				Name: "web-0-mem-k7x2p", Namespace: "shop", UID: "dmc-web-0", CreationTimestamp: ago(10 * time.Minute),
				Labels: map[string]string{v1alpha1.LabelClaimUID: "rc-web-0", v1alpha1.LabelNode: "node-1", v1alpha1.LabelPool: "cxl-a"},
			},
			Spec: v1alpha1.DynamicMemoryClaimSpec{
				ClaimRef:  v1alpha1.ClaimReference{Name: "web-0-mem-k7x2p", UID: "rc-web-0"},
				PodRef:    &v1alpha1.PodReference{Name: "web-0", UID: "pod-web-0"},
				Node:      "node-1",
				Pool:      "cxl-a",
				Requested: resource.MustParse("15500Mi"),
				Size:      gi(16),
			},
			Status: v1alpha1.DynamicMemoryClaimStatus{
				Phase:                v1alpha1.PhaseOnline,
				Extents:              []v1alpha1.Extent{{Offset: 0, Length: 8 << 30}, {Offset: 16 << 30, Length: 8 << 30}},
				NUMANodes:            []int32{1},
				ReservedAt:           agoPtr(10 * time.Minute),
				ProvisioningAt:       agoPtr(10*time.Minute - 200*time.Millisecond),
				OnlineAt:             agoPtr(10*time.Minute - 1400*time.Millisecond),
				ProvisioningDuration: &metav1.Duration{Duration: 1200 * time.Millisecond},
				Message:              "16Gi online on node-1 (NUMA node 1)",
				Conditions: []metav1.Condition{{
					Type: "Online", Status: metav1.ConditionTrue, Reason: "AgentOnlined",
					Message: "node agent onlined 128 memory blocks", LastTransitionTime: ago(10*time.Minute - 1400*time.Millisecond),
				}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{
				Name: "web-1-mem-q9d4s", Namespace: "shop", UID: "dmc-web-1", CreationTimestamp: ago(5 * time.Second),
				Labels: map[string]string{v1alpha1.LabelClaimUID: "rc-web-1", v1alpha1.LabelNode: "node-2", v1alpha1.LabelPool: "cxl-a"},
			},
			Spec: v1alpha1.DynamicMemoryClaimSpec{
				ClaimRef:  v1alpha1.ClaimReference{Name: "web-1-mem-q9d4s", UID: "rc-web-1"},
				PodRef:    &v1alpha1.PodReference{Name: "web-1"},
				Node:      "node-2",
				Pool:      "cxl-a",
				Requested: gi(8),
				Size:      gi(8),
			},
			Status: v1alpha1.DynamicMemoryClaimStatus{
				Phase:          v1alpha1.PhaseProvisioning,
				ReservedAt:     agoPtr(5 * time.Second),
				ProvisioningAt: agoPtr(4 * time.Second),
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{
				Name: "reservation-rc-batch", Namespace: "default", UID: "dmc-batch", CreationTimestamp: ago(time.Hour),
				Labels: map[string]string{v1alpha1.LabelClaimUID: "rc-batch", v1alpha1.LabelNode: "node-3", v1alpha1.LabelPool: "cxl-b"},
			},
			Spec: v1alpha1.DynamicMemoryClaimSpec{
				ClaimRef:  v1alpha1.ClaimReference{Name: "batch-mem", UID: "rc-batch"},
				Node:      "node-3",
				Pool:      "cxl-b",
				Requested: gi(4),
				Size:      gi(4),
			},
			Status: v1alpha1.DynamicMemoryClaimStatus{
				Phase:          v1alpha1.PhaseFailed,
				ReservedAt:     agoPtr(time.Hour),
				ProvisioningAt: agoPtr(time.Hour - time.Second),
				Message:        "add extents to node-3: QMP cxl-add-dynamic-capacity: dpa or len is not aligned to region block size",
				Conditions: []metav1.Condition{{
					Type: "Online", Status: metav1.ConditionFalse, Reason: "ProvisioningFailed",
					Message: "the device refused the extents", LastTransitionTime: ago(time.Hour - 2*time.Second),
				}},
			},
		},
	}
}

func memoryClaim(name, namespace string, uid types.UID, size string) *resourcev1.ResourceClaim {
	return &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, UID: uid, CreationTimestamp: ago(10 * time.Minute)},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "memory",
			Exactly: &resourcev1.ExactDeviceRequest{
				DeviceClassName: dra.DeviceClassName,
				Capacity:        &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse(size)}},
			},
		}}}},
	}
}

func fixtureResourceClaims() []*resourcev1.ResourceClaim {
	web0 := memoryClaim("web-0-mem-k7x2p", "shop", "rc-web-0", "15500Mi")
	web0.Status = resourcev1.ResourceClaimStatus{
		Allocation: &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
			Request: "memory", Driver: dra.DriverName, Pool: "node-1", Device: "cxl-a",
			ShareID:          ptr.To(types.UID("share-1")),
			ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: gi(16)},
		}}}},
		ReservedFor: []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: "web-0", UID: "pod-web-0"}},
		Devices: []resourcev1.AllocatedDeviceStatus{{
			Driver: dra.DriverName, Pool: "node-1", Device: "cxl-a", ShareID: ptr.To("share-1"),
			Conditions: []metav1.Condition{{Type: "Online", Status: metav1.ConditionTrue, Reason: "MemoryOnline", Message: "16Gi online in NUMA node 1", LastTransitionTime: ago(10 * time.Minute)}},
		}},
	}
	web1 := memoryClaim("web-1-mem-q9d4s", "shop", "rc-web-1", "8Gi")
	web1.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
		Request: "memory", Driver: dra.DriverName, Pool: "node-2", Device: "cxl-a",
		ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: gi(8)},
	}}}}
	web1.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: "web-1", UID: "pod-web-1"}}
	// stray: allocated by another scheduler without a reservation; the memory service
	// could not serve it and says why in the device conditions.
	stray := memoryClaim("stray-mem-2k9xw", "default", "rc-stray", "2Gi")
	stray.Status = resourcev1.ResourceClaimStatus{
		Allocation: &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
			Request: "memory", Driver: dra.DriverName, Pool: "node-2", Device: "cxl-a",
			ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: gi(2)},
		}}}},
		ReservedFor: []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: "stray", UID: "pod-stray"}},
		Devices: []resourcev1.AllocatedDeviceStatus{{
			Driver: dra.DriverName, Pool: "node-2", Device: "cxl-a",
			Conditions: []metav1.Condition{
				{Type: "Online", Status: metav1.ConditionFalse, Reason: "PoolExhausted", LastTransitionTime: ago(time.Minute),
					Message: `pod stray, placed by scheduler "default-scheduler" without a reservation: 2Gi does not fit in pool cxl-a on node node-2`},
				{Type: "ProvisioningFailed", Status: metav1.ConditionTrue, Reason: "PoolExhausted", LastTransitionTime: ago(time.Minute),
					Message: `pod stray, placed by scheduler "default-scheduler" without a reservation: 2Gi does not fit in pool cxl-a on node node-2`},
			},
		}},
	}
	big := memoryClaim("big-mem-7fvzq", "shop", "rc-big", "200Gi")
	plain := &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "plain-gpu", Namespace: "default", UID: "rc-plain"},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "gpu.example.com"},
		}}}},
	}
	return []*resourcev1.ResourceClaim{web0, web1, stray, big, plain}
}

func fixturePods() []*corev1.Pod {
	web0 := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", UID: "pod-web-0", CreationTimestamp: ago(11 * time.Minute)},
		Spec: corev1.PodSpec{
			SchedulerName:  "dynamic-memory-scheduler",
			NodeName:       "node-1",
			ResourceClaims: []corev1.PodResourceClaim{{Name: "mem", ResourceClaimTemplateName: ptr.To("mem-16g")}},
		},
		Status: corev1.PodStatus{
			Phase:                 corev1.PodRunning,
			Conditions:            []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}},
			ResourceClaimStatuses: []corev1.PodResourceClaimStatus{{Name: "mem", ResourceClaimName: ptr.To("web-0-mem-k7x2p")}},
		},
	}
	big := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "shop", UID: "pod-big", CreationTimestamp: ago(2 * time.Minute)},
		Spec: corev1.PodSpec{
			SchedulerName: "dynamic-memory-scheduler",
			ResourceClaims: []corev1.PodResourceClaim{
				{Name: "mem", ResourceClaimTemplateName: ptr.To("mem-200g")},
				{Name: "scratch", ResourceClaimTemplateName: ptr.To("mem-1g")},
			},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodPending,
			Conditions: []corev1.PodCondition{{
				Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", LastTransitionTime: ago(90 * time.Second),
				Message: "0/5 nodes are available: 1 node is not attached to any dynamic memory pool, 4 pool cxl-a gives a node at most 32Gi, claim shop/big-mem-7fvzq needs 200Gi. preemption: not eligible.",
			}},
			ResourceClaimStatuses: []corev1.PodResourceClaimStatus{{Name: "mem", ResourceClaimName: ptr.To("big-mem-7fvzq")}},
		},
	}
	plain := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "default", UID: "pod-plain", CreationTimestamp: ago(time.Hour)},
		Spec: corev1.PodSpec{
			SchedulerName:  corev1.DefaultSchedulerName,
			NodeName:       "node-5",
			ResourceClaims: []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: ptr.To("plain-gpu")}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	// web-1 waits in binding while its memory is provisioned.
	web1 := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", UID: "pod-web-1", CreationTimestamp: ago(8 * time.Second)},
		Spec: corev1.PodSpec{
			SchedulerName:  "dynamic-memory-scheduler",
			ResourceClaims: []corev1.PodResourceClaim{{Name: "mem", ResourceClaimTemplateName: ptr.To("mem-8g")}},
		},
		Status: corev1.PodStatus{
			Phase:                 corev1.PodPending,
			ResourceClaimStatuses: []corev1.PodResourceClaimStatus{{Name: "mem", ResourceClaimName: ptr.To("web-1-mem-q9d4s")}},
		},
	}
	// stray asks for dynamic memory and was placed by another scheduler.
	stray := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "stray", Namespace: "default", UID: "pod-stray", CreationTimestamp: ago(time.Minute)},
		Spec: corev1.PodSpec{
			SchedulerName:  corev1.DefaultSchedulerName,
			NodeName:       "node-2",
			ResourceClaims: []corev1.PodResourceClaim{{Name: "mem", ResourceClaimName: ptr.To("stray-mem-2k9xw")}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	return []*corev1.Pod{web0, web1, stray, big, plain}
}

func fixtureEvents() []*corev1.Event {
	event := func(name, ns, kind, obj string, uid types.UID, typ, reason, msg string, at metav1.Time, count int32) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: ns, Name: obj, UID: uid},
			Type:           typ, Reason: reason, Message: msg,
			FirstTimestamp: at, LastTimestamp: at, Count: count,
		}
	}
	return []*corev1.Event{
		event("web-0.1", "shop", "Pod", "web-0", "pod-web-0", corev1.EventTypeNormal, "Scheduled",
			"Successfully assigned shop/web-0 to node-1", ago(10*time.Minute-1500*time.Millisecond), 1),
		event("web-0.2", "shop", "Pod", "web-0", "pod-web-0", corev1.EventTypeNormal, "Started",
			"Started container app", ago(10*time.Minute-3*time.Second), 1),
		event("rc-web-0.1", "shop", "ResourceClaim", "web-0-mem-k7x2p", "rc-web-0", corev1.EventTypeNormal, "MemoryOnline",
			"16Gi from pool cxl-a online on node-1", ago(10*time.Minute-1400*time.Millisecond), 1),
		event("dmc-web-0.1", "shop", "DynamicMemoryClaim", "web-0-mem-k7x2p", "dmc-web-0", corev1.EventTypeNormal, "Provisioning",
			"adding 2 extents (16Gi) to node-1", ago(10*time.Minute-200*time.Millisecond), 1),
		event("big.1", "shop", "Pod", "big", "pod-big", corev1.EventTypeWarning, "FailedScheduling",
			"0/5 nodes are available: 1 node is not attached to any dynamic memory pool, 4 pool cxl-a gives a node at most 32Gi, claim shop/big-mem-7fvzq needs 200Gi. preemption: not eligible.",
			ago(30*time.Second), 4),
		// Events of an earlier pod of the same name, and of another object with a
		// similar name, must not show up.
		event("web-0.old", "shop", "Pod", "web-0", "pod-web-0-before", corev1.EventTypeNormal, "Killing",
			"Stopping container app", ago(20*time.Minute), 1),
		event("web-00.1", "shop", "Pod", "web-00", "pod-web-00", corev1.EventTypeNormal, "Scheduled",
			"Successfully assigned shop/web-00 to node-2", ago(time.Minute), 1),
	}
}
