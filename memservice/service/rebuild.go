package service

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

// adopter is a device whose state lives in the service's memory (the simulated
// device): after a restart it is given back the extents the records say it holds.
type adopter interface {
	Adopt(extents []backend.HostExtent) error
}

// rebuild restores the ledger from the DynamicMemoryClaims, reconciles it with the
// devices' own extent lists, and resumes the flights a restart cut short.
func (s *Service) rebuild(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	records, bad, err := s.store.List(ctx)
	if err != nil {
		return fmt.Errorf("rebuild ledger: %w", err)
	}
	for _, err := range bad {
		logger.Error(err, "Skipping unreadable DynamicMemoryClaim")
	}
	var restored []ledger.Reservation
	for _, r := range records {
		if r.State == ledger.StateReleased {
			// A restart between recording the release and dropping the finalizer
			// leaves the record behind: finish it.
			if err := s.store.Released(ctx, r); err != nil {
				logger.Error(err, "Finishing a released DynamicMemoryClaim", "claim", r.Claim.UID, "namespace", r.Claim.Namespace, "name", r.Claim.Name)
			}
			continue
		}
		if err := s.ledger.Restore(r); err != nil {
			logger.Error(err, "Cannot restore reservation; its DynamicMemoryClaim is left as it is", "claim", r.Claim.UID, "namespace", r.Claim.Namespace, "name", r.Claim.Name)
			continue
		}
		restored = append(restored, r)
	}
	if err := s.ledger.CheckInvariants(); err != nil {
		return fmt.Errorf("rebuild ledger: restored reservations are inconsistent: %w", err)
	}

	byPool := map[string][]ledger.Reservation{}
	for _, r := range restored {
		byPool[r.Pool] = append(byPool[r.Pool], r)
	}
	for _, spec := range s.ledger.Snapshot().Pools {
		s.reconcileDevice(ctx, spec.Pool, byPool[spec.Name])
	}

	for _, r := range restored {
		cur, ok := s.ledger.Get(r.Claim.UID)
		if !ok {
			continue
		}
		switch cur.State {
		case ledger.StateProvisioning:
			s.manager.Resume(cur)
		case ledger.StateReleasing:
			s.manager.ResumeRelease(cur.Claim.UID)
		}
	}
	logger.Info("Ledger rebuilt", "reservations", len(restored), "skipped", len(records)-len(restored)+len(bad))
	return nil
}

// reconcileDevice compares a pool's device with the restored reservations: extents
// no reservation owns are released; reservations whose extents are gone fail.
func (s *Service) reconcileDevice(ctx context.Context, pool ledger.Pool, restored []ledger.Reservation) {
	logger := klog.FromContext(ctx).WithValues("pool", pool.Name)
	dev, ok := s.manager.Backend(pool.Name)
	if !ok {
		return
	}
	hostIDs := s.pools.hostIDs(pool.Name)
	if a, ok := dev.(adopter); ok {
		var held []backend.HostExtent
		for _, r := range restored {
			if r.State == ledger.StateProvisioning {
				continue // re-added by the resumed flight
			}
			for _, e := range r.Extents {
				held = append(held, backend.HostExtent{HostID: hostIDs[r.Node], Tag: r.Claim.UID, Extent: backend.Extent{Offset: e.Offset, Length: e.Length}})
			}
		}
		if err := a.Adopt(held); err != nil {
			logger.Error(err, "Giving the simulated device back its extents")
		}
	}
	lctx, cancel := context.WithTimeout(ctx, rebuildBackendTimeout)
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

	owned := map[backend.HostExtent]bool{}
	for _, r := range s.ledger.List() {
		if r.Pool != pool.Name || r.State == ledger.StateReleased {
			continue
		}
		for _, e := range r.Extents {
			owned[backend.HostExtent{HostID: hostIDs[r.Node], Tag: r.Claim.UID, Extent: backend.Extent{Offset: e.Offset, Length: e.Length}}] = true
		}
	}
	present := map[backend.HostExtent]bool{}
	for _, x := range onDevice {
		present[x] = true
		if owned[x] {
			continue
		}
		logger.Info("Releasing an extent no claim owns", "host", x.HostID, "tag", x.Tag, "extent", x.Extent.String())
		s.metrics.OrphanExtents.Inc()
		rctx, cancel := context.WithTimeout(ctx, rebuildBackendTimeout)
		if err := dev.Release(rctx, x.HostID, x.Tag, []backend.Extent{x.Extent}); err != nil {
			logger.Error(err, "Releasing orphan extent", "extent", x.Extent.String())
		}
		cancel()
	}
	for _, r := range restored {
		if r.State != ledger.StateOnline {
			continue
		}
		for _, e := range r.Extents {
			if present[backend.HostExtent{HostID: hostIDs[r.Node], Tag: r.Claim.UID, Extent: backend.Extent{Offset: e.Offset, Length: e.Length}}] {
				continue
			}
			msg := fmt.Sprintf("extent %s of this claim is no longer on the device of pool %s (host %d)", e, pool.Name, hostIDs[r.Node])
			failed, err := s.ledger.MarkFailed(r.Claim.UID, msg)
			if err == nil {
				logger.Info("Claim's memory vanished from the device", "claim", r.Claim.UID, "extent", e.String())
				if err := s.store.Update(ctx, failed); err != nil {
					logger.Error(err, "Recording failed claim", "claim", r.Claim.UID)
				}
			}
			break
		}
	}
}
