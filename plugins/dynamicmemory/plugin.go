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
//   - Reserve reserves the memory on the memory service, keyed by claim UID, from the
//     pool DynamicResources allocated, without holding up the scheduling cycle: the
//     call runs in the background and Permit holds the pod until it is answered.
//     Unreserve releases it.
//   - PreBind, after DynamicResources wrote the allocation, has the memory service add
//     the memory to the host and waits until the node agent reports it online.
//   - Pods rejected for capacity are requeued when a pool snapshot shows freed
//     capacity (and on DynamicMemoryPool status, Node and ResourceClaim events).
package dynamicmemory

import (
	"context"
	"fmt"
	"os"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

const (
	// Name is the plugin's name in the scheduler configuration.
	Name = "DynamicMemory"
	// DriverName is the DRA driver that publishes the pools' devices.
	DriverName = "dcd.dynamicmemory.io"
	// DeviceClassName is the DeviceClass claims use to ask for dynamic memory.
	DeviceClassName = "dynamic-memory.dynamicmemory.io"
	// CapacityName is the device capacity a claim's request sizes.
	CapacityName = "memory"

	stateKey fwk.StateKey = "PreFilter" + Name
)

var (
	_ fwk.PreFilterPlugin   = (*DynamicMemory)(nil)
	_ fwk.FilterPlugin      = (*DynamicMemory)(nil)
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
	reserveTimeout   time.Duration
	provisionTimeout time.Duration
	clock            clock.Clock
	waiting          *waitingPods
	releases         *releaseSet
}

// New is the plugin factory: it reads the args, connects to the memory service and
// starts the pool cache, which runs until ctx ends.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	path := field.NewPath("profiles").Key(h.ProfileName()).Child("pluginConfig").Key(Name).Child("args")
	args, err := decodeArgs(path, obj)
	if err != nil {
		return nil, err
	}
	if err := checkFiles(path, args).ToAggregate(); err != nil {
		return nil, fmt.Errorf("invalid %s args: %w", Name, err)
	}
	c, err := client.Dial(ctx, client.Config{
		Address:     args.Address,
		CAFile:      args.CAFile,
		CertFile:    args.CertFile,
		KeyFile:     args.KeyFile,
		ServerName:  args.ServerName,
		CallTimeout: args.ReserveTimeout.Duration,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	RegisterMetrics()
	pl := newPlugin(h, args, c, clock.RealClock{})
	logger := klog.FromContext(ctx).WithValues("plugin", Name)
	logger.Info("Watching the memory service's pools", "address", args.Address)
	go func() {
		pl.cache.run(klog.NewContext(ctx, logger))
		if err := c.Close(); err != nil {
			logger.Error(err, "Close the memory service connection")
		}
	}()
	return pl, nil
}

// newPlugin wires a plugin to a memory service client. The caller runs pl.cache.
func newPlugin(h fwk.Handle, args *DynamicMemoryArgs, c memservicev1.MemoryServiceClient, clk clock.Clock) *DynamicMemory {
	pl := &DynamicMemory{
		handle:           h,
		client:           c,
		cache:            newPoolCache(c, clk),
		scorer:           scorer{strategy: args.ScoringStrategy.Type, localityWeight: int64(args.ScoringStrategy.LocalityWeight)},
		reserveTimeout:   args.ReserveTimeout.Duration,
		provisionTimeout: args.ProvisionTimeout.Duration,
		clock:            clk,
		waiting:          newWaitingPods(h),
		releases:         newReleaseSet(),
	}
	pl.cache.onFreed = pl.waiting.activate
	return pl
}

// checkFiles reports TLS files the scheduler cannot read, by field.
func checkFiles(path *field.Path, args *DynamicMemoryArgs) field.ErrorList {
	var errs field.ErrorList
	for _, f := range []struct{ name, file string }{
		{"caFile", args.CAFile}, {"certFile", args.CertFile}, {"keyFile", args.KeyFile},
	} {
		if _, err := os.ReadFile(f.file); err != nil {
			errs = append(errs, field.Invalid(path.Child(f.name), f.file, err.Error()))
		}
	}
	return errs
}

// Name returns the plugin's name.
func (pl *DynamicMemory) Name() string { return Name }

// stateData is written by PreFilter and read by the later extension points.
type stateData struct {
	// demands are the pod's requests for dynamic memory.
	demands []demand
	// view is the pool cache at PreFilter.
	view *cacheView
	// reserved are the reservations Reserve asked the memory service for, which
	// Unreserve releases.
	reserved []reservation
	// pending are Reserve's calls to the memory service for them.
	pending *pendingReserve
}

// reservation is one claim's memory as Reserve asked for it.
type reservation struct {
	demand demand
	node   string
	pool   string
}

func (s *stateData) Clone() fwk.StateData {
	out := *s
	out.demands = append([]demand(nil), s.demands...)
	out.reserved = append([]reservation(nil), s.reserved...)
	return &out
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

// podRef is the memory service's record of a pod.
func podRef(pod *v1.Pod) *memservicev1.PodRef {
	return &memservicev1.PodRef{Name: pod.Name, Uid: string(pod.UID)}
}

// claimRef is the memory service's reference to a demand's claim.
func (d demand) ref() *memservicev1.ClaimRef {
	return &memservicev1.ClaimRef{Uid: string(d.claim.UID), Namespace: d.claim.Namespace, Name: d.claim.Name}
}
