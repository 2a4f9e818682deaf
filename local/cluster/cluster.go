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

// Package cluster runs a local Kubernetes control plane for the demo and the tests:
// etcd, kube-apiserver, kube-controller-manager and kwok (which plays the kubelets),
// all on 127.0.0.1 with generated certificates, from binaries built into bin/ by
// `make cluster-bins`. No container engine is needed.
//
// Everything lives in one run directory: certificates (pki/), kubeconfigs, etcd data,
// component logs (logs/<name>.log) and pid files (pids/<name>.pid), so that a cluster
// started detached by one program can be found (Attach) and stopped by another.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Options configure Start.
type Options struct {
	// Dir is the run directory: certificates, kubeconfig, etcd data, logs/<name>.log,
	// pids/<name>.pid. Required.
	Dir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and kwok.
	// Default: <repository root>/bin.
	BinDir string
	// ManifestsDir holds crds/, deviceclass/, namespace/ and rbac/. Default:
	// <repository root>/manifests.
	ManifestsDir string

	// Nodes is how many kwok nodes to create, named NodeName(i).
	Nodes int
	// NodePrefix prefixes node names. Default "dm-node-".
	NodePrefix string
	// NodeMemory is each node's memory capacity and allocatable. Default "16Gi".
	NodeMemory string
	// NodeCPU is each node's CPU capacity and allocatable. Default "8".
	NodeCPU string

	// ControllerManager starts kube-controller-manager (service accounts, the
	// resourceclaim controller, garbage collection, node lifecycle...).
	ControllerManager bool
	// Kwok starts kwok: nodes become Ready, bound pods Running, deleted pods go away.
	Kwok bool
	// RealNodes is how many nodes run a real kubelet and containerd (0 or 1), named
	// RealNodeName(i). It needs root, cgroup v1 and `make node-bins`; see RealNode.
	RealNodes int
	// APIServerPort is the apiserver's port on 127.0.0.1; 0 picks a free one.
	APIServerPort int
	// InstallCRDs applies manifests/crds and manifests/deviceclass.
	InstallCRDs bool
	// InstallRBAC applies manifests/namespace and manifests/rbac: the installation's
	// namespace, RBAC and admission policies, which hold a component that runs with
	// ServiceAccountKubeconfig as they hold its pod in a real cluster.
	InstallRBAC bool
	// AuditLog makes kube-apiserver write every request (metadata only) as a JSON
	// line to AuditLogPath: who asked what, for the benchmarks' request counts.
	AuditLog bool
	// Detach lets the processes outlive the caller (own session), for the CLI.
	Detach bool
}

// DefaultNodePrefix prefixes the names of the cluster's kwok nodes.
const DefaultNodePrefix = "dm-node-"

// KwokNodeAnnotation marks the nodes kwok manages.
const KwokNodeAnnotation = "kwok.x-k8s.io/node"

// FeatureGates are set on kube-apiserver, kube-controller-manager and a stock
// kube-scheduler. They are on by default in 1.37; set explicitly because the design
// depends on them.
const FeatureGates = "DRAConsumableCapacity=true,DRADeviceBindingConditions=true"

// ErrAlreadyRunning is returned by Start when the run directory has a live cluster.
var ErrAlreadyRunning = errors.New("local cluster already running")

// ErrNotRunning is returned by Attach when the run directory has no live cluster.
var ErrNotRunning = errors.New("local cluster not running")

// readyTimeout bounds each component's start; the machine may be busy compiling.
const readyTimeout = 3 * time.Minute

// Component names, also the names of their log and pid files.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	Kwok                  = "kwok"
)

// state is what a later Attach needs to know, saved as Dir/cluster.json.
type state struct {
	Server     string   `json:"server"`
	EtcdURL    string   `json:"etcdURL"`
	BinDir     string   `json:"binDir"`
	NodePrefix string   `json:"nodePrefix"`
	NodeMemory string   `json:"nodeMemory"`
	NodeCPU    string   `json:"nodeCPU"`
	Nodes      []string `json:"nodes"`
	RealNodes  []string `json:"realNodes,omitempty"`
	Kwok       bool     `json:"kwok"`
	Detach     bool     `json:"detach"`
}

// Cluster is a running local cluster.
type Cluster struct {
	dir   string
	state state

	restConfig *rest.Config
	client     kubernetes.Interface

	mu    sync.Mutex
	procs []*Process // in start order
}

