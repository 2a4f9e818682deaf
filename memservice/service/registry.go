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

package service

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	dminformers "github.com/dynamicmemory/kube-dynamic-memory/api/client/informers/externalversions"
	dmlisters "github.com/dynamicmemory/kube-dynamic-memory/api/client/listers/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/qemu"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/simulated"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

const (
	// checkInterval is how often pool backends are probed.
	checkInterval = 10 * time.Second
	// checkTimeout bounds one probe of a pool backend.
	checkTimeout = 5 * time.Second
)

// registry is the one owner of the pools: it follows the DynamicMemoryPool objects
// and holds, for each pool, the spec in force, the device backend built from it, the
// host ID of each node on that device and whether the pool is ready. It tells the
// ledger the spec and the readiness (the ledger accounts capacity with them); the
// provisioning manager and the rebuild find a pool's device here.
type registry struct {
	ledger     *ledger.Ledger
	clock      clock.WithTicker
	newBackend func(pool *v1alpha1.DynamicMemoryPool) (provision.Backend, error)
	// changed is called when a pool's status changes without a ledger change.
	changed func()

	factory  dminformers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   dmlisters.DynamicMemoryPoolLister

	mu    sync.Mutex
	pools map[string]*poolEntry
	// deleted pools still holding memory: removed once their claims are released.
	deleted map[string]bool
}

// poolEntry is what the registry holds of one pool.
type poolEntry struct {
	// spec is the backend spec the backend was built from.
	spec    v1alpha1.PoolBackend
	backend provision.Backend
	hostIDs map[string]int32
	// generation of the DynamicMemoryPool last applied, and why its spec is not in
	// force ("" when it is).
	generation int64
	specError  string
	// written is the status last written to the API (valid when hasWritten).
	written    v1alpha1.DynamicMemoryPoolStatus
	hasWritten bool
}

var _ provision.Devices = (*registry)(nil)

func newRegistry(factory dminformers.SharedInformerFactory, l *ledger.Ledger, clk clock.WithTicker,
	newBackend func(*v1alpha1.DynamicMemoryPool) (provision.Backend, error), changed func()) *registry {
	pools := factory.DynamicMemory().V1alpha1().DynamicMemoryPools()
	return &registry{
		ledger:     l,
		clock:      clk,
		newBackend: newBackend,
		changed:    changed,
		factory:    factory,
		informer:   pools.Informer(),
		lister:     pools.Lister(),
		pools:      map[string]*poolEntry{},
		deleted:    map[string]bool{},
	}
}

