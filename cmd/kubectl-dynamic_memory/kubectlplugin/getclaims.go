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
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// GetClaimsOptions lists DynamicMemoryClaims.
type GetClaimsOptions struct {
	listFlags
	AllNamespaces bool
	Watch         bool
	Names         []string
}

func newGetClaimsCommand(env *Environment) *cobra.Command {
	o := &GetClaimsOptions{listFlags: newListFlags(env)}
	cmd := &cobra.Command{
		Use:     "claims [NAME...]",
		Aliases: []string{"claim", "dmclaim", "dmclaims"},
		Short:   "List DynamicMemoryClaims: phase, node, pool, size, pod, provisioning time",
		Example: `  kubectl dynamic-memory get claims -A
  kubectl dynamic-memory get claims -n shop -o wide
  kubectl dynamic-memory get claims -n shop -w
  kubectl dynamic-memory get claims -A -l dynamicmemory.io/pool=cxl-a -o name
  kubectl dynamic-memory get claims -A -o custom-columns=NAME:.metadata.name,PHASE:.status.phase`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "List claims in all namespaces.")
	cmd.Flags().BoolVarP(&o.Watch, "watch", "w", false, "After listing the claims, print each change to them until interrupted.")
	o.addFlags(cmd, "Label selector to filter claims on, e.g. -l dynamicmemory.io/pool=cxl-a.")
	return cmd
}

// Complete checks the output flags, resolves the namespace and builds the clients.
func (o *GetClaimsOptions) Complete(args []string) error {
	o.Names = args
	return o.complete(o.AllNamespaces)
}

// Validate checks flag combinations.
func (o *GetClaimsOptions) Validate() error {
	if o.AllNamespaces && len(o.Names) > 0 {
		return oneLine("a claim name cannot be combined with --all-namespaces: use -n NAMESPACE")
	}
	return nil
}

// Run lists the claims and prints them, then with -w each change.
func (o *GetClaimsOptions) Run(ctx context.Context) error {
	s := o.session
	if err := s.ensureCRDs(ctx, ClaimsResource.Resource); err != nil {
		return err
	}
	ns := s.namespace
	if o.AllNamespaces {
		ns = metav1.NamespaceAll
	}
	claims, meta, err := s.listClaims(ctx, ns, o.Selector)
	if err != nil {
		return err
	}
	if len(o.Names) > 0 {
		claims, err = o.selectNames(claims)
		if err != nil {
			return err
		}
	}
	out, flush := o.output.writer(o.env.Streams.Out)
	if len(claims) == 0 && o.print.human() {
		if err := o.sayNoneFound(ns); err != nil {
			return err
		}
	} else {
		list, err := listOf(claimKind, meta, claims)
		if err != nil {
			return err
		}
		if err := o.output.print(out, o.table(claims), list); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if !o.Watch {
		return nil
	}
	return o.watch(ctx, ns, meta.ResourceVersion, out, flush)
}

// watch prints each change to the claims from resourceVersion on, until ctx ends.
func (o *GetClaimsOptions) watch(ctx context.Context, ns, resourceVersion string, out io.Writer, flush func() error) error {
	s := o.session
	client := s.clients.DynamicMemory.DynamicMemoryV1alpha1().DynamicMemoryClaims(ns)
	w, err := watchtools.NewRetryWatcherWithContext(ctx, resourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, options metav1.ListOptions) (watch.Interface, error) {
			options.LabelSelector = o.Selector
			return client.Watch(ctx, options)
		},
	})
	if err != nil {
		return explain(fmt.Errorf("watch DynamicMemoryClaims: %w", err), s.server)
	}
	defer w.Stop()
	for {
		var ev watch.Event
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.ResultChan():
			if !ok {
				return nil
			}
			ev = e
		}
		switch ev.Type {
		case watch.Error:
			return explain(fmt.Errorf("watch DynamicMemoryClaims: %w", apierrors.FromObject(ev.Object)), s.server)
		case watch.Bookmark:
			continue
		}
		claim, ok := ev.Object.(*v1alpha1.DynamicMemoryClaim)
		if !ok || (len(o.Names) > 0 && !slices.Contains(o.Names, claim.Name)) {
			continue
		}
		item, err := objectOf(claimKind, claim)
		if err != nil {
			return err
		}
		if err := o.output.print(out, o.table([]v1alpha1.DynamicMemoryClaim{*claim}), item); err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
	}
}

// sayNoneFound tells on stderr that the list is empty, and where it looked.
func (o *GetClaimsOptions) sayNoneFound(ns string) error {
	where := fmt.Sprintf("in namespace %s", ns)
	if ns == metav1.NamespaceAll {
		where = "in any namespace"
	}
	_, err := fmt.Fprintf(o.env.Streams.ErrOut, "No DynamicMemoryClaims found %s.\n", where)
	return err
}

// table is the claims as rows; -o wide adds the ResourceClaim, the size asked for, the
// extents, NUMA nodes and the message.
func (o *GetClaimsOptions) table(claims []v1alpha1.DynamicMemoryClaim) *metav1.Table {
	now := o.env.Clock.Now()
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		column("NAME"), column("PHASE"), column("NODE"), column("POOL"), column("SIZE"), column("POD"),
		column("PROVISIONING"), column("AGE"), wideColumn("RESOURCECLAIM"), wideColumn("REQUESTED"),
		wideColumn("EXTENTS"), wideColumn("NUMA"), wideColumn("MESSAGE"),
	}}
	for i := range claims {
		c := &claims[i]
		pod := "-"
		if c.Spec.PodRef != nil {
			pod = c.Spec.PodRef.Name
		}
		t.Rows = append(t.Rows, tableRow(c, c.Name, orDash(string(c.CurrentPhase())), c.Spec.Node, c.Spec.Pool,
			formatBytes(c.Spec.Size.Value()), pod, formatDuration(c.Status.ProvisioningDuration),
			age(now, c.CreationTimestamp), c.Spec.ClaimRef.Name, formatBytes(c.Spec.Requested.Value()),
			strconv.Itoa(len(c.Status.Extents)), numaList(c.Status.NUMANodes), orDash(c.Status.Message)))
	}
	return t
}

// selectNames keeps the named claims, in the order given; an unknown name is an error.
func (o *GetClaimsOptions) selectNames(claims []v1alpha1.DynamicMemoryClaim) ([]v1alpha1.DynamicMemoryClaim, error) {
	var picked []v1alpha1.DynamicMemoryClaim
	for _, name := range o.Names {
		found := false
		for _, c := range claims {
			if c.Name == name {
				picked = append(picked, c)
				found = true
			}
		}
		if !found {
			ns := o.session.namespace
			return nil, oneLine(fmt.Sprintf("DynamicMemoryClaim %q not found in namespace %q (list them with: kubectl dynamic-memory get claims -n %s)", name, ns, ns))
		}
	}
	return picked, nil
}

func numaList(nodes []int32) string {
	if len(nodes) == 0 {
		return "-"
	}
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = strconv.Itoa(int(n))
	}
	return strings.Join(parts, ",")
}
