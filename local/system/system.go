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

// Package system runs the whole dynamic memory system on the local cluster — the
// memory service, the scheduler, a node agent and a DRA plugin per kwok node, all as
// processes from bin/ — and the demo scenario on it: pods with claims of various
// sizes, one that cannot fit, then every pod deleted and the memory given back.
//
// `local-cluster demo` (make demo), the end-to-end tests and the end-to-end latency
// benchmark all start it with Start, so that what the demo shows is what the tests
// assert.
package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	"k8s.io/klog/v2"
	schedv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/driver"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	pluginconfig "github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
	schedconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
)

// SchedulerName is the scheduler profile with the DynamicMemory plugin, which the
// workloads' pods name in spec.schedulerName.
const SchedulerName = schedconfig.DynamicMemoryProfile

// Names of the component processes (and of their logs, Dir/logs/<name>.log).
const (
	Memservice = "memservice"
	Scheduler  = "kube-scheduler"
	// StockScheduler is the stock kube-scheduler that runs beside ours
	// (SchedulerBoth).
	StockScheduler = "stock-kube-scheduler"
)

// Schedulers the system can run (Options.Scheduler).
const (
	// SchedulerDynamicMemory is this project's kube-scheduler (bin/kube-scheduler):
	// profiles default-scheduler and dynamic-memory-scheduler.
	SchedulerDynamicMemory = "dynamic-memory"
	// SchedulerStock is the stock kube-scheduler (bin/stock-kube-scheduler, built from
	// the pinned k8s.io/kubernetes) with the DRA plugins publishing binding
	// conditions: the compatibility mode of clusters whose scheduler cannot change.
	// Pods name default-scheduler; the memory service provisions their claims.
	SchedulerStock = "stock"
	// SchedulerBoth runs this project's scheduler and, beside it, the stock
	// kube-scheduler with the profile StockProfile, both placing pods into the same
	// pools; the DRA plugins publish binding conditions for the stock one.
	SchedulerBoth = "both"
)

// StockProfile is the profile of the stock kube-scheduler beside ours (SchedulerBoth):
// default-scheduler is our scheduler's.
const StockProfile = "stock-scheduler"

// AgentName is the process name of node's agent.
func AgentName(node string) string { return "node-agent-" + node }

// PluginName is the process name of node's DRA plugin.
func PluginName(node string) string { return "dra-plugin-" + node }

// SysfsName is the process name of a real node's simulated host memory (sysfssim).
func SysfsName(node string) string { return "sysfs-" + node }

// readyTimeout bounds each component's start; the machine may be busy.
const readyTimeout = 2 * time.Minute

// Options configure Start.
type Options struct {
	// Dir is the run directory (certificates, kubeconfig, logs). Required.
	Dir string
	// Nodes is the number of kwok nodes (default 4), each with NodeMemory (default 16Gi).
	Nodes      int
	NodeMemory string
	// RealNodes is the number of nodes run by a real kubelet and containerd (0 or 1;
	// cluster.Options.RealNodes). Their agents raise the kubelet's real kubepods
	// cgroup; their DRA plugins register with the kubelet.
	RealNodes int
	// Pools are created before the components start (default: DefaultPools).
	Pools []v1alpha1.DynamicMemoryPool
	// Detach lets every process outlive the caller (`local-cluster demo --keep`).
	Detach bool
	// Progress receives one line per step (nil: none).
	Progress *Progress
	// Verbosity is the klog -v of the project's components (default 2).
	Verbosity int
	// ProvisionTimeout bounds the scheduler's wait for memory to come online
	// (default: the plugin's default).
	ProvisionTimeout time.Duration
	// Scheduler is SchedulerDynamicMemory (the default), SchedulerStock or
	// SchedulerBoth.
	Scheduler string
	// Baseline adds to this project's scheduler the profile without-dynamic-memory
	// (schedconfig.BaselineProfile), the stock plugins alone: the benchmarks' baseline.
	Baseline bool
	// AuditLog makes kube-apiserver log every request (cluster.Options.AuditLog).
	AuditLog bool
	// Install installs the CRDs, the DeviceClass, the namespaces and the RBAC on the
	// started cluster in place of the manifests (cluster.Options.InstallCRDs and
	// InstallRBAC): the chart's tests install the Helm chart. Nil: the manifests.
	Install func(ctx context.Context, c *cluster.Cluster) error
}

