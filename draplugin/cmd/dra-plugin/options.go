package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
)

// options are every flag of the DRA plugin.
type options struct {
	nodeName          string
	kubeconfig        string
	memservice        client.Config
	cdiDir            string
	pluginDataDir     string
	registrarDir      string
	bindingConditions bool
	metricsAddress    string
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "Kubernetes node this plugin runs on (default $NODE_NAME). Its memory service certificate must name the same node.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account.")
	o.memservice.AddFlags(fs, "draplugin")
	fs.StringVar(&o.cdiDir, "cdi-dir", kubeletplugin.DefaultCDIDir, "directory where the container runtime reads CDI specs.")
	fs.StringVar(&o.pluginDataDir, "plugin-data-dir", kubeletplugin.KubeletPluginsDir+"/dcd.dynamicmemory.io", "directory of the plugin's dra.sock (must exist).")
	fs.StringVar(&o.registrarDir, "registrar-dir", kubeletplugin.KubeletRegistryDir, "the kubelet's plugin registration directory (must exist).")
	fs.BoolVar(&o.bindingConditions, "binding-conditions", false, "devices declare the binding condition Online (failure: ProvisioningFailed), so pods placed by any scheduler wait until the memory is online.")
	fs.StringVar(&o.metricsAddress, "metrics-address", ":9466", "address serving /metrics and /healthz; empty disables.")
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
	return errors.Join(errs...)
}
