package kubectlplugin

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// Resources of the project's API group.
var (
	ClaimsResource = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemoryclaims")
	PoolsResource  = v1alpha1.SchemeGroupVersion.WithResource("dynamicmemorypools")
)

// listClaims lists DynamicMemoryClaims in namespace ("" = all namespaces) matching the
// label selector, sorted by namespace and name, with the raw list (same order) for -o.
func (s *session) listClaims(ctx context.Context, namespace, selector string) ([]v1alpha1.DynamicMemoryClaim, *unstructured.UnstructuredList, error) {
	raw, err := s.clients.Dynamic.Resource(ClaimsResource).Namespace(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, nil, explain(fmt.Errorf("list DynamicMemoryClaims: %w", err), s.server)
	}
	sortItems(raw)
	claims := make([]v1alpha1.DynamicMemoryClaim, len(raw.Items))
	for i := range raw.Items {
		if err := fromUnstructured(&raw.Items[i], &claims[i]); err != nil {
			return nil, nil, err
		}
	}
	return claims, raw, nil
}

// getClaim reads one DynamicMemoryClaim; a missing claim is a one-line error.
func (s *session) getClaim(ctx context.Context, namespace, name string) (*v1alpha1.DynamicMemoryClaim, error) {
	raw, err := s.clients.Dynamic.Resource(ClaimsResource).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, oneLine(fmt.Sprintf("DynamicMemoryClaim %q not found in namespace %q (list them with: kubectl dynamic-memory get claims -n %s)", name, namespace, namespace))
	}
	if err != nil {
		return nil, explain(fmt.Errorf("get DynamicMemoryClaim %s/%s: %w", namespace, name, err), s.server)
	}
	claim := &v1alpha1.DynamicMemoryClaim{}
	if err := fromUnstructured(raw, claim); err != nil {
		return nil, err
	}
	return claim, nil
}

// listPools lists DynamicMemoryPools sorted by name, with the raw list for -o.
func (s *session) listPools(ctx context.Context) ([]v1alpha1.DynamicMemoryPool, *unstructured.UnstructuredList, error) {
	raw, err := s.clients.Dynamic.Resource(PoolsResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, explain(fmt.Errorf("list DynamicMemoryPools: %w", err), s.server)
	}
	sortItems(raw)
	pools := make([]v1alpha1.DynamicMemoryPool, len(raw.Items))
	for i := range raw.Items {
		if err := fromUnstructured(&raw.Items[i], &pools[i]); err != nil {
			return nil, nil, err
		}
	}
	return pools, raw, nil
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

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return oneLine(fmt.Sprintf("decode %s %s: %v", u.GetKind(), u.GetName(), err))
	}
	return nil
}

// sortItems orders a list by namespace and name, so that output is stable.
func sortItems(list *unstructured.UnstructuredList) {
	slices.SortFunc(list.Items, func(a, b unstructured.Unstructured) int {
		if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
			return c
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
}