func (o *Options) complete() error {
	if o.Dir == "" {
		return errors.New("system options: Dir is required (the run directory)")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return fmt.Errorf("system options: Dir: %w", err)
	}
	o.Dir = dir
	if o.Nodes == 0 {
		o.Nodes = 4
	}
	if o.NodeMemory == "" {
		o.NodeMemory = "16Gi"
	}
	if o.Verbosity == 0 {
		o.Verbosity = 2
	}
	switch o.Scheduler {
	case "":
		o.Scheduler = SchedulerDynamicMemory
	case SchedulerDynamicMemory, SchedulerStock, SchedulerBoth:
	default:
		return fmt.Errorf("system options: Scheduler %q: use %q, %q or %q", o.Scheduler, SchedulerDynamicMemory, SchedulerStock, SchedulerBoth)
	}
	return nil
}

// schedulerBinaries are the files in bin/ of the schedulers o runs, by component.
func (o *Options) schedulerBinaries() map[string]string {
	switch o.Scheduler {
	case SchedulerStock:
		return map[string]string{Scheduler: "stock-kube-scheduler"}
	case SchedulerBoth:
		return map[string]string{Scheduler: "kube-scheduler", StockScheduler: "stock-kube-scheduler"}
	}
	return map[string]string{Scheduler: "kube-scheduler"}
}

// bindingConditions tells whether the DRA plugins publish devices with binding
// conditions: for a stock kube-scheduler, which waits on them.
func (o *Options) bindingConditions() bool { return o.Scheduler != SchedulerDynamicMemory }

// component is how a process of the system is started (again).
type component struct {
	bin  string
	args []string
	// ready returns nil once the process serves.
	ready func(ctx context.Context) error
	// metrics is the URL of the process's Prometheus metrics.
	metrics string
}

// System is the local cluster with every component of the project running on it.
type System struct {
	Cluster *cluster.Cluster
	// Bundle holds the mTLS certificates of the memory service and its clients.
	Bundle pki.Bundle
	// Pools are the DynamicMemoryPools the system was started with.
	Pools []v1alpha1.DynamicMemoryPool

	opts           Options
	kube           kubernetes.Interface
	dm             versioned.Interface
	memserviceAddr string
	admin          *client.Client
	// metrics reads the components' /metrics with a token allowed to
	// (cluster.MetricsClient).
	metrics *http.Client

	mu         sync.Mutex
	components map[string]component
	order      []string
}