// NodeName is the name of the i-th node (from 0) with the given prefix
// (DefaultNodePrefix unless Options.NodePrefix says otherwise).
func NodeName(prefix string, i int) string { return fmt.Sprintf("%s%d", prefix, i) }

// NodeName is the name of the cluster's i-th node (from 0).
func (c *Cluster) NodeName(i int) string { return NodeName(c.state.NodePrefix, i) }

func (o *Options) complete() error {
	if o.Dir == "" {
		return errors.New("options: Dir is required (the run directory)")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return fmt.Errorf("options: Dir: %w", err)
	}
	o.Dir = dir
	if o.BinDir == "" || o.ManifestsDir == "" {
		root, err := RepoRoot()
		if err != nil {
			return err
		}
		if o.BinDir == "" {
			o.BinDir = filepath.Join(root, "bin")
		}
		if o.ManifestsDir == "" {
			o.ManifestsDir = filepath.Join(root, "manifests")
		}
	}
	if o.NodePrefix == "" {
		o.NodePrefix = DefaultNodePrefix
	}
	if o.NodeMemory == "" {
		o.NodeMemory = "16Gi"
	}
	if o.NodeCPU == "" {
		o.NodeCPU = "8"
	}
	if o.Nodes < 0 {
		return fmt.Errorf("options: Nodes must not be negative, got %d", o.Nodes)
	}
	if o.Nodes > 0 && !o.Kwok {
		return errors.New("options: Nodes needs Kwok: without kwok no node would become Ready")
	}
	if o.RealNodes < 0 || o.RealNodes > 1 {
		return fmt.Errorf("options: RealNodes must be 0 or 1, got %d: two kubelets on one machine would share its ports, cgroups and network namespaces", o.RealNodes)
	}
	if o.RealNodes > 0 && !o.ControllerManager {
		return errors.New("options: RealNodes needs ControllerManager: the kubelet waits for its service accounts and claims")
	}
	if o.APIServerPort < 0 || o.APIServerPort > 65535 {
		return fmt.Errorf("options: APIServerPort must be 0 (any free port) or 1-65535, got %d", o.APIServerPort)
	}
	return nil
}

// Paths inside the run directory.
func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}
func (c *Cluster) pki() pkiFiles { return pkiFiles{dir: c.path("pki")} }

// Start starts a local cluster in o.Dir and returns when every component is ready
// (and the nodes are Ready). On failure it stops what it started and the error
// includes the tail of the failing component's log.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	logger := klog.FromContext(ctx)
	if err := o.complete(); err != nil {
		return nil, err
	}
	binaries := []string{Etcd, KubeAPIServer}
	if o.ControllerManager {
		binaries = append(binaries, KubeControllerManager)
	}
	if o.Kwok {
		binaries = append(binaries, Kwok)
	}
	if o.RealNodes > 0 {
		if err := checkRealNodeHost(o.BinDir); err != nil {
			return nil, err
		}
	}
	bins := map[string]string{}
	for _, name := range binaries {
		path, err := requireBinary(o.BinDir, name)
		if err != nil {
			return nil, err
		}
		bins[name] = path
	}

	switch running, err := Attach(o.Dir); {
	case err == nil:
		return nil, fmt.Errorf("%w in %s (apiserver %s): stop it first with 'local-cluster down --dir %s'", ErrAlreadyRunning, o.Dir, running.state.Server, o.Dir)
	case running != nil:
		// The apiserver died but other processes remain: end them before starting anew.
		if err := running.Stop(); err != nil {
			return nil, fmt.Errorf("stop the remains of an earlier cluster in %s: %w", o.Dir, err)
		}
	}
	if err := cleanRunDir(o.Dir); err != nil {
		return nil, err
	}

	apiPort, etcdClientPort, etcdPeerPort, kcmPort, err := clusterPorts(o.APIServerPort)
	if err != nil {
		return nil, err
	}

	c := &Cluster{
		dir: o.Dir,
		state: state{
			Server:     "https://127.0.0.1:" + strconv.Itoa(apiPort),
			EtcdURL:    "http://127.0.0.1:" + strconv.Itoa(etcdClientPort),
			BinDir:     o.BinDir,
			NodePrefix: o.NodePrefix,
			NodeMemory: o.NodeMemory,
			NodeCPU:    o.NodeCPU,
			Kwok:       o.Kwok,
			Detach:     o.Detach,
		},
	}
	ok := false
	defer func() {
		if !ok {
			if err := c.Stop(); err != nil {
				logger.Error(err, "Stopping the partly started local cluster")
			}
		}
	}()

	if err := writePKI(c.pki()); err != nil {
		return nil, err
	}
	for _, id := range []string{"admin", KubeControllerManager, Kwok} {
		if err := writeKubeconfig(c.kubeconfigFor(id), c.state.Server, c.pki(), id); err != nil {
			return nil, err
		}
	}
	if err := c.saveState(); err != nil {
		return nil, err
	}
	if err := c.loadClient(); err != nil {
		return nil, err
	}

	if err := c.startEtcd(ctx, bins[Etcd], etcdPeerPort); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, bins[KubeAPIServer], apiPort, o.AuditLog); err != nil {
		return nil, err
	}
	if o.InstallCRDs {
		if err := c.applyManifests(ctx, filepath.Join(o.ManifestsDir, "crds"), filepath.Join(o.ManifestsDir, "deviceclass")); err != nil {
			return nil, err
		}
	}
	if o.InstallRBAC {
		if err := c.applyManifests(ctx, filepath.Join(o.ManifestsDir, "namespace"), filepath.Join(o.ManifestsDir, "rbac")); err != nil {
			return nil, err
		}
	}
	if o.ControllerManager {
		if err := c.startControllerManager(ctx, bins[KubeControllerManager], kcmPort); err != nil {
			return nil, err
		}
	}
	if o.Kwok {
		if err := c.startKwok(ctx, bins[Kwok]); err != nil {
			return nil, err
		}
		names := make([]string, o.Nodes)
		for i := range names {
			names[i] = NodeName(o.NodePrefix, i)
		}
		if err := c.CreateNodes(ctx, names, o.NodeMemory); err != nil {
			return nil, err
		}
	}
	for i := range o.RealNodes {
		if err := c.startRealNode(ctx, RealNodeName(i)); err != nil {
			return nil, err
		}
	}
	ok = true
	logger.Info("Local cluster ready", "dir", c.dir, "server", c.state.Server, "nodes", len(c.state.Nodes))
	return c, nil
}

