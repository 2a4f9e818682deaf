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

package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	pkiapi "github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/local/nodeimage"
)

// A real node is run by a real kubelet (built from the pinned k8s.io/kubernetes) with
// containerd, runc and the CNI bridge plugin (built from their pinned Go modules by
// `make node-bins`), beside the kwok nodes. It needs root: the kubelet and runc
// create cgroups, mounts and network namespaces.

// Images on the real node, imported from archives the cluster writes at start
// (nodeimage): no registry is reachable.
const (
	// PauseImage is the pod sandbox image.
	PauseImage = "localhost/dynamic-memory/pause:local"
	// ProbeImage runs memory-probe, which prints what a container sees of its
	// dynamic memory and waits until it is stopped.
	ProbeImage = "localhost/dynamic-memory/memory-probe:local"
)

// RealNodeLabel marks the real nodes (value "true"); kwok nodes have type=kwok.
const RealNodeLabel = "dynamicmemory.io/real-node"

// realNodeBinaries are the files in the bin directory a real node needs.
var realNodeBinaries = []string{
	"kubelet", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "crictl",
	"cni/bridge", "cni/host-local", "cni/loopback", "pause", "memory-probe",
}

// cgroupV1Controllers are the cgroup v1 hierarchies the kubelet and runc use; the
// kubelet's cgroup root is created in each that is mounted.
var cgroupV1Controllers = []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb", "systemd"}

// cgroupFS is where the cgroup hierarchies are mounted.
const cgroupFS = "/sys/fs/cgroup"

// RealNodeName is the name of the i-th real node (from 0).
func RealNodeName(i int) string { return fmt.Sprintf("dm-real-%d", i) }

// KubeletName and ContainerdName are the process names of a real node's kubelet and
// container runtime.
func KubeletName(node string) string    { return "kubelet-" + node }
func ContainerdName(node string) string { return "containerd-" + node }

// RealNode holds the places of a real node that the components on it are given.
type RealNode struct {
	Name string
	// Dir holds everything of the node: containerd's root and state, the kubelet's
	// root directory, CDI specs, pod logs.
	Dir string
	// KubeletDir is the kubelet's --root-dir: DRA plugins register in
	// plugins_registry/ and keep their sockets in plugins/<driver>/.
	KubeletDir string
	// CDIDir is where containerd reads CDI specs.
	CDIDir string
	// PodLogsDir is where the kubelet keeps container logs.
	PodLogsDir string
	// CgroupRoot is the kubelet's cgroup root; its pods are under
	// CgroupRoot/kubepods.
	CgroupRoot string
	// ContainerdSocket is containerd's gRPC socket (CRI included).
	ContainerdSocket string
}

// KubepodsCgroup is the kubelet's pod cgroup relative to the hierarchy's root.
func (n RealNode) KubepodsCgroup() string { return strings.TrimPrefix(n.CgroupRoot, "/") + "/kubepods" }

// RealNode returns the places of the named real node.
func (c *Cluster) RealNode(name string) RealNode {
	dir := c.path("real-nodes", name)
	return RealNode{
		Name:             name,
		Dir:              dir,
		KubeletDir:       filepath.Join(dir, "kubelet"),
		CDIDir:           filepath.Join(dir, "cdi"),
		PodLogsDir:       filepath.Join(dir, "pod-logs"),
		CgroupRoot:       "/" + name,
		ContainerdSocket: filepath.Join(dir, "containerd.sock"),
	}
}

// RealNodes are the names of the cluster's real nodes.
func (c *Cluster) RealNodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.state.RealNodes)
}

// checkRealNodeHost says what this host lacks to run a real node, with the fix.
func checkRealNodeHost(binDir string) error {
	if os.Geteuid() != 0 {
		return errors.New("a real node needs root: the kubelet and runc create cgroups, mounts and network namespaces")
	}
	if _, err := os.Stat(filepath.Join(cgroupFS, "memory", "memory.limit_in_bytes")); err != nil {
		return fmt.Errorf("a real node needs the cgroup v1 memory controller at %s/memory (the kubelet is configured for cgroup v1 here): %w", cgroupFS, err)
	}
	var missing []string
	for _, name := range realNodeBinaries {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("a real node needs %s in %s: run 'make node-bins'", strings.Join(missing, ", "), binDir)
	}
	return nil
}