// Start starts the local cluster, writes the certificates, creates the pools and
// starts the memory service, the scheduler and each node's agent and DRA plugin,
// returning once every one of them is ready and the memory service sees every
// node's agent. On failure it stops what it started.
func Start(ctx context.Context, o Options) (_ *System, err error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	if o.Pools == nil {
		o.Pools = DefaultPools(nodeNames(o.Nodes, o.RealNodes), 0)
	}
	extra := slices.Collect(maps.Values(o.schedulerBinaries()))
	if o.RealNodes > 0 {
		extra = append(extra, "local-cluster") // its sysfs-sim serves the real nodes' host memory
	}
	bins, err := binaries(extra)
	if err != nil {
		return nil, err
	}
	p := o.Progress

	real := ""
	if o.RealNodes > 0 {
		real = fmt.Sprintf(", %d real node (kubelet, containerd)", o.RealNodes)
	}
	step := p.Step("Starting the local cluster: etcd, kube-apiserver, kube-controller-manager, kwok, %d nodes of %s%s", o.Nodes, o.NodeMemory, real)
	c, err := cluster.Start(ctx, cluster.Options{
		Dir:               o.Dir,
		Nodes:             o.Nodes,
		RealNodes:         o.RealNodes,
		NodeMemory:        o.NodeMemory,
		ControllerManager: true,
		Kwok:              true,
		InstallCRDs:       o.Install == nil,
		InstallRBAC:       o.Install == nil,
		AuditLog:          o.AuditLog,
		Detach:            o.Detach,
	})
	if err != nil {
		return nil, err
	}
	step.Done()
	s := &System{
		Cluster:    c,
		Pools:      o.Pools,
		opts:       o,
		kube:       c.Client(),
		components: map[string]component{},
	}
	defer func() {
		if err != nil {
			if stopErr := s.Stop(); stopErr != nil {
				klog.FromContext(ctx).Error(stopErr, "Stopping the partly started system")
			}
		}
	}()
	if o.Install != nil {
		step = p.Step("Installing the CRDs, DeviceClass, namespaces and RBAC")
		if err := o.Install(ctx, c); err != nil {
			return nil, err
		}
		step.Done()
	}
	if s.dm, err = versioned.NewForConfig(c.RESTConfig()); err != nil {
		return nil, fmt.Errorf("create dynamicmemory.io client: %w", err)
	}
	if s.metrics, err = c.MetricsClient(ctx); err != nil {
		return nil, err
	}
	nodes := append(c.Nodes(), c.RealNodes()...)

	step = p.Step("Writing mTLS certificates for the memory service, the scheduler and %d nodes", len(nodes))
	if s.Bundle, err = pki.WriteBundle(filepath.Join(o.Dir, "certs"), []string{"127.0.0.1", "localhost"}, nodes); err != nil {
		return nil, fmt.Errorf("write certificate bundle: %w", err)
	}
	step.Done()

	step = p.Step("Creating pools %s", describePools(o.Pools))
	for i := range o.Pools {
		if err := s.createPool(ctx, &o.Pools[i]); err != nil {
			return nil, err
		}
	}
	step.Done()

	if err := s.defineComponents(bins, nodes); err != nil {
		return nil, err
	}

	step = p.Step("Starting the memory service")
	if err := s.StartComponent(ctx, Memservice); err != nil {
		return nil, err
	}
	if s.admin, err = client.Dial(ctx, s.clientConfig("admin")); err != nil {
		return nil, fmt.Errorf("connect to the memory service as admin: %w", err)
	}
	step.Done("listening on %s", s.memserviceAddr)

	if real := c.RealNodes(); len(real) > 0 {
		step = p.Step("Serving the real node's host memory: a simulated sysfs memory-block tree over FUSE")
		var names []string
		for _, n := range real {
			names = append(names, SysfsName(n))
		}
		if err := s.startAll(ctx, names); err != nil {
			return nil, err
		}
		step.Done()
	}

	step = p.Step("Starting %d node agents and %d DRA plugins (simulated host memory)", len(nodes), len(nodes))
	var parallel []string
	for _, n := range nodes {
		parallel = append(parallel, AgentName(n), PluginName(n))
	}
	if err := s.startAll(ctx, parallel); err != nil {
		return nil, err
	}
	if err := s.WaitAgentsConnected(ctx); err != nil {
		return nil, err
	}
	step.Done()

	schedulers := []string{Scheduler}
	switch s.opts.Scheduler {
	case SchedulerStock:
		step = p.Step("Starting the stock kube-scheduler (compatibility mode: DRA binding conditions)")
	case SchedulerBoth:
		step = p.Step("Starting the scheduler (profiles default-scheduler and %s) and the stock kube-scheduler (profile %s) beside it", SchedulerName, StockProfile)
		schedulers = append(schedulers, StockScheduler)
	default:
		step = p.Step("Starting the scheduler (profiles default-scheduler and %s)", SchedulerName)
	}
	if err := s.startAll(ctx, schedulers); err != nil {
		return nil, err
	}
	step.Done()
	return s, nil
}

// binaries finds the project's binaries in the repository's bin/.
func binaries(schedulers []string) (map[string]string, error) {
	root, err := cluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	bins := map[string]string{}
	var missing []string
	for _, name := range append([]string{"memservice", "node-agent", "dra-plugin"}, schedulers...) {
		path := filepath.Join(root, "bin", name)
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			missing = append(missing, path)
			continue
		}
		bins[name] = path
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s: run 'make build' in %s", strings.Join(missing, ", "), root)
	}
	return bins, nil
}

// nodeNames are the names of the cluster's kwok nodes, then its real nodes.
func nodeNames(kwok, real int) []string {
	var names []string
	for i := range kwok {
		names = append(names, cluster.NodeName(cluster.DefaultNodePrefix, i))
	}
	for i := range real {
		names = append(names, cluster.RealNodeName(i))
	}
	return names
}

