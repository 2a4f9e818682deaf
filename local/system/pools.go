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

package system

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// Names of the demo's pools.
const (
	PoolA = "cxl-pool-a"
	PoolB = "cxl-pool-b"
)

// DefaultPools are the demo's two simulated pools, in 1Gi blocks, attached to every
// node: cxl-pool-a (64Gi, low latency, up to 32Gi per node) and cxl-pool-b (128Gi,
// medium latency, up to 64Gi per node). Both are shared beyond their capacity: the
// nodes together could ask for twice what each has, and only the pool-wide view of
// the memory service tells whether a claim fits (the DRA plugin lowers a pool's
// device capacity on every node as the pool fills). latency is the simulated device's
// time to add extents (release takes half of it); 0 is an instant device.
func DefaultPools(nodes []string, latency time.Duration) []v1alpha1.DynamicMemoryPool {
	return NewPools([]PoolSpec{
		{Name: PoolA, Capacity: "64Gi", HostWindow: "32Gi", LatencyClass: "low"},
		{Name: PoolB, Capacity: "128Gi", HostWindow: "64Gi", LatencyClass: "medium"},
	}, nodes, latency)
}

// PoolSpec is the shape of a simulated pool.
type PoolSpec struct {
	Name string
	// Capacity and HostWindow are quantities, multiples of 1Gi (the block size).
	Capacity, HostWindow string
	// LatencyClass is low, medium or high.
	LatencyClass string
}

// NewPools are simulated pools of 1Gi blocks attached to nodes (host IDs in their
// order), whose devices take latency to add extents and half of it to release them.
func NewPools(specs []PoolSpec, nodes []string, latency time.Duration) []v1alpha1.DynamicMemoryPool {
	pools := make([]v1alpha1.DynamicMemoryPool, len(specs))
	for i, spec := range specs {
		pools[i] = newPool(spec, nodes, latency)
	}
	return pools
}

func newPool(spec PoolSpec, nodes []string, latency time.Duration) v1alpha1.DynamicMemoryPool {
	pool := v1alpha1.DynamicMemoryPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryPool"},
		ObjectMeta: metav1.ObjectMeta{Name: spec.Name},
		Spec: v1alpha1.DynamicMemoryPoolSpec{
			Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
			Capacity:   resource.MustParse(spec.Capacity),
			BlockSize:  resource.MustParse("1Gi"),
			HostWindow: resource.MustParse(spec.HostWindow),
			Attributes: map[string]string{v1alpha1.AttributeLatencyClass: spec.LatencyClass},
		},
	}
	if latency > 0 {
		pool.Spec.Backend.Simulated = &v1alpha1.SimulatedBackend{
			AddLatency:     &metav1.Duration{Duration: latency},
			ReleaseLatency: &metav1.Duration{Duration: latency / 2},
		}
	}
	for i, n := range nodes {
		pool.Spec.Nodes = append(pool.Spec.Nodes, v1alpha1.PoolNode{Name: n, HostID: int32(i)})
	}
	return pool
}

func describePools(pools []v1alpha1.DynamicMemoryPool) string {
	var parts []string
	for _, p := range pools {
		parts = append(parts, fmt.Sprintf("%s (%s in %s blocks, up to %s per node, %d nodes)",
			p.Name, p.Spec.Capacity.String(), p.Spec.BlockSize.String(), p.Spec.HostWindow.String(), len(p.Spec.Nodes)))
	}
	return strings.Join(parts, " and ")
}

func (s *System) createPool(ctx context.Context, pool *v1alpha1.DynamicMemoryPool) error {
	_, err := s.dm.DynamicMemoryV1alpha1().DynamicMemoryPools().Create(ctx, pool, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create pool %s: %w", pool.Name, err)
	}
	return nil
}
