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

package driver

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/client/informers/externalversions"
	listersv1alpha1 "github.com/dynamicmemory/kube-dynamic-memory/api/client/listers/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
)

// Publisher keeps one node's devices in step with the DynamicMemoryPools: it
// watches the pools and hands the node's devices to Publish (the ResourceSlice
// controller of the kubelet plugin helper) whenever they change.
type Publisher struct {
	// Node is the node whose devices are published.
	Node string
	// DynamicMemory reads the pools.
	DynamicMemory versioned.Interface
	// BindingConditions makes devices declare the Online binding condition.
	BindingConditions bool
	// Publish writes the node's ResourceSlice.
	Publish func(context.Context, resourceslice.DriverResources) error
	Metrics *metrics.Metrics

	mu        sync.Mutex
	published []resourceapi.Device
	// capacities is the memory capacity of each pool's device as last published.
	capacities map[string]int64
}

// Run publishes the node's devices once the pool informer has synced, and again
// whenever a pool changes, until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	factory := externalversions.NewSharedInformerFactory(p.DynamicMemory, 0)
	pools := factory.DynamicMemory().V1alpha1().DynamicMemoryPools()
	informer := pools.Informer()
	// Events during the initial list would publish a partial device list; the
	// publish after the sync covers them.
	publish := func(any) {
		if informer.HasSynced() {
			p.publish(ctx, pools.Lister())
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    publish,
		UpdateFunc: func(_, obj any) { publish(obj) },
		DeleteFunc: publish,
	}); err != nil {
		return fmt.Errorf("watch DynamicMemoryPools: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		// Publish once even when there are no pools, so stale slices go.
		p.publish(ctx, pools.Lister())
	}
	<-ctx.Done()
	return nil
}

// publish computes the node's devices from the pools in the informer cache and
// hands them to Publish when they differ from what was published last.
func (p *Publisher) publish(ctx context.Context, lister listersv1alpha1.DynamicMemoryPoolLister) {
	logger := klog.FromContext(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	cached, err := lister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Listing the cached DynamicMemoryPools failed")
		return
	}
	pools := make([]v1alpha1.DynamicMemoryPool, 0, len(cached))
	for _, pool := range cached {
		pools = append(pools, *pool)
	}
	devices, errs := Devices(pools, p.Node, p.BindingConditions, p.capacities)
	for _, err := range errs {
		utilruntime.HandleErrorWithContext(ctx, err, "Pool not published")
	}
	if p.capacities != nil && equality.Semantic.DeepEqual(devices, p.published) {
		return
	}
	resources := resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{}}
	if len(devices) > 0 {
		resources.Pools[p.Node] = resourceslice.Pool{Slices: []resourceslice.Slice{{Devices: devices}}}
	}
	if err := p.Publish(ctx, resources); err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Publishing the node's ResourceSlice failed")
		return
	}
	p.Metrics.SliceUpdates.Inc()
	p.Metrics.PublishedDevices.Set(float64(len(devices)))
	names := func(ds []resourceapi.Device) []string {
		out := make([]string, 0, len(ds))
		for _, d := range ds {
			out = append(out, d.Name)
		}
		return out
	}
	if !slices.Equal(names(devices), names(p.published)) {
		logger.Info("Publishing devices", "devices", names(devices), "bindingConditions", p.BindingConditions)
	}
	p.published = devices
	p.capacities = map[string]int64{}
	for _, d := range devices {
		memory := d.Capacity[dra.CapacityMemory].Value
		p.capacities[d.Name] = memory.Value()
	}
}
