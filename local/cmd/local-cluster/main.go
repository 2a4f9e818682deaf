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

// Command local-cluster starts, inspects and stops the project's local Kubernetes
// cluster (etcd, kube-apiserver, kube-controller-manager and kwok on 127.0.0.1), the
// one `make demo` and the end-to-end tests run on.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	dir string
}

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "local-cluster:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "local-cluster",
		Short:         "Run the local Kubernetes cluster of the dynamic memory project",
		Long:          "Run a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) with kwok nodes on 127.0.0.1, from the binaries `make cluster-bins` builds into bin/. No container engine is needed.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().StringVar(&g.dir, "dir", defaultRunDir(), "run directory: certificates, kubeconfig, etcd data, logs")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	root.PersistentFlags().AddGoFlag(klogFlags.Lookup("v"))

	root.AddCommand(
		newUpCommand(g),
		newDownCommand(g),
		newStatusCommand(g),
		newDemoCommand(g),
		newChaosCommand(g),
		newSysfsSimCommand(),
	)
	return root
}

// defaultRunDir is .run in the repository root, or in the working directory when the
// repository cannot be found.
func defaultRunDir() string {
	if root, err := cluster.RepoRoot(); err == nil {
		return filepath.Join(root, ".run")
	}
	return ".run"
}

// logToFile creates the run directory and returns ctx with a logger writing to the
// file name in it (the terminal gets the progress), and the function closing it.
func logToFile(ctx context.Context, g *globalOptions, name string) (context.Context, func(), error) {
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create run directory: %w", err)
	}
	logFile := filepath.Join(g.dir, name)
	f, err := os.Create(logFile)
	if err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", logFile, err)
	}
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(f), textlogger.Verbosity(2)))
	return klog.NewContext(ctx, logger), func() { _ = f.Close() }, nil
}