// defineComponents decides ports, files and flags of every component.
func (s *System) defineComponents(bins map[string]string, nodes []string) error {
	kubeconfig := s.Cluster.Kubeconfig()
	v := "-v=" + strconv.Itoa(s.opts.Verbosity)
	// The memory service (gRPC, metrics), each scheduler, and per node an agent and a
	// DRA plugin (metrics).
	ports, err := cluster.FreePorts(2 + len(s.opts.schedulerBinaries()) + 2*len(nodes))
	if err != nil {
		return err
	}
	next := func() string {
		p := ports[0]
		ports = ports[1:]
		return "127.0.0.1:" + strconv.Itoa(p)
	}

	s.memserviceAddr = next()
	memMetrics := next()
	// The memory service runs as its ServiceAccount and elects itself on its Lease, so
	// the API server holds it to its RBAC and fences its record writes by the Lease
	// (manifests/rbac/memservice-leader.yaml), as in a real cluster.
	memKubeconfig, err := s.Cluster.ServiceAccountKubeconfig(deploy.Namespace, deploy.MemoryServiceName)
	if err != nil {
		return err
	}
	s.components[Memservice] = component{
		bin: bins["memservice"],
		args: []string{
			"--kubeconfig=" + memKubeconfig,
			"--listen=" + s.memserviceAddr,
			"--metrics=" + memMetrics,
			"--tls-dir=" + s.Bundle.Dir,
			// The identity is the host name: an instance killed and started again
			// takes its own Lease at once, with no lease duration to wait.
			"--leader-elect=true",
			v,
		},
		ready:   cluster.HTTPReady("https://" + memMetrics + "/readyz"),
		metrics: "https://" + memMetrics + "/metrics",
	}

	for name, bin := range s.opts.schedulerBinaries() {
		schedFile := filepath.Join(s.opts.Dir, name+"-config.yaml")
		schedArgs := []string{}
		if bin == "stock-kube-scheduler" {
			profile := corev1.DefaultSchedulerName
			if s.opts.Scheduler == SchedulerBoth {
				profile = StockProfile
			}
			if err := writeStockSchedulerConfig(schedFile, kubeconfig, profile); err != nil {
				return err
			}
			schedArgs = append(schedArgs, "--feature-gates="+cluster.FeatureGates)
		} else {
			args := &pluginconfig.DynamicMemoryArgs{
				Address:  s.memserviceAddr,
				CAFile:   s.Bundle.CAFile(),
				CertFile: s.Bundle.CertFile(string(pki.RoleScheduler)),
				KeyFile:  s.Bundle.KeyFile(string(pki.RoleScheduler)),
			}
			if s.opts.ProvisionTimeout > 0 {
				args.ProvisionTimeout = &metav1.Duration{Duration: s.opts.ProvisionTimeout}
			}
			if err := schedconfig.Write(schedFile, schedconfig.Options{Kubeconfig: kubeconfig, LeaderElect: ptr.To(false), Args: args, Baseline: s.opts.Baseline}); err != nil {
				return err
			}
		}
		schedAddr := next()
		host, port, _ := net.SplitHostPort(schedAddr)
		s.components[name] = component{
			bin: bins[bin],
			args: append(schedArgs,
				"--config="+schedFile,
				"--bind-address="+host,
				"--secure-port="+port,
				"--authentication-kubeconfig="+kubeconfig,
				"--authorization-kubeconfig="+kubeconfig,
				// The apiserver has no front proxy, so there is no request-header CA to look up.
				"--authentication-skip-lookup=true",
				// The probes for anyone, like the other components'; /metrics needs
				// a token allowed to get it (MetricsClient).
				"--authorization-always-allow-paths=/healthz,/readyz,/livez",
				v,
			),
			ready:   cluster.HTTPReady("https://" + schedAddr + "/readyz"),
			metrics: "https://" + schedAddr + "/metrics",
		}
	}

	for _, n := range nodes {
		dir := s.nodeDir(n)
		// A kwok node: the plugin's directories are the node's own; nothing reads
		// them. The agent raises no cgroup.
		pluginDir, registrarDir, cdiDir := filepath.Join(dir, "plugin"), filepath.Join(dir, "registry"), filepath.Join(dir, "cdi")
		hostArgs := []string{"--host-backend=simulated", "--simulated-journal=" + s.HostJournal(n), "--manage-cgroup=false"}
		if slices.Contains(s.Cluster.RealNodes(), n) {
			// A real node: the plugin registers with the kubelet, containerd reads
			// its CDI specs, and the agent drives memory blocks through its sysfs
			// backend (on the simulated tree) and raises the kubelet's kubepods cgroup.
			real := s.Cluster.RealNode(n)
			pluginDir = filepath.Join(real.KubeletDir, "plugins", dra.DriverName)
			registrarDir = filepath.Join(real.KubeletDir, "plugins_registry")
			cdiDir = real.CDIDir
			mount := filepath.Join(real.Dir, "sysfs")
			if err := os.MkdirAll(mount, 0o755); err != nil {
				return fmt.Errorf("create the simulated sysfs mount point: %w", err)
			}
			simArgs, regionArgs := hostRegions(s.Pools, n)
			s.components[SysfsName(n)] = component{
				bin:   bins["local-cluster"],
				args:  append([]string{"sysfs-sim", "--mount=" + mount, "--block-size=" + strconv.FormatInt(hostmem.SimulatedBlockSize, 10)}, simArgs...),
				ready: fileReadable(filepath.Join(mount, "sys/devices/system/memory/block_size_bytes")),
			}
			hostArgs = append([]string{"--host-backend=sysfs", "--sysfs-root=" + mount, "--manage-cgroup=true", "--kubepods-cgroup=" + real.KubepodsCgroup()}, regionArgs...)
		}
		for _, d := range []string{dir, pluginDir, registrarDir, cdiDir} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("create node directory: %w", err)
			}
		}
		agentMember := pki.MemberName(pki.Identity{Role: pki.RoleAgent, Node: n})
		agentMetrics := next()
		s.components[AgentName(n)] = component{
			bin: bins["node-agent"],
			args: append(hostArgs,
				"--node-name="+n,
				"--kubeconfig="+kubeconfig,
				"--memservice-address="+s.memserviceAddr,
				"--memservice-ca="+s.Bundle.CAFile(),
				"--memservice-cert="+s.Bundle.CertFile(agentMember),
				"--memservice-key="+s.Bundle.KeyFile(agentMember),
				"--checkpoint-file="+s.CheckpointFile(n),
				"--metrics-address="+agentMetrics,
				"--heartbeat-interval=2s",
				v,
			),
			ready:   cluster.HTTPReady("https://" + agentMetrics + "/readyz"),
			metrics: "https://" + agentMetrics + "/metrics",
		}
		pluginMember := pki.MemberName(pki.Identity{Role: pki.RoleDRAPlugin, Node: n})
		pluginMetrics := next()
		s.components[PluginName(n)] = component{
			bin: bins["dra-plugin"],
			args: []string{
				"--node-name=" + n,
				"--kubeconfig=" + kubeconfig,
				"--memservice-address=" + s.memserviceAddr,
				"--memservice-ca=" + s.Bundle.CAFile(),
				"--memservice-cert=" + s.Bundle.CertFile(pluginMember),
				"--memservice-key=" + s.Bundle.KeyFile(pluginMember),
				"--cdi-dir=" + cdiDir,
				"--plugin-data-dir=" + pluginDir,
				"--registrar-dir=" + registrarDir,
				"--metrics-address=" + pluginMetrics,
				// The stock scheduler waits on the devices' binding conditions for
				// the memory to be online.
				"--binding-conditions=" + strconv.FormatBool(s.opts.bindingConditions()),
				v,
			},
			ready:   s.pluginReady(n, "https://"+pluginMetrics+"/readyz"),
			metrics: "https://" + pluginMetrics + "/metrics",
		}
	}
	return nil
}

