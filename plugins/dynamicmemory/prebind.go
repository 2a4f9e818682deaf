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
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

// eventProvisioningFailed is the reason of the event the plugin records on a pod
// whose memory could not be provisioned. A success records none: the pod's binding
// says the memory is online, and its DynamicMemoryClaim says where and how fast
// (`kubectl dynamic-memory why POD`); an event a pod was one API request more than
// scheduling with DRA alone costs.
const eventProvisioningFailed = "DynamicMemoryProvisioningFailed"

// PreBindPreFlight tells the framework that PreBind has work for pods with dynamic
// memory claims, and that it may run in parallel with DynamicResources' PreBind: the
// memory is provisioned while the allocation is written (both take an API server
// round trip, which under load is most of a pod's binding time). The pool is the one
// DynamicResources allocated in Reserve, which the reservation holds; the memory
// service keeps the memory of a claim whose allocation has not arrived yet for
// reconciler.AllocationWait, and if DynamicResources' PreBind fails while this one
// waits, the framework cancels it and Unreserve releases the memory (memory that came
// online is left to the service: docs/architecture.md).
func (pl *DynamicMemory) PreBindPreFlight(_ context.Context, cs fwk.CycleState, _ *v1.Pod, _ string) (*fwk.PreBindPreFlightResult, *fwk.Status) {
	result := &fwk.PreBindPreFlightResult{AllowParallel: true}
	if s := lookupState(cs); s == nil || len(s.demands) == 0 {
		return result, fwk.NewStatus(fwk.Skip)
	}
	return result, nil
}

// PreBind has the memory service provision every dynamic memory claim of the pod on
// the node — from the pool DynamicResources allocated, while DynamicResources' PreBind
// writes that allocation — and waits, bounded by the
// provision timeout, until the node agent reports it online. On failure the
// framework unreserves (releasing the memory) and retries the pod; an event on the
// pod says why. Once it succeeded the pod's memory is never released by Unreserve:
// the bind that follows may land although the scheduler saw it fail. A pool without room for the claim makes the pod unschedulable, with
// the numbers, until the pool cache sees capacity come back.
func (pl *DynamicMemory) PreBind(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, node string) *fwk.Status {
	s := lookupState(cs)
	if s == nil {
		return nil
	}
	if s.reservation != nil {
		// AddMemory must follow the granted Reserve. In the framework Permit has
		// already held the pod for it, so this returns at once.
		if err := s.reservation.outcome(ctx); err != nil {
			return fwk.AsStatus(err)
		}
	}
	for _, d := range s.demands {
		pool := pl.provisionPool(s, d)
		if err := pl.provision(ctx, pod, d, node, pool); err != nil {
			pl.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeWarning, eventProvisioningFailed, "Provisioning", "%s", err.Error())
			if _, full := errors.AsType[*noCapacityError](err); full {
				// A claim allocated in an earlier cycle keeps its node and pool, and that
				// pool is full now: the pod waits, with the numbers, until the pool
				// cache sees capacity come back (not a scheduler error retried forever).
				pl.rejected.add(pod, d.bytes, pl.cache.view())
				return fwk.NewStatus(fwk.Unschedulable, err.Error())
			}
			return fwk.AsStatus(err)
		}
	}
	if s.reservation != nil {
		s.reservation.online()
	}
	return nil
}

// provisionPool is the pool a demand's memory comes from: the allocated device (our
// devices are named after their pool) of a claim allocated in an earlier cycle, else
// the pool reserved in this cycle (from DynamicResources' pending allocation, whose
// write runs beside this PreBind).
func (pl *DynamicMemory) provisionPool(s *stateData, d demand) string {
	if claim, err := pl.handle.SharedDRAManager().ResourceClaims().Get(d.claim.Namespace, d.claim.Name); err == nil && claim.UID == d.claim.UID {
		if pool := dra.AllocatedPool(claim.Status.Allocation, d.request); pool != "" {
			return pool
		}
	}
	if s.reservation != nil {
		if pool := s.reservation.pool(d.claim.UID); pool != "" {
			return pool
		}
	}
	return d.pool
}

// noCapacityError is a provisioning the memory service refused because the pool has
// no room for the claim.
type noCapacityError struct{ msg string }

func (e *noCapacityError) Error() string { return e.msg }

// provision calls AddMemory and turns its outcome into an error a user can act on.
func (pl *DynamicMemory) provision(ctx context.Context, pod *v1.Pod, d demand, node, pool string) error {
	logger := klog.FromContext(ctx)
	what := fmt.Sprintf("%s for claim %s on node %s", formatBytes(d.bytes), d.claimRef(), node)
	if pool != "" {
		what += " from pool " + pool
	}
	start := pl.clock.Now()
	pctx, cancel := context.WithTimeout(ctx, pl.provisionTimeout)
	resp, err := pl.client.AddMemory(pctx, &memservicev1.AddMemoryRequest{
		Claim: d.ref(), Pod: podRef(pod), Node: node, Pool: pool, Bytes: d.bytes,
	})
	cancel()
	elapsed := pl.clock.Since(start)
	r := resp.GetReservation()

	var result string
	switch {
	case err == nil && r.GetState() == memservicev1.ReservationState_RESERVATION_STATE_ONLINE:
		result = resultOnline
	case err == nil:
		result = resultFailed
		err = fmt.Errorf("provision %s: the memory service reports %s: %s", what, r.GetState(), r.GetMessage())
	case status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		result = resultTimeout
		err = fmt.Errorf("provision %s: not online within %s (provisionTimeout); releasing it and retrying the pod", what, pl.provisionTimeout)
	case status.Code(err) == codes.ResourceExhausted:
		result = resultFailed
		err = &noCapacityError{msg: fmt.Sprintf("provision %s: %s", what, status.Convert(err).Message())}
	case status.Code(err) == codes.FailedPrecondition:
		result = resultFailed
		err = fmt.Errorf("provision %s: %s", what, status.Convert(err).Message())
	default:
		result = resultError
		err = fmt.Errorf("provision %s: %w", what, err)
	}
	provisioningDuration.WithLabelValues(result).Observe(elapsed.Seconds())
	if err != nil {
		logger.Error(err, "Dynamic memory provisioning failed", "pod", klog.KObj(pod), "claim", klog.KObj(d.claim), "elapsed", elapsed)
		return err
	}
	logger.V(2).Info("Dynamic memory online", "pod", klog.KObj(pod), "claim", klog.KObj(d.claim), "node", node,
		"pool", r.GetPool(), "bytes", formatBytes(r.GetBytes()), "numaNodes", r.GetNumaNodes(), "elapsed", elapsed)
	return nil
}