// Attach finds the cluster running in dir (started detached by another program).
func Attach(dir string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	data, err := os.ReadFile(c.path("cluster.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s", ErrNotRunning, dir)
		}
		return nil, err
	}
	if err := json.Unmarshal(data, &c.state); err != nil {
		return nil, fmt.Errorf("read %s: %w", c.path("cluster.json"), err)
	}
	procs, err := loadProcesses(c.path("pids"), c.path("logs"))
	if err != nil {
		return nil, err
	}
	c.procs = procs
	if !slices.ContainsFunc(procs, func(p *Process) bool { return p.Name == KubeAPIServer }) {
		if len(procs) > 0 {
			// Keep what is left findable, so that Stop can end it.
			return c, fmt.Errorf("%w in %s: kube-apiserver is gone but %d other processes remain; run 'local-cluster down --dir %s'", ErrNotRunning, dir, len(procs), dir)
		}
		return nil, fmt.Errorf("%w in %s", ErrNotRunning, dir)
	}
	if err := c.loadClient(); err != nil {
		return nil, err
	}
	return c, nil
}

func loadProcesses(pidDir, logDir string) ([]*Process, error) {
	files, err := filepath.Glob(filepath.Join(pidDir, "*.pid"))
	if err != nil {
		return nil, err
	}
	var procs []*Process
	for _, f := range files {
		p, err := loadProcess(f, logDir)
		if err != nil {
			return nil, err
		}
		if p == nil {
			_ = os.Remove(f) // stale
			continue
		}
		procs = append(procs, p)
	}
	slices.SortFunc(procs, func(a, b *Process) int { return a.record.Started.Compare(b.record.Started) })
	return procs, nil
}

