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

package dra

import (
	"slices"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	resourceac "k8s.io/client-go/applyconfigurations/resource/v1"
)

// DeviceState is what the device conditions of a claim say about its memory: Online
// (ConditionOnline True, ConditionProvisioningFailed False) or not, with the reason
// and message of both conditions.
type DeviceState struct {
	Online  bool
	Reason  string
	Message string
	// Since is the conditions' lastTransitionTime.
	Since time.Time
}

// Devices are the claim's allocation results of this driver; with a non-empty pool,
// only those of that DRA pool (a node's: the pools are named after their node).
func Devices(claim *resourceapi.ResourceClaim, pool string) []resourceapi.DeviceRequestAllocationResult {
	if claim.Status.Allocation == nil {
		return nil
	}
	var out []resourceapi.DeviceRequestAllocationResult
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver == DriverName && (pool == "" || r.Pool == pool) {
			out = append(out, r)
		}
	}
	return out
}

// ApplyDeviceState is the server-side apply of resourceclaims/status that sets the
// state's conditions on devices (results of Devices). Other drivers' entries are
// left alone. It names the claim's UID, so the API server refuses it (uid is
// immutable) if the claim was deleted and created again under its name meanwhile.
func ApplyDeviceState(claim *resourceapi.ResourceClaim, devices []resourceapi.DeviceRequestAllocationResult, s DeviceState) *resourceac.ResourceClaimApplyConfiguration {
	online, failed := metav1.ConditionFalse, metav1.ConditionTrue
	if s.Online {
		online, failed = metav1.ConditionTrue, metav1.ConditionFalse
	}
	at := metav1.NewTime(s.Since)
	status := resourceac.ResourceClaimStatus()
	for _, r := range devices {
		dev := resourceac.AllocatedDeviceStatus().
			WithDriver(r.Driver).WithPool(r.Pool).WithDevice(r.Device).
			WithConditions(
				metav1ac.Condition().WithType(ConditionOnline).WithStatus(online).WithReason(s.Reason).
					WithMessage(s.Message).WithLastTransitionTime(at).WithObservedGeneration(claim.Generation),
				metav1ac.Condition().WithType(ConditionProvisioningFailed).WithStatus(failed).WithReason(s.Reason).
					WithMessage(s.Message).WithLastTransitionTime(at).WithObservedGeneration(claim.Generation),
			)
		if r.ShareID != nil {
			dev.WithShareID(string(*r.ShareID))
		}
		status.WithDevices(dev)
	}
	return resourceac.ResourceClaim(claim.Name, claim.Namespace).WithUID(claim.UID).WithStatus(status)
}

// AwaitsOnline tells whether a scheduler waits for the Online condition of one of
// devices: the allocation copied it from the devices' binding conditions (the DRA
// plugin's --binding-conditions).
func AwaitsOnline(devices []resourceapi.DeviceRequestAllocationResult) bool {
	return slices.ContainsFunc(devices, func(r resourceapi.DeviceRequestAllocationResult) bool {
		return slices.Contains(r.BindingConditions, ConditionOnline)
	})
}

// HasConditions tells whether the claim's status has conditions on one of devices.
func HasConditions(claim *resourceapi.ResourceClaim, devices []resourceapi.DeviceRequestAllocationResult) bool {
	return slices.ContainsFunc(devices, func(r resourceapi.DeviceRequestAllocationResult) bool {
		return len(conditionsOf(claim, r)) > 0
	})
}

// HasDeviceState tells whether every one of devices already carries the state's
// Online condition (status, reason and message).
func HasDeviceState(claim *resourceapi.ResourceClaim, devices []resourceapi.DeviceRequestAllocationResult, s DeviceState) bool {
	want := metav1.ConditionFalse
	if s.Online {
		want = metav1.ConditionTrue
	}
	for _, r := range devices {
		if !slices.ContainsFunc(conditionsOf(claim, r), func(c metav1.Condition) bool {
			return c.Type == ConditionOnline && c.Status == want && c.Reason == s.Reason && c.Message == s.Message
		}) {
			return false
		}
	}
	return true
}

// conditionsOf are the conditions the claim's status has on the allocated device r.
func conditionsOf(claim *resourceapi.ResourceClaim, r resourceapi.DeviceRequestAllocationResult) []metav1.Condition {
	for _, d := range claim.Status.Devices {
		if d.Driver == r.Driver && d.Pool == r.Pool && d.Device == r.Device && sameShare(d.ShareID, r.ShareID) {
			return d.Conditions
		}
	}
	return nil
}

func sameShare(status *string, result *types.UID) bool {
	if status == nil || result == nil {
		return status == nil && result == nil
	}
	return *status == string(*result)
}
