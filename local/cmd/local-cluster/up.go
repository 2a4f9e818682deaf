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
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

type upOptions struct {
	nodes      int
	realNodes  int
	nodeMemory string
	nodeCPU    string
	port       int
}

func newUpCommand(g *globalOptions) *cobra.Command {
	o := &upOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the local cluster in the background (nothing happens if it already runs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cluster.Start(cmd.Context(), cluster.Options{
				Dir:               g.dir,
				Nodes:             o.nodes,
				RealNodes:         o.realNodes,
				NodeMemory:        o.nodeMemory,
				NodeCPU:           o.nodeCPU,
				ControllerManager: true,
				Kwok:              true,
				APIServerPort:     o.port,
				InstallCRDs:       true,
				Detach:            true,
			})
			if errors.Is(err, cluster.ErrAlreadyRunning) {
				c, err = cluster.Attach(g.dir)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Local cluster already running in %s.\n", c.Dir())
				printUsage(cmd.OutOrStdout(), c)
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Local cluster ready in %s.\n", c.Dir())
			printUsage(cmd.OutOrStdout(), c)
			return nil
		},
	}
	cmd.Flags().IntVar(&o.nodes, "nodes", 4, "number of kwok nodes")
	cmd.Flags().IntVar(&o.realNodes, "real-nodes", 0, "number of nodes run by a real kubelet and containerd (0 or 1; needs root and 'make node-bins')")
	cmd.Flags().StringVar(&o.nodeMemory, "node-memory", "16Gi", "memory capacity of each node")
	cmd.Flags().StringVar(&o.nodeCPU, "node-cpu", "8", "CPU capacity of each node")
	cmd.Flags().IntVar(&o.port, "port", 6443, "kube-apiserver port on 127.0.0.1 (0: any free port)")
	return cmd
}

func printUsage(w io.Writer, c *cluster.Cluster) {
	fmt.Fprintf(w, `
  apiserver:  %s
  nodes:      %s
  kubeconfig: %s
  logs:       %s/logs/

Use it with kubectl:

  export KUBECONFIG=%s
  kubectl get nodes

Stop it with 'make cluster-down' (or 'local-cluster down --dir %s').
`, c.Server(), strings.Join(append(c.Nodes(), c.RealNodes()...), " "), c.Kubeconfig(), c.Dir(), c.Kubeconfig(), c.Dir())
}