// run follows the DynamicMemoryPools and probes their backends until ctx ends.
func (g *registry) run(ctx context.Context) error {
	_, err := g.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { g.apply(ctx, obj) },
		UpdateFunc: func(_, obj any) { g.apply(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pool, ok := obj.(*v1alpha1.DynamicMemoryPool); ok {
				g.remove(ctx, pool.Name)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch DynamicMemoryPools: %w", err)
	}
	g.factory.StartWithContext(ctx)
	ticker := g.clock.NewTicker(checkInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
			g.mu.Lock()
			names := make([]string, 0, len(g.pools))
			for name := range g.pools {
				names = append(names, name)
			}
			var deleted []string
			for name := range g.deleted {
				deleted = append(deleted, name)
			}
			g.mu.Unlock()
			for _, name := range deleted {
				g.remove(ctx, name)
			}
			for _, name := range names {
				g.check(ctx, name)
			}
		}
	}
}

// waitSynced waits for the pools' informer and applies and probes every pool it
// holds, so that the ledger knows them all (and which are ready) before it is rebuilt.
func (g *registry) waitSynced(ctx context.Context) bool {
	if !cache.WaitForCacheSync(ctx.Done(), g.informer.HasSynced) {
		return false
	}
	pools, err := g.lister.List(labels.Everything())
	if err != nil {
		return false
	}
	for _, pool := range pools {
		g.apply(ctx, pool)
		g.check(ctx, pool.Name)
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

// apply puts a pool's spec in force: in the ledger, then its backend and host IDs.
// A spec the ledger refuses leaves the previous one in force.
func (g *registry) apply(ctx context.Context, obj any) {
	pool, ok := obj.(*v1alpha1.DynamicMemoryPool)
	if !ok {
		return
	}
	logger := klog.FromContext(ctx).WithValues("pool", pool.Name)
	hostIDs := map[string]int32{}
	for _, n := range pool.Spec.Nodes {
		hostIDs[n.Name] = n.HostID
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.pools[pool.Name]
	if e == nil {
		e = &poolEntry{}
		g.pools[pool.Name] = e
	}
	delete(g.deleted, pool.Name)
	e.generation = pool.Generation
	e.specError = ""
	if err := g.ledger.SetPool(LedgerPool(pool)); err != nil {
		logger.Error(err, "Pool spec not applied; the previous one stays in force")
		e.specError = err.Error()
		g.changed()
		return
	}
	switch {
	case e.backend == nil || e.spec.Type != pool.Spec.Backend.Type || !reflect.DeepEqual(e.spec.QEMU, pool.Spec.Backend.QEMU):
		b, err := g.newBackend(pool)
		if err != nil {
			logger.Error(err, "Pool backend not available")
			e.specError = err.Error()
			g.ledger.SetPoolReady(pool.Name, false, err.Error())
			return
		}
		closeBackend(e.backend)
		e.backend = b
	case !reflect.DeepEqual(e.spec.Simulated, pool.Spec.Backend.Simulated):
		if sim, ok := e.backend.(*simulated.Device); ok {
			sim.SetFaults(simulatedFaults(pool.Spec.Backend.Simulated))
		}
	}
	e.spec = *pool.Spec.Backend.DeepCopy()
	e.hostIDs = hostIDs
	go g.check(ctx, pool.Name)
}

func closeBackend(b provision.Backend) {
	if c, ok := b.(interface{ Close() error }); ok {
		_ = c.Close()
	}
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
func (g *registry) check(ctx context.Context, name string) {
	g.mu.Lock()
	var b provision.Backend
	if e := g.pools[name]; e != nil && !g.deleted[name] {
		b = e.backend
	}
	g.mu.Unlock()
	spec, specOK := g.ledger.PoolSpec(name)
	if b == nil || !specOK {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	c, err := b.Check(cctx)
	switch {
	case err != nil:
		g.ledger.SetPoolReady(name, false, fmt.Sprintf("backend does not answer: %v", err))
	case c.Bytes > 0 && c.Bytes < spec.Capacity:
		g.ledger.SetPoolReady(name, false, fmt.Sprintf("device region holds %s, less than the pool capacity %s",
			ledger.FormatBytes(c.Bytes), ledger.FormatBytes(spec.Capacity)))
	case c.BlockSize > 0 && spec.BlockSize%c.BlockSize != 0:
		g.ledger.SetPoolReady(name, false, fmt.Sprintf("pool block size %s is not a multiple of the device's %s",
			ledger.FormatBytes(spec.BlockSize), ledger.FormatBytes(c.BlockSize)))
	default:
		g.ledger.SetPoolReady(name, true, "")
	}
}

// remove forgets a deleted pool, or, while it still holds memory, keeps it serving
// releases (not reservations) until it is tried again.
func (g *registry) remove(ctx context.Context, name string) {
	if err := g.ledger.RemovePool(name); err != nil {
		g.mu.Lock()
		first := !g.deleted[name]
		g.deleted[name] = true
		g.mu.Unlock()
		if first {
			klog.FromContext(ctx).Error(err, "Pool deleted but still holds memory; it keeps serving releases and goes once they are done", "pool", name)
		}
		g.ledger.SetPoolReady(name, false, "DynamicMemoryPool deleted; waiting for its claims to be released")
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.deleted, name)
	if e, ok := g.pools[name]; ok {
		closeBackend(e.backend)
	}
	delete(g.pools, name)
}

// Device returns a pool's backend and the host ID of a node on it (provision.Devices).
func (g *registry) Device(pool, node string) (provision.Backend, int32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.pools[pool]
	if e == nil || e.backend == nil {
		return nil, 0, ledger.Errorf(ledger.CodeUnavailable, "pool %s has no device backend", pool)
	}
	id, ok := e.hostIDs[node]
	if !ok {
		return nil, 0, ledger.Errorf(ledger.CodeNotFound, "node %s has no host ID on the device of pool %s", node, pool)
	}
	return e.backend, id, nil
}

// Devices returns a pool's backend and the host ID of each of its nodes on it.
func (g *registry) Devices(pool string) (provision.Backend, map[string]int32, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.pools[pool]
	if e == nil || e.backend == nil {
		return nil, nil, false
	}
	return e.backend, maps.Clone(e.hostIDs), true
}

// statusOf returns what the status writer needs of a pool besides the ledger's
// numbers: the generation and spec error to report, and the status last written.
func (g *registry) statusOf(pool string) (e poolEntry, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.pools[pool]
	if p == nil {
		return poolEntry{}, false
	}
	return *p, true
}

// setWritten records the status last written of a pool.
func (g *registry) setWritten(pool string, st v1alpha1.DynamicMemoryPoolStatus) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.pools[pool]; p != nil {
		p.written, p.hasWritten = st, true
	}
}