// hostRegions lays out a real node's simulated host memory: one CXL region per pool
// attached to the node, in the pools' order, each as large as its pool's device,
// from 1Ti up, on NUMA nodes 1, 2, ... It returns the sysfs-sim flags and the
// agent's --region flags.
func hostRegions(pools []v1alpha1.DynamicMemoryPool, node string) (sim, agent []string) {
	start := int64(1) << 40
	k := 0
	for _, p := range pools {
		if !slices.ContainsFunc(p.Spec.Nodes, func(pn v1alpha1.PoolNode) bool { return pn.Name == node }) {
			continue
		}
		name := fmt.Sprintf("region%d", k)
		size := p.Spec.Capacity.Value()
		sim = append(sim, fmt.Sprintf("--region=%s=%#x:%#x:%d", name, start, size, k+1))
		agent = append(agent, "--region="+p.Name+"="+name)
		start += size
		k++
	}
	return sim, agent
}

// fileReadable is ready once file can be read.
func fileReadable(file string) func(context.Context) error {
	return func(context.Context) error {
		_, err := os.ReadFile(file)
		return err
	}
}

func (s *System) clientConfig(member string) client.Config {
	return client.Config{
		Address:  s.memserviceAddr,
		CAFile:   s.Bundle.CAFile(),
		CertFile: s.Bundle.CertFile(member),
		KeyFile:  s.Bundle.KeyFile(member),
	}
}

