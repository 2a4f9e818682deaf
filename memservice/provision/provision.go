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

// Package provision carries reservations through their hardware steps: it records a
// claim durably, has the pool's device backend add the extents to the host and the
// node agent online them; and on release, the agent offlines, the backend takes the
// extents back, and the record is closed. The ledger decides what may happen; this
// package makes it happen, one flight per claim at a time.
package provision

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

// Backend is a pool's device: it adds extents to a host and takes them back.
type Backend interface {
	// Check tells whether the device answers, and its region.
	Check(ctx context.Context) (backend.Capacity, error)
	// Add gives extents to a host, tagged with the claim UID. Idempotent.
	Add(ctx context.Context, hostID int32, tag string, extents []v1alpha1.Extent) error
	// Release takes extents back; extents the host does not hold are skipped or
	// reported as backend.ErrNotFound.
	Release(ctx context.Context, hostID int32, tag string, extents []v1alpha1.Extent) error
	// List returns the extents the device has given out (backend.ErrNotSupported if
	// it cannot tell).
	List(ctx context.Context) ([]backend.HostExtent, error)
}

// Devices finds pool devices (the service's pool registry).
type Devices interface {
	// Device returns the backend of a pool and the host ID of a node on it: an error
	// with ledger.CodeUnavailable if the pool has no backend, ledger.CodeNotFound if
	// the node has no host ID on it.
	Device(pool, node string) (Backend, int32, error)
}

// Agents sends commands to node agents.
type Agents interface {
	Online(ctx context.Context, node string, cmd *memservicev1.OnlineCommand) (*memservicev1.CommandResult, error)
	Offline(ctx context.Context, node string, cmd *memservicev1.OfflineCommand) (*memservicev1.CommandResult, error)
}

// Store records reservations durably (as DynamicMemoryClaim objects). Its writes
// name this instance's leader identity; an error wrapping ErrFenced means the API
// server refused a write because another instance leads.
type Store interface {
	// Create records a claim entering Provisioning, before any hardware action.
	Create(ctx context.Context, r ledger.Reservation) error
	// Update records the reservation's new state.
	Update(ctx context.Context, r ledger.Reservation) error
	// Released records that the extents are back in the pool and lets the record go.
	Released(ctx context.Context, r ledger.Reservation) error
}

// Lease is this instance's hold on the leader Lease, as it sees it: the guard right
// before every device call.
type Lease interface {
	// Check returns an error wrapping ErrFenced once another instance may lead.
	Check() error
}

// ErrFenced: this instance may no longer act as the leader, because its Lease ran
// out or passed to another instance, or because the API server refused its record
// write for that reason. It must not touch a device.
var ErrFenced = errors.New("fenced: another memory service instance may be leading")

// Defaults of Config.
const (
	DefaultAgentCommandTimeout = 2 * time.Minute
	DefaultBackendTimeout      = 30 * time.Second
	DefaultBusyRetryInterval   = 10 * time.Minute
)

// Config wires a Manager.
type Config struct {
	Ledger  *ledger.Ledger
	Devices Devices
	Agents  Agents
	Store   Store
	// Lease is checked right before every device call (nil: no leader election).
	Lease   Lease
	Metrics *metrics.Metrics
	Clock   clock.Clock
	// AgentCommandTimeout bounds waiting for a node agent to online memory
	// (default DefaultAgentCommandTimeout).
	AgentCommandTimeout time.Duration
	// BackendTimeout bounds one backend operation (default DefaultBackendTimeout).
	BackendTimeout time.Duration
	// RetryInterval is the first pause before a failed release step is retried; it
	// doubles up to MaxRetryInterval.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// BusyRetryInterval is the pause before an offline that the node agent answered
	// busy (a memory block stays busy: pages that cannot be migrated) is asked again
	// (default DefaultBusyRetryInterval). It is long: each offline attempt moves pages
	// and onlines again what it offlined.
	BusyRetryInterval time.Duration
	// Conditions marks the records of claims whose release is blocked (nil: not
	// marked); Events records events on them (nil: none).
	Conditions Conditions
	Events     record.EventRecorder
	// Settled is told each claim whose provisioning ended, Online or Failed, in the
	// ledger (nil: nobody): the reconciler writes the claim's device conditions.
	Settled func(claimUID string)
}

