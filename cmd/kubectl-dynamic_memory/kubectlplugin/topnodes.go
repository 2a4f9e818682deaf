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
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// TopNodesOptions compares static and dynamic memory per node.
type TopNodesOptions struct {
	listFlags
}

func newTopNodesCommand(env *Environment) *cobra.Command {
	o := &TopNodesOptions{listFlags: newListFlags(env)}
	cmd := &cobra.Command{
		Use:     "nodes",
		Aliases: []string{"node", "no"},
		Short:   "Show static memory (node allocatable) and dynamic memory (online from pools) per node",
		Long: `Show, per node, the static memory the kubelet reports (allocatable memory), the
dynamic memory online from pools (the dynamicmemory.io/online-memory resource the node
agent keeps on the node), what pools hold reserved for it, and what it could still take.

-o json|yaml|name|jsonpath|custom-columns print each row as a NodeMemory object
(apiVersion ` + nodeMemoryAPIVersion + `): a view this plugin computes from the Node and the
DynamicMemoryPools, not a resource of the API server.`,
		Example: `  kubectl dynamic-memory top nodes
  kubectl dynamic-memory top nodes -l dynamicmemory.io/cxl-attached=true -o wide
  kubectl dynamic-memory top nodes -o custom-columns=NODE:.metadata.name,DYNAMIC:.dynamic`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.addFlags(cmd, "Label selector to filter nodes on.")
	return cmd
}

// Complete checks the flags and builds the clients.
func (o *TopNodesOptions) Complete() error { return o.complete(false) }

// nodeMemoryAPIVersion and nodeMemoryKind name the objects -o prints for top nodes.
const (
	nodeMemoryAPIVersion = "kubectl.dynamicmemory.io/v1alpha1"
	nodeMemoryKind       = "NodeMemory"
)

// nodeMemory is one row of top nodes, as -o prints it. Sizes are quantities; the pool
// fields are absent for a node attached to no pool.
type nodeMemory struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	// Static is the node's allocatable memory, as the kubelet reports it.
	Static resource.Quantity `json:"static"`
	// Dynamic is the memory online from pools (the online-memory resource).
	Dynamic resource.Quantity `json:"dynamic"`
	// DynamicPercent is Dynamic's share of Static + Dynamic.
	DynamicPercent int64 `json:"dynamicPercent"`
	// Pools are the pools the node is attached to.
	Pools []string `json:"pools,omitempty"`
	// Reserved is what the pools hold for the node, CanAdd what they could still give it,
	// Window the sum of the pools' host windows: the most they can ever give it.
	Reserved *resource.Quantity `json:"reserved,omitempty"`
	CanAdd   *resource.Quantity `json:"canAdd,omitempty"`
	Window   *resource.Quantity `json:"window,omitempty"`
	// Agent is the node agent's session with the memory service: connected,
	// disconnected, or unknown when the service has not reported on the node.
	Agent string `json:"agent,omitempty"`
}

// Run reads nodes and pools and prints one row per node.
func (o *TopNodesOptions) Run(ctx context.Context) error {
	s := o.session
	nodes, err := s.clients.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: o.Selector})
	if err != nil {
		return explain(fmt.Errorf("list nodes: %w", err), s.server)
	}
	if err := s.ensureCRDs(ctx, PoolsResource.Resource); err != nil {
		return err
	}
	pools, _, err := s.listPools(ctx, "")
	if err != nil {
		return err
	}
	items := nodes.Items
	slices.SortFunc(items, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	if len(items) == 0 && o.print.human() {
		_, err := fmt.Fprintln(o.env.Streams.ErrOut, "No nodes found.")
		return err
	}
	rows := nodeMemories(items, pools)
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("v1")
	list.SetKind("List")
	list.SetResourceVersion(nodes.ResourceVersion)
	for i := range rows {
		content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&rows[i])
		if err != nil {
			return oneLine(fmt.Sprintf("encode %s: %v", nodeMemoryKind, err))
		}
		list.Items = append(list.Items, unstructured.Unstructured{Object: content})
	}
	out, flush := o.output.writer(o.env.Streams.Out)
	if err := o.output.print(out, nodeTable(items, rows), list); err != nil {
		return err
	}
	return flush()
}

