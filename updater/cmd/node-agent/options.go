package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
)

// options are every flag of the node agent.
type options struct {
	nodeName       string
	kubeconfig     string
	memservice     client.Config
	hostBackend    string
	sysfsRoot      string
	regionBases    regionBases
	defaultBase    string
	offlineTries   int
	appearTimeout  time.Duration
	simNUMANode    int
	simLatency     time.Duration
	manageCgroup   bool
	cgroupRoot     string
	kubepodsCgroup string
	checkpointFile string
	metricsAddress string
	heartbeat      time.Duration
	claimStatus    bool
	kubeAPIQPS     float64
	kubeAPIBurst   int
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "Kubernetes node this agent runs on (default $NODE_NAME). Its memory service certificate must name the same node.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account.")
	o.memservice.AddFlags(fs, "agent")
	fs.StringVar(&o.hostBackend, "host-backend", "sysfs", "how memory is onlined: sysfs (the Linux memory hotplug and DAX interfaces) or simulated (no hardware; for the local cluster).")
	fs.StringVar(&o.sysfsRoot, "sysfs-root", "/", "directory under which /sys is found (sysfs backend).")
	fs.Var(&o.regionBases, "region-base", "pool=address: host physical address where a pool's dynamic capacity region starts, e.g. pool-a=0x1080000000 (repeatable; sysfs backend).")
	fs.StringVar(&o.defaultBase, "default-region-base", "0", "region base address of pools without --region-base (sysfs backend).")
	fs.IntVar(&o.offlineTries, "offline-attempts", 10, "how many times a busy memory block is asked to go offline before the offline command fails.")
	fs.DurationVar(&o.appearTimeout, "appear-timeout", 30*time.Second, "how long an online command waits for the extent's memory blocks to appear.")
	fs.IntVar(&o.simNUMANode, "simulated-numa-node", 1, "NUMA node reported for pool memory (simulated backend).")
	fs.DurationVar(&o.simLatency, "simulated-block-latency", 2*time.Millisecond, "time to online or offline one memory block (simulated backend).")
	fs.BoolVar(&o.manageCgroup, "manage-cgroup", true, "raise the kubepods cgroup memory limit by the pool memory online.")
	fs.StringVar(&o.cgroupRoot, "cgroup-root", "/sys/fs/cgroup", "mount point of the cgroup hierarchy.")
	fs.StringVar(&o.kubepodsCgroup, "kubepods-cgroup", "", "the kubelet's pod cgroup relative to --cgroup-root (default: kubepods.slice or kubepods, whichever exists).")
	fs.StringVar(&o.checkpointFile, "checkpoint-file", "/var/lib/dynamic-memory/node-agent.json", "file that keeps the claims online across agent restarts.")
	fs.StringVar(&o.metricsAddress, "metrics-address", ":9465", "address serving /metrics and /healthz; empty disables.")
	fs.DurationVar(&o.heartbeat, "heartbeat-interval", 10*time.Second, "how often host state is sent to the memory service.")
	fs.BoolVar(&o.claimStatus, "claim-status", true, "write Online/ProvisioningFailed device conditions on this node's ResourceClaims.")
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", 50, "queries per second to the Kubernetes API server (client-side limit, as the kubelet's kubeAPIQPS); node status and claim conditions are written at every change.")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", 100, "burst of queries to the Kubernetes API server above --kube-api-qps.")
}

func (o *options) validate() error {
	var errs []error
	if o.nodeName == "" {
		errs = append(errs, errors.New("--node-name (or NODE_NAME) is required"))
	}
	if err := o.memservice.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w (set --memservice-address, --memservice-ca, --memservice-cert, --memservice-key)", err))
	}
	switch o.hostBackend {
	case "sysfs", "simulated":
	default:
		errs = append(errs, fmt.Errorf("--host-backend=%q: must be sysfs or simulated", o.hostBackend))
	}
	if _, err := parseAddress(o.defaultBase); err != nil {
		errs = append(errs, fmt.Errorf("--default-region-base: %w", err))
	}
	if o.offlineTries < 1 {
		errs = append(errs, fmt.Errorf("--offline-attempts=%d: must be at least 1", o.offlineTries))
	}
	if o.heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("--heartbeat-interval=%s: must be positive", o.heartbeat))
	}
	return errors.Join(errs...)
}

// regionBases is the repeatable --region-base pool=address flag.
type regionBases map[string]int64

func (r *regionBases) String() string {
	var parts []string
	for pool, base := range *r {
		parts = append(parts, fmt.Sprintf("%s=%#x", pool, base))
	}
	return strings.Join(parts, ",")
}

func (r *regionBases) Set(v string) error {
	pool, addr, ok := strings.Cut(v, "=")
	if !ok || pool == "" {
		return fmt.Errorf("%q is not pool=address", v)
	}
	base, err := parseAddress(addr)
	if err != nil {
		return err
	}
	if *r == nil {
		*r = regionBases{}
	}
	(*r)[pool] = base
	return nil
}

func parseAddress(s string) (int64, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 0, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a physical address (decimal or 0x hex)", s)
	}
	return v, nil
}