// Manager runs provisioning and release flights. Flights outlive the requests that
// start them; they run under the context given to Start.
type Manager struct {
	cfg Config
	ctx context.Context
	wg  sync.WaitGroup

	mu       sync.Mutex
	flights  map[string]*flight // provisioning, by claim UID
	releases map[string]*flight // release, by claim UID
}

type flight struct {
	// settled is closed once the claim's state is final in the ledger (Online or
	// Failed: AddMemory answers then, before the state is written to the API), or
	// when the flight ends; done when it ended.
	settled chan struct{}
	settle  func()
	done    chan struct{}
	cancel  context.CancelFunc
}

// New makes a manager; Start must be called before any flight starts.
func New(cfg Config) *Manager {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.AgentCommandTimeout <= 0 {
		cfg.AgentCommandTimeout = DefaultAgentCommandTimeout
	}
	if cfg.BackendTimeout <= 0 {
		cfg.BackendTimeout = DefaultBackendTimeout
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 500 * time.Millisecond
	}
	if cfg.MaxRetryInterval <= 0 {
		cfg.MaxRetryInterval = 30 * time.Second
	}
	if cfg.BusyRetryInterval <= 0 {
		cfg.BusyRetryInterval = DefaultBusyRetryInterval
	}
	return &Manager{
		cfg:      cfg,
		ctx:      context.Background(),
		flights:  map[string]*flight{},
		releases: map[string]*flight{},
	}
}

// Start makes flights run under ctx: they end when it ends.
func (m *Manager) Start(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctx = ctx
}

// Wait blocks until every flight has ended (after the manager's context ends).
func (m *Manager) Wait() { m.wg.Wait() }

func (m *Manager) device(r ledger.Reservation) (Backend, int32, error) {
	return m.cfg.Devices.Device(r.Pool, r.Node)
}

// Reserve holds capacity in the ledger.
func (m *Manager) Reserve(req ledger.Request) (ledger.Reservation, error) {
	r, err := m.cfg.Ledger.Reserve(req)
	if err != nil {
		m.countError(req.Pool, err)
		return r, err
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.ReservationsMade.WithLabelValues(r.Pool).Inc()
	}
	return r, nil
}

// AddMemory provisions a claim (reserving it first if needed) and waits until it is
// Online or Failed (returned without error: the state says it), or ctx ends (the
// provisioning goes on then). It answers as soon as the ledger holds the outcome;
// the flight writes it to the claim's DynamicMemoryClaim afterwards (a restart
// resumes a claim recorded in Provisioning, which is idempotent).
func (m *Manager) AddMemory(ctx context.Context, req ledger.Request) (ledger.Reservation, error) {
	r, settled, err := m.StartProvisioning(req)
	if err != nil {
		return r, err
	}
	if settled != nil {
		select {
		case <-settled:
		case <-ctx.Done():
			cur, _ := m.cfg.Ledger.Get(r.Claim.UID)
			return cur, fmt.Errorf("claim %s is still %s: %w", r.Claim.UID, cur.State, ctx.Err())
		}
	}
	cur, ok := m.cfg.Ledger.Get(r.Claim.UID)
	if !ok {
		return r, ledger.Errorf(ledger.CodeConflict, "claim %s was released while it was provisioned", r.Claim.UID)
	}
	return cur, nil
}

// StartProvisioning provisions a claim (reserving it first if needed) without
// waiting for the outcome. settled is closed once the claim is Online or Failed; it
// is nil when no provisioning is in flight (the claim was past it already).
func (m *Manager) StartProvisioning(req ledger.Request) (r ledger.Reservation, settled <-chan struct{}, err error) {
	m.mu.Lock()
	r, started, err := m.cfg.Ledger.Provision(req)
	if err != nil {
		m.mu.Unlock()
		m.countError(req.Pool, err)
		return r, nil, err
	}
	if started {
		m.startLocked(m.flights, r.Claim.UID, func(ctx context.Context, f *flight) { m.provision(ctx, f, r) })
	}
	f := m.flights[r.Claim.UID]
	m.mu.Unlock()
	if r.State == v1alpha1.PhaseReleasing {
		return r, nil, ledger.Errorf(ledger.CodeConflict, "claim %s is being released; provision it again once it is released", r.Claim.UID)
	}
	if f != nil {
		settled = f.settled
	}
	return r, settled, nil
}

