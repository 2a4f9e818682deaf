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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// Resources of the project's API group.
var (
	ClaimsResource = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemoryclaims")
	PoolsResource  = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemorypools")
)

// Kinds of the project's API group, as the objects -o prints carry them.
const (
	claimKind = "DynamicMemoryClaim"
	poolKind  = "DynamicMemoryPool"
)

// listFlags are what every get and top command shares: the label selector and the
// output flags, and the session and printer complete builds from them.
type listFlags struct {
	env      *Environment
	session  *session
	print    *printFlags
	output   *output
	Selector string
}

func newListFlags(env *Environment) listFlags { return listFlags{env: env, print: newPrintFlags()} }

// addFlags adds -l, with its help text, and the output flags.
func (l *listFlags) addFlags(cmd *cobra.Command, selectorHelp string) {
	cmd.Flags().StringVarP(&l.Selector, "selector", "l", "", selectorHelp)
	l.print.addFlags(cmd)
}

// complete checks the selector and builds the printer and the clients.
func (l *listFlags) complete(allNamespaces bool) error {
	if err := validateSelector(l.Selector); err != nil {
		return err
	}
	out, err := newOutput(l.print, allNamespaces)
	if err != nil {
		return err
	}
	l.output = out
	s, err := newSession(l.env)
	if err != nil {
		return err
	}
	l.session = s
	return nil
}

// validateSelector checks a -l value.
func validateSelector(selector string) error {
	if _, err := labels.Parse(selector); err != nil {
		return oneLine(fmt.Sprintf("-l %q is not a label selector (e.g. -l dynamicmemory.io/pool=cxl-a): %v", selector, err))
	}
	return nil
}

// listClaims lists DynamicMemoryClaims in namespace ("" = all namespaces) matching the
// label selector, sorted by namespace and name, with the list's metadata for -o.
func (s *session) listClaims(ctx context.Context, namespace, selector string) ([]v1alpha1.DynamicMemoryClaim, metav1.ListMeta, error) {
	list, err := s.clients.DynamicMemory.DynamicMemoryV1alpha1().DynamicMemoryClaims(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, metav1.ListMeta{}, explain(fmt.Errorf("list DynamicMemoryClaims: %w", err), s.server)
	}
	slices.SortFunc(list.Items, func(a, b v1alpha1.DynamicMemoryClaim) int { return compareObjects(&a, &b) })
	return list.Items, list.ListMeta, nil
}

// getClaim reads one DynamicMemoryClaim; a missing claim is a one-line error.
func (s *session) getClaim(ctx context.Context, namespace, name string) (*v1alpha1.DynamicMemoryClaim, error) {
	claim, err := s.clients.DynamicMemory.DynamicMemoryV1alpha1().DynamicMemoryClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, oneLine(fmt.Sprintf("DynamicMemoryClaim %q not found in namespace %q (list them with: kubectl dynamic-memory get claims -n %s)", name, namespace, namespace))
	}
	if err != nil {
		return nil, explain(fmt.Errorf("get DynamicMemoryClaim %s/%s: %w", namespace, name, err), s.server)
	}
	return claim, nil
}

// listPools lists DynamicMemoryPools matching the label selector, sorted by name, with
// the list's metadata for -o.
func (s *session) listPools(ctx context.Context, selector string) ([]v1alpha1.DynamicMemoryPool, metav1.ListMeta, error) {
	list, err := s.clients.DynamicMemory.DynamicMemoryV1alpha1().DynamicMemoryPools().List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, metav1.ListMeta{}, explain(fmt.Errorf("list DynamicMemoryPools: %w", err), s.server)
	}
	slices.SortFunc(list.Items, func(a, b v1alpha1.DynamicMemoryPool) int { return compareObjects(&a, &b) })
	return list.Items, list.ListMeta, nil
}

// eventsFor lists the core events about the given objects in namespace, oldest first.
// Each object's events are asked for with a field selector and matched again by kind,
// name and UID (when both sides carry one), so that events recorded through
// events.k8s.io and core/v1 are both found and an older object of the same name is not.
func (s *session) eventsFor(ctx context.Context, namespace string, objects ...corev1.ObjectReference) ([]corev1.Event, error) {
	var out []corev1.Event
	seen := map[string]bool{}
	for _, obj := range objects {
		selector := fields.Set{"involvedObject.kind": obj.Kind, "involvedObject.name": obj.Name}.AsSelector().String()
		list, err := s.clients.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: selector})
		if err != nil {
			return nil, explain(fmt.Errorf("list events of %s %s/%s: %w", obj.Kind, namespace, obj.Name, err), s.server)
		}
		for _, ev := range list.Items {
			if ev.InvolvedObject.Kind != obj.Kind || ev.InvolvedObject.Name != obj.Name || seen[ev.Name] ||
				(obj.UID != "" && ev.InvolvedObject.UID != "" && ev.InvolvedObject.UID != obj.UID) {
				continue
			}
			seen[ev.Name] = true
			out = append(out, ev)
		}
	}
	slices.SortStableFunc(out, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	return out, nil
}

// compareObjects orders objects by namespace and name, so that output is stable.
func compareObjects(a, b metav1.Object) int {
	if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}

// listOf is objects of kind as the kubectl List that -o prints, with the metadata of
// the list they came from.
func listOf[T any](kind string, meta metav1.ListMeta, objects []T) (*unstructured.UnstructuredList, error) {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("v1")
	list.SetKind("List")
	list.SetResourceVersion(meta.ResourceVersion)
	list.SetContinue(meta.Continue)
	list.SetRemainingItemCount(meta.RemainingItemCount)
	for i := range objects {
		item, err := objectOf(kind, &objects[i])
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, *item)
	}
	return list, nil
}

// objectOf is one object of the project's API group as -o prints it, with its kind.
func objectOf(kind string, obj any) (*unstructured.Unstructured, error) {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, oneLine(fmt.Sprintf("encode %s: %v", kind, err))
	}
	item := &unstructured.Unstructured{Object: content}
	item.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
	item.SetKind(kind)
	return item, nil
}
