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

// Package ledger is the memory service's in-memory record of pool capacity: pools,
// the hosts attached to them, and one reservation per ResourceClaim UID.
//
// Every operation is idempotent by claim UID and checks capacity under one lock, so
// that for every pool the bytes held by reservations that are not Released never
// exceed its capacity, and per host never exceed its window. The ledger does no I/O:
// persistence and hardware actions are the callers'.
package ledger

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// holds tells whether a reservation in this phase counts against capacity.
func holds(phase v1alpha1.ClaimPhase) bool { return phase != v1alpha1.PhaseReleased }

// Pool is a pool's definition (from its DynamicMemoryPool spec).
type Pool struct {
	Name       string
	Capacity   int64
	BlockSize  int64
	HostWindow int64
	// Nodes attached to the pool.
	Nodes      []string
	Attributes map[string]string
}

// ClaimRef names the ResourceClaim of a reservation.
type ClaimRef struct {
	UID       string
	Namespace string
	Name      string
}

// PodRef names the pod a reservation was made for.
type PodRef struct {
	Name string
	UID  string
}

// Reservation is one claim's memory. Values handed out are copies: their slices are
// never changed in place.
type Reservation struct {
	Claim     ClaimRef
	Pod       PodRef
	Node      string
	Pool      string
	Requested int64
	// Bytes is Requested rounded up to the pool's block size.
	Bytes     int64
	State     v1alpha1.ClaimPhase
	Extents   []v1alpha1.Extent
	NUMANodes []int32
	Message   string
	// OnHost is set once the node agent was asked to online the memory: releasing it
	// then needs the agent to offline it first.
	OnHost bool

	ReservedAt     time.Time
	ExpiresAt      time.Time // set while Reserved
	ProvisioningAt time.Time
	OnlineAt       time.Time
	ReleasingAt    time.Time
	ReleasedAt     time.Time
	UpdatedAt      time.Time
}

// Request asks for memory for a claim on a node.
type Request struct {
	Claim ClaimRef
	Pod   PodRef
	Node  string
	// Pool may be empty: the ledger picks the fullest pool attached to the node with room.
	Pool  string
	Bytes int64
}

// DefaultReservationTTL is the default Options.ReservationTTL.
const DefaultReservationTTL = time.Minute

// Options tune a ledger.
type Options struct {
	// ReservationTTL is how long a Reserved entry lives unless provisioned (default
	// DefaultReservationTTL).
	ReservationTTL time.Duration
	// ReleasedRetention is how long a released, once provisioned, reservation stays
	// readable (GetReservation) before it is forgotten.
	ReleasedRetention time.Duration
	// OnChange is called, under the ledger's lock, after every change. It must not
	// block nor call back into the ledger.
	OnChange func()
}

// Ledger holds pools and reservations. Safe for concurrent use.
type Ledger struct {
	clock clock.PassiveClock
	opts  Options

	mu     sync.RWMutex
	pools  map[string]*pool
	byNode map[string][]*pool // pools attached to each node, sorted by name
	byUID  map[string]*Reservation
	// setAside are the records that could not be restored, by claim UID.
	setAside map[string]*SetAside
	revision uint64
}

// SetAside is a record that could not be restored after a restart. The ledger does
// not serve it (no release, no provisioning, no expiry: its memory may be in use by a
// running pod, and only a person can tell), and withholds from its pool the device
// ranges it names that were free, so that they are never given to another claim.
type SetAside struct {
	Reservation
	// Reason says why it could not be restored.
	Reason string
	// Withheld are the ranges taken out of the pool's free list for it.
	Withheld []v1alpha1.Extent
}

type pool struct {
	spec     Pool
	ready    bool
	message  string
	hosts    map[string]*host
	reserved int64
	online   int64
	// withheld is what set-aside records hold of the region (SetAside.Withheld).
	withheld int64
	free     freeList
}

// available is what the pool can still give.
func (p *pool) available() int64 { return p.spec.Capacity - p.reserved - p.withheld }

type host struct {
	reserved int64
	online   int64
}

// New makes an empty ledger (clk nil: the real clock).
func New(clk clock.PassiveClock, opts Options) *Ledger {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if opts.ReservationTTL <= 0 {
		opts.ReservationTTL = DefaultReservationTTL
	}
	if opts.ReleasedRetention <= 0 {
		opts.ReleasedRetention = 10 * time.Minute
	}
	return &Ledger{
		clock:    clk,
		opts:     opts,
		pools:    map[string]*pool{},
		byNode:   map[string][]*pool{},
		byUID:    map[string]*Reservation{},
		setAside: map[string]*SetAside{},
	}
}

func (l *Ledger) changed() {
	l.revision++
	if l.opts.OnChange != nil {
		l.opts.OnChange()
	}
}

