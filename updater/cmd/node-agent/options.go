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

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	cliflag "k8s.io/component-base/cli/flag"

	"github.com/dynamicmemory/kube-dynamic-memory/api/command"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
)

// options are every flag of the node agent.
type options struct {
	nodeName       string
	kube           command.KubeClient
	memservice     client.Config
	hostBackend    string
	sysfsRoot      string
	regions        regionNames
	regionBases    regionBases
	offlineTries   int
	appearTimeout  time.Duration
	simNUMANode    int
	simLatency     time.Duration
	simJournal     string
	manageCgroup   bool
	cgroupRoot     string
	kubepodsCgroup string
	checkpointFile string
	metrics        metricsserver.Options
	heartbeat      time.Duration
}

func newOptions() *options {
	return &options{
		nodeName:       os.Getenv("NODE_NAME"),
		kube:           command.KubeClient{QPS: 50, Burst: 100},
		hostBackend:    "sysfs",
		sysfsRoot:      "/",
		offlineTries:   10,
		appearTimeout:  30 * time.Second,
		simNUMANode:    1,
		simLatency:     2 * time.Millisecond,
		manageCgroup:   true,
		cgroupRoot:     "/sys/fs/cgroup",
		checkpointFile: "/var/lib/dynamic-memory/node-agent.json",
		metrics:        metricsserver.Options{Address: ":9465"},
		heartbeat:      10 * time.Second,
	}
}

func (o *options) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet("node")
	fs.StringVar(&o.nodeName, "node-name", o.nodeName, "Kubernetes node this agent runs on (default $NODE_NAME). Its memory service certificate must name the same node.")
	fs.StringVar(&o.checkpointFile, "checkpoint-file", o.checkpointFile, "file that keeps the claims online across agent restarts.")
	fs.DurationVar(&o.heartbeat, "heartbeat-interval", o.heartbeat, "how often host state is sent to the memory service.")
	o.metrics.AddFlags(fs, "metrics-address")

	o.memservice.AddFlags(fss.FlagSet("memservice"), "agent")

	fs = fss.FlagSet("host")
	fs.StringVar(&o.hostBackend, "host-backend", o.hostBackend, "how memory is onlined: sysfs (the Linux memory hotplug and DAX interfaces) or simulated (no hardware; for the local cluster).")
	fs.StringVar(&o.sysfsRoot, "sysfs-root", o.sysfsRoot, "directory under which /sys is found (sysfs backend).")
	fs.Var(&o.regions, "region", "the region of this host that holds a pool's memory: a CXL region (regionN in /sys/bus/cxl/devices) or a DAX device (daxX.Y in /sys/bus/dax/devices), e.g. pool-a=region0; the agent reads its address range at start (repeatable; sysfs backend). Commands for a pool without --region or --region-base fail and touch no memory.")
	fs.Var(&o.regionBases, "region-base", "host physical address where a pool's region starts, e.g. pool-a=0x1080000000; the agent refuses to start unless a CXL region or DAX device of this host starts there (repeatable; sysfs backend; prefer --region).")
	fs.IntVar(&o.offlineTries, "offline-attempts", o.offlineTries, "how many times a busy memory block is asked to go offline before the offline command fails.")
	fs.DurationVar(&o.appearTimeout, "appear-timeout", o.appearTimeout, "how long an online command waits for the extent's memory blocks to appear.")
	fs.IntVar(&o.simNUMANode, "simulated-numa-node", o.simNUMANode, "NUMA node reported for pool memory (simulated backend).")
	fs.DurationVar(&o.simLatency, "simulated-block-latency", o.simLatency, "time to online or offline one memory block (simulated backend).")
	fs.StringVar(&o.simJournal, "simulated-journal", o.simJournal, "file that keeps the simulated host's memory blocks across agent restarts, as a real host's memory outlives the agent: replayed at start, one JSON line appended per block onlined or offlined (simulated backend; empty: in memory only).")

	fs = fss.FlagSet("cgroup")
	fs.BoolVar(&o.manageCgroup, "manage-cgroup", o.manageCgroup, "raise the kubepods cgroup memory limit by the pool memory online.")
	fs.StringVar(&o.cgroupRoot, "cgroup-root", o.cgroupRoot, "mount point of the cgroup hierarchy.")
	fs.StringVar(&o.kubepodsCgroup, "kubepods-cgroup", o.kubepodsCgroup, "the kubelet's pod cgroup relative to --cgroup-root (default: kubepods.slice or kubepods, whichever exists).")

	o.kube.AddFlags(fss.FlagSet("kubernetes"), "node status and claim conditions are written at every change (the defaults are the kubelet's kubeAPIQPS and kubeAPIBurst)")
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
	if o.offlineTries < 1 {
		errs = append(errs, fmt.Errorf("--offline-attempts=%d: must be at least 1", o.offlineTries))
	}
	if o.heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("--heartbeat-interval=%s: must be positive", o.heartbeat))
	}
	if err := o.metrics.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// regionNames is the repeatable --region pool=name flag.
type regionNames map[string]string

func (r *regionNames) String() string {
	var parts []string
	for pool, name := range *r {
		parts = append(parts, pool+"="+name)
	}
	return strings.Join(parts, ",")
}

// Type is the value's placeholder in --help.
func (r *regionNames) Type() string { return "pool=region" }

func (r *regionNames) Set(v string) error {
	pool, name, ok := strings.Cut(v, "=")
	if !ok || pool == "" || name == "" {
		return fmt.Errorf("%q is not pool=region (e.g. pool-a=region0)", v)
	}
	if *r == nil {
		*r = regionNames{}
	}
	(*r)[pool] = name
	return nil
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

// Type is the value's placeholder in --help.
func (r *regionBases) Type() string { return "pool=address" }

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