// writeStockSchedulerConfig writes the configuration of a stock kube-scheduler: one
// profile of the stock plugins named profile, the given kubeconfig, no leader
// election, and the client limits of this project's scheduler (scheduler-config.yaml),
// so that the two compare.
func writeStockSchedulerConfig(file, kubeconfig, profile string) error {
	var shipped schedv1.KubeSchedulerConfiguration
	if err := yaml.Unmarshal(schedconfig.YAML, &shipped); err != nil {
		return fmt.Errorf("parse the shipped scheduler configuration: %w", err)
	}
	cfg := schedv1.KubeSchedulerConfiguration{
		TypeMeta:         metav1.TypeMeta{APIVersion: schedv1.SchemeGroupVersion.String(), Kind: "KubeSchedulerConfiguration"},
		ClientConnection: shipped.ClientConnection,
		LeaderElection:   componentbaseconfigv1alpha1.LeaderElectionConfiguration{LeaderElect: ptr.To(false)},
		Profiles:         []schedv1.KubeSchedulerProfile{{SchedulerName: ptr.To(profile)}},
	}
	cfg.ClientConnection.Kubeconfig = kubeconfig
	data, err := yaml.Marshal(&cfg)
	if err != nil {
		return fmt.Errorf("encode the stock scheduler's configuration: %w", err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return fmt.Errorf("write the stock scheduler's configuration: %w", err)
	}
	return nil
}

// PodSchedulerName is the schedulerName of the workloads' pods that name none: this
// project's profile, or default-scheduler with the stock scheduler.
func (s *System) PodSchedulerName() string {
	if s.opts.Scheduler == SchedulerStock {
		return corev1.DefaultSchedulerName
	}
	return SchedulerName
}

// MemserviceAddress is host:port of the memory service's gRPC endpoint.
func (s *System) MemserviceAddress() string { return s.memserviceAddr }

// Admin is a memory service client with the admin role (read-only).
func (s *System) Admin() *client.Client { return s.admin }

// Kube is an admin clientset of the cluster.
func (s *System) Kube() kubernetes.Interface { return s.kube }

// DynamicMemory is an admin client of the cluster's dynamicmemory.io resources.
func (s *System) DynamicMemory() versioned.Interface { return s.dm }

// StartComponent starts the named component (again) and waits until it is ready.
func (s *System) StartComponent(ctx context.Context, name string) error {
	s.mu.Lock()
	comp, ok := s.components[name]
	if ok && !slices.Contains(s.order, name) {
		s.order = append(s.order, name)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("no component named %q", name)
	}
	proc, err := s.Cluster.StartProcess(ctx, name, comp.bin, comp.args...)
	if err != nil {
		return err
	}
	return proc.WaitReady(ctx, readyTimeout, comp.ready)
}

// startAll starts the named components at once and waits until each is ready.
func (s *System) startAll(ctx context.Context, names []string) error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { errs[i] = s.StartComponent(ctx, name) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Kill kills the named component with SIGKILL (a crash: nothing is cleaned up).
func (s *System) Kill(name string) error {
	p := s.Cluster.Process(name)
	if p == nil {
		return fmt.Errorf("no process named %q", name)
	}
	return p.Kill()
}

// Terminate stops the named component with SIGTERM (a graceful stop; SIGKILL only if
// it does not exit within the grace period).
func (s *System) Terminate(name string) error {
	p := s.Cluster.Process(name)
	if p == nil {
		return fmt.Errorf("no process named %q", name)
	}
	return p.Stop()
}

// Running tells whether the named component's process is running.
func (s *System) Running(name string) bool {
	p := s.Cluster.Process(name)
	return p != nil && p.Running()
}

// Components are the names of the project's components, in the order they started.
func (s *System) Components() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

// CheckpointFile is the node agent checkpoint of node.
func (s *System) CheckpointFile(node string) string {
	return filepath.Join(s.nodeDir(node), "node-agent.json")
}

// HostJournal is the file where node's simulated host records every memory block it
// onlines and offlines (hostmem.ReadJournal reads it). It outlives the node agent, as
// a real host's memory does.
func (s *System) HostJournal(node string) string {
	return filepath.Join(s.nodeDir(node), "host-journal.jsonl")
}

func (s *System) nodeDir(node string) string { return filepath.Join(s.opts.Dir, "nodes", node) }

// Restart kills the named component and starts it again.
func (s *System) Restart(ctx context.Context, name string) error {
	if err := s.Kill(name); err != nil {
		return err
	}
	return s.StartComponent(ctx, name)
}

// Metrics returns the Prometheus metrics of the named component, as text.
func (s *System) Metrics(ctx context.Context, name string) (string, error) {
	s.mu.Lock()
	comp, ok := s.components[name]
	s.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("no component named %q", name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, comp.metrics, nil)
	if err != nil {
		return "", err
	}
	resp, err := s.metrics.Do(req)
	if err != nil {
		return "", fmt.Errorf("get metrics of %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("get metrics of %s: %w", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("get metrics of %s: %s: %s", name, resp.Status, body)
	}
	return string(body), nil
}

// CheckComponents returns an error, with the log's tail, for every component that
// has exited.
func (s *System) CheckComponents() error {
	s.mu.Lock()
	names := slices.Clone(s.order)
	s.mu.Unlock()
	var errs []error
	for _, name := range names {
		if p := s.Cluster.Process(name); p != nil && !p.Running() {
			errs = append(errs, fmt.Errorf("%s has exited; see %s:\n%s", name, p.LogFile, p.LogTail(20)))
		}
	}
	return errors.Join(errs...)
}

// Stop stops every process, the project's components first, then the cluster.
func (s *System) Stop() error {
	if s.admin != nil {
		_ = s.admin.Close()
	}
	return s.Cluster.Stop()
}

// WaitAgentsConnected waits until the memory service reports every pool ready and
// every node's agent connected.
func (s *System) WaitAgentsConnected(ctx context.Context) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
		if err := s.CheckComponents(); err != nil {
			return false, err
		}
		resp, err := s.admin.GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = ""
		for _, want := range s.Pools {
			pool := findPool(resp.GetPools(), want.Name)
			switch {
			case pool == nil:
				last = "pool " + want.Name + " unknown to the memory service"
			case !pool.GetReady():
				last = "pool " + want.Name + " not ready"
			default:
				for _, n := range pool.GetNodes() {
					if !n.GetAgentConnected() {
						last = fmt.Sprintf("agent of node %s not connected (pool %s)", n.GetNode(), want.Name)
					}
				}
			}
		}
		return last == "", nil
	})
	if err != nil {
		return fmt.Errorf("wait for the memory service to see every pool and agent (%s): %w", last, err)
	}
	return nil
}