// Revision grows with every change.
func (l *Ledger) Revision() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.revision
}

// SetPool adds a pool or updates its definition. A pool ready to serve must be marked
// so with SetPoolReady. Changes that would strand reservations are refused: a smaller
// capacity than what is held, another block size while reservations exist, or
// detaching a node that holds memory.
func (l *Ledger) SetPool(p Pool) error {
	if err := validatePool(p); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old, ok := l.pools[p.Name]
	if !ok {
		np := &pool{spec: clonePool(p), hosts: map[string]*host{}, free: newFreeList(p.Capacity)}
		for _, n := range p.Nodes {
			np.hosts[n] = &host{}
		}
		l.pools[p.Name] = np
		l.reindex()
		l.changed()
		return nil
	}
	if old.withheld > 0 && (p.BlockSize != old.spec.BlockSize || p.Capacity < old.spec.Capacity) {
		return Errorf(CodeConflict, "pool %s: block size and capacity cannot change while claims that could not be restored hold %s of it; resolve them first (kubectl get dynamicmemoryclaims -A)",
			p.Name, FormatBytes(old.withheld))
	}
	if p.BlockSize != old.spec.BlockSize && old.reserved > 0 {
		return Errorf(CodeConflict, "pool %s: block size cannot change from %s to %s while %s is reserved",
			p.Name, FormatBytes(old.spec.BlockSize), FormatBytes(p.BlockSize), FormatBytes(old.reserved))
	}
	if p.Capacity < old.reserved {
		return Errorf(CodeConflict, "pool %s: capacity %s is less than the %s reserved", p.Name, FormatBytes(p.Capacity), FormatBytes(old.reserved))
	}
	attached := map[string]bool{}
	for _, n := range p.Nodes {
		attached[n] = true
	}
	for n, h := range old.hosts {
		if !attached[n] && h.reserved > 0 {
			return Errorf(CodeConflict, "pool %s: node %s cannot be detached while it holds %s", p.Name, n, FormatBytes(h.reserved))
		}
		if attached[n] && h.reserved > p.HostWindow {
			return Errorf(CodeConflict, "pool %s: host window %s is less than the %s node %s holds", p.Name, FormatBytes(p.HostWindow), FormatBytes(h.reserved), n)
		}
	}
	if err := old.free.shrink(old.spec.Capacity, p.Capacity); err != nil {
		return Errorf(CodeConflict, "pool %s: capacity cannot shrink to %s: extents beyond it are in use", p.Name, FormatBytes(p.Capacity))
	}
	old.free.grow(old.spec.Capacity, p.Capacity)
	hosts := map[string]*host{}
	for _, n := range p.Nodes {
		if h, ok := old.hosts[n]; ok {
			hosts[n] = h
		} else {
			hosts[n] = &host{}
		}
	}
	old.hosts = hosts
	old.spec = clonePool(p)
	l.reindex()
	l.changed()
	return nil
}

func validatePool(p Pool) error {
	switch {
	case p.Name == "":
		return Errorf(CodeInvalid, "pool name is required")
	case p.BlockSize <= 0:
		return Errorf(CodeInvalid, "pool %s: block size must be positive", p.Name)
	case p.Capacity <= 0 || p.Capacity%p.BlockSize != 0:
		return Errorf(CodeInvalid, "pool %s: capacity must be a positive multiple of the block size %s", p.Name, FormatBytes(p.BlockSize))
	case p.HostWindow <= 0 || p.HostWindow%p.BlockSize != 0 || p.HostWindow > p.Capacity:
		return Errorf(CodeInvalid, "pool %s: host window must be a positive multiple of the block size, at most the capacity", p.Name)
	}
	return nil
}

func clonePool(p Pool) Pool {
	p.Nodes = slices.Clone(p.Nodes)
	p.Attributes = maps.Clone(p.Attributes)
	return p
}

func (l *Ledger) reindex() {
	l.byNode = map[string][]*pool{}
	names := slices.Sorted(maps.Keys(l.pools))
	for _, name := range names {
		p := l.pools[name]
		for n := range p.hosts {
			l.byNode[n] = append(l.byNode[n], p)
		}
	}
}

// RemovePool forgets a pool; refused while it holds reservations.
func (l *Ledger) RemovePool(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pools[name]
	if !ok {
		return nil
	}
	if p.reserved > 0 || p.withheld > 0 {
		return Errorf(CodeConflict, "pool %s cannot be removed while %s is reserved", name, FormatBytes(p.reserved+p.withheld))
	}
	delete(l.pools, name)
	l.reindex()
	l.changed()
	return nil
}

