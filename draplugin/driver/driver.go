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

// Package driver is the DRA kubelet plugin of dcd.dynamicmemory.io: it publishes the
// node's ResourceSlice (one device per pool the node is attached to) and prepares
// claims for containers once the memory service says their memory is online here.
package driver

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	"google.golang.org/grpc"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/clock"
)

// Reservations is the part of the memory service the plugin asks.
type Reservations interface {
	GetReservation(ctx context.Context, in *memservicev1.GetReservationRequest, opts ...grpc.CallOption) (*memservicev1.GetReservationResponse, error)
}

// Config configures the plugin.
type Config struct {
	// Node is the node the plugin runs on.
	Node string
	// Kube and DynamicMemory talk to the API server (claims, slices; pools).
	Kube          kubernetes.Interface
	DynamicMemory versioned.Interface
	// Reservations is the memory service.
	Reservations Reservations
	// CDIDir is where CDI spec files are written (the runtime's CDI spec dir).
	CDIDir string
	// PluginDataDir holds dra.sock; RegistrarDir is the kubelet's plugin registry.
	PluginDataDir string
	RegistrarDir  string
	// BindingConditions makes devices declare the Online binding condition.
	BindingConditions bool
	Metrics           *metrics.Metrics
	Clock             clock.PassiveClock
}

// Driver is the running plugin.
type Driver struct {
	cfg    Config
	cdi    CDI
	helper *kubeletplugin.Helper
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ kubeletplugin.DRAPlugin = (*Driver)(nil)

// Start registers the plugin with the kubelet and starts publishing the node's
// ResourceSlice from the pools. Stop ends both.
func Start(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Node == "" {
		return nil, errors.New("node name is required (--node-name or NODE_NAME)")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	d := &Driver{cfg: cfg, cdi: CDI{Dir: cfg.CDIDir}}
	opts := []kubeletplugin.Option{
		kubeletplugin.DriverName(dra.DriverName),
		kubeletplugin.NodeName(cfg.Node),
		kubeletplugin.KubeClient(cfg.Kube),
		kubeletplugin.HealthService(false),
	}
	if cfg.PluginDataDir != "" {
		opts = append(opts, kubeletplugin.PluginDataDirectoryPath(cfg.PluginDataDir))
	}
	if cfg.RegistrarDir != "" {
		opts = append(opts, kubeletplugin.RegistrarDirectoryPath(cfg.RegistrarDir))
	}
	helper, err := kubeletplugin.Start(ctx, d, opts...)
	if err != nil {
		return nil, fmt.Errorf("start kubelet plugin: %w", err)
	}
	d.helper = helper
	ctx, d.cancel = context.WithCancel(ctx)
	d.watchPools(ctx)
	return d, nil
}

// Ready tells whether the kubelet has registered the plugin: until it has, no claim
// can be prepared on this node. The kubelet finds the plugin by its socket in the
// registrar directory, and tells it again after each restart of either.
func (d *Driver) Ready() error {
	st := d.helper.RegistrationStatus()
	switch {
	case st == nil:
		return errors.New("not registered with the kubelet yet: the kubelet registers the plugins whose sockets are in its plugins_registry directory (--registrar-dir)")
	case !st.PluginRegistered:
		return fmt.Errorf("the kubelet refused to register the plugin: %s", st.Error)
	}
	return nil
}

// Stop unregisters the plugin and stops publishing. The ResourceSlice stays: the
// next instance takes it over.
func (d *Driver) Stop() {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	d.helper.Stop()
}

// watchPools publishes the node's devices from the pools until ctx ends.
func (d *Driver) watchPools(ctx context.Context) {
	p := &Publisher{
		Node:              d.cfg.Node,
		DynamicMemory:     d.cfg.DynamicMemory,
		BindingConditions: d.cfg.BindingConditions,
		Publish: func(ctx context.Context, resources resourceslice.DriverResources) error {
			return d.helper.PublishResources(ctx, resources)
		},
		Metrics: d.cfg.Metrics,
	}
	d.wg.Go(func() {
		if err := p.Run(ctx); err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "Publishing the node's devices stopped")
		}
	})
}

// HandleError logs background errors (ResourceSlice publishing, gRPC server). All
// of them are retried by the helper; none stops the plugin.
func (d *Driver) HandleError(ctx context.Context, err error, msg string) {
	utilruntime.HandleErrorWithContext(ctx, err, msg)
}

// WatchHealthStatus is not supported: pool memory health is the memory service's.
func (d *Driver) WatchHealthStatus(context.Context, chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}
