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
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// GetPoolsOptions lists DynamicMemoryPools with their per-node shares.
type GetPoolsOptions struct {
	listFlags
}

func newGetPoolsCommand(env *Environment) *cobra.Command {
	o := &GetPoolsOptions{listFlags: newListFlags(env)}
	cmd := &cobra.Command{
		Use:     "pools",
		Aliases: []string{"pool", "dmpool", "dmpools"},
		Short:   "List DynamicMemoryPools: capacity, reserved, online, free, and each node's share",
		Example: `  kubectl dynamic-memory get pools
  kubectl dynamic-memory get pools -o wide
  kubectl dynamic-memory get pools -o jsonpath='{.items[*].status.free}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.addFlags(cmd, "Label selector to filter pools on.")
	return cmd
}

// Complete checks the flags and builds the clients.
func (o *GetPoolsOptions) Complete() error { return o.complete(false) }

// Run prints the pools; as a table, then each node's share of them.
func (o *GetPoolsOptions) Run(ctx context.Context) error {
	s := o.session
	if err := s.ensureCRDs(ctx, PoolsResource.Resource); err != nil {
		return err
	}
	pools, listMeta, err := s.listPools(ctx, o.Selector)
	if err != nil {
		return err
	}
	if len(pools) == 0 && o.print.human() {
		_, err := fmt.Fprintln(o.env.Streams.ErrOut, "No DynamicMemoryPools found.")
		return err
	}
	list, err := listOf(poolKind, listMeta, pools)
	if err != nil {
		return err
	}
	out, flush := o.output.writer(o.env.Streams.Out)
	if err := o.output.print(out, o.table(pools), list); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	if !o.print.human() {
		return nil
	}
	if _, err := fmt.Fprintln(o.env.Streams.Out); err != nil {
		return err
	}
	// The shares are a table of their own, printed as the pools are.
	out, flush = o.output.writer(o.env.Streams.Out)
	if err := o.output.print(out, shareTable(pools), list); err != nil {
		return err
	}
	return flush()
}

// table is the pools as rows; -o wide adds their attributes and the message of their
// Ready condition.
func (o *GetPoolsOptions) table(pools []v1alpha1.DynamicMemoryPool) *metav1.Table {
	now := o.env.Clock.Now()
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		column("NAME"), column("BACKEND"), column("CAPACITY"), column("RESERVED"), column("ONLINE"), column("FREE"),
		column("BLOCK"), column("WINDOW"), column("NODES"), column("READY"), column("AGE"),
		wideColumn("ATTRIBUTES"), wideColumn("MESSAGE"),
	}}
	for i := range pools {
		p := &pools[i]
		ready := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PoolConditionReady)
		status, message := "Unknown", "-"
		if ready != nil {
			status, message = string(ready.Status), orDash(ready.Message)
		}
		t.Rows = append(t.Rows, tableRow(p, p.Name, string(p.Spec.Backend.Type), formatBytes(p.Spec.Capacity.Value()),
			formatQuantity(p.Status.Reserved), formatQuantity(p.Status.Online), formatQuantity(p.Status.Free),
			formatBytes(p.Spec.BlockSize.Value()), formatBytes(p.Spec.HostWindow.Value()),
			strconv.Itoa(len(p.Spec.Nodes)), status, age(now, p.CreationTimestamp),
			attributeList(p.Spec.Attributes), message))
	}
	return t
}

// shareTable is each node's share of the pools: what the memory service reports, and
// the attached nodes it has not reported on yet.
func shareTable(pools []v1alpha1.DynamicMemoryPool) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		column("POOL"), column("NODE"), column("RESERVED"), column("ONLINE"), column("FREE"), column("AGENT"),
	}}
	for i := range pools {
		p := &pools[i]
		reported := map[string]bool{}
		for _, n := range p.Status.Nodes {
			reported[n.Name] = true
			t.Rows = append(t.Rows, tableRow(p, p.Name, n.Name, formatBytes(n.Reserved.Value()), formatBytes(n.Online.Value()),
				formatBytes(n.Free.Value()), agentState(n.AgentConnected)))
		}
		for _, n := range p.Spec.Nodes {
			if !reported[n.Name] {
				t.Rows = append(t.Rows, tableRow(p, p.Name, n.Name, "-", "-", "-", "unknown"))
			}
		}
	}
	return t
}

// attributeList prints a pool's attributes as key=value, sorted, "-" when none.
func attributeList(attributes map[string]string) string {
	if len(attributes) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(attributes)) {
		parts = append(parts, k+"="+attributes[k])
	}
	return strings.Join(parts, ",")
}

func agentState(connected bool) string {
	if connected {
		return "connected"
	}
	return "disconnected"
}
