package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"

	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

func newDemoCommand(g *globalOptions) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the dynamic memory demo: the cluster, every component and a scenario of pods asking for pool memory",
		Long: `Start the local cluster (4 kwok nodes), the memory service with two simulated pools,
the scheduler, and a node agent and a DRA plugin per node; create pods with claims of
various sizes and one that cannot fit; print the pools and claims; delete the pods and
wait until every pool is full again. Everything is stopped at the end unless --keep.
Build the binaries first ('make demo' does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(g.dir, 0o755); err != nil {
				return fmt.Errorf("create run directory: %w", err)
			}
			// The library's own logs go to a file; the terminal gets the progress.
			logFile := filepath.Join(g.dir, "demo.log")
			f, err := os.Create(logFile)
			if err != nil {
				return fmt.Errorf("create %s: %w", logFile, err)
			}
			defer f.Close()
			logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(f), textlogger.Verbosity(2)))
			ctx := klog.NewContext(cmd.Context(), logger)
			return system.RunDemo(ctx, system.DemoOptions{Dir: g.dir, Keep: keep, Out: cmd.OutOrStdout()})
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the cluster and the components running at the end (stop them with 'make cluster-down')")
	return cmd
}
