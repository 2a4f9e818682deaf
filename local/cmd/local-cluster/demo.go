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
	"github.com/spf13/cobra"

	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

func newDemoCommand(g *globalOptions) *cobra.Command {
	var keep bool
	var scheduler string
	var realNodes int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the dynamic memory demo: the cluster, every component and a scenario of pods asking for pool memory",
		Long: `Start the local cluster (4 kwok nodes), the memory service with two simulated pools,
the scheduler, and a node agent and a DRA plugin per node; create pods with claims of
various sizes and one that cannot fit; print the pools and claims; delete the pods and
wait until every pool is full again. Everything is stopped at the end unless --keep.
With --scheduler=stock the stock kube-scheduler places the pods (compatibility mode:
the DRA plugins publish binding conditions, the memory service provisions the claims).
With --real-nodes=1 one more node is run by a real kubelet with containerd and runc
(as root): the pods placed there run real containers.
Build the binaries first ('make demo' does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, closeLog, err := logToFile(cmd.Context(), g, "demo.log")
			if err != nil {
				return err
			}
			defer closeLog()
			return system.RunDemo(ctx, system.DemoOptions{Dir: g.dir, Keep: keep, Scheduler: scheduler, RealNodes: realNodes, Out: cmd.OutOrStdout()})
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the cluster and the components running at the end (stop them with 'make cluster-down')")
	cmd.Flags().IntVar(&realNodes, "real-nodes", 0, "add nodes run by a real kubelet and containerd (0 or 1; needs root and 'make node-bins')")
	cmd.Flags().StringVar(&scheduler, "scheduler", system.SchedulerDynamicMemory,
		"the scheduler that places the pods: "+system.SchedulerDynamicMemory+" (this project's) or "+system.SchedulerStock+" (the stock kube-scheduler, bin/stock-kube-scheduler)")
	return cmd
}
