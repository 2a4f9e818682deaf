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
func lookupState(cs fwk.CycleState) *stateData {
	s, err := getState(cs)
	if err != nil {
		return nil
	}
	return s
}

// Reserve reserves each new demand's memory on the memory service, keyed by the
// claim UID, for the node and the pool DynamicResources allocated the claim's device
// from (it runs before this plugin). Without that allocation the plugin's own pick
// is used; PreBind then passes the allocated pool, and the service moves the
// reservation if it differs.
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
		// Recorded before the call: a timed-out call may still have reserved.
		s.reserved = append(s.reserved, reservation{demand: d, node: node, pool: pool})
		resp, err := pl.reserve(ctx, pod, d, node, pool)
		if err != nil {
			return fwk.AsStatus(err)
		}
		r := resp.GetReservation()
		pl.cache.addInflight(d.claim.UID, r.GetPool(), node, r.GetBytes(), resp.GetLedgerRevision())
		logger.V(3).Info("Reserved dynamic memory", "pod", klog.KObj(pod), "claim", klog.KObj(d.claim),
			"node", node, "pool", r.GetPool(), "poolFrom", from, "bytes", formatBytes(r.GetBytes()))
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

// Unreserve releases the reservations Reserve made in this cycle. Claims allocated
// before the cycle keep their memory: it may serve other pods.
func (pl *DynamicMemory) Unreserve(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, node string) {
	s := lookupState(cs)
	if s == nil {
		return
	}
	logger := klog.FromContext(ctx)
	for _, r := range s.reserved {
		uid := r.demand.claim.UID
		if err := pl.remove(ctx, uid); err != nil {
			logger.Error(err, "Release dynamic memory; the memory service releases it when its reservation expires",
				"pod", klog.KObj(pod), "claim", klog.KObj(r.demand.claim), "node", node)
		} else {
			logger.V(3).Info("Released dynamic memory", "pod", klog.KObj(pod), "claim", klog.KObj(r.demand.claim), "node", node)
		}
		pl.cache.dropInflight(logger, uid)
	}
	s.reserved = nil
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
