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

package kubectlplugin

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// GetPoolsOptions lists DynamicMemoryPools with their per-node shares.
type GetPoolsOptions struct {
	env     *Environment
	session *session
	Output  string
}

func newGetPoolsCommand(env *Environment) *cobra.Command {
	o := &GetPoolsOptions{env: env}
	cmd := &cobra.Command{
		Use:     "pools",
		Aliases: []string{"pool", "dmpool", "dmpools"},
		Short:   "List DynamicMemoryPools: capacity, reserved, online, free, and each node's share",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "Output format: yaml or json.")
	return cmd
}

// Complete checks the output format and builds the clients.
func (o *GetPoolsOptions) Complete() error {
	if err := validateOutput(o.Output, outputTable, outputYAML, outputJSON); err != nil {
		return err
	}
	s, err := newSession(o.env)
	if err != nil {
		return err
	}
	o.session = s
	return nil
}

// Run prints the pool table, then the per-node shares.
func (o *GetPoolsOptions) Run(ctx context.Context) error {
	s := o.session
	if err := s.ensureCRDs(ctx, PoolsResource.Resource); err != nil {
		return err
	}
	pools, meta, err := s.listPools(ctx)
	if err != nil {
		return err
	}
	out := o.env.Streams.Out
	if o.Output == outputYAML || o.Output == outputJSON {
		list, err := listOf("DynamicMemoryPool", meta, pools)
		if err != nil {
			return err
		}
		return printObject(o.Output, list, out)
	}
	if len(pools) == 0 {
		_, err := fmt.Fprintln(o.env.Streams.ErrOut, "No DynamicMemoryPools found.")
		return err
	}
	now := o.env.Clock.Now()
	t := newTable(out)
	t.row("NAME", "BACKEND", "CAPACITY", "RESERVED", "ONLINE", "FREE", "BLOCK", "WINDOW", "NODES", "READY", "AGE")
	for _, p := range pools {
		t.row(p.Name, string(p.Spec.Backend.Type), formatBytes(p.Spec.Capacity.Value()),
			formatQuantity(p.Status.Reserved), formatQuantity(p.Status.Online), formatQuantity(p.Status.Free),
			formatBytes(p.Spec.BlockSize.Value()), formatBytes(p.Spec.HostWindow.Value()),
			strconv.Itoa(len(p.Spec.Nodes)), conditionStatus(p.Status.Conditions, v1alpha1.PoolConditionReady),
			age(now, p.CreationTimestamp))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(out); err != nil {
		return err
	}
	t = newTable(out)
	t.row("POOL", "NODE", "RESERVED", "ONLINE", "FREE", "AGENT")
	for _, p := range pools {
		reported := map[string]bool{}
		for _, n := range p.Status.Nodes {
			reported[n.Name] = true
			t.row(p.Name, n.Name, formatBytes(n.Reserved.Value()), formatBytes(n.Online.Value()),
				formatBytes(n.Free.Value()), agentState(n.AgentConnected))
		}
		// Attached nodes the service has not reported on yet still show up.
		for _, n := range p.Spec.Nodes {
			if !reported[n.Name] {
				t.row(p.Name, n.Name, "-", "-", "-", "unknown")
			}
		}
	}
	return t.flush()
}

func agentState(connected bool) string {
	if connected {
		return "connected"
	}
	return "disconnected"
}