// startLocked runs fn as the claim's flight in set; m.mu is held.
func (m *Manager) startLocked(set map[string]*flight, uid string, fn func(ctx context.Context, f *flight)) *flight {
	if f, ok := set[uid]; ok {
		return f
	}
	ctx, cancel := context.WithCancel(m.ctx)
	settled := make(chan struct{})
	f := &flight{settled: settled, settle: sync.OnceFunc(func() { close(settled) }), done: make(chan struct{}), cancel: cancel}
	set[uid] = f
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() {
			m.mu.Lock()
			delete(set, uid)
			m.mu.Unlock()
			cancel()
			f.settle()
			close(f.done)
		}()
		fn(ctx, f)
	}()
	return f
}

// provision is the flight of one claim from Provisioning to Online or Failed.
func (m *Manager) provision(ctx context.Context, f *flight, r ledger.Reservation) {
	logger := klog.FromContext(ctx).WithValues("claim", r.Claim.UID, "node", r.Node, "pool", r.Pool, "bytes", r.Bytes)
	ctx = klog.NewContext(ctx, logger)
	logger.V(2).Info("Provisioning")
	if err := m.write(ctx, func(ctx context.Context) error { return m.cfg.Store.Create(ctx, r) }); err != nil {
		m.fail(ctx, f, r, "store", fmt.Errorf("record claim before provisioning: %w", err))
		return
	}
	if !m.stillProvisioning(r.Claim.UID) {
		return
	}
	if err := m.addExtents(ctx, r); err != nil {
		m.fail(ctx, f, r, "backend", err)
		return
	}
	m.onlineAndFinish(ctx, f, r)
}

// Resume continues the flight of a claim restored in Provisioning after a restart:
// the record exists; the extents are added again (the device treats that as a no-op
// when they are there) and the agent is asked to online them.
func (m *Manager) Resume(r ledger.Reservation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.startLocked(m.flights, r.Claim.UID, func(ctx context.Context, f *flight) {
		logger := klog.FromContext(ctx).WithValues("claim", r.Claim.UID, "node", r.Node, "pool", r.Pool)
		ctx = klog.NewContext(ctx, logger)
		logger.Info("Resuming provisioning after restart")
		// As in a first provisioning, the device acts only after this flight wrote the
		// record: a leader that lost its Lease is refused here by the API server.
		if err := m.write(ctx, func(ctx context.Context) error { return m.cfg.Store.Update(ctx, r) }); err != nil {
			m.fail(ctx, f, r, "store", fmt.Errorf("record claim before resuming provisioning: %w", err))
			return
		}
		if err := m.addExtents(ctx, r); err != nil && !errors.Is(err, backend.ErrInUse) {
			m.fail(ctx, f, r, "backend", err)
			return
		}
		m.onlineAndFinish(ctx, f, r)
	})
}

func (m *Manager) addExtents(ctx context.Context, r ledger.Reservation) error {
	b, hostID, err := m.device(r)
	if err != nil {
		return err
	}
	extents := r.Extents
	if err := m.leading(); err != nil {
		return fmt.Errorf("add extents to node %s in pool %s: %w", r.Node, r.Pool, err)
	}
	err = m.timed(r.Pool, "add", func() error {
		actx, cancel := context.WithTimeout(ctx, m.cfg.BackendTimeout)
		defer cancel()
		return b.Add(actx, hostID, r.Claim.UID, extents)
	})
	if err == nil {
		return nil
	}
	// Take back whatever part was added; the claim's release does it again if this fails.
	if lerr := m.leading(); lerr != nil {
		klog.FromContext(ctx).Error(lerr, "Not taking back extents after a failed add")
	} else {
		rctx, cancel := context.WithTimeout(ctx, m.cfg.BackendTimeout)
		defer cancel()
		if rerr := b.Release(rctx, hostID, r.Claim.UID, extents); rerr != nil && !errors.Is(rerr, backend.ErrNotFound) {
			klog.FromContext(ctx).Error(rerr, "Taking back extents after a failed add")
		}
	}
	return fmt.Errorf("add %s of extents to node %s (host %d) in pool %s: %w", ledger.FormatBytes(r.Bytes), r.Node, hostID, r.Pool, err)
}

