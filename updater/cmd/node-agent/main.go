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

// Command node-agent is the node agent DaemonSet: it onlines and offlines pool
// memory on its node for the memory service, and keeps the node's status and pod cgroup
// limit in step.
package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/command"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/agent"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/cgroup"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
)

const userAgent = "dynamic-memory-node-agent"

func main() { os.Exit(command.Run(newCommand())) }

// newCommand is the node agent command.
func newCommand() *cobra.Command {
	return command.New("node-agent", "Online and offline pool memory on this node for the memory service",
		`node-agent runs on every node with dynamic memory. It holds a session with the
memory service, onlines and offlines the pool memory the service adds to and takes
from this node, and keeps the node's online-memory resource and the pod cgroup memory
limit in step (the memory service writes the claims' device conditions).`, newOptions())
}

// Run checks the flags and runs the agent until ctx is cancelled.
func (o *options) Run(ctx context.Context) error {
	if err := o.validate(); err != nil {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("node", o.nodeName)
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Starting node agent", "hostBackend", o.hostBackend)

	restConfig, err := o.kube.RESTConfig(userAgent)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	host, err := newHost(ctx, o)
	if err != nil {
		return err
	}
	cfg := agent.Config{
		Node:              o.nodeName,
		Host:              host,
		NodeStatus:        nodestatus.New(kube, o.nodeName, clock.RealClock{}),
		Metrics:           metrics.New(),
		Clock:             clock.RealClock{},
		CheckpointFile:    o.checkpointFile,
		HeartbeatInterval: o.heartbeat,
		Version:           version.Version,
	}
	if o.checkpointFile != "" {
		if err := os.MkdirAll(filepath.Dir(o.checkpointFile), 0o755); err != nil {
			return fmt.Errorf("--checkpoint-file: %w", err)
		}
	}
	if o.manageCgroup {
		// The checkpoint holds what the agent did to the cgroup before a restart.
		state, err := agent.CgroupState(o.checkpointFile)
		if err != nil {
			return err
		}
		limiter, err := cgroup.New(o.cgroupRoot, o.kubepodsCgroup, state)
		if err != nil {
			return fmt.Errorf("%w (or run with --manage-cgroup=false)", err)
		}
		logger.Info("Managing the pod cgroup memory limit", "file", limiter.File(), "cgroupVersion", limiter.Version())
		cfg.Limiter = limiter
	}
	conn, err := client.Dial(ctx, o.memservice)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	cfg.Client = conn
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	if o.metrics.Address != "" {
		srv, err := metricsserver.New(metricsserver.Config{Options: o.metrics, Kube: kube, Metrics: cfg.Metrics.Handler(), Ready: func() error {
			if !a.Connected() {
				return errors.New("no session with the memory service")
			}
			return nil
		}})
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		go func() {
			if err := srv.Serve(ctx); err != nil {
				errs <- fmt.Errorf("serve --metrics-address %s: %w", o.metrics.Address, err)
			}
		}()
	}
	go func() { errs <- a.Run(ctx) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

func newHost(ctx context.Context, o *options) (agent.Host, error) {
	if o.hostBackend == "simulated" {
		cfg := hostmem.SimulatedConfig{NUMANode: int32(o.simNUMANode), BlockLatency: o.simLatency}
		if o.simJournal == "" {
			return hostmem.NewSimulated(cfg), nil
		}
		s, err := hostmem.OpenSimulated(cfg, o.simJournal)
		if err != nil {
			return nil, fmt.Errorf("--simulated-journal: %w", err)
		}
		return s, nil
	}
	s, err := hostmem.NewSysfs(hostmem.SysfsConfig{
		FS:              hostmem.DirFS{Root: o.sysfsRoot},
		Regions:         o.regions,
		RegionBases:     o.regionBases,
		AppearTimeout:   o.appearTimeout,
		OfflineAttempts: o.offlineTries,
	})
	if err != nil {
		return nil, fmt.Errorf("--host-backend=sysfs: %w", err)
	}
	regions := s.PoolRegions()
	for _, pool := range slices.Sorted(maps.Keys(regions)) {
		r := regions[pool]
		klog.FromContext(ctx).Info("Pool region", "pool", pool, "region", r.Name, "start", fmt.Sprintf("%#x", r.Start), "size", r.Size, "mode", r.Mode)
	}
	return s, nil
}