// SetPoolReady says whether a pool serves reservations (its backend answers).
func (l *Ledger) SetPoolReady(name string, ready bool, message string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.pools[name]; ok && (p.ready != ready || p.message != message) {
		p.ready, p.message = ready, message
		l.changed()
	}
}

// PoolSpec returns a pool's definition.
func (l *Ledger) PoolSpec(name string) (Pool, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	p, ok := l.pools[name]
	if !ok {
		return Pool{}, false
	}
	return clonePool(p.spec), true
}

// RoundUp rounds n up to a multiple of block; ok is false on overflow.
func RoundUp(n, block int64) (int64, bool) {
	r := n % block
	if r == 0 {
		return n, true
	}
	up := n + (block - r)
	return up, up > n
}

// Reserve holds capacity for a claim. Reserving a claim UID again returns the existing
// reservation unchanged when node, size and pool (if given) match; it is a conflict
// otherwise. A released reservation is replaced by a new one.
func (l *Ledger) Reserve(req Request) (Reservation, error) {
	if err := validateRequest(req); err != nil {
		return Reservation{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.byUID[req.Claim.UID]; ok && r.State != v1alpha1.PhaseReleased {
		if err := matches(r, req); err != nil {
			return Reservation{}, err
		}
		return *r, nil
	}
	r, err := l.reserveLocked(req)
	if err != nil {
		return Reservation{}, err
	}
	l.changed()
	return *r, nil
}

func validateRequest(req Request) error {
	switch {
	case req.Claim.UID == "":
		return Errorf(CodeInvalid, "claim.uid: required")
	case req.Node == "":
		return Errorf(CodeInvalid, "node: required")
	case req.Bytes <= 0:
		return Errorf(CodeInvalid, "bytes: must be positive, got %d", req.Bytes)
	}
	return nil
}

func matches(r *Reservation, req Request) error {
	switch {
	case r.Node != req.Node:
		return Errorf(CodeConflict, "claim %s is already reserved on node %s, not %s: release it first", r.Claim.UID, r.Node, req.Node)
	case r.Requested != req.Bytes:
		return Errorf(CodeConflict, "claim %s is already reserved for %d bytes, not %d: release it first", r.Claim.UID, r.Requested, req.Bytes)
	case req.Pool != "" && req.Pool != r.Pool && r.State != v1alpha1.PhaseReserved:
		return Errorf(CodeConflict, "claim %s holds memory from pool %s, not %s", r.Claim.UID, r.Pool, req.Pool)
	}
	return nil
}

// reserveLocked makes a new Reserved entry; the caller holds the lock. A set-aside
// claim gets none: its record may name memory a running pod uses.
func (l *Ledger) reserveLocked(req Request) (*Reservation, error) {
	if a, ok := l.setAside[req.Claim.UID]; ok {
		return nil, Errorf(CodeConflict, "claim %s has a record that could not be restored (%s); it is served again once a person resolved it", req.Claim.UID, a.Reason)
	}
	p, bytes, err := l.pick(req)
	if err != nil {
		return nil, err
	}
	now := l.clock.Now()
	r := &Reservation{
		Claim:      req.Claim,
		Pod:        req.Pod,
		Node:       req.Node,
		Pool:       p.spec.Name,
		Requested:  req.Bytes,
		Bytes:      bytes,
		State:      v1alpha1.PhaseReserved,
		ReservedAt: now,
		ExpiresAt:  now.Add(l.opts.ReservationTTL),
		UpdatedAt:  now,
	}
	p.hold(req.Node, bytes)
	l.byUID[req.Claim.UID] = r
	return r, nil
}

// pick finds the pool for a request and the rounded size.
func (l *Ledger) pick(req Request) (*pool, int64, error) {
	if req.Pool != "" {
		p, ok := l.pools[req.Pool]
		if !ok {
			return nil, 0, Errorf(CodeNotFound, "pool: pool %q does not exist", req.Pool)
		}
		if _, ok := p.hosts[req.Node]; !ok {
			return nil, 0, Errorf(CodeNotFound, "node: node %q is not attached to pool %s", req.Node, req.Pool)
		}
		bytes, err := p.fit(req.Node, req.Bytes)
		if err != nil {
			return nil, 0, err
		}
		return p, bytes, nil
	}
	candidates := l.byNode[req.Node]
	if len(candidates) == 0 {
		return nil, 0, Errorf(CodeNotFound, "node: node %q is not attached to any pool", req.Node)
	}
	var best *pool
	var bestBytes, bestFree int64
	var firstErr error
	for _, p := range candidates {
		bytes, err := p.fit(req.Node, req.Bytes)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if free := p.available() - bytes; best == nil || free < bestFree {
			best, bestBytes, bestFree = p, bytes, free
		}
	}
	if best == nil {
		if len(candidates) == 1 {
			return nil, 0, firstErr
		}
		return nil, 0, Errorf(CodeExhausted, "no pool attached to node %s has room for %s: %v", req.Node, FormatBytes(req.Bytes), firstErr)
	}
	return best, bestBytes, nil
}

// fit rounds n to the pool's block size and checks pool and host room.
func (p *pool) fit(node string, n int64) (int64, error) {
	if !p.ready {
		msg := p.message
		if msg == "" {
			msg = "backend not ready"
		}
		return 0, Errorf(CodeUnavailable, "pool %s does not serve reservations: %s", p.spec.Name, msg)
	}
	bytes, ok := RoundUp(n, p.spec.BlockSize)
	if !ok {
		return 0, Errorf(CodeInvalid, "bytes: %d is too large", n)
	}
	if free := p.available(); bytes > free {
		return 0, Errorf(CodeExhausted, "pool %s has %s free, claim needs %s", p.spec.Name, FormatBytes(free), FormatBytes(bytes))
	}
	h := p.hosts[node]
	if free := p.spec.HostWindow - h.reserved; bytes > free {
		return 0, Errorf(CodeExhausted, "node %s can take %s more from pool %s (window %s), claim needs %s",
			node, FormatBytes(free), p.spec.Name, FormatBytes(p.spec.HostWindow), FormatBytes(bytes))
	}
	return bytes, nil
}

func (p *pool) hold(node string, bytes int64) {
	p.reserved += bytes
	p.hosts[node].reserved += bytes
}

func (p *pool) unhold(node string, bytes int64) {
	p.reserved -= bytes
	if h, ok := p.hosts[node]; ok {
		h.reserved -= bytes
	}
}

func (p *pool) setOnline(node string, delta int64) {
	p.online += delta
	if h, ok := p.hosts[node]; ok {
		h.online += delta
	}
}

// Provision moves a claim to Provisioning, reserving it first if absent, and assigns
// its extents. started is false when the claim was already past Reserved (the call
// changes nothing then): the caller waits for the provisioning in flight.
func (l *Ledger) Provision(req Request) (r Reservation, started bool, err error) {
	if err := validateRequest(req); err != nil {
		return Reservation{}, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.byUID[req.Claim.UID]
	if ok && cur.State != v1alpha1.PhaseReleased {
		if err := matches(cur, req); err != nil {
			return Reservation{}, false, err
		}
		if cur.State != v1alpha1.PhaseReserved {
			return *cur, false, nil
		}
		if req.Pool != "" && req.Pool != cur.Pool {
			if err := l.moveLocked(cur, req); err != nil {
				return Reservation{}, false, err
			}
		}
	} else {
		if cur, err = l.reserveLocked(req); err != nil {
			return Reservation{}, false, err
		}
	}
	p := l.pools[cur.Pool]
	extents := p.free.take(cur.Bytes)
	if extents == nil {
		// Unreachable while the invariants hold: held bytes never exceed capacity.
		return Reservation{}, false, Errorf(CodeExhausted, "pool %s has no %s of free device ranges", p.spec.Name, FormatBytes(cur.Bytes))
	}
	now := l.clock.Now()
	cur.State = v1alpha1.PhaseProvisioning
	cur.Extents = extents
	cur.ExpiresAt = time.Time{}
	cur.ProvisioningAt = now
	cur.UpdatedAt = now
	cur.Message = ""
	if req.Pod != (PodRef{}) {
		cur.Pod = req.Pod
	}
	l.changed()
	return *cur, true, nil
}

// moveLocked moves a Reserved entry to the pool the request names.
func (l *Ledger) moveLocked(r *Reservation, req Request) error {
	p, bytes, err := l.pick(req)
	if err != nil {
		return err
	}
	l.pools[r.Pool].unhold(r.Node, r.Bytes)
	p.hold(r.Node, bytes)
	r.Pool, r.Bytes = p.spec.Name, bytes
	return nil
}

// MarkOnline records that the node agent onlined a Provisioning claim.
func (l *Ledger) MarkOnline(uid string, numaNodes []int32) (Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, err := l.inState(uid, v1alpha1.PhaseProvisioning)
	if err != nil {
		return Reservation{}, err
	}
	now := l.clock.Now()
	r.State = v1alpha1.PhaseOnline
	r.NUMANodes = slices.Clone(numaNodes)
	r.OnlineAt = now
	r.UpdatedAt = now
	r.Message = ""
	l.pools[r.Pool].setOnline(r.Node, r.Bytes)
	l.changed()
	return *r, nil
}

// MarkOnHost records that the node agent is about to be asked to online the memory.
func (l *Ledger) MarkOnHost(uid string) (Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, err := l.inState(uid, v1alpha1.PhaseProvisioning)
	if err != nil {
		return Reservation{}, err
	}
	if !r.OnHost {
		r.OnHost = true
		r.UpdatedAt = l.clock.Now()
		l.changed()
	}
	return *r, nil
}

// MarkFailed records that provisioning failed (or that the memory of an Online claim
// vanished). The reservation keeps its capacity and extents until it is released.
func (l *Ledger) MarkFailed(uid, message string) (Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, err := l.inState(uid, v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline)
	if err != nil {
		return Reservation{}, err
	}
	if r.State == v1alpha1.PhaseOnline {
		l.pools[r.Pool].setOnline(r.Node, -r.Bytes)
	}
	r.State = v1alpha1.PhaseFailed
	r.Message = Cut(message, v1alpha1.ClaimMessageMaxLength)
	r.UpdatedAt = l.clock.Now()
	l.changed()
	return *r, nil
}

// SetMessage records what is happening to a reservation, for a person.
func (l *Ledger) SetMessage(uid, message string) {
	message = Cut(message, v1alpha1.ClaimMessageMaxLength)
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.byUID[uid]; ok && r.Message != message {
		r.Message = message
		r.UpdatedAt = l.clock.Now()
		l.changed()
	}
}

// BeginRelease starts releasing a claim. A Reserved entry is dropped at once and
// returned Released; so is an unknown UID (found false). For a provisioned one the state becomes
// Releasing and pending is true: the caller has the memory offlined and the extents
// released, then calls MarkReleased. A claim already Releasing is returned with
// pending true, unchanged.
func (l *Ledger) BeginRelease(uid string) (r Reservation, found, pending bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.byUID[uid]
	if !ok {
		return Reservation{}, false, false
	}
	now := l.clock.Now()
	switch cur.State {
	case v1alpha1.PhaseReleased:
		return *cur, true, false
	case v1alpha1.PhaseReserved:
		l.pools[cur.Pool].unhold(cur.Node, cur.Bytes)
		delete(l.byUID, uid)
		out := *cur
		out.State = v1alpha1.PhaseReleased
		out.ExpiresAt = time.Time{}
		out.ReleasedAt = now
		out.UpdatedAt = now
		l.changed()
		return out, true, false
	case v1alpha1.PhaseReleasing:
		return *cur, true, true
	case v1alpha1.PhaseOnline:
		l.pools[cur.Pool].setOnline(cur.Node, -cur.Bytes)
	}
	cur.State = v1alpha1.PhaseReleasing
	cur.ReleasingAt = now
	cur.UpdatedAt = now
	l.changed()
	return *cur, true, true
}

// MarkReleased records that a Releasing claim's extents are back in the pool.
func (l *Ledger) MarkReleased(uid string) (Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, err := l.inState(uid, v1alpha1.PhaseReleasing)
	if err != nil {
		return Reservation{}, err
	}
	p := l.pools[r.Pool]
	p.unhold(r.Node, r.Bytes)
	p.free.put(r.Extents)
	now := l.clock.Now()
	r.State = v1alpha1.PhaseReleased
	r.ReleasedAt = now
	r.UpdatedAt = now
	l.changed()
	return *r, nil
}

func (l *Ledger) inState(uid string, states ...v1alpha1.ClaimPhase) (*Reservation, error) {
	r, ok := l.byUID[uid]
	if !ok {
		return nil, Errorf(CodeNotFound, "claim %s has no reservation", uid)
	}
	if !slices.Contains(states, r.State) {
		return nil, Errorf(CodeConflict, "claim %s is %s, not %v", uid, r.State, states)
	}
	return r, nil
}

// Expire drops Reserved entries whose TTL passed and forgets released ones kept past
// their retention. It returns the expired reservations (as Released).
func (l *Ledger) Expire() []Reservation {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	var expired []Reservation
	for uid, r := range l.byUID {
		switch {
		case r.State == v1alpha1.PhaseReserved && !now.Before(r.ExpiresAt):
			l.pools[r.Pool].unhold(r.Node, r.Bytes)
			delete(l.byUID, uid)
			out := *r
			out.State = v1alpha1.PhaseReleased
			out.ReleasedAt = now
			out.UpdatedAt = now
			out.Message = fmt.Sprintf("reservation expired after %s without being provisioned", l.opts.ReservationTTL)
			expired = append(expired, out)
		case r.State == v1alpha1.PhaseReleased && now.Sub(r.ReleasedAt) >= l.opts.ReleasedRetention:
			delete(l.byUID, uid)
		}
	}
	if len(expired) > 0 {
		l.changed()
	}
	return expired
}

// Restore puts back a reservation recorded before a restart (from its
// DynamicMemoryClaim). Its pool must exist, and it must fit; its extents must be free.
func (l *Ledger) Restore(r Reservation) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.byUID[r.Claim.UID]; ok && cur.State != v1alpha1.PhaseReleased {
		return Errorf(CodeConflict, "claim %s is already in the ledger (%s)", r.Claim.UID, cur.State)
	}
	if _, ok := l.setAside[r.Claim.UID]; ok {
		return Errorf(CodeConflict, "claim %s is set aside", r.Claim.UID)
	}
	if r.State == v1alpha1.PhaseReleased {
		r.Extents = slices.Clone(r.Extents)
		l.byUID[r.Claim.UID] = &r
		l.changed()
		return nil
	}
	p, ok := l.pools[r.Pool]
	if !ok {
		return Errorf(CodeNotFound, "claim %s: pool %q does not exist", r.Claim.UID, r.Pool)
	}
	h, ok := p.hosts[r.Node]
	if !ok {
		return Errorf(CodeNotFound, "claim %s: node %q is not attached to pool %s", r.Claim.UID, r.Node, r.Pool)
	}
	if err := p.checkRecord(r); err != nil {
		return Errorf(CodeOf(err), "claim %s: %v", r.Claim.UID, err)
	}
	if r.Bytes > p.available() || h.reserved+r.Bytes > p.spec.HostWindow {
		return Errorf(CodeExhausted, "claim %s: %s does not fit in pool %s on node %s", r.Claim.UID, FormatBytes(r.Bytes), r.Pool, r.Node)
	}
	// Claimed on a copy, so that an extent that is not free leaves the free list as
	// it was.
	free := freeList{ranges: slices.Clone(p.free.ranges)}
	if err := free.claim(r.Extents); err != nil {
		return Errorf(CodeConflict, "claim %s: %v", r.Claim.UID, err)
	}
	p.free = free
	r.Extents = slices.Clone(r.Extents)
	r.NUMANodes = slices.Clone(r.NUMANodes)
	p.hold(r.Node, r.Bytes)
	if r.State == v1alpha1.PhaseOnline {
		p.setOnline(r.Node, r.Bytes)
	}
	l.byUID[r.Claim.UID] = &r
	l.changed()
	return nil
}

// SetAside takes a record that Restore refused (why: its error) out of service: the
// ledger does not serve it (no release, no provisioning, no expiry: its memory may be
// in use by a running pod, and only a person can tell), and withholds from its pool
// every range it names that is free there, rounded out to the block size, so that
// none is given to another claim. It returns false, and changes nothing, when the
// claim is in the ledger already (a second record with the UID of a restored one).
// Setting a claim aside again keeps the first record.
func (l *Ledger) SetAside(r Reservation, why string) (SetAside, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	uid := r.Claim.UID
	if a, ok := l.setAside[uid]; ok {
		return a.clone(), true
	}
	if _, ok := l.byUID[uid]; ok {
		return SetAside{}, false
	}
	a := &SetAside{Reservation: r, Reason: why}
	a.Extents = slices.Clone(r.Extents)
	a.NUMANodes = slices.Clone(r.NUMANodes)
	l.withholdLocked(a, r.Extents)
	l.setAside[uid] = a
	l.changed()
	return a.clone(), true
}

// Withhold adds to what a set-aside claim withholds the free parts of more ranges
// (those its device reports under its tag). It is an error for a claim not set aside.
func (l *Ledger) Withhold(uid string, extents []v1alpha1.Extent) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.setAside[uid]
	if !ok {
		return Errorf(CodeNotFound, "claim %s is not set aside", uid)
	}
	if l.withholdLocked(a, extents) > 0 {
		l.changed()
	}
	return nil
}

// withholdLocked takes the free parts of extents, rounded out to blocks, out of the
// set-aside claim's pool and returns how many bytes that was.
func (l *Ledger) withholdLocked(a *SetAside, extents []v1alpha1.Extent) int64 {
	p, ok := l.pools[a.Pool]
	if !ok {
		return 0
	}
	more := p.free.within(blockRanges(extents, p.spec.BlockSize, p.spec.Capacity))
	if err := p.free.claim(more); err != nil {
		panic(fmt.Sprintf("ledger: withholding free ranges %v: %v", more, err)) // within returns free ranges only
	}
	n := v1alpha1.SumLength(more)
	p.withheld += n
	a.Withheld = append(a.Withheld, more...)
	slices.SortFunc(a.Withheld, func(x, y v1alpha1.Extent) int { return cmp.Compare(x.Offset, y.Offset) })
	return n
}

// IsSetAside tells whether a claim's record was set aside.
func (l *Ledger) IsSetAside(uid string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok := l.setAside[uid]
	return ok
}

// SetAsideClaims returns the records set aside, sorted by claim UID.
func (l *Ledger) SetAsideClaims() []SetAside {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]SetAside, 0, len(l.setAside))
	for _, uid := range slices.Sorted(maps.Keys(l.setAside)) {
		out = append(out, l.setAside[uid].clone())
	}
	return out
}