func (m *Manager) onlineAndFinish(ctx context.Context, f *flight, r ledger.Reservation) {
	r, err := m.cfg.Ledger.MarkOnHost(r.Claim.UID)
	if err != nil {
		return // released meanwhile: the release flight takes over
	}
	spec, _ := m.cfg.Ledger.PoolSpec(r.Pool)
	actx, cancel := context.WithTimeout(ctx, m.cfg.AgentCommandTimeout)
	defer cancel()
	start := m.cfg.Clock.Now()
	res, err := m.cfg.Agents.Online(actx, r.Node, &memservicev1.OnlineCommand{
		ClaimUid: r.Claim.UID, Pool: r.Pool, Extents: memservicev1.ExtentsOf(r.Extents), Bytes: r.Bytes, BlockSizeBytes: spec.BlockSize,
	})
	m.observeAgent("online", start, err)
	if err != nil {
		m.fail(ctx, f, r, "agent", fmt.Errorf("online on node %s: %w", r.Node, err))
		return
	}
	r, err = m.cfg.Ledger.MarkOnline(r.Claim.UID, res.GetNumaNodes())
	if err != nil {
		return // released meanwhile
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Allocations.WithLabelValues(r.Pool).Inc()
		m.cfg.Metrics.Provisioning.WithLabelValues(r.Pool).Observe(r.OnlineAt.Sub(r.ProvisioningAt).Seconds())
	}
	klog.FromContext(ctx).V(2).Info("Online", "numaNodes", r.NUMANodes, "duration", r.OnlineAt.Sub(r.ProvisioningAt))
	m.settled(r.Claim.UID)
	f.settle()
	m.persist(ctx, r)
}

func (m *Manager) stillProvisioning(uid string) bool {
	cur, ok := m.cfg.Ledger.Get(uid)
	return ok && cur.State == v1alpha1.PhaseProvisioning
}

func (m *Manager) fail(ctx context.Context, f *flight, r ledger.Reservation, reason string, err error) {
	if ctx.Err() != nil {
		// The service is stopping, or the claim going away: not a failure of the
		// claim. The record stays as it is, for the next leader to resume or the
		// release to finish.
		klog.FromContext(ctx).V(2).Info("Provisioning interrupted", "err", err)
		return
	}
	klog.FromContext(ctx).Error(err, "Provisioning failed")
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.AllocationErrors.WithLabelValues(r.Pool, reason).Inc()
	}
	failed, ferr := m.cfg.Ledger.MarkFailed(r.Claim.UID, err.Error())
	if ferr != nil {
		return // released meanwhile
	}
	m.settled(r.Claim.UID)
	f.settle()
	m.persist(ctx, failed)
}

func (m *Manager) settled(uid string) {
	if m.cfg.Settled != nil {
		m.cfg.Settled(uid)
	}
}

// persist records a state change; a failure is logged (the ledger stays
// authoritative while the service runs, and the next change writes again).
func (m *Manager) persist(ctx context.Context, r ledger.Reservation) {
	if err := m.write(ctx, func(ctx context.Context) error { return m.cfg.Store.Update(ctx, r) }); err != nil {
		klog.FromContext(ctx).Error(err, "Recording claim state", "state", r.State)
	}
}

// recordWriteTimeout bounds one record write.
const recordWriteTimeout = 30 * time.Second

// write runs one record write with a context that the service stopping does not
// cancel, bounded by recordWriteTimeout: a write this process sent is one whose
// outcome it knows before it exits (Wait). A write canceled in flight may still land
// on the API server after the process is gone — after a new instance rebuilt its
// ledger from the records. The chaos suite found such a record (created, never given
// a status, unknown to the new ledger) left behind for good.
func (m *Manager) write(ctx context.Context, fn func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordWriteTimeout)
	defer cancel()
	return fn(wctx)
}

// RemoveMemory releases a claim. A Reserved claim is dropped at once; a provisioned
// one is released by a flight (after any provisioning in flight ends). With wait, it
// returns when the claim is Released or ctx ends.
func (m *Manager) RemoveMemory(ctx context.Context, uid string, wait bool) (ledger.Reservation, bool, error) {
	return m.remove(ctx, uid, wait, false)
}

