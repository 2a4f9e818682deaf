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

package service

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

// adopter is a device whose state lives in the service's memory (the simulated
// device): after a restart it is given back the extents the records say it holds.
type adopter interface {
	Adopt(extents []backend.HostExtent) error
}

// devices finds a pool's device and the host ID of each of its nodes on it (the
// pool registry).
type devices interface {
	Devices(pool string) (provision.Backend, map[string]int32, bool)
}

// flights resumes the flights a restart cut short (provision.Manager).
type flights interface {
	Resume(r ledger.Reservation)
	ResumeRelease(uid string)
}

// rebuilder restores the ledger of a new leader.
type rebuilder struct {
	store   *store.Store
	ledger  *ledger.Ledger
	devices devices
	flights flights
	metrics *metrics.Metrics
	events  record.EventRecorder
	// lease is checked right before releasing an extent (nil: no leader election).
	lease provision.Lease
}

// rebuild restores the ledger from the DynamicMemoryClaims, reconciles it with the
// devices' own extent lists, and resumes the flights a restart cut short.
func (rb *rebuilder) rebuild(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	records, bad, err := rb.store.List(ctx)
	if err != nil {
		return fmt.Errorf("rebuild ledger: %w", err)
	}
	for _, err := range bad {
		logger.Error(err, "Skipping unreadable DynamicMemoryClaim")
	}
	var restored []ledger.Reservation
	for _, r := range records {
		switch r.State {
		case v1alpha1.PhaseReserved:
			// Created, and the service stopped before the first status write: the
			// device and the agent were not asked for anything. Restored, it would
			// hold bytes that no extent backs; the scheduler asks again if the pod
			// still needs the memory.
			r.State = v1alpha1.PhaseReleased
		case v1alpha1.PhaseReleased:
			// Left by an older version, which recorded the release and kept the
			// record until its ResourceClaim was garbage collected.
		}
		if r.State == v1alpha1.PhaseReleased {
			if err := rb.store.Released(ctx, r); err != nil {
				logger.Error(err, "Removing a released DynamicMemoryClaim", "claim", r.Claim.UID, "namespace", r.Claim.Namespace, "name", r.Claim.Name)
			}
			continue
		}
		if err := rb.ledger.Restore(r); err != nil {
			rb.setAside(ctx, r, err)
			continue
		}
		restored = append(restored, r)
	}
	if err := rb.ledger.CheckInvariants(); err != nil {
		return fmt.Errorf("rebuild ledger: restored reservations are inconsistent: %w", err)
	}

	byPool := map[string][]ledger.Reservation{}
	for _, r := range restored {
		byPool[r.Pool] = append(byPool[r.Pool], r)
	}
	for _, spec := range rb.ledger.Snapshot().Pools {
		rb.reconcileDevice(ctx, spec.Pool, byPool[spec.Name])
	}

	for _, r := range restored {
		cur, ok := rb.ledger.Get(r.Claim.UID)
		if !ok {
			continue
		}
		switch cur.State {
		case v1alpha1.PhaseProvisioning:
			rb.flights.Resume(cur)
		case v1alpha1.PhaseReleasing:
			rb.flights.ResumeRelease(cur.Claim.UID)
		}
	}
	logger.Info("Ledger rebuilt", "reservations", len(restored), "setAside", len(rb.ledger.SetAsideClaims()), "unreadable", len(bad))
	return nil
}

// setAside takes a record that cannot be restored out of service, so that the rest is
// served: its memory may be in use by a running pod, so it is neither offlined nor
// released, and the ranges it names are withheld from its pool. The record says so in
// its SetAside condition, with an event, until a person resolves it.
func (rb *rebuilder) setAside(ctx context.Context, r ledger.Reservation, why error) {
	logger := klog.FromContext(ctx).WithValues("claim", r.Claim.UID, "namespace", r.Claim.Namespace, "name", r.Claim.Name)
	if _, ok := rb.ledger.SetAside(r, why.Error()); !ok {
		logger.Error(why, "A second DynamicMemoryClaim names a restored claim; leaving it as it is")
		return
	}
	logger.Error(why, "Cannot restore reservation; setting it aside: its memory is neither offlined nor released until a person resolves it")
	if err := rb.store.SetAside(ctx, r, why.Error()); err != nil {
		logger.Error(err, "Recording the set-aside claim")
	}
	if rb.events != nil {
		ref := &corev1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryClaim", Namespace: r.Claim.Namespace, Name: r.Claim.Name}
		rb.events.Eventf(ref, corev1.EventTypeWarning, v1alpha1.ReasonRestoreRefused,
			"Set aside after a restart, memory kept as it is on node %s: %v", r.Node, why)
	}
}

