package service

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/qemu"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/simulated"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

// checkInterval is how often pool backends are probed.
const checkInterval = 10 * time.Second

// pools keeps the ledger's pools and the manager's backends in step with the
// DynamicMemoryPool objects, and writes their status back.
type pools struct {
	s        *Service
	informer cache.SharedIndexInformer

	mu       sync.Mutex
	backends map[string]*poolBackend
	written  map[string]v1alpha1.DynamicMemoryPoolStatus
	// deleted pools still holding memory: removed once their claims are released.
	deleted map[string]bool
}

type poolBackend struct {
	spec       v1alpha1.PoolBackend
	backend    provision.Backend
	generation int64
	specError  string
}

func newPools(s *Service) *pools {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return s.crd.ListPools(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return s.crd.WatchPools(ctx, opts)
		},
	}
	return &pools{
		s:        s,
		informer: cache.NewSharedIndexInformer(lw, &v1alpha1.DynamicMemoryPool{}, 0, cache.Indexers{}),
		backends: map[string]*poolBackend{},
		written:  map[string]v1alpha1.DynamicMemoryPoolStatus{},
		deleted:  map[string]bool{},
	}
}

func (p *pools) run(ctx context.Context) error {
	_, err := p.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.apply(ctx, obj) },
		UpdateFunc: func(_, obj any) { p.apply(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pool, ok := obj.(*v1alpha1.DynamicMemoryPool); ok {
				p.remove(ctx, pool.Name)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch DynamicMemoryPools: %w", err)
	}
	go p.informer.RunWithContext(ctx)
	ticker := p.s.cfg.Clock.NewTicker(checkInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
			p.mu.Lock()
			names := make([]string, 0, len(p.backends))
			for name := range p.backends {
				names = append(names, name)
			}
			var deleted []string
			for name := range p.deleted {
				deleted = append(deleted, name)
			}
			p.mu.Unlock()
			for _, name := range deleted {
				p.remove(ctx, name)
			}
			for _, name := range names {
				p.check(ctx, name)
			}
		}
	}
}

// waitSynced waits for the pools' informer and applies and probes every pool it
// holds, so that the ledger knows them all (and which are ready) before it is rebuilt.
func (p *pools) waitSynced(ctx context.Context) bool {
	if !cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced) {
		return false
	}
	for _, obj := range p.informer.GetStore().List() {
		p.apply(ctx, obj)
		if pool, ok := obj.(*v1alpha1.DynamicMemoryPool); ok {
			p.check(ctx, pool.Name)
		}
	}
	return true
}

// LedgerPool converts a pool's spec for the ledger.
func LedgerPool(pool *v1alpha1.DynamicMemoryPool) ledger.Pool {
	lp := ledger.Pool{
		Name:       pool.Name,
		Capacity:   pool.Spec.Capacity.Value(),
		BlockSize:  pool.Spec.BlockSize.Value(),
		HostWindow: pool.Spec.HostWindow.Value(),
		Attributes: maps.Clone(pool.Spec.Attributes),
	}
	for _, n := range pool.Spec.Nodes {
		lp.Nodes = append(lp.Nodes, n.Name)
	}
	return lp
}

