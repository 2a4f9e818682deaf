// Command dra-plugin is the DRA kubelet plugin of dcd.dynamicmemory.io: it publishes
// the node's ResourceSlice and prepares claims whose pool memory is online.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/driver"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

func main() {
	klog.InitFlags(nil)
	var o options
	o.addFlags(flag.CommandLine)
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, &o); err != nil {
		klog.ErrorS(err, "DRA plugin failed")
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
	logger.Info("Starting DRA plugin", "driver", driver.DriverName, "version", version.Version, "bindingConditions", o.bindingConditions)

	restConfig, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	conn, err := client.Dial(ctx, o.memservice)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	m := metrics.New()
	d, err := driver.Start(ctx, driver.Config{
		Node: o.nodeName, Kube: kube, Dynamic: dyn, Reservations: conn, CDIDir: o.cdiDir,
		PluginDataDir: o.pluginDataDir, RegistrarDir: o.registrarDir,
		BindingConditions: o.bindingConditions, Metrics: m,
	})
	if err != nil {
		return err
	}
	defer d.Stop()

	if o.metricsAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		srv := &http.Server{Addr: o.metricsAddress, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		errs := make(chan error, 1)
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serve --metrics-address %s: %w", o.metricsAddress, err)
			}
		}()
		defer func() { _ = srv.Close() }()
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
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
	cfg.UserAgent = "dynamic-memory-dra-plugin/" + version.Version
	return cfg, nil
}
