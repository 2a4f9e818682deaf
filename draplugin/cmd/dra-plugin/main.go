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

// Command dra-plugin is the DRA kubelet plugin of dcd.dynamicmemory.io: it publishes
// the node's ResourceSlice and prepares claims whose pool memory is online.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/command"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/driver"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
)

const userAgent = "dynamic-memory-dra-plugin"

func main() { os.Exit(command.Run(newCommand())) }

// newCommand is the DRA plugin command.
func newCommand() *cobra.Command {
	return command.New("dra-plugin", "Publish this node's dynamic memory devices and prepare their claims",
		`dra-plugin is the DRA kubelet plugin of `+dra.DriverName+`. It publishes the node's
ResourceSlice, one device per DynamicMemoryPool the node is attached to, and prepares
a claim for its containers once the memory service says its memory is online here.`, newOptions())
}

// Run checks the flags and runs the plugin until ctx is cancelled.
func (o *options) Run(ctx context.Context) error {
	if err := o.validate(); err != nil {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("node", o.nodeName)
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Starting DRA plugin", "driver", dra.DriverName, "bindingConditions", o.bindingConditions)

	restConfig, err := o.kube.RESTConfig(userAgent)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dm, err := versioned.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("dynamicmemory.io client: %w", err)
	}
	conn, err := client.Dial(ctx, o.memservice)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	m := metrics.New()
	d, err := driver.Start(ctx, driver.Config{
		Node: o.nodeName, Kube: kube, DynamicMemory: dm, Reservations: conn, CDIDir: o.cdiDir,
		PluginDataDir: o.pluginDataDir, RegistrarDir: o.registrarDir,
		BindingConditions: o.bindingConditions, Metrics: m,
	})
	if err != nil {
		return err
	}
	defer d.Stop()

	if o.metrics.Address != "" {
		srv, err := metricsserver.New(metricsserver.Config{Options: o.metrics, Kube: kube, Metrics: m.Handler(), Ready: d.Ready})
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		if err := srv.Serve(ctx); err != nil {
			return fmt.Errorf("serve --metrics-address %s: %w", o.metrics.Address, err)
		}
		return nil
	}
	<-ctx.Done()
	return nil
}