// cleanRunDir removes what an earlier cluster left in dir (only the entries this
// package creates: dir may be shared with other files).
func cleanRunDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	// A real node of a cluster that died without Stop may have left containers,
	// mounts and cgroups.
	if err := CleanRealNodes(dir); err != nil {
		return fmt.Errorf("clean run directory: %w", err)
	}
	kubeletConfigs, _ := filepath.Glob(filepath.Join(dir, "kubeconfig-kubelet-*"))
	for _, name := range append([]string{"real-nodes"}, kubeletConfigs...) {
		if err := os.RemoveAll(filepath.Join(dir, filepath.Base(name))); err != nil {
			return fmt.Errorf("clean run directory: %w", err)
		}
	}
	for _, name := range []string{"etcd", "pki", "pids", "kcm", "cluster.json", "kwok.yaml", "kubeconfig", "kubeconfig-kube-controller-manager", "kubeconfig-kwok"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("clean run directory: %w", err)
		}
	}
	// The previous run's logs are kept, in logs-previous/.
	logs := filepath.Join(dir, "logs")
	if _, err := os.Stat(logs); err == nil {
		prev := filepath.Join(dir, "logs-previous")
		_ = os.RemoveAll(prev)
		if err := os.Rename(logs, prev); err != nil {
			return fmt.Errorf("clean run directory: %w", err)
		}
	}
	return nil
}

func (c *Cluster) kubeconfigFor(id string) string {
	if id == "admin" {
		return c.path("kubeconfig")
	}
	return c.path("kubeconfig-" + id)
}

func (c *Cluster) saveState() error {
	data, err := json.MarshalIndent(c.state, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.path("cluster.json"), data, 0o644); err != nil {
		return fmt.Errorf("save cluster state: %w", err)
	}
	return nil
}

func (c *Cluster) loadClient() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", c.Kubeconfig(), err)
	}
	cfg.QPS = 200
	cfg.Burst = 400
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	c.restConfig = cfg
	c.client = client
	return nil
}

// Kubeconfig is the admin kubeconfig (system:masters) of the cluster.
func (c *Cluster) Kubeconfig() string { return c.kubeconfigFor("admin") }

// RESTConfig is a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client is an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Dir is the run directory.
func (c *Cluster) Dir() string { return c.dir }

// AuditLogPath is where kube-apiserver writes its audit log (Options.AuditLog).
func (c *Cluster) AuditLogPath() string { return c.path("logs", "audit.log") }

// Server is the apiserver URL.
func (c *Cluster) Server() string { return c.state.Server }

// BinDir is where the cluster found its binaries (the repository's bin/).
func (c *Cluster) BinDir() string { return c.state.BinDir }

// Nodes are the names of the kwok nodes the cluster created.
func (c *Cluster) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.state.Nodes)
}

// Processes are the processes the cluster knows of, in start order.
func (c *Cluster) Processes() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.procs)
}

// Process returns the process of that name, or nil.
func (c *Cluster) Process(name string) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// StartProcess starts bin with args as a component of the cluster: output goes to
// Dir/logs/<name>.log, a pid file to Dir/pids/<name>.pid, and Stop ends it. The
// process is detached when the cluster was started with Detach. A name that is still
// running is an error; one that has exited is replaced (its log is appended to).
func (c *Cluster) StartProcess(ctx context.Context, name string, bin string, args ...string) (*Process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := slices.IndexFunc(c.procs, func(p *Process) bool { return p.Name == name })
	if idx >= 0 && c.procs[idx].Running() {
		return nil, fmt.Errorf("start %s: a process of that name is already running (pid %d)", name, c.procs[idx].Pid)
	}
	p, err := startProcess(processSpec{
		name:   name,
		bin:    bin,
		args:   args,
		logDir: c.path("logs"),
		pidDir: c.path("pids"),
		detach: c.state.Detach,
	})
	if err != nil {
		return nil, err
	}
	if idx >= 0 {
		c.procs = slices.Delete(c.procs, idx, idx+1)
	}
	c.procs = append(c.procs, p)
	klog.FromContext(ctx).V(2).Info("Started process", "name", name, "pid", p.Pid, "log", p.LogFile)
	return p, nil
}

// Stop stops every process of the cluster, newest first, and waits until they have
// exited. A real node's pods are removed once its kubelet has stopped and before its
// containerd stops; then what the node left (mounts, cgroups) is removed. The run
// directory (logs, data) stays for inspection.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	realNodes := slices.Clone(c.state.RealNodes)
	c.mu.Unlock()
	var errs []error
	for _, p := range slices.Backward(procs) {
		for _, n := range realNodes {
			if p.Name == ContainerdName(n) && p.Running() {
				if err := c.drainRealNode(context.Background(), n); err != nil {
					errs = append(errs, fmt.Errorf("remove the pods of real node %s: %w", n, err))
				}
			}
		}
		if err := p.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range realNodes {
		if err := cleanRealNode(n); err != nil {
			errs = append(errs, fmt.Errorf("clean up real node %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
