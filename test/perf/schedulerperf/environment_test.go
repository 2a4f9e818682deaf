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

package schedulerperf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	perf "k8s.io/kubernetes/test/integration/scheduler_perf"
	"k8s.io/kubernetes/test/utils/client-go/ktesting"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
	pluginconfig "github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/agent"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	agentmetrics "github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
)

// The shape of every pool of the benchmark. templates/resourceslice.yaml publishes
// the same block size and host window (a pool smaller than the window has a window of
// its capacity).
var (
	poolCapacity   = resource.MustParse("1Ti")
	poolBlockSize  = resource.MustParse("1Gi")
	poolHostWindow = resource.MustParse("64Gi")
)

// crdDir holds the CRDs the memory service needs, relative to this package.
const crdDir = "../../../manifests/crds"

// readyTimeout bounds the start of the memory service, its node agents and the
// plugin's pool watch.
const readyTimeout = 2 * time.Minute

var poolsGVR = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemorypools")

// nodeName is the name of node i; templates/node.yaml and
// templates/resourceslice.yaml spell it the same way.
func nodeName(i int) string { return fmt.Sprintf("dynamic-memory-node-%d", i) }

// poolName is the pool node i is attached to (templates/resourceslice.yaml).
func poolName(node, nodesPerPool int) string { return fmt.Sprintf("cxl-%d", node/nodesPerPool) }

// environment runs, for each workload, what the DynamicMemory plugin talks to: the
// memory service in-process (simulated devices at zero latency, one pool per
// nodesPerPool nodes) and a simulated node agent per node.
//
// scheduler_perf starts the API server and the scheduler between two hooks, so the
// environment is set up in two steps: preRun (before the scheduler: certificates and
// the service's address, which the plugin factory hands to the plugin) and prepare
// (once the API server is up: CRDs, pools, the service and the agents).
type environment struct {
	mu  sync.Mutex
	run *workloadRun
}

// workloadRun is the environment of one workload.
type workloadRun struct {
	nodes, nodesPerPool int
	// poolCapacity is every pool's capacity (param poolCapacityGi, default poolCapacity).
	poolCapacity resource.Quantity
	// publishSlices: the environment creates the nodes and publishes their
	// ResourceSlices with the DRA plugin's publisher, one per node (param
	// publishSlices: 1), instead of the test case's static slices; measurePods is
	// then what slice writes and requeues are counted against.
	publishSlices bool
	measurePods   int
	address       string
	bundle        pki.Bundle
}

// preRun chooses the memory service's address and writes the certificates of the
// service, the scheduler and every node agent. It runs before etcd, the API server
// and the scheduler start.
func (e *environment) preRun(tCtx ktesting.TContext, w *perf.Workload) (func(), error) {
	nodes, err := w.GetParam("nodes")
	if err != nil {
		return nil, err
	}
	nodesPerPool, err := w.GetParam("nodesPerPool")
	if err != nil {
		return nil, err
	}
	if nodes <= 0 || nodesPerPool <= 0 {
		return nil, fmt.Errorf("workload %s: params nodes (%d) and nodesPerPool (%d) must be positive", w.Name, nodes, nodesPerPool)
	}
	run := &workloadRun{nodes: nodes, nodesPerPool: nodesPerPool, poolCapacity: poolCapacity}
	// Optional params: absent, GetParam says so.
	if gi, err := w.GetParam("poolCapacityGi"); err == nil {
		run.poolCapacity = *resource.NewQuantity(int64(gi)<<30, resource.BinarySI)
	}
	if publish, err := w.GetParam("publishSlices"); err == nil && publish != 0 {
		run.publishSlices = true
		if run.measurePods, err = w.GetParam("measurePods"); err != nil {
			return nil, fmt.Errorf("workload %s: publishSlices needs measurePods: %w", w.Name, err)
		}
	}
	address, err := freeAddress()
	if err != nil {
		return nil, err
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = nodeName(i)
	}
	bundle, err := pki.WriteBundle(tCtx.TempDir(), []string{"127.0.0.1"}, names)
	if err != nil {
		return nil, fmt.Errorf("write the memory service's certificates: %w", err)
	}
	run.address, run.bundle = address, bundle
	e.mu.Lock()
	e.run = run
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		e.run = nil
		e.mu.Unlock()
	}, nil
}

