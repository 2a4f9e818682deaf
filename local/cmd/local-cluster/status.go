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
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

func newStatusCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the local cluster runs, its processes and nodes (exit status 1 when it does not run)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cluster.Attach(g.dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Local cluster running in %s\n  apiserver:  %s\n  kubeconfig: %s\n\n", c.Dir(), c.Server(), c.Kubeconfig())
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PROCESS\tPID\tLOG")
			for _, p := range c.Processes() {
				fmt.Fprintf(w, "%s\t%d\t%s\n", p.Name, p.Pid, p.LogFile)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			nodes, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list nodes: %w", err)
			}
			fmt.Fprintln(out)
			w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tREADY\tMEMORY\tCPU")
			for _, n := range nodes.Items {
				fmt.Fprintf(w, "%s\t%t\t%s\t%s\n", n.Name, cluster.NodeReady(&n), n.Status.Allocatable.Memory(), n.Status.Allocatable.Cpu())
			}
			return w.Flush()
		},
	}
}
