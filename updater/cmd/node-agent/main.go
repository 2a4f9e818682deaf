// Command node-agent is the node agent DaemonSet: it onlines and offlines pool
// memory on its node for the memory service, and keeps the node's status, pod cgroup
// limit and claim device conditions in step.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/agent"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/cgroup"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/claimstatus"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

func main() {
	klog.InitFlags(nil)
	var o options
	o.addFlags(flag.CommandLine)
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, &o); err != nil {
		klog.ErrorS(err, "Node agent failed")
		klog.Flush()
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	if err := o.validate(); err != nil {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("node", o.nodeName)
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Starting node agent", "version", version.Version, "hostBackend", o.hostBackend)

	kube, err := kubeClient(o.kubeconfig, float32(o.kubeAPIQPS), o.kubeAPIBurst)
	if err != nil {
		return err
	}
	host, err := newHost(o)
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
	var claims *claimstatus.Writer
	if o.claimStatus {
		claims, err = claimstatus.New(kube, o.nodeName, clock.RealClock{})
		if err != nil {
			return err
		}
		cfg.Claims = claims
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
	errs := make(chan error, 3)
	if claims != nil {
		go func() {
			claims.Run(ctx)
			errs <- nil
		}()
	}
	if o.metricsAddress != "" {
		srv := &http.Server{Addr: o.metricsAddress, Handler: mux(cfg.Metrics, a), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serve --metrics-address %s: %w", o.metricsAddress, err)
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

func mux(m *metrics.Metrics, a *agent.Agent) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Connected() {
			http.Error(w, "no session with the memory service", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func newHost(o *options) (agent.Host, error) {
	if o.hostBackend == "simulated" {
		return hostmem.NewSimulated(hostmem.SimulatedConfig{NUMANode: int32(o.simNUMANode), BlockLatency: o.simLatency}), nil
	}
	base, err := parseAddress(o.defaultBase)
	if err != nil {
		return nil, err
	}
	s, err := hostmem.NewSysfs(hostmem.SysfsConfig{
		FS:                hostmem.DirFS{Root: o.sysfsRoot},
		RegionBases:       o.regionBases,
		DefaultRegionBase: base,
		AppearTimeout:     o.appearTimeout,
		OfflineAttempts:   o.offlineTries,
	})
	if err != nil {
		return nil, fmt.Errorf("--host-backend=sysfs: %w (use --host-backend=simulated on machines without memory hotplug)", err)
	}
	return s, nil
}

func kubeClient(kubeconfig string, qps float32, burst int) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (--kubeconfig %q): %w", kubeconfig, err)
	}
	cfg.UserAgent = "dynamic-memory-node-agent/" + version.Version
	cfg.QPS, cfg.Burst = qps, burst
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