// Release starts the release of a claim's memory, as RemoveMemory without waiting.
// claimDeleted says its ResourceClaim is deleted for good (gone, or being deleted
// with no pod holding it): nothing can need the memory again, so a restart decides
// the same from the claim alone, and the record is not marked Releasing unless the
// release has to wait (below).
func (m *Manager) Release(uid string, claimDeleted bool) {
	_, _, _ = m.remove(context.Background(), uid, false, claimDeleted)
}

func (m *Manager) remove(ctx context.Context, uid string, wait, claimDeleted bool) (ledger.Reservation, bool, error) {
	r, found, pending := m.cfg.Ledger.BeginRelease(uid)
	if !pending {
		return r, found, nil
	}
	m.mu.Lock()
	f := m.startLocked(m.releases, uid, func(ctx context.Context, _ *flight) { m.release(ctx, uid, claimDeleted) })
	m.mu.Unlock()
	if !wait {
		return r, true, nil
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		cur, _ := m.cfg.Ledger.Get(uid)
		return cur, true, fmt.Errorf("claim %s is still %s: %w", uid, cur.State, ctx.Err())
	}
	cur, ok := m.cfg.Ledger.Get(uid)
	if !ok {
		return r, true, nil
	}
	return cur, true, nil
}

// ResumeRelease continues the release of a claim restored in Releasing.
func (m *Manager) ResumeRelease(uid string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.startLocked(m.releases, uid, func(ctx context.Context, _ *flight) { m.release(ctx, uid, false) })
}

// release is the flight of one claim from Releasing to Released. Every step is
// retried with backoff until it succeeds or the service stops: memory is never taken
// from a host before its agent has offlined it.
//
// The record says Releasing before anything leaves the host, so that a restart
// resumes the release instead of finding the memory Online while the agent offlined
// it, for a claim that may be allocated again meanwhile. A claim deleted for good
// (claimDeleted) cannot be: a restart finds it gone and releases the memory as this
// flight would, so the mark is written only when a step has to be retried (the record
// then tells a person why the memory is not back yet), and a release that goes through
// writes the record once, its removal.
func (m *Manager) release(ctx context.Context, uid string, claimDeleted bool) {
	m.mu.Lock()
	prov := m.flights[uid]
	m.mu.Unlock()
	if prov != nil {
		prov.cancel() // the claim is going away: stop waiting for the device or the agent
		select {
		case <-prov.done:
		case <-ctx.Done():
			return
		}
	}
	r, ok := m.cfg.Ledger.Get(uid)
	if !ok || r.State != v1alpha1.PhaseReleasing {
		return
	}
	logger := klog.FromContext(ctx).WithValues("claim", uid, "node", r.Node, "pool", r.Pool)
	ctx = klog.NewContext(ctx, logger)
	logger.V(2).Info("Releasing", "claimDeleted", claimDeleted)
	// A mark refused because another instance leads ends the flight; other failures
	// are logged, as for every state write.
	marked := false
	mark := func() bool {
		if marked {
			return true
		}
		marked = true
		if err := m.write(ctx, func(ctx context.Context) error { return m.cfg.Store.Update(ctx, r) }); errors.Is(err, ErrFenced) {
			logger.Error(err, "Not releasing: this instance no longer leads")
			return false
		} else if err != nil {
			logger.Error(err, "Recording claim state", "state", r.State)
		}
		return true
	}
	if !claimDeleted && !mark() {
		return
	}

	if r.OnHost {
		blocked := &blockage{m: m, r: r}
		defer blocked.end()
		if !m.retry(ctx, uid, mark, func() error {
			actx, cancel := context.WithTimeout(ctx, m.cfg.AgentCommandTimeout)
			defer cancel()
			start := m.cfg.Clock.Now()
			_, err := m.cfg.Agents.Offline(actx, r.Node, &memservicev1.OfflineCommand{ClaimUid: uid, Pool: r.Pool, Extents: memservicev1.ExtentsOf(r.Extents), Bytes: r.Bytes})
			m.observeAgent("offline", start, err)
			if errors.Is(err, session.ErrMemoryBusy) {
				if !mark() { // the condition goes on the status the mark writes whole
					return errStopRelease
				}
				return blocked.busy(ctx, err)
			}
			if err != nil {
				return fmt.Errorf("waiting for the node agent of %s to offline the memory: %w", r.Node, err)
			}
			return nil
		}) {
			return
		}
		blocked.offlined(ctx)
	}
	if len(r.Extents) > 0 {
		if !m.retry(ctx, uid, mark, func() error {
			if err := m.leading(); err != nil {
				return fmt.Errorf("release extents from node %s in pool %s: %w", r.Node, r.Pool, err)
			}
			b, hostID, err := m.device(r)
			if err != nil {
				return err
			}
			err = m.timed(r.Pool, "release", func() error {
				bctx, cancel := context.WithTimeout(ctx, m.cfg.BackendTimeout)
				defer cancel()
				return b.Release(bctx, hostID, uid, r.Extents)
			})
			if err != nil && !errors.Is(err, backend.ErrNotFound) {
				return fmt.Errorf("release extents from node %s (host %d) in pool %s: %w", r.Node, hostID, r.Pool, err)
			}
			return nil
		}) {
			return
		}
	}
	// The record goes before the pool gets the memory back: freed first, the capacity
	// (or this very claim, allocated again elsewhere) could be granted anew while the
	// record still names it, and a restart in between would rebuild both.
	if !m.retry(ctx, uid, mark, func() error {
		return m.write(ctx, func(ctx context.Context) error { return m.cfg.Store.Released(ctx, r) })
	}) {
		return
	}
	released, err := m.cfg.Ledger.MarkReleased(uid)
	if err != nil {
		logger.Error(err, "Marking released")
		return
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Releases.WithLabelValues(r.Pool).Inc()
		m.cfg.Metrics.Release.WithLabelValues(r.Pool).Observe(released.ReleasedAt.Sub(r.ReleasingAt).Seconds())
	}
	logger.V(2).Info("Released")
}

