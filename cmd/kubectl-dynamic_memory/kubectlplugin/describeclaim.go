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
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// DescribeClaimOptions shows one DynamicMemoryClaim with a timeline.
type DescribeClaimOptions struct {
	env     *Environment
	session *session
	Name    string
}

func newDescribeClaimCommand(env *Environment) *cobra.Command {
	o := &DescribeClaimOptions{env: env}
	return &cobra.Command{
		Use:     "claim NAME",
		Aliases: []string{"claims", "dmclaim"},
		Short:   "Show a DynamicMemoryClaim: spec, status, extents and a timeline of its life",
		Long: `Show a DynamicMemoryClaim: spec, status, extents, conditions and a timeline built
from its status timestamps and the events of the claim, its ResourceClaim and its pod.
NAME may also be the name of the ResourceClaim the memory was reserved for.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
}

// Complete takes the claim name and builds the clients.
func (o *DescribeClaimOptions) Complete(args []string) error {
	o.Name = args[0]
	s, err := newSession(o.env)
	if err != nil {
		return err
	}
	o.session = s
	return nil
}

// Run reads the claim, its events and those of its ResourceClaim and pod, and prints them.
func (o *DescribeClaimOptions) Run(ctx context.Context) error {
	s := o.session
	if err := s.ensureCRDs(ctx, ClaimsResource.Resource); err != nil {
		return err
	}
	claim, err := o.find(ctx)
	if err != nil {
		return err
	}
	refs := []corev1.ObjectReference{
		{Kind: "DynamicMemoryClaim", Name: claim.Name, UID: claim.UID},
		{Kind: "ResourceClaim", Name: claim.Spec.ClaimRef.Name, UID: claim.Spec.ClaimRef.UID},
	}
	if claim.Spec.PodRef != nil {
		refs = append(refs, corev1.ObjectReference{Kind: "Pod", Name: claim.Spec.PodRef.Name, UID: claim.Spec.PodRef.UID})
	}
	events, err := s.eventsFor(ctx, claim.Namespace, refs...)
	if err != nil {
		return err
	}
	return writeClaim(o.env.Streams.Out, claim, events, o.env.Clock.Now())
}

// find gets the claim by name, falling back to the ResourceClaim of that name.
func (o *DescribeClaimOptions) find(ctx context.Context) (*v1alpha1.DynamicMemoryClaim, error) {
	s := o.session
	claim, notFound := s.getClaim(ctx, s.namespace, o.Name)
	if notFound == nil {
		return claim, nil
	}
	rc, err := s.clients.Kube.ResourceV1().ResourceClaims(s.namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, notFound
	}
	if err != nil {
		return nil, explain(fmt.Errorf("get ResourceClaim %s/%s: %w", s.namespace, o.Name, err), s.server)
	}
	selector := labels.SelectorFromSet(labels.Set{v1alpha1.LabelClaimUID: string(rc.UID)}).String()
	claims, _, err := s.listClaims(ctx, s.namespace, selector)
	if err != nil {
		return nil, err
	}
	if len(claims) == 0 {
		return nil, oneLine(fmt.Sprintf("ResourceClaim %s/%s has no DynamicMemoryClaim: no pool memory was reserved for it (see: kubectl dynamic-memory why POD)", s.namespace, o.Name))
	}
	return &claims[0], nil
}

func writeClaim(w io.Writer, c *v1alpha1.DynamicMemoryClaim, events []corev1.Event, now time.Time) error {
	t := newTable(w)
	pod := "-"
	if c.Spec.PodRef != nil {
		pod = c.Spec.PodRef.Name
	}
	t.row("Name:", c.Name)
	t.row("Namespace:", c.Namespace)
	t.row("Created:", fmt.Sprintf("%s (%s ago)", c.CreationTimestamp.UTC().Format(time.RFC3339), age(now, c.CreationTimestamp)))
	t.row("ResourceClaim:", fmt.Sprintf("%s (uid %s)", c.Spec.ClaimRef.Name, c.Spec.ClaimRef.UID))
	t.row("Pod:", pod)
	t.row("Node:", c.Spec.Node)
	t.row("Pool:", c.Spec.Pool)
	t.row("Requested:", formatBytes(c.Spec.Requested.Value()))
	t.row("Size:", formatBytes(c.Spec.Size.Value()))
	t.row("Phase:", orDash(string(c.CurrentPhase())))
	t.row("Provisioning:", formatDuration(c.Status.ProvisioningDuration))
	t.row("NUMA nodes:", numaList(c.Status.NUMANodes))
	t.row("Message:", orDash(c.Status.Message))
	t.row("Finalizers:", orDash(strings.Join(c.Finalizers, ", ")))
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "Extents:")
	if len(c.Status.Extents) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else {
		t = newTable(w)
		t.row("  OFFSET", "LENGTH")
		var total int64
		for _, e := range c.Status.Extents {
			t.row(fmt.Sprintf("  %#x", e.Offset), formatBytes(e.Length))
			total += e.Length
		}
		t.row("  total", formatBytes(total))
		if err := t.flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w, "Conditions:")
	if len(c.Status.Conditions) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else {
		t = newTable(w)
		t.row("  TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
		for _, cond := range c.Status.Conditions {
			t.row("  "+cond.Type, string(cond.Status), orDash(cond.Reason), age(now, cond.LastTransitionTime), orDash(cond.Message))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w, "Timeline:")
	entries := timeline(c, events)
	if len(entries) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	start := entries[0].at
	t = newTable(w)
	t.row("  TIME", "SINCE START", "SOURCE", "WHAT")
	for _, e := range entries {
		t.row("  "+e.at.UTC().Format(time.RFC3339), "+"+e.at.Sub(start).Round(time.Millisecond).String(), e.source, e.what)
	}
	return t.flush()
}

// timelineEntry is one moment in a claim's life.
type timelineEntry struct {
	at     time.Time
	source string
	what   string
}

// timeline merges the status timestamps and condition transitions of a claim with the
// events about it, its ResourceClaim and its pod, oldest first.
func timeline(c *v1alpha1.DynamicMemoryClaim, events []corev1.Event) []timelineEntry {
	var entries []timelineEntry
	phase := func(t *metav1.Time, what string) {
		if t != nil && !t.IsZero() {
			entries = append(entries, timelineEntry{at: t.Time, source: "status", what: what})
		}
	}
	phase(c.Status.ReservedAt, fmt.Sprintf("Reserved %s in pool %s for node %s", formatBytes(c.Spec.Size.Value()), c.Spec.Pool, c.Spec.Node))
	phase(c.Status.ProvisioningAt, "Provisioning: adding extents to the host")
	online := "Online"
	if c.Status.ProvisioningDuration != nil {
		online = fmt.Sprintf("Online after %s", formatDuration(c.Status.ProvisioningDuration))
	}
	phase(c.Status.OnlineAt, online)
	phase(c.Status.ReleasingAt, "Releasing: offlining and returning extents")
	phase(c.Status.ReleasedAt, "Released: extents back in the pool")
	for _, cond := range c.Status.Conditions {
		if cond.LastTransitionTime.IsZero() {
			continue
		}
		what := fmt.Sprintf("condition %s=%s", cond.Type, cond.Status)
		if cond.Reason != "" {
			what += " " + cond.Reason
		}
		if cond.Message != "" {
			what += ": " + cond.Message
		}
		entries = append(entries, timelineEntry{at: cond.LastTransitionTime.Time, source: "status", what: what})
	}
	for _, ev := range events {
		what := fmt.Sprintf("%s %s: %s", ev.Type, ev.Reason, strings.TrimSpace(ev.Message))
		if n := eventCount(ev); n > 1 {
			what += fmt.Sprintf(" (x%d)", n)
		}
		entries = append(entries, timelineEntry{
			at:     eventTime(ev),
			source: strings.ToLower(ev.InvolvedObject.Kind) + "/" + ev.InvolvedObject.Name,
			what:   what,
		})
	}
	slices.SortStableFunc(entries, func(a, b timelineEntry) int { return a.at.Compare(b.at) })
	return entries
}
