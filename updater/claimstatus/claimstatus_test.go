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

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

func allocatedClaim(name, uid, pool string, shareID types.UID) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(uid)},
		Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{
			Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
				{Request: "mem", Driver: dra.DriverName, Pool: pool, Device: "pool-a", ShareID: &shareID},
				{Request: "gpu", Driver: "gpu.example.com", Pool: pool, Device: "gpu-0"},
			}},
		}},
	}
}

func startWriter(t *testing.T, client *fake.Clientset) *Writer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := New(client, "node-1", clock.RealClock{})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	require.Eventually(t, w.HasSynced, 10*time.Second, 10*time.Millisecond)
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

func TestWriterMarksOurDeviceOnline(t *testing.T) {
	client := fake.NewClientset(allocatedClaim("claim-1", "uid-1", "node-1", "share-1"))
	w := startWriter(t, client)

	w.Online("uid-1", "2Gi online in NUMA node 1")
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

	w.Failed("uid-1", "offline memory block 9: busy")
	require.Eventually(t, func() bool {
		c := condition(deviceStatus(t, client, "claim-1"), dra.ConditionProvisioningFailed)
		return c != nil && c.Status == metav1.ConditionTrue
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, metav1.ConditionFalse, condition(deviceStatus(t, client, "claim-1"), dra.ConditionOnline).Status)
}

func TestWriterWaitsForTheClaimToBeAllocated(t *testing.T) {
	client := fake.NewClientset()
	w := startWriter(t, client)
	w.Online("uid-2", "1Gi online")

	claim := allocatedClaim("claim-2", "uid-2", "node-1", "share-2")
	_, err := client.ResourceV1().ResourceClaims("default").Create(context.Background(), claim, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		c := condition(deviceStatus(t, client, "claim-2"), dra.ConditionOnline)
		return c != nil && c.Status == metav1.ConditionTrue
	}, 10*time.Second, 10*time.Millisecond)
}

func TestWriterIgnoresClaimsOfOtherNodes(t *testing.T) {
	client := fake.NewClientset(allocatedClaim("claim-3", "uid-3", "node-2", "share-3"))
	w := startWriter(t, client)
	w.Online("uid-3", "1Gi online")
	// A claim of this node, reported after, is written: once it is, the other
	// claim has been looked at too.
	_, err := client.ResourceV1().ResourceClaims("default").Create(context.Background(), allocatedClaim("claim-4", "uid-4", "node-1", "share-4"), metav1.CreateOptions{})
	require.NoError(t, err)
	w.Online("uid-4", "1Gi online")
	require.Eventually(t, func() bool { return len(deviceStatus(t, client, "claim-4")) == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Empty(t, deviceStatus(t, client, "claim-3"))
}
