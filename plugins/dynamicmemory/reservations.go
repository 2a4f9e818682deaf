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
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/utils/clock"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

// reserver is what the plugin's Reserve, Permit and Unreserve need of the memory
// service's reservations (the pattern of volumebinding's SchedulerVolumeBinder and
// coscheduling's PodGroupManager: the extension points stay thin).
type reserver interface {
	// Reserve records rs in the pool cache as in flight, so that the next pods'
	// Filter subtracts them, and asks the memory service for them in the
	// background. It does not wait for the service.
	Reserve(ctx context.Context, pod *v1.Pod, rs []reservation) *podReservation
	// Permit decides on a pod's reservation: nil once granted, Wait (with the
	// bound of the hold) while the calls run, Unschedulable with the service's
	// reason once refused. A pod held by Wait is allowed or rejected when the
	// calls end.
	Permit(r *podReservation) (*fwk.Status, time.Duration)
	// Cancel gives a pod's reservation back: it cancels calls still running and
	// releases the memory in the background once they ended. Each claim's next
	// Reserve waits for that release.
	Cancel(ctx context.Context, r *podReservation)
}

var _ reserver = (*reservations)(nil)

// reservation is one claim's memory as Reserve asks for it.
type reservation struct {
	demand demand
	node   string
	pool   string
	// bytes is the demand rounded up to the pool's block size, as the memory
	// service reserves it; the pool cache counts it in flight.
	bytes int64
}

// podReservation is one scheduling cycle's reservations of a pod and the background
// Reserve calls for them.
type podReservation struct {
	pod   *v1.Pod
	items []reservation
	// bound is how long Permit holds the pod for the calls.
	bound  time.Duration
	cancel context.CancelFunc
	// done is closed when the calls ended: all granted, or one failed.
	done chan struct{}

	mu sync.Mutex
	// finished and err are set when done closes; err is the first failure.
	finished bool
	err      error
	// held is set when Permit returned Wait: the answer must allow or reject the
	// pod the framework holds.
	held bool
	// canceled is set by Cancel: nobody takes the answer any more.
	canceled bool
	// isOnline is set when PreBind saw every claim's memory online: the pod goes
	// to Bind, which may land even when the scheduler sees it fail.
	isOnline bool
}

// online notes that PreBind saw the pod's memory online.
func (r *podReservation) online() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.isOnline = true
}

// pool is the pool reserved for claim uid in this cycle ("" when none).
func (r *podReservation) pool(uid types.UID) string {
	for _, item := range r.items {
		if item.demand.claim.UID == uid {
			return item.pool
		}
	}
	return ""
}

