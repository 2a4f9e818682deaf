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

package dynamicmemory

import (
	"context"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

// Reserve reserves each new demand's memory for the node, from the pool
// DynamicResources allocated the claim's device from (it runs before this plugin);
// without that allocation, from the plugin's own pick (PreBind then passes the
// allocated pool, and the service moves the reservation if it differs).
//
// The scheduling cycle does not wait for the memory service: the reserver records
// the reservations as in flight in the pool cache, so the next pods' Filter already
// subtracts them, and asks the service in the background. Permit holds the pod
// until the service answered; a refusal rejects the pod there.
func (pl *DynamicMemory) Reserve(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, node string) *fwk.Status {
	s := lookupState(cs)
	if s == nil {
		return nil
	}
	pl.rejected.forget(pod.UID)
	logger := klog.FromContext(ctx)
	claims := pl.handle.SharedDRAManager().ResourceClaims()
	var own []placement // the plugin's picks, computed when first needed
	var rs []reservation
	for i, d := range s.demands {
		if d.allocated {
			continue
		}
		pool, from := dra.AllocatedPool(claims.GetPendingAllocation(d.claim.UID), d.request), "allocation"
		if pool == "" {
			from = "plugin"
			if own == nil {
				own, _ = s.view.fitNode(node, s.demands, pl.scorer)
			}
			if own != nil {
				pool = own[i].pool
			}
		}
		rs = append(rs, reservation{demand: d, node: node, pool: pool, bytes: s.view.blockRounded(pool, d.bytes)})
		logger.V(4).Info("Reserving dynamic memory", "pod", klog.KObj(pod), "claim", klog.KObj(d.claim),
			"node", node, "pool", pool, "poolFrom", from, "bytes", formatBytes(d.bytes))
	}
	if len(rs) > 0 {
		s.reservation = pl.reservations.Reserve(ctx, pod, rs)
	}
	return nil
}

// Permit lets a pod with new reservations go on to binding once the memory service
// granted them. While the calls run, the pod is held (bounded by the time they may
// take); a refusal rejects the pod, which Unreserve then releases, and the pod is
// retried when pool capacity comes back.
func (pl *DynamicMemory) Permit(_ context.Context, cs fwk.CycleState, _ *v1.Pod, _ string) (*fwk.Status, time.Duration) {
	s := lookupState(cs)
	if s == nil || s.reservation == nil {
		return nil, 0
	}
	return pl.reservations.Permit(s.reservation)
}

// Unreserve gives back the reservations Reserve asked for in this cycle, once their
// calls ended (a call that timed out may still have reserved). Claims allocated
// before the cycle keep their memory: it may serve other pods.
func (pl *DynamicMemory) Unreserve(ctx context.Context, cs fwk.CycleState, _ *v1.Pod, _ string) {
	s := lookupState(cs)
	if s == nil || s.reservation == nil {
		return
	}
	r := s.reservation
	s.reservation = nil
	pl.reservations.Cancel(ctx, r)
}
