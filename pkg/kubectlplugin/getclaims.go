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
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// GetClaimsOptions lists DynamicMemoryClaims.
type GetClaimsOptions struct {
	env           *Environment
	session       *session
	AllNamespaces bool
	Output        string
	Names         []string
}

func newGetClaimsCommand(env *Environment) *cobra.Command {
	o := &GetClaimsOptions{env: env}
	cmd := &cobra.Command{
		Use:     "claims [NAME...]",
		Aliases: []string{"claim", "dmclaim", "dmclaims"},
		Short:   "List DynamicMemoryClaims: phase, node, pool, size, pod, provisioning time",
		Example: `  kubectl dynamic-memory get claims -A
  kubectl dynamic-memory get claims -n shop -o wide`,
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
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "Output format: wide, yaml or json.")
	return cmd
}

// Complete resolves the namespace and clients.
func (o *GetClaimsOptions) Complete(args []string) error {
	o.Names = args
	if err := validateOutput(o.Output, outputTable, outputWide, outputYAML, outputJSON); err != nil {
		return err
	}
	s, err := newSession(o.env)
	if err != nil {
		return err
	}
	o.session = s
	return nil
}

// Validate checks flag combinations.
func (o *GetClaimsOptions) Validate() error {
	if o.AllNamespaces && len(o.Names) > 0 {
		return oneLine("a claim name cannot be combined with --all-namespaces: use -n NAMESPACE")
	}
	return nil
}

// Run lists the claims and prints them.
func (o *GetClaimsOptions) Run(ctx context.Context) error {
	s := o.session
	if err := s.ensureCRDs(ctx, ClaimsResource.Resource); err != nil {
		return err
	}
	ns := s.namespace
	if o.AllNamespaces {
		ns = metav1.NamespaceAll
	}
	claims, meta, err := s.listClaims(ctx, ns, "")
	if err != nil {
		return err
	}
	if len(o.Names) > 0 {
		claims, err = o.selectNames(claims)
		if err != nil {
			return err
		}
	}
	out := o.env.Streams.Out
	if o.Output == outputYAML || o.Output == outputJSON {
		list, err := listOf("DynamicMemoryClaim", meta, claims)
		if err != nil {
			return err
		}
		return printObject(o.Output, list, out)
	}
	if len(claims) == 0 {
		where := fmt.Sprintf("in namespace %s", ns)
		if ns == metav1.NamespaceAll {
			where = "in any namespace"
		}
		_, err := fmt.Fprintf(o.env.Streams.ErrOut, "No DynamicMemoryClaims found %s.\n", where)
		return err
	}
	now := o.env.Clock.Now()
	t := newTable(out)
	header := []string{"NAME", "PHASE", "NODE", "POOL", "SIZE", "POD", "PROVISIONING", "AGE"}
	if o.Output == outputWide {
		header = append(header, "RESOURCECLAIM", "REQUESTED", "EXTENTS", "NUMA", "MESSAGE")
	}
	if o.AllNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	t.row(header...)
	for _, c := range claims {
		pod := "-"
		if c.Spec.PodRef != nil {
			pod = c.Spec.PodRef.Name
		}
		cells := []string{c.Name, orDash(string(c.CurrentPhase())), c.Spec.Node, c.Spec.Pool,
			formatBytes(c.Spec.Size.Value()), pod, formatDuration(c.Status.ProvisioningDuration),
			age(now, c.CreationTimestamp)}
		if o.Output == outputWide {
			cells = append(cells, c.Spec.ClaimRef.Name, formatBytes(c.Spec.Requested.Value()),
				strconv.Itoa(len(c.Status.Extents)), numaList(c.Status.NUMANodes), orDash(c.Status.Message))
		}
		if o.AllNamespaces {
			cells = append([]string{c.Namespace}, cells...)
		}
		t.row(cells...)
	}
	return t.flush()
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