// outcome blocks until the calls ended and returns the first failure.
func (r *podReservation) outcome(ctx context.Context) error {
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// finish records the outcome and tells whether the framework holds the pod for it.
func (r *podReservation) finish(err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished, r.err = true, err
	close(r.done)
	return r.held && !r.canceled
}

// reservations is the reserver of the memory service behind client.
type reservations struct {
	handle   fwk.Handle
	client   memservicev1.MemoryServiceClient
	cache    *poolCache
	rejected *rejectedPods
	clock    clock.WithDelayedExecution
	// reserveTimeout bounds each Reserve call, releaseTimeout each RemoveMemory
	// call; permitTimeout bounds Permit's hold (0: derived from the other two).
	reserveTimeout, releaseTimeout, permitTimeout time.Duration
	releases                                      *releaseSet
}

// Reserve implements reserver.
func (m *reservations) Reserve(ctx context.Context, pod *v1.Pod, rs []reservation) *podReservation {
	for _, item := range rs {
		m.cache.addPending(item.demand.claim.UID, item.pool, item.node, item.bytes)
	}
	// The calls outlive the scheduling cycle's context; Cancel cancels them.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &podReservation{
		pod:    pod,
		items:  append([]reservation(nil), rs...),
		bound:  m.holdBound(len(rs)),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go func() {
		defer cancel()
		err := m.reserveAll(ctx, pod, r.items)
		if r.finish(err) {
			m.answer(ctx, r)
		}
	}()
	return r
}

// holdBound bounds Permit's hold for n reservations: each may wait for a release of
// the claim from an earlier cycle, then take a Reserve, a release of a stale
// reservation and a second Reserve.
func (m *reservations) holdBound(n int) time.Duration {
	if m.permitTimeout > 0 {
		return m.permitTimeout
	}
	return time.Duration(n)*(2*m.reserveTimeout+m.releaseTimeout) + m.releaseTimeout
}

// Permit implements reserver.
func (m *reservations) Permit(r *podReservation) (*fwk.Status, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.finished {
		r.held = true
		return fwk.NewStatus(fwk.Wait, "waiting for the memory service to grant the reservation"), r.bound
	}
	if r.err != nil {
		return m.refused(r.pod, r.err), 0
	}
	return nil, 0
}

// staleViewRetry is how long after a refusal caused by a pool view that was behind
// the pod is tried again: by then the view (and the ResourceSlices the DRA
// allocator reads) show what the memory service knew.
const staleViewRetry = 2 * time.Second

// staleViewError is a refusal of the memory service where the scheduler's pool view
// promised room: the memory went to another claim first.
type staleViewError struct{ msg string }

func (e *staleViewError) Error() string { return e.msg }

// refused is the Permit status of a refused reservation. The pod is rejected until
// pool capacity comes back: the pool cache activates it then. A pod refused because
// the view was behind is also tried again once the view caught up: another pool or
// node may have room, and no capacity may ever come back to the one it was refused
// (the pod waited for the scheduler's periodic flush, minutes, before).
func (m *reservations) refused(pod *v1.Pod, err error) *fwk.Status {
	m.rejected.add(pod, 0, nil)
	if stale := (*staleViewError)(nil); errors.As(err, &stale) {
		m.clock.AfterFunc(staleViewRetry, func() { m.rejected.retry(klog.Background(), pod) })
	}
	return fwk.NewStatus(fwk.Unschedulable, err.Error())
}

// answer allows or rejects the pod the framework holds in Permit. The framework
// registers the held pod just after Permit returns, so it may not be found for a
// moment. The reservation's lock is held throughout: Cancel of this cycle, and so a
// later cycle of the same pod, cannot come in between.
func (m *reservations) answer(ctx context.Context, r *podReservation) {
	err := wait.PollUntilContextTimeout(ctx, time.Millisecond, r.bound, true, func(context.Context) (bool, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.canceled {
			return true, nil
		}
		held := m.handle.GetWaitingPod(r.pod.UID)
		if held == nil {
			return false, nil
		}
		if r.err != nil {
			held.Reject(Name, m.refused(r.pod, r.err).Message())
		} else {
			held.Allow(Name)
		}
		return true, nil
	})
	if err != nil && ctx.Err() == nil {
		klog.FromContext(ctx).Error(err, "The pod held for its dynamic memory reservation was not found; the framework's Permit timeout rejects it",
			"pod", klog.KObj(r.pod))
	}
}

// Cancel implements reserver. Claims allocated before the cycle have no
// reservation here and keep their memory: it may serve other pods.
func (m *reservations) Cancel(ctx context.Context, r *podReservation) {
	released := m.releases.begin(r.items)
	r.mu.Lock()
	r.canceled = true
	online := r.isOnline
	r.mu.Unlock()
	r.cancel()
	go func() {
		defer released()
		<-r.done
		logger := klog.FromContext(ctx)
		for _, item := range r.items {
			uid := item.demand.claim.UID
			if online {
				// A bind the scheduler saw fail (its request canceled, a timeout) may
				// have landed: the pod may run on the memory. The memory service
				// releases it once the claim is deallocated or deleted.
				logger.V(2).Info("Leaving online dynamic memory to its claim: the failed bind may have landed",
					"pod", klog.KObj(r.pod), "claim", klog.KObj(item.demand.claim), "node", item.node)
				m.cache.dropInflight(logger, uid)
				continue
			}
			if err := m.release(ctx, uid); err != nil {
				logger.Error(err, "Release dynamic memory; the memory service releases it when its reservation expires",
					"pod", klog.KObj(r.pod), "claim", klog.KObj(item.demand.claim), "node", item.node)
			} else {
				logger.V(3).Info("Released dynamic memory", "pod", klog.KObj(r.pod), "claim", klog.KObj(item.demand.claim), "node", item.node)
			}
			m.cache.dropInflight(logger, uid)
		}
	}()
}

// reserveAll asks the memory service for each reservation, in order, and records
// what it granted in the pool cache. It stops at the first refusal.
func (m *reservations) reserveAll(ctx context.Context, pod *v1.Pod, rs []reservation) error {
	logger := klog.FromContext(ctx)
	for _, item := range rs {
		uid := item.demand.claim.UID
		// A release of the same claim from an earlier cycle must land first, or it
		// would remove the new reservation.
		if err := m.releases.await(ctx, uid); err != nil {
			return fmt.Errorf("reserve memory of claim %s: %w", item.demand.claimRef(), err)
		}
		resp, err := m.reserve(ctx, pod, item)
		if err != nil {
			return err
		}
		granted := resp.GetReservation()
		m.cache.addInflight(uid, granted.GetPool(), item.node, granted.GetBytes(), resp.GetLedgerRevision())
		logger.V(3).Info("Reserved dynamic memory", "pod", klog.KObj(pod), "claim", klog.KObj(item.demand.claim),
			"node", item.node, "pool", granted.GetPool(), "bytes", formatBytes(granted.GetBytes()))
	}
	return nil
}

// reserve calls the memory service's Reserve. A reservation the service still
// holds for the claim from an earlier attempt (another node or size) is stale —
// the claim is not allocated — so it is released and the call repeated once.
func (m *reservations) reserve(ctx context.Context, pod *v1.Pod, item reservation) (*memservicev1.ReserveResponse, error) {
	d, node, pool := item.demand, item.node, item.pool
	req := &memservicev1.ReserveRequest{Claim: d.ref(), Pod: podRef(pod), Node: node, Pool: pool, Bytes: d.bytes}
	for attempt := 0; ; attempt++ {
		reserveAttempts.Inc()
		rctx, cancel := context.WithTimeout(ctx, m.reserveTimeout)
		resp, err := m.client.Reserve(rctx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		code := status.Code(err)
		if code == codes.FailedPrecondition && attempt == 0 {
			klog.FromContext(ctx).V(2).Info("Releasing a stale reservation of an unallocated claim", "claim", klog.KObj(d.claim), "err", err)
			if rerr := m.release(ctx, d.claim.UID); rerr == nil {
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
			return nil, &staleViewError{fmt.Sprintf("the memory service has no room for %s (the scheduler's pool view was behind; retrying): %s", where, status.Convert(err).Message())}
		case codes.Unavailable, codes.DeadlineExceeded:
			reserveFailures.WithLabelValues(reasonUnavailable).Inc()
			return nil, fmt.Errorf("reserve %s: the memory service did not answer within %s: %w", where, m.reserveTimeout, err)
		default:
			reserveFailures.WithLabelValues(reasonError).Inc()
			return nil, fmt.Errorf("reserve %s: %w", where, err)
		}
	}
}

// release gives a claim's memory back to the memory service. It outlives a canceled
// scheduling context: the release must happen even when the cycle was aborted.
func (m *reservations) release(ctx context.Context, uid types.UID) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.releaseTimeout)
	defer cancel()
	if _, err := m.client.RemoveMemory(rctx, &memservicev1.RemoveMemoryRequest{ClaimUid: string(uid)}); err != nil {
		return fmt.Errorf("remove memory of claim %s: %w", uid, err)
	}
	return nil
}

// releaseSet tracks the claims whose memory Cancel is still releasing.
type releaseSet struct {
	mu sync.Mutex
	m  map[types.UID]*releasing
}

type releasing struct {
	n    int
	done chan struct{}
}

func newReleaseSet() *releaseSet {
	return &releaseSet{m: map[types.UID]*releasing{}}
}

// begin marks the claims of rs as being released; the returned func ends that.
func (s *releaseSet) begin(rs []reservation) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	uids := make([]types.UID, 0, len(rs))
	for _, item := range rs {
		uid := item.demand.claim.UID
		e := s.m[uid]
		if e == nil {
			e = &releasing{done: make(chan struct{})}
			s.m[uid] = e
		}
		e.n++
		uids = append(uids, uid)
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, uid := range uids {
			if e := s.m[uid]; e != nil {
				if e.n--; e.n == 0 {
					close(e.done)
					delete(s.m, uid)
				}
			}
		}
	}
}

// await blocks until no release of claim uid is running.
func (s *releaseSet) await(ctx context.Context, uid types.UID) error {
	s.mu.Lock()
	e := s.m[uid]
	s.mu.Unlock()
	if e == nil {
		return nil
	}
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