// current is the running workload's environment.
func (e *environment) current() (*workloadRun, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run == nil {
		return nil, errors.New("no workload environment: the benchmark's preRun hook did not run")
	}
	return e.run, nil
}

// pluginFactory builds the DynamicMemory plugin with the args of the scheduler
// configuration, pointed at the workload's memory service and certificates.
func (e *environment) pluginFactory(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	run, err := e.current()
	if err != nil {
		return nil, err
	}
	args := &pluginconfig.DynamicMemoryArgs{}
	if u, ok := obj.(*runtime.Unknown); ok && len(u.Raw) > 0 {
		if err := yaml.UnmarshalStrict(u.Raw, args); err != nil {
			return nil, fmt.Errorf("decode %s args: %w", dynamicmemory.Name, err)
		}
	}
	args.Address = run.address
	args.ServerName = ""
	args.CAFile, args.CertFile, args.KeyFile = run.bundle.CAFile(), run.bundle.CertFile("scheduler"), run.bundle.KeyFile("scheduler")
	return dynamicmemory.New(ctx, args, h)
}

// prepare installs the CRDs, creates the pools, starts the memory service and a node
// agent per node, and waits until the plugin watches the service's pools. Everything
// stops when the workload ends.
func (e *environment) prepare(tCtx ktesting.TContext) error {
	run, err := e.current()
	if err != nil {
		return err
	}
	if err := installCRDs(tCtx); err != nil {
		return err
	}
	if err := run.createPools(tCtx); err != nil {
		return err
	}
	if run.publishSlices {
		// Before the service: its first pool status is then published like any later one.
		if err := run.publishNodeSlices(tCtx); err != nil {
			return err
		}
	}

	cfg := service.Config{RESTConfig: tCtx.RESTConfig(), ListenAddress: run.address}
	cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = run.bundle.CAFile(), run.bundle.CertFile("server"), run.bundle.KeyFile("server")
	svc, err := service.New(cfg)
	if err != nil {
		return fmt.Errorf("memory service: %w", err)
	}
	ctx, cancel := context.WithCancel(klog.NewContext(tCtx, tCtx.Logger()))
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = svc.Run(ctx) })
	tCtx.Cleanup(func() {
		cancel()
		wg.Wait()
		if runErr != nil {
			tCtx.Errorf("memory service: %v", runErr)
		}
	})
	select {
	case <-svc.Ready():
	case <-time.After(readyTimeout):
		return fmt.Errorf("the memory service did not serve within %s", readyTimeout)
	}

	agents, err := run.startAgents(ctx, &wg)
	if err != nil {
		return err
	}
	// The scheduler started before the service: wait until its pool cache has
	// reconnected (one WatchPools stream: the profiles that run the plugin share it) and every
	// agent holds its session, so that measuring starts from a steady state.
	err = wait.PollUntilContextTimeout(tCtx, 100*time.Millisecond, readyTimeout, true, func(context.Context) (bool, error) {
		for _, a := range agents {
			if !a.Connected() {
				return false, nil
			}
		}
		return testutil.ToFloat64(svc.Metrics().WatchSubs) >= 1, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the node agents and the scheduler's pool watch (watchers %v): %w", testutil.ToFloat64(svc.Metrics().WatchSubs), err)
	}
	tCtx.Logf("Memory service %s serving %d nodes with %d node agents", run.address, run.nodes, len(agents))
	if run.publishSlices {
		// Registered last, so it runs first: while the service, the agents and the
		// scheduler still run.
		return run.countSliceWrites(tCtx)
	}
	return nil
}

