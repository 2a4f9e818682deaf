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

// Package command builds the command line that every binary of the project shares,
// in the style of the Kubernetes components (and of our kube-scheduler, which is
// one): cobra, flags grouped in named sections in --help, component-base logging
// (-v, --vmodule, --logging-format=text|json), --version, and a context that SIGINT
// and SIGTERM cancel.
package command

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/component-base/term"
	"k8s.io/component-base/version/verflag"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
)

// Options are a binary's own flags and what it runs.
type Options interface {
	// AddFlags registers the flags, each in the section of --help it belongs to.
	AddFlags(fss *cliflag.NamedFlagSets)
	// Run runs the binary until ctx is cancelled (SIGINT, SIGTERM) or it fails.
	// The flags are parsed and logging is set up before it is called.
	Run(ctx context.Context) error
}

// New is the root command of a binary. Subcommands can be added to it.
func New(name, short, long string, opts Options) *cobra.Command {
	logging := logsapi.NewLoggingConfiguration()
	var fss cliflag.NamedFlagSets
	opts.AddFlags(&fss)
	logsapi.AddFlags(logging, fss.FlagSet("logging"))
	verflag.AddFlags(fss.FlagSet("global"))

	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			verflag.PrintAndExitIfRequested()
			if err := logsapi.ValidateAndApply(logging, nil); err != nil {
				return err
			}
			cliflag.PrintFlags(cmd.Flags())
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			logger := klog.Background()
			logger.Info("Starting", "command", name, "version", version.Version)
			return opts.Run(klog.NewContext(ctx, logger))
		},
	}
	for _, f := range fss.FlagSets {
		cmd.Flags().AddFlagSet(f)
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cliflag.SetUsageAndHelpFunc(cmd, fss, cols)
	return cmd
}

// Run executes a root command made by New and returns the process exit code. Logs are
// flushed before it returns.
func Run(cmd *cobra.Command) int { return cli.Run(cmd) }

// KubeClient are the flags of a binary that talks to the Kubernetes API server.
type KubeClient struct {
	// Kubeconfig is the kubeconfig file; empty uses the in-cluster service account.
	Kubeconfig string
	// QPS and Burst limit the requests to the API server on the client side.
	QPS   float32
	Burst int
}

// AddFlags registers --kubeconfig, --kube-api-qps and --kube-api-burst with the
// defaults in k and usage that says what the binary sends (why its limits are these).
func (k *KubeClient) AddFlags(fs *pflag.FlagSet, sends string) {
	fs.StringVar(&k.Kubeconfig, "kubeconfig", k.Kubeconfig, "kubeconfig file; empty uses the in-cluster service account.")
	fs.Float32Var(&k.QPS, "kube-api-qps", k.QPS, "queries per second to the Kubernetes API server (client-side limit); "+sends+".")
	fs.IntVar(&k.Burst, "kube-api-burst", k.Burst, "burst of queries to the Kubernetes API server above --kube-api-qps.")
}

// RESTConfig is the client configuration the flags describe, with the binary's name
// and version as user agent.
func (k *KubeClient) RESTConfig(userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	if k.Kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", filepath.Clean(k.Kubeconfig))
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", k.Kubeconfig, err)
		}
		cfg = c
	} else {
		c, err := rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, errors.New("not running in a cluster: pass --kubeconfig")
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
		cfg = c
		cfg.Timeout = 30 * time.Second
	}
	cfg.UserAgent = userAgent + "/" + version.Version
	cfg.QPS, cfg.Burst = k.QPS, k.Burst
	return cfg, nil
}