func (p *pools) apply(ctx context.Context, obj any) {
	pool, ok := obj.(*v1alpha1.DynamicMemoryPool)
	if !ok {
		return
	}
	logger := klog.FromContext(ctx).WithValues("pool", pool.Name)
	hostIDs := map[string]int32{}
	for _, n := range pool.Spec.Nodes {
		hostIDs[n.Name] = n.HostID
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pb := p.backends[pool.Name]
	if pb == nil {
		pb = &poolBackend{}
		p.backends[pool.Name] = pb
	}
	delete(p.deleted, pool.Name)
	pb.generation = pool.Generation
	pb.specError = ""
	if err := p.s.ledger.SetPool(LedgerPool(pool)); err != nil {
		logger.Error(err, "Pool spec not applied; the previous one stays in force")
		pb.specError = err.Error()
		p.s.changed()
		return
	}
	switch {
	case pb.backend == nil || pb.spec.Type != pool.Spec.Backend.Type || !reflect.DeepEqual(pb.spec.QEMU, pool.Spec.Backend.QEMU):
		b, err := p.newBackend(pool)
		if err != nil {
			logger.Error(err, "Pool backend not available")
			pb.specError = err.Error()
			p.s.ledger.SetPoolReady(pool.Name, false, err.Error())
			return
		}
		if old, ok := pb.backend.(interface{ Close() error }); ok {
			_ = old.Close()
		}
		pb.backend = b
	case !reflect.DeepEqual(pb.spec.Simulated, pool.Spec.Backend.Simulated):
		if sim, ok := pb.backend.(*simulated.Device); ok {
			sim.SetFaults(simulatedFaults(pool.Spec.Backend.Simulated))
		}
	}
	pb.spec = *pool.Spec.Backend.DeepCopy()
	p.s.manager.SetPool(pool.Name, pb.backend, hostIDs)
	go p.check(ctx, pool.Name)
}

func (p *pools) newBackend(pool *v1alpha1.DynamicMemoryPool) (provision.Backend, error) {
	if p.s.cfg.NewBackend != nil {
		return p.s.cfg.NewBackend(pool)
	}
	return NewBackend(pool, p.s.cfg.Clock)
}

// NewBackend builds the device backend a pool's spec names.
func NewBackend(pool *v1alpha1.DynamicMemoryPool, clk clock.WithTicker) (provision.Backend, error) {
	switch pool.Spec.Backend.Type {
	case v1alpha1.BackendSimulated:
		cfg := simulated.Config{
			Capacity:   pool.Spec.Capacity.Value(),
			BlockSize:  pool.Spec.BlockSize.Value(),
			HostWindow: pool.Spec.HostWindow.Value(),
			Faults:     simulatedFaults(pool.Spec.Backend.Simulated),
			Clock:      clk,
		}
		if sim := pool.Spec.Backend.Simulated; sim != nil {
			cfg.Seed = uint64(sim.Seed)
		}
		return simulated.New(cfg)
	case v1alpha1.BackendQEMU:
		q := pool.Spec.Backend.QEMU
		if q == nil {
			return nil, fmt.Errorf("pool %s: spec.backend.qemu is required for backend type QEMU", pool.Name)
		}
		return qemu.New(qemu.Config{
			SocketPath: q.SocketPath, DevicePath: q.DevicePath, Region: q.Region,
			Capacity: pool.Spec.Capacity.Value(), BlockSize: pool.Spec.BlockSize.Value(),
		})
	}
	return nil, fmt.Errorf("pool %s: backend type %q is not one of Simulated, QEMU", pool.Name, pool.Spec.Backend.Type)
}

func simulatedFaults(sim *v1alpha1.SimulatedBackend) simulated.Faults {
	if sim == nil {
		return simulated.Faults{}
	}
	f := simulated.Faults{FailPercent: int(sim.FailurePercent)}
	if sim.AddLatency != nil {
		f.AddLatency = sim.AddLatency.Duration
	}
	if sim.ReleaseLatency != nil {
		f.ReleaseLatency = sim.ReleaseLatency.Duration
	}
	return f
}

// check probes a pool's backend and marks the pool ready or not.
func (p *pools) check(ctx context.Context, name string) {
	p.mu.Lock()
	deleted := p.deleted[name]
	p.mu.Unlock()
	if deleted {
		return
	}
	b, ok := p.s.manager.Backend(name)
	spec, specOK := p.s.ledger.PoolSpec(name)
	if !ok || !specOK {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := b.Check(cctx)
	switch {
	case err != nil:
		p.s.ledger.SetPoolReady(name, false, fmt.Sprintf("backend does not answer: %v", err))
	case c.Bytes > 0 && c.Bytes < spec.Capacity:
		p.s.ledger.SetPoolReady(name, false, fmt.Sprintf("device region holds %s, less than the pool capacity %s",
			ledger.FormatBytes(c.Bytes), ledger.FormatBytes(spec.Capacity)))
	case c.BlockSize > 0 && spec.BlockSize%c.BlockSize != 0:
		p.s.ledger.SetPoolReady(name, false, fmt.Sprintf("pool block size %s is not a multiple of the device's %s",
			ledger.FormatBytes(spec.BlockSize), ledger.FormatBytes(c.BlockSize)))
	default:
		p.s.ledger.SetPoolReady(name, true, "")
	}
}

func (p *pools) remove(ctx context.Context, name string) {
	if err := p.s.ledger.RemovePool(name); err != nil {
		p.mu.Lock()
		first := !p.deleted[name]
		p.deleted[name] = true
		p.mu.Unlock()
		if first {
			klog.FromContext(ctx).Error(err, "Pool deleted but still holds memory; it keeps serving releases and goes once they are done", "pool", name)
		}
		p.s.ledger.SetPoolReady(name, false, "DynamicMemoryPool deleted; waiting for its claims to be released")
		return
	}
	p.s.manager.RemovePool(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.deleted, name)
	if pb, ok := p.backends[name]; ok {
		if c, ok := pb.backend.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	}
	delete(p.backends, name)
	delete(p.written, name)
}

// writeStatus writes the pools' status after changes, at most once per
// PoolStatusInterval: after a change it waits out the interval, then writes the
// latest status of every pool, so that a burst of changes is one write and the last
// change is always written. A failed write is tried again after the interval.
func (p *pools) writeStatus(ctx context.Context) error {
	for {
		// Changes signalled until now are in the status written next.
		select {
		case <-p.s.notify:
		default:
		}
		if p.writeAll(ctx) {
			select {
			case <-ctx.Done():
				return nil
			case <-p.s.notify:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.s.cfg.Clock.After(p.s.cfg.PoolStatusInterval):
		}
	}
}

// writeAll writes the status of every pool whose status changed since its last
// write. It reports false if a write failed and should be tried again.
func (p *pools) writeAll(ctx context.Context) bool {
	connected := map[string]bool{}
	for _, n := range p.s.sessions.Connected() {
		connected[n] = true
	}
	ok := true
	for _, ps := range p.s.ledger.Snapshot().Pools {
		p.mu.Lock()
		pb := p.backends[ps.Name]
		old, had := p.written[ps.Name]
		p.mu.Unlock()
		if pb == nil {
			continue
		}
		st := poolStatus(ps, pb, connected, old.Conditions)
		if had && reflect.DeepEqual(st, old) {
			continue
		}
		data, err := json.Marshal(map[string]any{"status": st})
		if err == nil {
			_, err = p.s.crd.PatchPoolStatus(ctx, ps.Name, types.MergePatchType, data)
		}
		if err != nil {
			p.s.metrics.StatusWriteErrors.Inc()
			klog.FromContext(ctx).Error(err, "Writing pool status", "pool", ps.Name)
			// A deleted pool has no status to write; the ledger drops it once its claims are released.
			ok = ok && apierrors.IsNotFound(err)
			continue
		}
		p.s.metrics.StatusWrites.Inc()
		p.mu.Lock()
		p.written[ps.Name] = st
		p.mu.Unlock()
	}
	return ok
}

func quantity(n int64) *resource.Quantity { return resource.NewQuantity(n, resource.BinarySI) }

func poolStatus(ps ledger.PoolStatus, pb *poolBackend, connected map[string]bool, conditions []metav1.Condition) v1alpha1.DynamicMemoryPoolStatus {
	st := v1alpha1.DynamicMemoryPoolStatus{
		ObservedGeneration: pb.generation,
		Free:               quantity(ps.Free),
		Reserved:           quantity(ps.Reserved),
		Online:             quantity(ps.Online),
		Conditions:         append([]metav1.Condition(nil), conditions...),
	}
	for _, h := range ps.Hosts {
		st.Nodes = append(st.Nodes, v1alpha1.PoolNodeStatus{
			Name: h.Node, Reserved: *quantity(h.Reserved), Online: *quantity(h.Online), Free: *quantity(h.Free),
			AgentConnected: connected[h.Node],
		})
	}
	cond := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Serving", Message: "the backend answers and the pool serves reservations", ObservedGeneration: pb.generation}
	switch {
	case pb.specError != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "SpecNotApplied", pb.specError
	case !ps.Ready:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "BackendNotReady", ps.Message
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

// hostIDs returns the host ID of each node of a pool.
func (p *pools) hostIDs(name string) map[string]int32 {
	obj, ok, err := p.informer.GetStore().GetByKey(name)
	out := map[string]int32{}
	if err != nil || !ok {
		return out
	}
	for _, n := range obj.(*v1alpha1.DynamicMemoryPool).Spec.Nodes {
		out[n.Name] = n.HostID
	}
	return out
}
