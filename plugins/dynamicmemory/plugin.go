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

// Package dynamicmemory is the DynamicMemory scheduler plugin. It runs beside the
// in-tree DynamicResources plugin, which allocates a claim's consumable capacity on
// a node's device, and adds what DRA cannot see: a CXL memory pool is shared by
// several hosts, and its memory has to be moved to the chosen host before the pod
// starts.
//
//   - PreFilter finds the pod's ResourceClaims for the dynamic memory DeviceClass
//     (Skip when there are none: other pods pay nothing).
//   - Filter and Score work from a cache of the memory service's pool snapshots
//     (WatchPools), never from a call per node.
//   - Filter has no side effects: it notes in the cycle state that it rejected a node
//     for pool capacity, and PostFilter, when no node fits, lists the pod among those
//     the pool cache activates when capacity comes back.
//   - Reserve reserves the memory on the memory service, keyed by claim UID, from the
//     pool DynamicResources allocated, without holding up the scheduling cycle: the
//     call runs in the background and Permit holds the pod until it is answered.
//     Unreserve releases it. The reservation logic is behind the reserver interface
//     (reservations.go); the extension points only delegate to it.
//   - PreBind, after DynamicResources wrote the allocation, has the memory service add
//     the memory to the host and waits until the node agent reports it online.
//   - Pods rejected for capacity are requeued when a pool snapshot shows freed
//     capacity (and on DynamicMemoryPool status, Node and ResourceClaim events).
package dynamicmemory

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

const (
	// Name is the plugin's name in the scheduler configuration.
	Name = config.PluginName

	stateKey fwk.StateKey = "PreFilter" + Name
)

var (
	_ fwk.PreFilterPlugin   = (*DynamicMemory)(nil)
	_ fwk.FilterPlugin      = (*DynamicMemory)(nil)
	_ fwk.PostFilterPlugin  = (*DynamicMemory)(nil)
	_ fwk.ScorePlugin       = (*DynamicMemory)(nil)
	_ fwk.ReservePlugin     = (*DynamicMemory)(nil)
	_ fwk.PermitPlugin      = (*DynamicMemory)(nil)
	_ fwk.PreBindPlugin     = (*DynamicMemory)(nil)
	_ fwk.EnqueueExtensions = (*DynamicMemory)(nil)
)

// DynamicMemory is the scheduler plugin.
type DynamicMemory struct {
	handle           fwk.Handle
	client           memservicev1.MemoryServiceClient
	cache            *poolCache
	scorer           scorer
	provisionTimeout time.Duration
	clock            clock.WithDelayedExecution
	// rejected are the pods rejected for pool capacity, activated when it comes back.
	rejected *rejectedPods
	// reservations reserves and releases the memory of scheduled pods.
	reservations reserver
}

// New is the plugin factory: it reads the args and connects to the memory service,
// sharing the connection and pool cache with the scheduler's other profiles that name
// the same service (connection.go), until ctx ends.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	path := field.NewPath("profiles").Key(h.ProfileName()).Child("pluginConfig").Key(Name).Child("args")
	args, err := decodeArgs(path, obj)
	if err != nil {
		return nil, err
	}
	if err := checkFiles(path, args).ToAggregate(); err != nil {
		return nil, fmt.Errorf("invalid %s args: %w", Name, err)
	}
	rejected := newRejectedPods(h)
	// Every unary call of the plugin sets its own deadline (reserveTimeout,
	// releaseTimeout, provisionTimeout): the client's default bound never applies.
	conn, err := connections.acquire(ctx, client.Config{
		Address:    args.Address,
		CAFile:     args.CAFile,
		CertFile:   args.CertFile,
		KeyFile:    args.KeyFile,
		ServerName: args.ServerName,
	}, rejected)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return newPlugin(h, args, conn, rejected, clock.RealClock{}), nil
}

// newPlugin wires a plugin of handle h to a connection to the memory service, whose
// cache activates rejected. The caller runs conn.cache. args are defaulted and valid.
func newPlugin(h fwk.Handle, args *config.DynamicMemoryArgs, conn *connection, rejected *rejectedPods, clk clock.WithDelayedExecution) *DynamicMemory {
	var permitTimeout time.Duration
	if args.PermitTimeout != nil {
		permitTimeout = args.PermitTimeout.Duration
	}
	return &DynamicMemory{
		handle:           h,
		client:           conn.client,
		cache:            conn.cache,
		scorer:           scorer{strategy: args.ScoringStrategy.Type, localityWeight: int64(args.ScoringStrategy.LocalityWeight)},
		provisionTimeout: args.ProvisionTimeout.Duration,
		clock:            clk,
		rejected:         rejected,
		reservations: &reservations{
			handle:         h,
			client:         conn.client,
			cache:          conn.cache,
			rejected:       rejected,
			clock:          clk,
			reserveTimeout: args.ReserveTimeout.Duration,
			releaseTimeout: args.ReleaseTimeout.Duration,
			permitTimeout:  permitTimeout,
			releases:       newReleaseSet(),
		},
	}
}

// Name returns the plugin's name.
func (pl *DynamicMemory) Name() string { return Name }

// stateData is written by PreFilter and read by the later extension points.
type stateData struct {
	// demands are the pod's requests for dynamic memory.
	demands []demand
	// view is the pool cache at PreFilter.
	view *cacheView
	// reservation is what Reserve asked the memory service for in this cycle, which
	// Unreserve gives back (nil: nothing new to reserve).
	reservation *podReservation

	// mu guards what Filter, which runs in parallel for many nodes, notes.
	mu sync.Mutex
	// capacityRejected is set when Filter rejected a node for pool capacity; PostFilter
	// then lists the pod among the rejected pods.
	capacityRejected bool
}

func (s *stateData) Clone() fwk.StateData {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &stateData{
		demands:          append([]demand(nil), s.demands...),
		view:             s.view,
		reservation:      s.reservation,
		capacityRejected: s.capacityRejected,
	}
}

func getState(cs fwk.CycleState) (*stateData, error) {
	data, err := cs.Read(stateKey)
	if err != nil {
		return nil, fmt.Errorf("read %s state: %w", Name, err)
	}
	s, ok := data.(*stateData)
	if !ok {
		return nil, fmt.Errorf("%s state has type %T", Name, data)
	}
	return s, nil
}

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

// podRef is the memory service's record of a pod.
func podRef(pod *v1.Pod) *memservicev1.PodRef {
	return &memservicev1.PodRef{Name: pod.Name, Uid: string(pod.UID)}
}

// claimRef is the memory service's reference to a demand's claim.
func (d demand) ref() *memservicev1.ClaimRef {
	return &memservicev1.ClaimRef{Uid: string(d.claim.UID), Namespace: d.claim.Namespace, Name: d.claim.Name}
}
