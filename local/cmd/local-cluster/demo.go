package main

import (
	"github.com/spf13/cobra"

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
			ctx, closeLog, err := logToFile(cmd.Context(), g, "demo.log")
			if err != nil {
				return err
			}
			defer closeLog()
			return system.RunDemo(ctx, system.DemoOptions{Dir: g.dir, Keep: keep, Out: cmd.OutOrStdout()})
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the cluster and the components running at the end (stop them with 'make cluster-down')")
	return cmd
}
