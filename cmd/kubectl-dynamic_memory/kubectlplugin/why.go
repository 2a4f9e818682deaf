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
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// maxWhyEvents bounds the events shown by `why`: the most recent ones tell the story.
const maxWhyEvents = 10

// WhyOptions explains why a pod is Pending, or what dynamic memory it got.
type WhyOptions struct {
	env     *Environment
	session *session
	Pod     string
}

func newWhyCommand(env *Environment) *cobra.Command {
	o := &WhyOptions{env: env}
	return &cobra.Command{
		Use:   "why POD",
		Short: "Explain why a pod is Pending, or what dynamic memory it got",
		Long: `Explain why a pod is Pending or what dynamic memory it got: the scheduler's
verdict and events (with the DynamicMemory plugin's reasons), the pod's ResourceClaims
and their allocations, the DynamicMemoryClaims that hold pool memory for them, and the
capacity of the pools.`,
		Example: `  kubectl dynamic-memory why web-0 -n shop`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
}

// Complete takes the pod name and builds the clients.
func (o *WhyOptions) Complete(args []string) error {
	o.Pod = args[0]
	s, err := newSession(o.env)
	if err != nil {
		return err
	}
	o.session = s
	return nil
}

// podClaim is one of the pod's claims as `why` reports it.
type podClaim struct {
	podClaimName string
	// claimName is the ResourceClaim's name, "" when not created yet.
	claimName string
	claim     *resourcev1.ResourceClaim
	// requested is the memory requested from the DeviceClass, 0 if none.
	requested int64
	dynamic   []v1alpha1.DynamicMemoryClaim
}

// Run gathers the pod, its claims, their DynamicMemoryClaims, pools and events.
func (o *WhyOptions) Run(ctx context.Context) error {
	s := o.session
	ns := s.namespace
	pod, err := s.clients.Kube.CoreV1().Pods(ns).Get(ctx, o.Pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return oneLine(fmt.Sprintf("pod %q not found in namespace %q", o.Pod, ns))
	}
	if err != nil {
		return explain(fmt.Errorf("get pod %s/%s: %w", ns, o.Pod, err), s.server)
	}
	if err := s.ensureCRDs(ctx, ClaimsResource.Resource, PoolsResource.Resource); err != nil {
		return err
	}

	claims, err := o.podClaims(ctx, pod)
	if err != nil {
		return err
	}
	refs := []corev1.ObjectReference{{Kind: "Pod", Name: pod.Name, UID: pod.UID}}
	for _, c := range claims {
		if c.claim != nil {
			refs = append(refs, corev1.ObjectReference{Kind: "ResourceClaim", Name: c.claim.Name, UID: c.claim.UID})
		}
		for _, d := range c.dynamic {
			refs = append(refs, corev1.ObjectReference{Kind: "DynamicMemoryClaim", Name: d.Name, UID: d.UID})
		}
	}
	events, err := s.eventsFor(ctx, ns, refs...)
	if err != nil {
		return err
	}
	var pools []v1alpha1.DynamicMemoryPool
	if slices.ContainsFunc(claims, func(c podClaim) bool { return c.requested > 0 }) {
		if pools, _, err = s.listPools(ctx, ""); err != nil {
			return err
		}
	}
	return writeWhy(o.env.Streams.Out, pod, claims, events, pools, o.env.Clock.Now())
}

// podClaims resolves the pod's claims to ResourceClaims and their DynamicMemoryClaims.
func (o *WhyOptions) podClaims(ctx context.Context, pod *corev1.Pod) ([]podClaim, error) {
	s := o.session
	var out []podClaim
	for _, pc := range pod.Spec.ResourceClaims {
		c := podClaim{podClaimName: pc.Name}
		if pc.ResourceClaimName != nil {
			c.claimName = *pc.ResourceClaimName
		}
		for _, st := range pod.Status.ResourceClaimStatuses {
			if st.Name == pc.Name && st.ResourceClaimName != nil {
				c.claimName = *st.ResourceClaimName
			}
		}
		if c.claimName != "" {
			rc, err := s.clients.Kube.ResourceV1().ResourceClaims(pod.Namespace).Get(ctx, c.claimName, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return nil, explain(fmt.Errorf("get ResourceClaim %s/%s: %w", pod.Namespace, c.claimName, err), s.server)
			default:
				c.claim = rc
				c.requested = requestedMemory(rc)
				selector := labels.SelectorFromSet(labels.Set{v1alpha1.LabelClaimUID: string(rc.UID)}).String()
				if c.dynamic, _, err = s.listClaims(ctx, pod.Namespace, selector); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// requestedMemory sums the memory a claim requests from the dynamic memory DeviceClass.
func requestedMemory(rc *resourcev1.ResourceClaim) int64 {
	var total int64
	add := func(class string, capacity *resourcev1.CapacityRequirements, count int64) {
		if class != dra.DeviceClassName || capacity == nil {
			return
		}
		if q, ok := capacity.Requests[dra.CapacityMemory]; ok {
			total += q.Value() * max(count, 1)
		}
	}
	for _, r := range rc.Spec.Devices.Requests {
		if r.Exactly != nil {
			add(r.Exactly.DeviceClassName, r.Exactly.Capacity, r.Exactly.Count)
		}
		// Of prioritized alternatives one is allocated; report the first that asks for memory.
		for _, sub := range r.FirstAvailable {
			before := total
			add(sub.DeviceClassName, sub.Capacity, sub.Count)
			if total != before {
				break
			}
		}
	}
	return total
}

func writeWhy(w io.Writer, pod *corev1.Pod, claims []podClaim, events []corev1.Event, pools []v1alpha1.DynamicMemoryPool, now time.Time) error {
	name := pod.Namespace + "/" + pod.Name
	wantsMemory := slices.ContainsFunc(claims, func(c podClaim) bool { return c.requested > 0 })
	if pod.Spec.NodeName == "" {
		fmt.Fprintf(w, "Pod %s is %s: not scheduled to a node yet.\n", name, pod.Status.Phase)
	} else {
		fmt.Fprintf(w, "Pod %s is %s on node %s.\n", name, pod.Status.Phase, pod.Spec.NodeName)
	}
	fmt.Fprintf(w, "Scheduler: %s\n", pod.Spec.SchedulerName)
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status != corev1.ConditionTrue {
			fmt.Fprintf(w, "Scheduling: %s (%s ago): %s\n", orDash(cond.Reason), age(now, cond.LastTransitionTime), orDash(cond.Message))
		}
	}
	if wantsMemory {
		fmt.Fprintf(w, "Verdict: %s\n", verdict(pod, claims, now))
	}

	fmt.Fprintln(w, "\nDynamic memory claims:")
	if !wantsMemory {
		fmt.Fprintf(w, "  none: the pod has no ResourceClaim asking %q for memory.\n", dra.DeviceClassName)
	}
	for _, c := range claims {
		writePodClaim(w, c)
	}

	if wantsMemory {
		fmt.Fprintln(w, "\nPools:")
		if len(pools) == 0 {
			fmt.Fprintln(w, "  none: no DynamicMemoryPool exists, so no node can get dynamic memory.")
		} else {
			t := newTable(w)
			t.row("  NAME", "CAPACITY", "FREE", "MOST A NODE CAN ADD", "AGENTS CONNECTED")
			for _, p := range pools {
				best, bestNode, connected := int64(0), "-", 0
				for _, n := range p.Status.Nodes {
					if n.Free.Value() > best {
						best, bestNode = n.Free.Value(), n.Name
					}
					if n.AgentConnected {
						connected++
					}
				}
				most := "0"
				if bestNode != "-" {
					most = fmt.Sprintf("%s (%s)", formatBytes(best), bestNode)
				}
				t.row("  "+p.Name, formatBytes(p.Spec.Capacity.Value()), formatQuantity(p.Status.Free), most,
					fmt.Sprintf("%d/%d", connected, len(p.Spec.Nodes)))
			}
			if err := t.flush(); err != nil {
				return err
			}
		}
	}

	fmt.Fprintln(w, "\nEvents:")
	if len(events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	if len(events) > maxWhyEvents {
		events = events[len(events)-maxWhyEvents:]
	}
	t := newTable(w)
	t.row("  LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE")
	for _, ev := range events {
		msg := strings.TrimSpace(ev.Message)
		if n := eventCount(ev); n > 1 {
			msg += fmt.Sprintf(" (x%d)", n)
		}
		t.row("  "+age(now, metav1.NewTime(eventTime(ev))), ev.Type, ev.Reason,
			strings.ToLower(ev.InvolvedObject.Kind)+"/"+ev.InvolvedObject.Name, msg)
	}
	return t.flush()
}

func writePodClaim(w io.Writer, c podClaim) {
	switch {
	case c.claimName == "":
		fmt.Fprintf(w, "  %s: ResourceClaim not created yet (the resourceclaim controller creates it from the template)\n", c.podClaimName)
		return
	case c.claim == nil:
		fmt.Fprintf(w, "  %s: ResourceClaim %s does not exist\n", c.podClaimName, c.claimName)
		return
	case c.requested == 0:
		fmt.Fprintf(w, "  %s: ResourceClaim %s asks for no dynamic memory\n", c.podClaimName, c.claimName)
		return
	}
	rc := c.claim
	fmt.Fprintf(w, "  %s: ResourceClaim %s requests %s from %s\n", c.podClaimName, rc.Name, formatBytes(c.requested), dra.DeviceClassName)
	if rc.Status.Allocation == nil {
		fmt.Fprintln(w, "    Allocation: none yet")
	}
	if rc.Status.Allocation != nil {
		for _, r := range rc.Status.Allocation.Devices.Results {
			if r.Driver != dra.DriverName {
				continue
			}
			consumed := ""
			if q, ok := r.ConsumedCapacity[dra.CapacityMemory]; ok {
				consumed = ", " + formatBytes(q.Value())
			}
			fmt.Fprintf(w, "    Allocation: device %s/%s (request %s%s)\n", r.Pool, r.Device, r.Request, consumed)
		}
	}
	for _, d := range rc.Status.Devices {
		if d.Driver != dra.DriverName {
			continue
		}
		for _, cond := range d.Conditions {
			fmt.Fprintf(w, "    Device %s/%s: %s=%s %s %s\n", d.Pool, d.Device, cond.Type, cond.Status, orDash(cond.Reason), cond.Message)
		}
	}
	var users []string
	for _, r := range rc.Status.ReservedFor {
		users = append(users, strings.ToLower(r.Resource)+"/"+r.Name)
	}
	if len(users) > 0 {
		fmt.Fprintf(w, "    Reserved for: %s\n", strings.Join(users, ", "))
	}
	if len(c.dynamic) == 0 {
		fmt.Fprintln(w, "    DynamicMemoryClaim: none (no pool memory reserved for this claim)")
	}
	for _, d := range c.dynamic {
		line := fmt.Sprintf("    DynamicMemoryClaim %s: %s, %s from pool %s on node %s", d.Name, orDash(string(d.CurrentPhase())),
			formatBytes(d.Spec.Size.Value()), d.Spec.Pool, d.Spec.Node)
		if d.Status.ProvisioningDuration != nil {
			line += ", provisioned in " + formatDuration(d.Status.ProvisioningDuration)
		}
		if d.Status.Message != "" {
			line += ": " + d.Status.Message
		}
		fmt.Fprintln(w, line)
	}
}

// verdict sums up, in one sentence, where the pod's dynamic memory stands.
// provisioningFailed is a device condition ProvisioningFailed=True of the claim's
// devices of the driver: the memory service or the node agent could not serve it.
func provisioningFailed(rc *resourcev1.ResourceClaim) *metav1.Condition {
	if rc == nil {
		return nil
	}
	for _, d := range rc.Status.Devices {
		if d.Driver != dra.DriverName {
			continue
		}
		if c := meta.FindStatusCondition(d.Conditions, dra.ConditionProvisioningFailed); c != nil && c.Status == metav1.ConditionTrue {
			return c
		}
	}
	return nil
}

func verdict(pod *corev1.Pod, claims []podClaim, now time.Time) string {
	var online, pending []v1alpha1.DynamicMemoryClaim
	for _, c := range claims {
		if c.requested == 0 {
			continue
		}
		if failed := provisioningFailed(c.claim); failed != nil {
			return fmt.Sprintf("the memory of ResourceClaim %s cannot be provisioned (%s): %s", c.claim.Name, orDash(failed.Reason), orDash(failed.Message))
		}
		if len(c.dynamic) == 0 && c.claim != nil && c.claim.Status.Allocation != nil {
			// Allocated by a scheduler without the DynamicMemory plugin: the memory
			// service provisions it next.
			return fmt.Sprintf("ResourceClaim %s is allocated without a reservation (scheduler %s); the memory service provisions it next (see the events)",
				c.claim.Name, pod.Spec.SchedulerName)
		}
		for _, d := range c.dynamic {
			switch d.CurrentPhase() {
			case v1alpha1.PhaseFailed:
				return fmt.Sprintf("provisioning %s from pool %s on node %s failed: %s (the scheduler retries the pod)",
					formatBytes(d.Spec.Size.Value()), d.Spec.Pool, d.Spec.Node, orDash(d.Status.Message))
			case v1alpha1.PhaseOnline:
				online = append(online, d)
			default:
				pending = append(pending, d)
			}
		}
	}
	switch {
	case len(pending) > 0:
		d := pending[0]
		since := d.CreationTimestamp
		if d.Status.ProvisioningAt != nil {
			since = *d.Status.ProvisioningAt
		}
		return fmt.Sprintf("%s of pool %s for node %s is %s (for %s); the pod is bound once its memory is online",
			formatBytes(d.Spec.Size.Value()), d.Spec.Pool, d.Spec.Node, orDash(string(d.CurrentPhase())), age(now, since))
	case len(online) > 0 && pod.Spec.NodeName != "":
		var total int64
		pools := map[string]bool{}
		for _, d := range online {
			total += d.Spec.Size.Value()
			pools[d.Spec.Pool] = true
		}
		names := make([]string, 0, len(pools))
		for p := range pools {
			names = append(names, p)
		}
		slices.Sort(names)
		return fmt.Sprintf("it got %s of dynamic memory on node %s from pool %s", formatBytes(total), pod.Spec.NodeName, strings.Join(names, ", "))
	case pod.Spec.NodeName == "":
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Reason == corev1.PodReasonUnschedulable {
				return "no node can get the memory now: see the scheduler's reasons above"
			}
		}
		return "waiting for the scheduler"
	}
	return "the pod's dynamic memory is not reserved"
}