func (a *SetAside) clone() SetAside {
	c := *a
	c.Extents = slices.Clone(a.Extents)
	c.NUMANodes = slices.Clone(a.NUMANodes)
	c.Withheld = slices.Clone(a.Withheld)
	return c
}

// checkRecord checks a record read back from the API against the pool's geometry:
// the checks that Reserve and Provision make when they create a reservation, so that
// the ledger holds only reservations it could have made itself.
func (p *pool) checkRecord(r Reservation) error {
	block := p.spec.BlockSize
	switch r.State {
	case v1alpha1.PhaseReserved, v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline, v1alpha1.PhaseReleasing, v1alpha1.PhaseFailed:
	default:
		return Errorf(CodeInvalid, "phase %q is not a phase that holds memory", r.State)
	}
	if r.Bytes <= 0 {
		return Errorf(CodeInvalid, "the reservation holds no memory (%d bytes)", r.Bytes)
	}
	if r.Bytes%block != 0 {
		return Errorf(CodeInvalid, "%d bytes is not a multiple of the pool's block size %s", r.Bytes, FormatBytes(block))
	}
	if r.Requested > r.Bytes || r.Bytes-r.Requested >= block {
		return Errorf(CodeInvalid, "%s is not the %d bytes requested rounded up to the block size %s", FormatBytes(r.Bytes), r.Requested, FormatBytes(block))
	}
	if r.State == v1alpha1.PhaseReserved && len(r.Extents) > 0 {
		return Errorf(CodeInvalid, "a %s reservation has no extents yet, this one has %d", r.State, len(r.Extents))
	}
	if r.State != v1alpha1.PhaseReserved && v1alpha1.SumLength(r.Extents) != r.Bytes {
		return Errorf(CodeInvalid, "extents cover %d bytes, reservation holds %d", v1alpha1.SumLength(r.Extents), r.Bytes)
	}
	sorted := slices.Clone(r.Extents)
	slices.SortFunc(sorted, func(a, b v1alpha1.Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	for i, e := range sorted {
		if e.Offset < 0 || e.Length <= 0 || e.Offset > p.spec.Capacity-e.Length {
			return Errorf(CodeInvalid, "extent %s is outside the pool's region of %s", e, FormatBytes(p.spec.Capacity))
		}
		if e.Offset%block != 0 || e.Length%block != 0 {
			return Errorf(CodeInvalid, "extent %s is not aligned to the pool's block size %s", e, FormatBytes(block))
		}
		if i > 0 && sorted[i-1].Overlaps(e) {
			return Errorf(CodeInvalid, "extent %s overlaps extent %s of the same claim", e, sorted[i-1])
		}
	}
	return nil
}

// Get returns the reservation of a claim UID.
func (l *Ledger) Get(uid string) (Reservation, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	r, ok := l.byUID[uid]
	if !ok {
		return Reservation{}, false
	}
	return *r, true
}

// List returns every reservation, sorted by claim UID.
func (l *Ledger) List() []Reservation {
	l.mu.RLock()
	out := make([]Reservation, 0, len(l.byUID))
	for _, r := range l.byUID {
		out = append(out, *r)
	}
	l.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Claim.UID < out[j].Claim.UID })
	return out
}

