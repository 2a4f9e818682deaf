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

package driver

import (
	"context"
	"fmt"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
)

// prepareError is a claim that cannot be prepared, with the metrics reason.
type prepareError struct {
	reason string
	err    error
}

func (e *prepareError) Error() string { return e.err.Error() }
func (e *prepareError) Unwrap() error { return e.err }

// PrepareResourceClaims gives each claim's containers a CDI device once the memory
// service says the claim's memory is online on this node. A claim whose memory is
// not online yet gets an error, and the kubelet asks again later.
func (d *Driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	result := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	for _, claim := range claims {
		start := d.cfg.Clock.Now()
		d.cfg.Metrics.PrepareClaims.Inc()
		devices, err := d.prepare(ctx, claim)
		d.cfg.Metrics.PrepareDuration.Observe(d.cfg.Clock.Since(start).Seconds())
		if err != nil {
			d.cfg.Metrics.PrepareErrors.WithLabelValues(err.reason).Inc()
			klog.FromContext(ctx).Info("Claim not prepared", "claim", klog.KObj(claim), "claimUID", claim.UID, "reason", err.reason, "err", err.err)
			result[claim.UID] = kubeletplugin.PrepareResult{Err: fmt.Errorf("claim %s/%s (uid %s): %w", claim.Namespace, claim.Name, claim.UID, err)}
			continue
		}
		result[claim.UID] = kubeletplugin.PrepareResult{Devices: devices}
	}
	return result, nil
}

func (d *Driver) prepare(ctx context.Context, claim *resourceapi.ResourceClaim) ([]kubeletplugin.Device, *prepareError) {
	var ours []resourceapi.DeviceRequestAllocationResult
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver != dra.DriverName {
			continue
		}
		if r.Pool != d.cfg.Node {
			return nil, &prepareError{metrics.ReasonWrongAllocation, fmt.Errorf("device %s is allocated from DRA pool %s, but this plugin serves node %s", r.Device, r.Pool, d.cfg.Node)}
		}
		ours = append(ours, r)
	}
	if len(ours) == 0 {
		return nil, nil
	}
	resp, err := d.cfg.Reservations.GetReservation(ctx, &memservicev1.GetReservationRequest{ClaimUid: string(claim.UID)})
	if status.Code(err) == codes.NotFound {
		return nil, &prepareError{metrics.ReasonNotFound, fmt.Errorf("the memory service has no reservation for this claim: its memory is not provisioned yet, or the pool cannot serve it (the claim's %s condition says why; kubectl dynamic-memory why POD)", dra.ConditionProvisioningFailed)}
	}
	if err != nil {
		return nil, &prepareError{metrics.ReasonMemoryService, fmt.Errorf("ask the memory service about the claim's memory: %w", err)}
	}
	resv := resp.GetReservation()
	if resv.GetNode() != d.cfg.Node {
		return nil, &prepareError{metrics.ReasonWrongNode, fmt.Errorf("the memory service provisions this claim's memory on node %q, not on %s", resv.GetNode(), d.cfg.Node)}
	}
	if resv.GetState() != memservicev1.ReservationState_RESERVATION_STATE_ONLINE {
		msg := fmt.Sprintf("the claim's memory is %s, not online yet", phaseName(resv.GetState()))
		if resv.GetMessage() != "" {
			msg += ": " + resv.GetMessage()
		}
		return nil, &prepareError{metrics.ReasonNotOnline, fmt.Errorf("%s", msg)}
	}
	if err := d.cdi.Write(string(claim.UID), resv.GetBytes(), resv.GetNumaNodes()); err != nil {
		return nil, &prepareError{metrics.ReasonCDI, err}
	}
	id := d.cdi.DeviceID(string(claim.UID))
	devices := make([]kubeletplugin.Device, 0, len(ours))
	for _, r := range ours {
		devices = append(devices, kubeletplugin.Device{
			Requests:     []string{r.Request},
			PoolName:     r.Pool,
			DeviceName:   r.Device,
			CDIDeviceIDs: []string{id},
			ShareID:      r.ShareID,
		})
	}
	klog.FromContext(ctx).V(2).Info("Claim prepared", "claim", klog.KObj(claim), "bytes", resv.GetBytes(), "numaNodes", resv.GetNumaNodes(), "cdiDevice", id)
	return devices, nil
}

// phaseName is a reservation state for a person: its phase ("Provisioning").
func phaseName(s memservicev1.ReservationState) string {
	if p := s.Phase(); p != "" {
		return string(p)
	}
	return "unknown"
}

// UnprepareResourceClaims removes the claims' CDI specs. Releasing the memory is the
// memory service's job once the claim is deallocated; this only undoes Prepare, and
// is idempotent.
func (d *Driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	result := make(map[types.UID]error, len(claims))
	for _, claim := range claims {
		start := d.cfg.Clock.Now()
		d.cfg.Metrics.UnprepareClaims.Inc()
		err := d.cdi.Remove(string(claim.UID))
		d.cfg.Metrics.UnprepareDuration.Observe(d.cfg.Clock.Since(start).Seconds())
		if err != nil {
			d.cfg.Metrics.UnprepareErrors.Inc()
			result[claim.UID] = fmt.Errorf("claim %s (uid %s): %w", claim.NamespacedName, claim.UID, err)
			continue
		}
		result[claim.UID] = nil
		klog.FromContext(ctx).V(2).Info("Claim unprepared", "claim", claim.NamespacedName, "claimUID", claim.UID)
	}
	return result, nil
}