// nodeMemories sums each node's shares over the pools it is attached to.
func nodeMemories(nodes []corev1.Node, pools []v1alpha1.DynamicMemoryPool) []nodeMemory {
	rows := make([]nodeMemory, len(nodes))
	index := map[string]*nodeMemory{}
	for i, n := range nodes {
		static := n.Status.Allocatable.Memory().Value()
		var dynamic int64
		if q, ok := n.Status.Allocatable[corev1.ResourceName(OnlineMemoryResource)]; ok {
			dynamic = q.Value()
		}
		var percent int64
		if static+dynamic > 0 {
			percent = dynamic * 100 / (static + dynamic)
		}
		rows[i] = nodeMemory{
			TypeMeta:       metav1.TypeMeta{APIVersion: nodeMemoryAPIVersion, Kind: nodeMemoryKind},
			ObjectMeta:     metav1.ObjectMeta{Name: n.Name, Labels: n.Labels},
			Static:         *bytesQuantity(static),
			Dynamic:        *bytesQuantity(dynamic),
			DynamicPercent: percent,
		}
		index[n.Name] = &rows[i]
	}
	reported := map[string]bool{}
	for _, p := range pools {
		for _, pn := range p.Spec.Nodes {
			if r := index[pn.Name]; r != nil {
				r.Pools = append(r.Pools, p.Name)
				r.Window = addBytes(r.Window, p.Spec.HostWindow.Value())
				r.Reserved = addBytes(r.Reserved, 0)
				r.CanAdd = addBytes(r.CanAdd, 0)
			}
		}
		for _, ps := range p.Status.Nodes {
			r := index[ps.Name]
			if r == nil {
				continue
			}
			r.Reserved = addBytes(r.Reserved, ps.Reserved.Value())
			r.CanAdd = addBytes(r.CanAdd, ps.Free.Value())
			reported[ps.Name] = true
			if ps.AgentConnected || r.Agent == "" {
				r.Agent = agentState(ps.AgentConnected)
			}
		}
	}
	for i := range rows {
		if len(rows[i].Pools) > 0 && !reported[rows[i].Name] {
			rows[i].Agent = "unknown"
		}
	}
	return rows
}

// nodeTable is the rows as a table; -o wide adds the sum of the pools' host windows.
func nodeTable(nodes []corev1.Node, rows []nodeMemory) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		column("NODE"), column("STATIC"), column("DYNAMIC"), column("TOTAL"), column("DYNAMIC%"),
		column("RESERVED"), column("CAN ADD"), column("POOLS"), column("AGENT"), wideColumn("WINDOW"),
	}}
	for i, r := range rows {
		pools := strings.Join(r.Pools, ",")
		if pools == "" {
			pools = "<none>"
		}
		t.Rows = append(t.Rows, tableRow(&nodes[i], r.Name, formatBytes(r.Static.Value()), formatBytes(r.Dynamic.Value()),
			formatBytes(r.Static.Value()+r.Dynamic.Value()), fmt.Sprintf("%d%%", r.DynamicPercent),
			formatQuantity(r.Reserved), formatQuantity(r.CanAdd), pools, orDash(r.Agent), formatQuantity(r.Window)))
	}
	return t
}

// bytesQuantity is n bytes as a quantity in binary units.
func bytesQuantity(n int64) *resource.Quantity {
	return resource.NewQuantity(n, resource.BinarySI)
}

// addBytes adds n bytes to q, which may be unset.
func addBytes(q *resource.Quantity, n int64) *resource.Quantity {
	if q == nil {
		return bytesQuantity(n)
	}
	return bytesQuantity(q.Value() + n)
}