// startRealNode starts containerd and a kubelet for the node, imports the images and
// waits until the node is Ready.
func (c *Cluster) startRealNode(ctx context.Context, name string) error {
	n := c.RealNode(name)
	for _, d := range []string{n.Dir, n.KubeletDir, n.CDIDir, n.PodLogsDir, filepath.Join(n.Dir, "cni")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("real node %s: %w", name, err)
		}
	}
	// What a real node of this name left, in this run directory or another.
	if err := cleanRealNode(name); err != nil {
		return fmt.Errorf("real node %s: clean up what an earlier one left: %w", name, err)
	}
	if err := createCgroupRoot(n.CgroupRoot); err != nil {
		return fmt.Errorf("real node %s: %w", name, err)
	}
	c.mu.Lock()
	c.state.RealNodes = append(c.state.RealNodes, name)
	err := c.saveState()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.startContainerd(ctx, n); err != nil {
		return err
	}
	if err := c.importImages(ctx, n); err != nil {
		return err
	}
	return c.startKubelet(ctx, n)
}

// createCgroupRoot creates the kubelet's cgroup root in every mounted v1 hierarchy;
// a new cpuset cgroup gets its parent's CPUs and memory nodes, without which no
// process could join it.
func createCgroupRoot(root string) error {
	for _, ctrl := range cgroupV1Controllers {
		parent := filepath.Join(cgroupFS, ctrl)
		if _, err := os.Stat(parent); err != nil {
			continue
		}
		dir := filepath.Join(parent, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if ctrl != "cpuset" {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				return fmt.Errorf("read %s: %w", filepath.Join(parent, f), err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), bytes.TrimSpace(v), 0); err != nil {
				return fmt.Errorf("set %s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	return nil
}

// containerdConfig is containerd's configuration (version 3, containerd 2.x): every
// path inside the node's directory, the CRI plugin with CDI from the node's CDI
// directory, runc through its shim, the pause image pinned, and the CNI bridge.
const containerdConfig = `version = 4
root = %[1]q
state = %[2]q

[plugins.'io.containerd.server.v1.grpc']
  address = %[3]q

[plugins.'io.containerd.server.v1.ttrpc']
  address = %[10]q

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.runtime']
  cdi_spec_dirs = [%[4]q]
  # No container asks for an OOM score below containerd's own: lowering one needs
  # CAP_SYS_RESOURCE, which some sandboxes (this project's CI machines) withhold.
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
  runtime_path = %[5]q

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = %[6]q
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [%[7]q]
  conf_dir = %[8]q

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = %[9]q
`

// cniBridge is the Linux bridge of the real node's pod network (at most 15
// characters: RealNodeName's are short).
func cniBridge(node string) string { return "cni-" + node }

// cniConfig is the node's pod network: a bridge with host-local addresses.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "dynamic-memory-local",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": true,
    "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]], "dataDir": %q}
  }]
}
`

func (c *Cluster) startContainerd(ctx context.Context, n RealNode) error {
	bin := c.state.BinDir
	cfg := fmt.Sprintf(containerdConfig,
		filepath.Join(n.Dir, "containerd", "root"), filepath.Join(n.Dir, "containerd", "state"), n.ContainerdSocket,
		n.CDIDir, filepath.Join(bin, "containerd-shim-runc-v2"), filepath.Join(bin, "runc"),
		filepath.Join(bin, "cni"), filepath.Join(n.Dir, "cni"), PauseImage, n.ContainerdSocket+".ttrpc")
	cfgFile := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write containerd configuration: %w", err)
	}
	cni := fmt.Sprintf(cniConfig, cniBridge(n.Name), filepath.Join(n.Dir, "cni-ipam"))
	if err := os.WriteFile(filepath.Join(n.Dir, "cni", "10-dynamic-memory.conflist"), []byte(cni), 0o644); err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	p, err := c.StartProcess(ctx, ContainerdName(n.Name), filepath.Join(bin, "containerd"), "--config="+cfgFile, "--log-level=warn")
	if err != nil {
		return err
	}
	return p.WaitReady(ctx, readyTimeout, func(ctx context.Context) error {
		_, err := c.ctr(ctx, n, "version")
		return err
	})
}

// ctr runs containerd's client against the node's containerd, in the CRI namespace.
func (c *Cluster) ctr(ctx context.Context, n RealNode, args ...string) ([]byte, error) {
	return run(ctx, filepath.Join(c.state.BinDir, "ctr"), append([]string{"--address=" + n.ContainerdSocket, "--namespace=k8s.io"}, args...)...)
}

// crictl runs the CRI client against the node's containerd.
func (c *Cluster) crictl(ctx context.Context, n RealNode, args ...string) ([]byte, error) {
	return run(ctx, filepath.Join(c.state.BinDir, "crictl"), append([]string{"--runtime-endpoint=unix://" + n.ContainerdSocket, "--timeout=30s"}, args...)...)
}

func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// importImages writes the pause and memory-probe images as archives and imports them.
func (c *Cluster) importImages(ctx context.Context, n RealNode) error {
	for _, img := range []nodeimage.Image{
		{Name: PauseImage, Binary: filepath.Join(c.state.BinDir, "pause")},
		{Name: ProbeImage, Binary: filepath.Join(c.state.BinDir, "memory-probe")},
	} {
		file := filepath.Join(n.Dir, filepath.Base(img.Binary)+".oci.tar")
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		err = nodeimage.WriteArchive(f, img)
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			return err
		}
		if _, err := c.ctr(ctx, n, "images", "import", file); err != nil {
			return fmt.Errorf("real node %s: import image %s: %w", n.Name, img.Name, err)
		}
	}
	return nil
}

// startKubelet starts the node's kubelet and waits until the node is Ready.
func (c *Cluster) startKubelet(ctx context.Context, n RealNode) error {
	ports, err := FreePorts(2)
	if err != nil {
		return err
	}
	ip, err := hostIP()
	if err != nil {
		return fmt.Errorf("real node %s: %w", n.Name, err)
	}
	pki := c.pki()
	identity := "kubelet-" + n.Name
	ca, err := pkiapi.LoadCA(pki.caCert(), pki.caKey())
	if err != nil {
		return fmt.Errorf("real node %s: %w", n.Name, err)
	}
	// As a kubelet's bootstrap would give it: its own identity in system:nodes, so the
	// Node authorizer and NodeRestriction hold it to its node.
	user, err := ca.IssueUser("system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	if err := user.WriteFiles(pki.dir, identity); err != nil {
		return fmt.Errorf("write %s certificate: %w", identity, err)
	}
	kubeconfig := c.kubeconfigFor(identity)
	if err := writeKubeconfig(kubeconfig, c.state.Server, pki, identity); err != nil {
		return err
	}
	cfg := kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: kubeletv1beta1.SchemeGroupVersion.String(), Kind: "KubeletConfiguration"},
		// This machine mounts cgroup v1 only.
		FailCgroupV1: ptr.To(false),
		CgroupDriver: "cgroupfs",
		CgroupRoot:   n.CgroupRoot,
		FailSwapOn:   ptr.To(false),
		// The kubelet keeps its own OOM score: lowering it needs CAP_SYS_RESOURCE,
		// which some sandboxes withhold (containerd's restrict_oom_score_adj).
		OOMScoreAdj:              ptr.To(int32(0)),
		ContainerRuntimeEndpoint: "unix://" + n.ContainerdSocket,
		// The API server reaches the kubelet (logs, exec) at the node's address.
		Address:            ip.String(),
		Port:               int32(ports[0]),
		ReadOnlyPort:       0,
		HealthzBindAddress: "127.0.0.1",
		HealthzPort:        ptr.To(int32(ports[1])),
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: pki.caCert()},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
		},
		Authorization: kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		PodLogsDir:    n.PodLogsDir,
		FeatureGates:  featureGateMap(),
		// Image garbage collection would remove the imported images on a full disk;
		// nothing could pull them again.
		ImageGCHighThresholdPercent: ptr.To(int32(100)),
		ImageGCLowThresholdPercent:  ptr.To(int32(99)),
		// A shared test machine: only memory pressure evicts, and well below what
		// the machine has.
		EvictionHard: map[string]string{"memory.available": "100Mi"},
	}
	data, err := yaml.Marshal(&cfg)
	if err != nil {
		return fmt.Errorf("encode kubelet configuration: %w", err)
	}
	cfgFile := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfgFile, data, 0o644); err != nil {
		return fmt.Errorf("write kubelet configuration: %w", err)
	}
	p, err := c.StartProcess(ctx, KubeletName(n.Name), filepath.Join(c.state.BinDir, "kubelet"),
		"--config="+cfgFile,
		"--kubeconfig="+kubeconfig,
		"--root-dir="+n.KubeletDir,
		"--cert-dir="+filepath.Join(n.Dir, "kubelet-pki"),
		"--hostname-override="+n.Name,
		"--node-ip="+ip.String(),
		"--node-labels="+RealNodeLabel+"=true,type=real",
		"-v=2",
	)
	if err != nil {
		return err
	}
	return p.WaitReady(ctx, readyTimeout, func(ctx context.Context) error {
		node, err := c.client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !NodeReady(node) {
			return fmt.Errorf("node %s not Ready: %s", n.Name, readyMessage(node))
		}
		return nil
	})
}

// hostIP is the first global IPv4 address of an interface that is up: the kubelet
// refuses a loopback address as the node's.
func hostIP() (net.IP, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.To4(), nil
			}
		}
	}
	return nil, errors.New("no interface that is up has a global IPv4 address: the kubelet needs one for its node")
}

func readyMessage(node *corev1.Node) string {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Reason + ": " + cond.Message
		}
	}
	return "no Ready condition yet"
}

// featureGateMap is FeatureGates as the kubelet's configuration takes them.
func featureGateMap() map[string]bool {
	gates := map[string]bool{}
	for _, kv := range strings.Split(FeatureGates, ",") {
		k, v, _ := strings.Cut(kv, "=")
		gates[k], _ = strconv.ParseBool(v)
	}
	return gates
}

// RestartKubelet kills the node's kubelet and starts it again with the same flags,
// waiting until the node is Ready again.
func (c *Cluster) RestartKubelet(ctx context.Context, name string) error {
	p := c.Process(KubeletName(name))
	if p == nil {
		return fmt.Errorf("no kubelet runs for node %q", name)
	}
	if err := p.Kill(); err != nil {
		return err
	}
	np, err := c.StartProcess(ctx, p.Name, p.record.Bin, p.record.Args...)
	if err != nil {
		return err
	}
	return np.WaitReady(ctx, readyTimeout, func(ctx context.Context) error {
		// The new kubelet's heartbeat is its node Lease; the node's status is
		// written again only when it changes.
		lease, err := c.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if lease.Spec.RenewTime == nil || !lease.Spec.RenewTime.After(np.record.Started) {
			return fmt.Errorf("node %s: the new kubelet has not renewed its Lease yet", name)
		}
		node, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !NodeReady(node) {
			return fmt.Errorf("node %s not Ready: %s", name, readyMessage(node))
		}
		return nil
	})
}

// drainRealNode removes every pod sandbox of the node through CRI (containers
// stopped, network torn down) while containerd still runs; the kubelet has stopped
// by then, so nothing starts them again.
func (c *Cluster) drainRealNode(ctx context.Context, name string) error {
	n := c.RealNode(name)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := c.crictl(ctx, n, "rmp", "--all", "--force")
	return err
}

// cleanRealNode removes what a real node of that name left behind when its
// containerd is gone: shims and containers still running, mounts, its bridge and
// cgroups. It runs after the node's processes have stopped, before a real node
// starts, and in `local-cluster down` of a cluster that died. The node's name
// finds what any run directory left (one real node per machine: they share the
// cgroup and bridge names).
func cleanRealNode(name string) error {
	var errs []error
	mark := "/real-nodes/" + name + "/"
	// A kubelet or containerd of that node still running belongs to a live cluster.
	if live := processesWithArg(func(arg string) bool {
		return strings.HasPrefix(arg, "--config=") && strings.Contains(arg, mark)
	}); len(live) > 0 {
		return fmt.Errorf("it still runs in another cluster (pid %d): stop that cluster first ('local-cluster down --dir' its run directory)", live[0])
	}
	// runc's shims name their containerd's socket; the containers are in the
	// node's cgroups.
	for _, pid := range processesWithArg(func(arg string) bool {
		return strings.Contains(arg, mark) && strings.HasSuffix(arg, "/containerd.sock")
	}) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = filepath.WalkDir(filepath.Join(cgroupFS, "memory", name), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "cgroup.procs" {
			for _, pid := range readPids(p) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	})
	if err := unmountMatching(func(mp string) bool {
		return strings.Contains(mp+"/", mark)
	}); err != nil {
		errs = append(errs, err)
	}
	// The pod network's bridge (its addresses are in the node's directory).
	if bridge := cniBridge(name); bridgeExists(bridge) {
		if out, err := exec.Command("ip", "link", "delete", bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w: %s", bridge, err, bytes.TrimSpace(out)))
		}
	}
	for _, ctrl := range cgroupV1Controllers {
		if err := removeCgroupTree(filepath.Join(cgroupFS, ctrl, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func bridgeExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// CleanRealNodes removes what the real nodes of the run directory left behind
// (cleanRealNode), for a cluster whose processes are all gone.
func CleanRealNodes(dir string) error {
	entries, _ := os.ReadDir(filepath.Join(dir, "real-nodes"))
	var errs []error
	for _, e := range entries {
		if err := cleanRealNode(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("real node %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// processesWithArg lists the processes with a command-line argument that match
// accepts.
func processesWithArg(match func(arg string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.ContainsFunc(strings.Split(string(cmdline), "\x00"), match) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func readPids(file string) []int {
	data, _ := os.ReadFile(file)
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountMatching unmounts every mount point that match accepts, deepest first
// (lazily: a process that still holds one does not stop the cleanup).
func unmountMatching(match func(mountPoint string) bool) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if mp := unescapeMountPath(fields[4]); match(mp) {
			points = append(points, mp)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, mp := range points {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroupTree removes a cgroup and its children, deepest first. A cgroup
// directory is removed with rmdir; its files go with it.
func removeCgroupTree(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var last error
	// The killed processes leave their cgroups a moment after the signal.
	_ = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		last = nil
		for _, d := range slices.Backward(dirs) {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("remove cgroup %s: %w", d, err)
			}
		}
		return last == nil, nil
	})
	return last
}