// reconcileDevice compares a pool's device with the restored reservations: extents
// no reservation owns are released; reservations whose extents are gone fail.
func (rb *rebuilder) reconcileDevice(ctx context.Context, pool ledger.Pool, restored []ledger.Reservation) {
	logger := klog.FromContext(ctx).WithValues("pool", pool.Name)
	dev, hostIDs, ok := rb.devices.Devices(pool.Name)
	if !ok {
		return
	}
	if a, ok := dev.(adopter); ok {
		var held []backend.HostExtent
		for _, r := range restored {
			if r.State == v1alpha1.PhaseProvisioning {
				continue // re-added by the resumed flight
			}
			for _, e := range r.Extents {
				held = append(held, backend.HostExtent{HostID: hostIDs[r.Node], Tag: r.Claim.UID, Extent: e})
			}
		}
		if err := a.Adopt(held); err != nil {
			logger.Error(err, "Giving the simulated device back its extents")
		}
	}
	lctx, cancel := context.WithTimeout(ctx, provision.DefaultBackendTimeout)
	defer cancel()
	onDevice, err := dev.List(lctx)
	if errors.Is(err, backend.ErrNotSupported) {
		logger.V(2).Info("Device cannot list its extents; trusting the records")
		return
	}
	if err != nil {
		logger.Error(err, "Listing device extents; not reconciling this pool now")
		return
	}

	setAside := map[string]bool{}
	for _, a := range rb.ledger.SetAsideClaims() {
		setAside[a.Claim.UID] = true
	}
	owned := map[backend.HostExtent]bool{}
	for _, r := range rb.ledger.List() {
		if r.Pool != pool.Name || r.State == v1alpha1.PhaseReleased {
			continue
		}
		for _, e := range r.Extents {
			owned[backend.HostExtent{HostID: hostIDs[r.Node], Tag: r.Claim.UID, Extent: e}] = true
		}
	}
	present := map[backend.HostExtent]bool{}
	for _, x := range onDevice {
		present[x] = true
		if owned[x] {
			continue
		}
		if setAside[x.Tag] {
			// Where the device really put a set-aside claim's memory: withheld too.
			if err := rb.ledger.Withhold(x.Tag, []v1alpha1.Extent{x.Extent}); err != nil {
				logger.Error(err, "Withholding a set-aside claim's extent", "tag", x.Tag, "extent", x.Extent.String())
			}
			continue
		}
		if rb.lease != nil {
			if err := rb.lease.Check(); err != nil {
				logger.Error(err, "Not releasing the extents no claim owns: the new leader will", "host", x.HostID, "tag", x.Tag, "extent", x.Extent.String())
				return
			}
		}
		logger.Info("Releasing an extent no claim owns", "host", x.HostID, "tag", x.Tag, "extent", x.Extent.String())
		rb.metrics.OrphanExtents.Inc()
		rctx, cancel := context.WithTimeout(ctx, provision.DefaultBackendTimeout)
		if err := dev.Release(rctx, x.HostID, x.Tag, []v1alpha1.Extent{x.Extent}); err != nil {
			logger.Error(err, "Releasing orphan extent", "extent", x.Extent.String())
		}
		cancel()
	}
	for _, r := range restored {
		if r.State != v1alpha1.PhaseOnline {
			continue
		}
		for _, e := range r.Extents {
			if present[backend.HostExtent{HostID: hostIDs[r.Node], Tag: r.Claim.UID, Extent: e}] {
				continue
			}
			msg := fmt.Sprintf("extent %s of this claim is no longer on the device of pool %s (host %d)", e, pool.Name, hostIDs[r.Node])
			failed, err := rb.ledger.MarkFailed(r.Claim.UID, msg)
			if err == nil {
				logger.Info("Claim's memory vanished from the device", "claim", r.Claim.UID, "extent", e.String())
				if err := rb.store.Update(ctx, failed); err != nil {
					logger.Error(err, "Recording failed claim", "claim", r.Claim.UID)
				}
			}
			break
		}
	}
}
