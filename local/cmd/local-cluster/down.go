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

	"github.com/spf13/cobra"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

func newDownCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the local cluster and every process it started (logs and data stay in the run directory)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cluster.Attach(g.dir)
			if c == nil {
				if errors.Is(err, cluster.ErrNotRunning) {
					fmt.Fprintf(cmd.OutOrStdout(), "Local cluster not running in %s.\n", g.dir)
					// A real node's containers outlive its kubelet and containerd.
					return cluster.CleanRealNodes(g.dir)
				}
				return err
			}
			// c is set even when the apiserver is gone but other processes remain.
			procs := c.Processes()
			if err := c.Stop(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Stopped %d processes of the local cluster in %s.\n", len(procs), c.Dir())
			return nil
		},
	}
}
