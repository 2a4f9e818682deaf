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
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TopNodesOptions compares static and dynamic memory per node.
type TopNodesOptions struct {
	env     *Environment
	session *session
}

func newTopNodesCommand(env *Environment) *cobra.Command {
	o := &TopNodesOptions{env: env}
	return &cobra.Command{
		Use:     "nodes",
		Aliases: []string{"node", "no"},
		Short:   "Show static memory (node allocatable) and dynamic memory (online from pools) per node",
		Long: `Show, per node, the static memory the kubelet reports (allocatable memory), the
dynamic memory online from pools (the dynamicmemory.io/online-memory resource the node
agent keeps on the node), what pools hold reserved for it, and what it could still take.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
}

// Complete builds the clients.
func (o *TopNodesOptions) Complete() error {
	s, err := newSession(o.env)
	if err != nil {
		return err
	}
	o.session = s
	return nil
}

// nodeShare sums a node's shares over the pools it is attached to.
type nodeShare struct {
	pools          []string
	reserved       int64
	free           int64
	agentConnected bool
	reported       bool
}

// Run reads nodes and pools and prints one row per node.
func (o *TopNodesOptions) Run(ctx context.Context) error {
	s := o.session
	nodes, err := s.clients.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return explain(fmt.Errorf("list nodes: %w", err), s.server)
	}
	if err := s.ensureCRDs(ctx, PoolsResource.Resource); err != nil {
		return err
	}
	pools, _, err := s.listPools(ctx)
	if err != nil {
		return err
	}
	shares := map[string]*nodeShare{}
	share := func(node string) *nodeShare {
		if shares[node] == nil {
			shares[node] = &nodeShare{}
		}
		return shares[node]
	}
	for _, p := range pools {
		for _, n := range p.Spec.Nodes {
			sh := share(n.Name)
			sh.pools = append(sh.pools, p.Name)
		}
		for _, n := range p.Status.Nodes {
			sh := share(n.Name)
			sh.reported = true
			sh.reserved += n.Reserved.Value()
			sh.free += n.Free.Value()
			sh.agentConnected = sh.agentConnected || n.AgentConnected
		}
	}
	items := nodes.Items
	slices.SortFunc(items, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	if len(items) == 0 {
		_, err := fmt.Fprintln(o.env.Streams.ErrOut, "No nodes found.")
		return err
	}
	t := newTable(o.env.Streams.Out)
	t.row("NODE", "STATIC", "DYNAMIC", "TOTAL", "DYNAMIC%", "RESERVED", "CAN ADD", "POOLS", "AGENT")
	for _, n := range items {
		static := n.Status.Allocatable.Memory().Value()
		var dynamic int64
		if q, ok := n.Status.Allocatable[corev1.ResourceName(OnlineMemoryResource)]; ok {
			dynamic = q.Value()
		}
		total := static + dynamic
		percent := "0%"
		if total > 0 {
			percent = fmt.Sprintf("%d%%", dynamic*100/total)
		}
		sh := shares[n.Name]
		if sh == nil {
			t.row(n.Name, formatBytes(static), formatBytes(dynamic), formatBytes(total), percent, "-", "-", "<none>", "-")
			continue
		}
		agent := "unknown"
		if sh.reported {
			agent = agentState(sh.agentConnected)
		}
		t.row(n.Name, formatBytes(static), formatBytes(dynamic), formatBytes(total), percent,
			formatBytes(sh.reserved), formatBytes(sh.free), strings.Join(sh.pools, ","), agent)
	}
	return t.flush()
}
