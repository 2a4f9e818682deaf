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

package memservice_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/reconciler"
)

// allocateForPod does what a scheduler without the DynamicMemory plugin does for a
// pod of schedulerName with a claim asking size: it allocates the claim on node1 from
// pool cxl-a and reserves it for the pod, and nothing else.
func (e *env) allocateForPod(name, schedulerName string, size string) *resourcev1.ResourceClaim {
	e.t.Helper()
	pod, err := e.kube.CoreV1().Pods("default").Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{
			SchedulerName: schedulerName,
			Containers:    []corev1.Container{{Name: "app", Image: "app"}},
		},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	claim, err := e.kube.ResourceV1().ResourceClaims("default").Create(e.ctx, &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name + "-memory"},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "mem", Exactly: &resourcev1.ExactDeviceRequest{
				DeviceClassName: dra.DeviceClassName,
				Capacity:        &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse(size)}},
			},
		}}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	claim.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{
		Results: []resourcev1.DeviceRequestAllocationResult{{Request: "mem", Driver: dra.DriverName, Pool: "node1", Device: "cxl-a"}},
	}}
	claim.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	claim, err = e.kube.ResourceV1().ResourceClaims("default").UpdateStatus(e.ctx, claim, metav1.UpdateOptions{})
	require.NoError(e.t, err)
	return claim
}

// A claim allocated by a scheduler without the DynamicMemory plugin gets its memory
// all the same, from the ledger as any other: on the node and pool of its allocation
// when they have room; otherwise the claim's device condition ProvisioningFailed says
// why (what a scheduler waiting on binding conditions acts on), and nothing is held.
// The service runs as its ServiceAccount, under the shipped RBAC.
func TestAClaimAllocatedWithoutAReservationGetsItsMemoryOrTheReasonWhyNot(t *testing.T) {
	e := setup(t)
	svc, _ := e.startAsServiceAccount("a")
	e.runAgent(e.dial(svc.Addr(), "agent-node1"), "node1")
	sched := e.dial(svc.Addr(), "scheduler")

	fits := e.allocateForPod("fits", "default-scheduler", "3Gi")
	var res *memservicev1.Reservation
	require.Eventually(t, func() bool {
		resp, err := sched.GetReservation(e.ctx, &memservicev1.GetReservationRequest{ClaimUid: string(fits.UID)})
		res = resp.GetReservation()
		return err == nil && res.GetState() == memservicev1.ReservationState_RESERVATION_STATE_ONLINE
	}, 30*time.Second, 50*time.Millisecond, "the claim's memory is provisioned")
	assert.Equal(t, "node1", res.GetNode())
	assert.Equal(t, "cxl-a", res.GetPool())
	assert.Equal(t, 3*gi, res.GetBytes())
	assert.Equal(t, 3*gi, extentsOf(t, e, string(fits.UID)), "the device gave the node the claim's extents")
	e.requireEvent(fits.Name, reconciler.EventAdopted, `for pod fits, placed by scheduler "default-scheduler" without a reservation`)

	// The node's window is 8Gi: 3Gi are held, 6Gi do not fit.
	tooBig := e.allocateForPod("too-big", "default-scheduler", "6Gi")
	var failed *metav1.Condition
	require.Eventually(t, func() bool {
		c, err := e.kube.ResourceV1().ResourceClaims("default").Get(e.ctx, tooBig.Name, metav1.GetOptions{})
		require.NoError(t, err)
		for _, d := range c.Status.Devices {
			failed = meta.FindStatusCondition(d.Conditions, dra.ConditionProvisioningFailed)
		}
		return failed != nil
	}, 30*time.Second, 50*time.Millisecond, "the claim says why it has no memory")
	assert.Equal(t, metav1.ConditionTrue, failed.Status)
	assert.Equal(t, reconciler.ReasonPoolExhausted, failed.Reason)
	assert.Contains(t, failed.Message, `pod too-big, placed by scheduler "default-scheduler" without a reservation`)
	assert.Contains(t, failed.Message, "node1")
	_, err := sched.GetReservation(e.ctx, &memservicev1.GetReservationRequest{ClaimUid: string(tooBig.UID)})
	assert.Equal(t, codes.NotFound, status.Code(err), "nothing is held for it: %v", err)
	assert.Zero(t, extentsOf(t, e, string(tooBig.UID)))
	e.requireEvent(tooBig.Name, reconciler.EventAdoptionRefused, reconciler.ReasonPoolExhausted)

	// The pod ends, its claim goes: the memory goes back to the pool.
	require.NoError(t, e.kube.ResourceV1().ResourceClaims("default").Delete(e.ctx, fits.Name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return extentsOf(t, e, string(fits.UID)) == 0 }, 30*time.Second, 50*time.Millisecond,
		"the memory is released")
}

// requireEvent waits for an event on the ResourceClaim name with reason whose message
// contains want.
func (e *env) requireEvent(name, reason, want string) {
	e.t.Helper()
	var seen []string
	require.Eventually(e.t, func() bool {
		events, err := e.kube.CoreV1().Events("default").List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=" + reason})
		require.NoError(e.t, err)
		seen = seen[:0]
		for _, ev := range events.Items {
			seen = append(seen, ev.Message)
			if ev.InvolvedObject.Kind == "ResourceClaim" && strings.Contains(ev.Message, want) {
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "an event %s on %s saying %q; seen %q", reason, name, want, seen)
}