// PoolStatus is a pool's capacity at one revision.
type PoolStatus struct {
	Pool
	Ready    bool
	Message  string
	Free     int64
	Reserved int64
	Online   int64
	// Withheld is what claims that could not be restored hold (Ledger.SetAside).
	Withheld int64
	// Hosts, sorted by node name.
	Hosts []HostStatus
}

// HostStatus is one node's share of a pool.
type HostStatus struct {
	Node     string
	Reserved int64
	Online   int64
	// Free is min(window - reserved, pool free).
	Free int64
}

// Snapshot is every pool at one revision.
type Snapshot struct {
	Revision uint64
	// Pools, sorted by name.
	Pools []PoolStatus
}

// Snapshot returns the state of every pool.
func (l *Ledger) Snapshot() Snapshot {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s := Snapshot{Revision: l.revision, Pools: make([]PoolStatus, 0, len(l.pools))}
	for _, name := range slices.Sorted(maps.Keys(l.pools)) {
		p := l.pools[name]
		ps := PoolStatus{
			Pool: clonePool(p.spec), Ready: p.ready, Message: p.message,
			Free: p.available(), Reserved: p.reserved, Online: p.online, Withheld: p.withheld,
		}
		for _, n := range slices.Sorted(maps.Keys(p.hosts)) {
			h := p.hosts[n]
			ps.Hosts = append(ps.Hosts, HostStatus{
				Node: n, Reserved: h.reserved, Online: h.online,
				Free: min(p.spec.HostWindow-h.reserved, ps.Free),
			})
		}
		s.Pools = append(s.Pools, ps)
	}
	return s
}

