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

package claimstatus

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

func claimOf(name, uid string) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(uid)}}
}

func allocate(claim *resourceapi.ResourceClaim, pool string, shareID types.UID) *resourceapi.ResourceClaim {
	claim.Status.Allocation = &resourceapi.AllocationResult{
		Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
			{Request: "mem", Driver: dra.DriverName, Pool: pool, Device: "pool-a", ShareID: &shareID},
			{Request: "gpu", Driver: "gpu.example.com", Pool: pool, Device: "gpu-0"},
		}},
	}
	return claim
}

func ref(name, uid string) Claim { return Claim{Namespace: "default", Name: name, UID: uid} }

// startWriter runs a writer for node-1 until the test ends.
func startWriter(t *testing.T, client *fake.Clientset, clk clock.WithTicker) *Writer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := New(client, "node-1", clk)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w
}

func deviceStatus(t *testing.T, client *fake.Clientset, name string) []resourceapi.AllocatedDeviceStatus {
	t.Helper()
	claim, err := client.ResourceV1().ResourceClaims("default").Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return claim.Status.Devices
}

func condition(devices []resourceapi.AllocatedDeviceStatus, typ string) *metav1.Condition {
	for _, d := range devices {
		for _, c := range d.Conditions {
			if c.Type == typ {
				return &c
			}
		}
	}
	return nil
}

// actions counts the requests of a verb the writer sent for claims.
func actions(client *fake.Clientset, verb string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == "resourceclaims" {
			n++
		}
	}
	return n
}

func TestWriterMarksOurDeviceOnline(t *testing.T) {
	client := fake.NewClientset(allocate(claimOf("claim-1", "uid-1"), "node-1", "share-1"))
	w := startWriter(t, client, clock.RealClock{})

	w.Online(ref("claim-1", "uid-1"), "2Gi online in NUMA node 1")
	require.Eventually(t, func() bool { return len(deviceStatus(t, client, "claim-1")) > 0 }, 10*time.Second, 10*time.Millisecond)
	devices := deviceStatus(t, client, "claim-1")
	require.Len(t, devices, 1, "only our driver's device")
	assert.Equal(t, dra.DriverName, devices[0].Driver)
	assert.Equal(t, "node-1", devices[0].Pool)
	assert.Equal(t, "pool-a", devices[0].Device)
	require.NotNil(t, devices[0].ShareID)
	assert.Equal(t, "share-1", *devices[0].ShareID)
	online := condition(devices, dra.ConditionOnline)
	require.NotNil(t, online)
	assert.Equal(t, metav1.ConditionTrue, online.Status)
	assert.Equal(t, "2Gi online in NUMA node 1", online.Message)
	failed := condition(devices, dra.ConditionProvisioningFailed)
	require.NotNil(t, failed)
	assert.Equal(t, metav1.ConditionFalse, failed.Status)

	w.Failed(ref("claim-1", "uid-1"), "offline memory block 9: busy")
	require.Eventually(t, func() bool {
		c := condition(deviceStatus(t, client, "claim-1"), dra.ConditionProvisioningFailed)
		return c != nil && c.Status == metav1.ConditionTrue
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, metav1.ConditionFalse, condition(deviceStatus(t, client, "claim-1"), dra.ConditionOnline).Status)
	assert.Zero(t, actions(client, "list")+actions(client, "watch"), "the writer reads claims by name only")
}

// A claim allocated after the report (the API server has not seen the allocation
// the memory service acted on) is read again, with the queue's backoff, until it is.
func TestWriterRetriesUntilTheClaimIsAllocated(t *testing.T) {
	client := fake.NewClientset(claimOf("claim-2", "uid-2"))
	clk := testingclock.NewFakeClock(time.Now())
	w := startWriter(t, client, clk)
	w.Online(ref("claim-2", "uid-2"), "1Gi online")
	require.Eventually(t, func() bool { return actions(client, "get") >= 1 }, 10*time.Second, time.Millisecond, "the claim is read")

	_, err := client.ResourceV1().ResourceClaims("default").UpdateStatus(context.Background(), allocate(claimOf("claim-2", "uid-2"), "node-1", "share-2"), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		clk.Step(time.Second) // the backoff runs on the writer's clock
		c := condition(deviceStatus(t, client, "claim-2"), dra.ConditionOnline)
		return c != nil && c.Status == metav1.ConditionTrue
	}, 10*time.Second, 10*time.Millisecond)
}