// createPools creates one simulated pool per nodesPerPool nodes.
func (r *workloadRun) createPools(tCtx ktesting.TContext) error {
	pools := map[string]*v1alpha1.DynamicMemoryPool{}
	var order []string
	for i := range r.nodes {
		name := poolName(i, r.nodesPerPool)
		p, ok := pools[name]
		if !ok {
			p = &v1alpha1.DynamicMemoryPool{
				TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryPool"},
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1alpha1.DynamicMemoryPoolSpec{
					Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
					Capacity:   r.poolCapacity,
					BlockSize:  poolBlockSize,
					HostWindow: minQuantity(poolHostWindow, r.poolCapacity),
					Attributes: map[string]string{v1alpha1.AttributeLatencyClass: "low"},
				},
			}
			pools[name] = p
			order = append(order, name)
		}
		p.Spec.Nodes = append(p.Spec.Nodes, v1alpha1.PoolNode{Name: nodeName(i), HostID: int32(i % r.nodesPerPool)})
	}
	for _, name := range order {
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pools[name])
		if err != nil {
			return fmt.Errorf("pool %s: %w", name, err)
		}
		if _, err := tCtx.Dynamic().Resource(poolsGVR).Create(tCtx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create DynamicMemoryPool %s: %w", name, err)
		}
	}
	return nil
}

// startAgents runs the node agent (package updater/agent, simulated host memory) of
// every node until ctx ends; wg waits for them.
func (r *workloadRun) startAgents(ctx context.Context, wg *sync.WaitGroup) ([]*agent.Agent, error) {
	logger := klog.FromContext(ctx).WithName("agent")
	agents := make([]*agent.Agent, 0, r.nodes)
	for i := range r.nodes {
		node := nodeName(i)
		member := pki.MemberName(pki.Identity{Role: pki.RoleAgent, Node: node})
		c, err := client.Dial(ctx, client.Config{
			Address: r.address, CAFile: r.bundle.CAFile(), CertFile: r.bundle.CertFile(member), KeyFile: r.bundle.KeyFile(member),
		})
		if err != nil {
			return nil, fmt.Errorf("node agent of %s: %w", node, err)
		}
		a, err := agent.New(agent.Config{
			Node:    node,
			Client:  c,
			Host:    hostmem.NewSimulated(hostmem.SimulatedConfig{}),
			Metrics: agentmetrics.New(),
		})
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("node agent of %s: %w", node, err)
		}
		agents = append(agents, a)
		wg.Go(func() {
			defer func() { _ = c.Close() }()
			if err := a.Run(klog.NewContext(ctx, logger.WithValues("node", node))); err != nil {
				logger.Error(err, "Node agent stopped", "node", node)
			}
		})
	}
	return agents, nil
}

// minQuantity is the smaller of a and b.
func minQuantity(a, b resource.Quantity) resource.Quantity {
	if a.Cmp(b) <= 0 {
		return a
	}
	return b
}

// installCRDs creates the project's CRDs and waits until they are established.
func installCRDs(tCtx ktesting.TContext) error {
	files, err := filepath.Glob(filepath.Join(crdDir, "dynamicmemory.io_*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no CRDs in %s (err: %v)", crdDir, err)
	}
	crds := tCtx.APIExtensions().ApiextensionsV1().CustomResourceDefinitions()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read CRD: %w", err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			return fmt.Errorf("decode CRD %s: %w", f, err)
		}
		if _, err := crds.Create(tCtx, &crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", crd.Name, err)
		}
		err = wait.PollUntilContextTimeout(tCtx, 100*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
			got, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("wait for CRD %s to be established: %w", crd.Name, err)
		}
	}
	return nil
}

// freeAddress returns a loopback address with a port that was free a moment ago:
// the memory service listens on it once the API server is up, and the scheduler,
// which starts before, is configured with it.
func freeAddress() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for the memory service: %w", err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		return "", fmt.Errorf("find a free port for the memory service: %w", err)
	}
	return addr, nil
}
