package dynamicmemory

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

// lookupState returns the cycle's state, or nil when PreFilter skipped the pod.
// It builds no error: it runs at several extension points for every pod.
func lookupState(cs fwk.CycleState) *stateData {
	data, err := cs.Read(stateKey)
	if err != nil {
		return nil
	}
	s, _ := data.(*stateData)
	return s
}

// Reserve reserves each new demand's memory for the node, from the pool
// DynamicResources allocated the claim's device from (it runs before this plugin);
// without that allocation, from the plugin's own pick (PreBind then passes the
// allocated pool, and the service moves the reservation if it differs).
//
// The scheduling cycle does not wait for the memory service: Reserve records the
// reservations as in flight in the pool cache, so the next pods' Filter already
// subtracts them, and asks the service from a goroutine. Permit holds the pod until
// the service answered; a refusal rejects the pod there.
func (pl *DynamicMemory) Reserve(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, node string) *fwk.Status {
	s := lookupState(cs)
	if s == nil {
		return nil
	}
	pl.waiting.remove(pod.UID)
	logger := klog.FromContext(ctx)
	claims := pl.handle.SharedDRAManager().ResourceClaims()
	var own []placement // the plugin's picks, computed when first needed
	for i, d := range s.demands {
		if d.allocated {
			continue
		}
		pool, from := allocatedPool(claims.GetPendingAllocation(d.claim.UID), d.request), "allocation"
		if pool == "" {
			from = "plugin"
			if own == nil {
				own, _ = s.view.fitNode(node, s.demands, pl.scorer)
			}
			if own != nil {
				pool = own[i].pool
			}
		}
		s.reserved = append(s.reserved, reservation{demand: d, node: node, pool: pool})
		pl.cache.addPending(d.claim.UID, pool, node, s.view.blockRounded(pool, d.bytes))
		logger.V(4).Info("Reserving dynamic memory", "pod", klog.KObj(pod), "claim", klog.KObj(d.claim),
			"node", node, "pool", pool, "poolFrom", from, "bytes", formatBytes(d.bytes))
	}
	if len(s.reserved) > 0 {
		s.pending = pl.reserveAsync(ctx, pod, s.reserved)
	}
	return nil
}

// reserveAll asks the memory service for each reservation, in order, and records
// what it granted in the pool cache. It stops at the first refusal.
func (pl *DynamicMemory) reserveAll(ctx context.Context, pod *v1.Pod, rs []reservation) error {
	logger := klog.FromContext(ctx)
	for _, r := range rs {
		uid := r.demand.claim.UID
		// A release of the same claim from an earlier cycle must land first, or it
		// would remove the new reservation.
		if err := pl.releases.wait(ctx, uid); err != nil {
			return fmt.Errorf("reserve memory of claim %s: %w", r.demand.claimRef(), err)
		}
		resp, err := pl.reserve(ctx, pod, r.demand, r.node, r.pool)
		if err != nil {
			return err
		}
		granted := resp.GetReservation()
		pl.cache.addInflight(uid, granted.GetPool(), r.node, granted.GetBytes(), resp.GetLedgerRevision())
		logger.V(3).Info("Reserved dynamic memory", "pod", klog.KObj(pod), "claim", klog.KObj(r.demand.claim),
			"node", r.node, "pool", granted.GetPool(), "bytes", formatBytes(granted.GetBytes()))
	}
	return nil
}

// reserve calls the memory service's Reserve. A reservation the service still
// holds for the claim from an earlier attempt (another node or size) is stale —
// the claim is not allocated — so it is released and the call repeated once.
func (pl *DynamicMemory) reserve(ctx context.Context, pod *v1.Pod, d demand, node, pool string) (*memservicev1.ReserveResponse, error) {
	req := &memservicev1.ReserveRequest{Claim: d.ref(), Pod: podRef(pod), Node: node, Pool: pool, Bytes: d.bytes}
	for attempt := 0; ; attempt++ {
		reserveAttempts.Inc()
		rctx, cancel := context.WithTimeout(ctx, pl.reserveTimeout)
		resp, err := pl.client.Reserve(rctx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		code := status.Code(err)
		if code == codes.FailedPrecondition && attempt == 0 {
			klog.FromContext(ctx).V(2).Info("Releasing a stale reservation of an unallocated claim", "claim", klog.KObj(d.claim), "err", err)
			if rerr := pl.remove(ctx, d.claim.UID); rerr == nil {
				continue
			}
		}
		where := fmt.Sprintf("%s for claim %s on node %s", formatBytes(d.bytes), d.claimRef(), node)
		if pool != "" {
			where += " from pool " + pool
		}
		switch code {
		case codes.ResourceExhausted:
			reserveFailures.WithLabelValues(reasonExhausted).Inc()
			return nil, fmt.Errorf("the memory service has no room for %s (the scheduler's pool view was behind; retrying): %s", where, status.Convert(err).Message())
		case codes.Unavailable, codes.DeadlineExceeded:
			reserveFailures.WithLabelValues(reasonUnavailable).Inc()
			return nil, fmt.Errorf("reserve %s: the memory service did not answer within %s: %w", where, pl.reserveTimeout, err)
		default:
			reserveFailures.WithLabelValues(reasonError).Inc()
			return nil, fmt.Errorf("reserve %s: %w", where, err)
		}
	}
}

// Unreserve releases the reservations Reserve asked for in this cycle, from a
// goroutine once their Reserve calls ended (a call that timed out may still have
// reserved). Claims allocated before the cycle keep their memory: it may serve
// other pods.
func (pl *DynamicMemory) Unreserve(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, node string) {
	s := lookupState(cs)
	if s == nil || len(s.reserved) == 0 {
		return
	}
	rs, pending := s.reserved, s.pending
	s.reserved, s.pending = nil, nil
	released := pl.releases.begin(rs)
	if pending != nil {
		pending.abandon()
	}
	go func() {
		defer released()
		if pending != nil {
			<-pending.done
		}
		logger := klog.FromContext(ctx)
		for _, r := range rs {
			uid := r.demand.claim.UID
			if err := pl.remove(ctx, uid); err != nil {
				logger.Error(err, "Release dynamic memory; the memory service releases it when its reservation expires",
					"pod", klog.KObj(pod), "claim", klog.KObj(r.demand.claim), "node", node)
			} else {
				logger.V(3).Info("Released dynamic memory", "pod", klog.KObj(pod), "claim", klog.KObj(r.demand.claim), "node", node)
			}
			pl.cache.dropInflight(logger, uid)
		}
	}()
}

// remove releases a claim's memory. It outlives a canceled scheduling context: the
// release must happen even when the cycle was aborted.
func (pl *DynamicMemory) remove(ctx context.Context, uid types.UID) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pl.reserveTimeout)
	defer cancel()
	if _, err := pl.client.RemoveMemory(rctx, &memservicev1.RemoveMemoryRequest{ClaimUid: string(uid)}); err != nil {
		return fmt.Errorf("remove memory of claim %s: %w", uid, err)
	}
	return nil
}