// The claim's state is read by sync, the writer's step for one claim: these cases
// say what it writes, without a running queue.
func TestWriterWritesOnlyTheReportedClaimAllocatedHere(t *testing.T) {
	tests := []struct {
		name  string
		claim *resourceapi.ResourceClaim
		// report names the claim (claim-x, uid-x unless set).
		report Claim
		// wantErr is errNotAllocated for a claim read again later.
		wantErr error
		// gets is the number of reads.
		gets int
	}{
		{
			name:   "a claim allocated on another node is not written",
			claim:  allocate(claimOf("claim-x", "uid-x"), "node-2", "share-x"),
			report: ref("claim-x", "uid-x"),
			gets:   1,
		},
		{
			name:   "a claim deleted and created again under its name is another claim",
			claim:  allocate(claimOf("claim-x", "uid-new"), "node-1", "share-x"),
			report: ref("claim-x", "uid-x"),
			gets:   1,
		},
		{
			name:   "a claim named wrongly is another claim",
			claim:  allocate(claimOf("someone-elses", "uid-other"), "node-1", "share-x"),
			report: ref("someone-elses", "uid-x"),
			gets:   1,
		},
		{
			name:   "a claim that is gone is not written",
			claim:  allocate(claimOf("claim-y", "uid-y"), "node-1", "share-y"),
			report: ref("claim-x", "uid-x"),
			gets:   1,
		},
		{
			name:   "a report from an older memory service names no claim: nothing is read",
			claim:  allocate(claimOf("claim-x", "uid-x"), "node-1", "share-x"),
			report: Claim{UID: "uid-x"},
		},
		{
			name:    "a claim not allocated yet is read again later",
			claim:   claimOf("claim-x", "uid-x"),
			report:  ref("claim-x", "uid-x"),
			wantErr: errNotAllocated,
			gets:    1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(tc.claim)
			w := New(client, "node-1", clock.RealClock{})
			w.Online(tc.report, "1Gi online")
			err := w.sync(context.Background(), tc.report.UID)
			assert.ErrorIs(t, err, tc.wantErr)
			if tc.wantErr == nil {
				assert.NoError(t, err)
			}
			assert.Equal(t, tc.gets, actions(client, "get"))
			assert.Zero(t, actions(client, "patch"), "no condition written")
			assert.Empty(t, deviceStatus(t, client, tc.claim.Name))
		})
	}
}

func TestWriterForgetStopsReadingTheClaim(t *testing.T) {
	client := fake.NewClientset(claimOf("claim-3", "uid-3"))
	w := New(client, "node-1", clock.RealClock{})
	w.Online(ref("claim-3", "uid-3"), "1Gi online")
	require.ErrorIs(t, w.sync(context.Background(), "uid-3"), errNotAllocated)

	w.Forget("uid-3")
	_, err := client.ResourceV1().ResourceClaims("default").UpdateStatus(context.Background(), allocate(claimOf("claim-3", "uid-3"), "node-1", "share-3"), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, w.sync(context.Background(), "uid-3"))
	assert.Equal(t, 1, actions(client, "get"), "a forgotten claim is not read")
	assert.Empty(t, deviceStatus(t, client, "claim-3"))
}

// Unchanged conditions (the agent reports its claims again after a restart) cost a
// read and no write.
func TestWriterDoesNotWriteUnchangedConditions(t *testing.T) {
	client := fake.NewClientset(allocate(claimOf("claim-4", "uid-4"), "node-1", "share-4"))
	w := New(client, "node-1", clock.RealClock{})
	w.Online(ref("claim-4", "uid-4"), "1Gi online")
	require.NoError(t, w.sync(context.Background(), "uid-4"))
	require.Equal(t, 1, actions(client, "patch"))
	w.Online(ref("claim-4", "uid-4"), "1Gi online")
	require.NoError(t, w.sync(context.Background(), "uid-4"))
	assert.Equal(t, 1, actions(client, "patch"), "written once")
}
