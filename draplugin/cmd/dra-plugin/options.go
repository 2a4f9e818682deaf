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

	"k8s.io/client-go/rest"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/dynamicmemory/kube-dynamic-memory/api/command"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
)

// options are every flag of the DRA plugin.
type options struct {
	nodeName          string
	kube              command.KubeClient
	memservice        client.Config
	cdiDir            string
	pluginDataDir     string
	registrarDir      string
	bindingConditions bool
	metrics           metricsserver.Options
}

func newOptions() *options {
	return &options{
		nodeName: os.Getenv("NODE_NAME"),
		// The plugin writes little: client-go's defaults.
		kube:          command.KubeClient{QPS: rest.DefaultQPS, Burst: rest.DefaultBurst},
		cdiDir:        kubeletplugin.DefaultCDIDir,
		pluginDataDir: kubeletplugin.KubeletPluginsDir + "/" + dra.DriverName,
		registrarDir:  kubeletplugin.KubeletRegistryDir,
		metrics:       metricsserver.Options{Address: ":9466"},
	}
}

func (o *options) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet("node")
	fs.StringVar(&o.nodeName, "node-name", o.nodeName, "Kubernetes node this plugin runs on (default $NODE_NAME). Its memory service certificate must name the same node.")
	o.metrics.AddFlags(fs, "metrics-address")

	o.memservice.AddFlags(fss.FlagSet("memservice"), "draplugin")

	fs = fss.FlagSet("kubelet")
	fs.StringVar(&o.cdiDir, "cdi-dir", o.cdiDir, "directory where the container runtime reads CDI specs.")
	fs.StringVar(&o.pluginDataDir, "plugin-data-dir", o.pluginDataDir, "directory of the plugin's dra.sock (must exist).")
	fs.StringVar(&o.registrarDir, "registrar-dir", o.registrarDir, "the kubelet's plugin registration directory (must exist).")
	fs.BoolVar(&o.bindingConditions, "binding-conditions", o.bindingConditions, "devices declare the binding condition Online (failure: ProvisioningFailed), so pods placed by any scheduler wait until the memory is online.")

	o.kube.AddFlags(fss.FlagSet("kubernetes"), "the plugin writes the node's ResourceSlice when a pool changes")
}

func (o *options) validate() error {
	var errs []error
	if o.nodeName == "" {
		errs = append(errs, errors.New("--node-name (or NODE_NAME) is required"))
	}
	if err := o.memservice.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w (set --memservice-address, --memservice-ca, --memservice-cert, --memservice-key)", err))
	}
	for _, d := range []struct{ flag, dir string }{{"--plugin-data-dir", o.pluginDataDir}, {"--registrar-dir", o.registrarDir}} {
		if st, err := os.Stat(d.dir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("%s=%s: must be an existing directory", d.flag, d.dir))
		}
	}
	if o.cdiDir == "" {
		errs = append(errs, errors.New("--cdi-dir is required"))
	}
	if err := o.metrics.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