// CheckInvariants recomputes every total from the reservations and checks that no
// pool and no host holds more than it may, and that extents are consistent. For tests
// and for self-checks after a rebuild.
func (l *Ledger) CheckInvariants() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	type sums struct{ reserved, online int64 }
	poolSums := map[string]*sums{}
	hostSums := map[[2]string]*sums{}
	used := map[string][]v1alpha1.Extent{}
	for uid, r := range l.byUID {
		if uid != r.Claim.UID {
			return fmt.Errorf("reservation keyed %s names claim %s", uid, r.Claim.UID)
		}
		if !holds(r.State) {
			continue
		}
		p, ok := l.pools[r.Pool]
		if !ok {
			return fmt.Errorf("claim %s holds memory of unknown pool %s", uid, r.Pool)
		}
		if r.Bytes%p.spec.BlockSize != 0 || r.Bytes < r.Requested || r.Bytes-r.Requested >= p.spec.BlockSize {
			return fmt.Errorf("claim %s: %d bytes is not %d rounded up to block %d", uid, r.Bytes, r.Requested, p.spec.BlockSize)
		}
		if r.State != v1alpha1.PhaseReserved && v1alpha1.SumLength(r.Extents) != r.Bytes {
			return fmt.Errorf("claim %s (%s): extents cover %d bytes, want %d", uid, r.State, v1alpha1.SumLength(r.Extents), r.Bytes)
		}
		if poolSums[r.Pool] == nil {
			poolSums[r.Pool] = &sums{}
		}
		k := [2]string{r.Pool, r.Node}
		if hostSums[k] == nil {
			hostSums[k] = &sums{}
		}
		poolSums[r.Pool].reserved += r.Bytes
		hostSums[k].reserved += r.Bytes
		if r.State == v1alpha1.PhaseOnline {
			poolSums[r.Pool].online += r.Bytes
			hostSums[k].online += r.Bytes
		}
		used[r.Pool] = append(used[r.Pool], r.Extents...)
	}
	withheld := map[string]int64{}
	for uid, a := range l.setAside {
		if _, ok := l.byUID[uid]; ok {
			return fmt.Errorf("claim %s is both set aside and in the ledger", uid)
		}
		withheld[a.Pool] += v1alpha1.SumLength(a.Withheld)
		used[a.Pool] = append(used[a.Pool], a.Withheld...)
	}
	for name, p := range l.pools {
		s := poolSums[name]
		if s == nil {
			s = &sums{}
		}
		if s.reserved != p.reserved || s.online != p.online {
			return fmt.Errorf("pool %s: totals reserved %d online %d, reservations add up to %d and %d", name, p.reserved, p.online, s.reserved, s.online)
		}
		if p.reserved+p.withheld > p.spec.Capacity || p.reserved < 0 || p.withheld < 0 {
			return fmt.Errorf("pool %s: %d reserved and %d withheld of capacity %d", name, p.reserved, p.withheld, p.spec.Capacity)
		}
		if withheld[name] != p.withheld {
			return fmt.Errorf("pool %s: %d withheld, set-aside records hold %d", name, p.withheld, withheld[name])
		}
		for n, h := range p.hosts {
			hs := hostSums[[2]string{name, n}]
			if hs == nil {
				hs = &sums{}
			}
			if hs.reserved != h.reserved || hs.online != h.online {
				return fmt.Errorf("pool %s node %s: totals reserved %d online %d, reservations add up to %d and %d", name, n, h.reserved, h.online, hs.reserved, hs.online)
			}
			if h.reserved > p.spec.HostWindow {
				return fmt.Errorf("pool %s node %s: %d reserved, window %d", name, n, h.reserved, p.spec.HostWindow)
			}
		}
		ext := append(slices.Clone(used[name]), p.free.ranges...)
		sort.Slice(ext, func(i, j int) bool { return ext[i].Offset < ext[j].Offset })
		var at int64
		for _, e := range ext {
			if e.Offset != at || e.Length <= 0 {
				return fmt.Errorf("pool %s: used and free extents do not tile the region at offset %d (next %s)", name, at, e)
			}
			at = e.End()
		}
		if at != p.spec.Capacity {
			return fmt.Errorf("pool %s: used and free extents cover %d bytes of %d", name, at, p.spec.Capacity)
		}
	}
	return nil
}
