package dynamicmemory

import (
	"context"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// pendingReserve is one pod's Reserve calls to the memory service, made from a
// goroutine so that the scheduling cycle does not wait for them. Permit holds the
// pod until they are answered; Unreserve abandons them.
type pendingReserve struct {
	pod    *v1.Pod
	cancel context.CancelFunc
	// done is closed when the calls ended: all granted, or one failed.
	done chan struct{}

	mu sync.Mutex
	// finished and err are set when done closes; err is the first failure.
	finished bool
	err      error
	// waiting is set when Permit returned Wait: the answer must allow or reject
	// the waiting pod.
	waiting bool
	// abandoned is set by Unreserve: nobody waits for the answer any more.
	abandoned bool
}

// reserveAsync starts the memory service's Reserve calls for rs.
func (pl *DynamicMemory) reserveAsync(ctx context.Context, pod *v1.Pod, rs []reservation) *pendingReserve {
	// The calls outlive the scheduling cycle's context; Unreserve cancels them.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &pendingReserve{pod: pod, cancel: cancel, done: make(chan struct{})}
	rs = append([]reservation(nil), rs...)
	go func() {
		defer cancel()
		err := pl.reserveAll(ctx, pod, rs)
		if p.finish(err) {
			pl.answer(ctx, p)
		}
	}()
	return p
}

// finish records the outcome and tells whether Permit holds the pod for it.
func (p *pendingReserve) finish(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished, p.err = true, err
	close(p.done)
	return p.waiting && !p.abandoned
}

// abandon cancels the calls still running; their outcome is no longer answered.
func (p *pendingReserve) abandon() {
	p.mu.Lock()
	p.abandoned = true
	p.mu.Unlock()
	p.cancel()
}

// wait blocks until the calls ended and returns their outcome.
func (p *pendingReserve) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Permit lets a pod with new reservations go on to binding once the memory service
// granted them. While the calls run, the pod waits (bounded by the time they may
// take); a refusal rejects the pod, which Unreserve then releases, and the pod
// waits for pool capacity to come back.
func (pl *DynamicMemory) Permit(_ context.Context, cs fwk.CycleState, pod *v1.Pod, _ string) (*fwk.Status, time.Duration) {
	s := lookupState(cs)
	if s == nil || s.pending == nil {
		return nil, 0
	}
	p := s.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.finished {
		p.waiting = true
		return fwk.NewStatus(fwk.Wait, "waiting for the memory service to grant the reservation"), pl.permitTimeout(len(s.reserved))
	}
	if p.err != nil {
		return pl.reject(pod, p.err), 0
	}
	return nil, 0
}

// permitTimeout bounds the wait for n reservations: each may take a Reserve, a
// release of a stale reservation and a second Reserve, after a release of the
// claim from an earlier cycle.
func (pl *DynamicMemory) permitTimeout(n int) time.Duration {
	return time.Duration(3*n+1) * pl.reserveTimeout
}

// reject is the Permit status of a refused reservation. The pod waits for pool
// capacity: the pool cache activates it when capacity is freed.
func (pl *DynamicMemory) reject(pod *v1.Pod, err error) *fwk.Status {
	pl.waiting.add(pod, 0)
	return fwk.NewStatus(fwk.Unschedulable, err.Error())
}

// answer allows or rejects the pod Permit holds. The framework registers the
// waiting pod just after Permit returns, so it may not be found for a moment. The
// pending lock is held throughout: Unreserve of this cycle, and so a later cycle of
// the same pod, cannot come in between.
func (pl *DynamicMemory) answer(ctx context.Context, p *pendingReserve) {
	err := wait.PollUntilContextTimeout(ctx, time.Millisecond, pl.reserveTimeout, true, func(context.Context) (bool, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.abandoned {
			return true, nil
		}
		wp := pl.handle.GetWaitingPod(p.pod.UID)
		if wp == nil {
			return false, nil
		}
		if p.err != nil {
			wp.Reject(Name, pl.reject(p.pod, p.err).Message())
		} else {
			wp.Allow(Name)
		}
		return true, nil
	})
	if err != nil && ctx.Err() == nil {
		klog.FromContext(ctx).Error(err, "The pod waiting for its dynamic memory reservation was not found; the framework's Permit timeout rejects it",
			"pod", klog.KObj(p.pod))
	}
}

// releaseSet tracks the claims whose memory Unreserve is still releasing.
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
func (r *releaseSet) begin(rs []reservation) func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	uids := make([]types.UID, 0, len(rs))
	for _, res := range rs {
		uid := res.demand.claim.UID
		e := r.m[uid]
		if e == nil {
			e = &releasing{done: make(chan struct{})}
			r.m[uid] = e
		}
		e.n++
		uids = append(uids, uid)
	}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, uid := range uids {
			if e := r.m[uid]; e != nil {
				if e.n--; e.n == 0 {
					close(e.done)
					delete(r.m, uid)
				}
			}
		}
	}
}

// wait blocks until no release of claim uid is running.
func (r *releaseSet) wait(ctx context.Context, uid types.UID) error {
	r.mu.Lock()
	e := r.m[uid]
	r.mu.Unlock()
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