func findPool(pools []*memservicev1.PoolStatus, name string) *memservicev1.PoolStatus {
	for _, p := range pools {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

// pluginReady is ready once node's ResourceSlice is published and, on a real node,
// the kubelet has registered the plugin (its /readyz): a kwok node has no kubelet.
func (s *System) pluginReady(node, readyz string) func(context.Context) error {
	published := s.slicePublished(node)
	registered := cluster.HTTPReady(readyz)
	real := slices.Contains(s.Cluster.RealNodes(), node)
	return func(ctx context.Context) error {
		if err := published(ctx); err != nil || !real {
			return err
		}
		return registered(ctx)
	}
}

// slicePublished is ready once node's ResourceSlice of our driver lists a device for
// every pool the node is attached to.
func (s *System) slicePublished(node string) func(context.Context) error {
	return func(ctx context.Context) error {
		published, err := s.kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
			FieldSelector: "spec.nodeName=" + node + ",spec.driver=" + dra.DriverName,
		})
		if err != nil {
			return err
		}
		var have []string
		for _, sl := range published.Items {
			for _, d := range sl.Spec.Devices {
				have = append(have, d.Name)
			}
		}
		// What the node's pools give it now: a pool with less than a block left for
		// the node has no device on it.
		pools, err := s.dm.DynamicMemoryV1alpha1().DynamicMemoryPools().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		devices, _ := driver.Devices(pools.Items, node, s.opts.bindingConditions(), nil)
		want := make([]string, 0, len(devices))
		for _, d := range devices {
			want = append(want, d.Name)
		}
		slices.Sort(have)
		slices.Sort(want)
		if !slices.Equal(have, want) {
			return fmt.Errorf("ResourceSlice of node %s has devices %v, its pools give it %v", node, have, want)
		}
		return nil
	}
}