// errStopRelease is a release step's answer that ends the flight: this instance no
// longer leads.
var errStopRelease = errors.New("not releasing: this instance no longer leads")

// retry runs step until it succeeds; it returns false when ctx ends first, or when
// step or setback (run on each failure, before the pause) says the flight must stop.
// A node agent's busy answer (session.ErrMemoryBusy) is retried after
// BusyRetryInterval.
func (m *Manager) retry(ctx context.Context, uid string, setback func() bool, step func() error) bool {
	wait := m.cfg.RetryInterval
	for {
		err := step()
		if err == nil {
			return true
		}
		if errors.Is(err, errStopRelease) || !setback() {
			return false
		}
		pause := wait
		if errors.Is(err, session.ErrMemoryBusy) {
			pause = m.cfg.BusyRetryInterval
		}
		klog.FromContext(ctx).Error(err, "Release step failed, retrying", "after", pause)
		m.cfg.Ledger.SetMessage(uid, err.Error())
		select {
		case <-m.cfg.Clock.After(pause):
		case <-ctx.Done():
			return false
		}
		wait = min(2*wait, m.cfg.MaxRetryInterval)
	}
}

// leading is the guard right before every device call: this instance's own view that
// it still holds the leader Lease.
func (m *Manager) leading() error {
	if m.cfg.Lease == nil {
		return nil
	}
	return m.cfg.Lease.Check()
}

func (m *Manager) timed(pool, op string, fn func() error) error {
	start := m.cfg.Clock.Now()
	err := fn()
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.BackendOp.WithLabelValues(pool, op).Observe(m.cfg.Clock.Since(start).Seconds())
		if err != nil {
			m.cfg.Metrics.BackendErrors.WithLabelValues(pool, op).Inc()
		}
	}
	return err
}

func (m *Manager) observeAgent(cmd string, start time.Time, err error) {
	if m.cfg.Metrics == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.cfg.Metrics.AgentCommand.WithLabelValues(cmd, outcome).Observe(m.cfg.Clock.Since(start).Seconds())
}

func (m *Manager) countError(pool string, err error) {
	if m.cfg.Metrics == nil {
		return
	}
	if pool == "" {
		pool = "any" // the service was to pick the pool
	}
	reason := "other"
	switch ledger.CodeOf(err) {
	case ledger.CodeExhausted:
		reason = "exhausted"
	case ledger.CodeInvalid, ledger.CodeNotFound:
		reason = "invalid"
	case ledger.CodeConflict:
		reason = "conflict"
	case ledger.CodeUnavailable:
		reason = "unavailable"
	}
	m.cfg.Metrics.AllocationErrors.WithLabelValues(pool, reason).Inc()
}
