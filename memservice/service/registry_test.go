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

package service

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	dminformers "github.com/dynamicmemory/kube-dynamic-memory/api/client/informers/externalversions"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/simulated"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

func TestRegistryOwnsEachPoolsDeviceAndHostIDs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := ledger.New(nil, ledger.Options{})
	dev, err := simulated.New(simulated.Config{Capacity: 16 * gi, BlockSize: gi, HostWindow: 16 * gi, Seed: 1})
	require.NoError(t, err)
	built := 0
	g := newRegistry(dminformers.NewSharedInformerFactory(fake.NewSimpleClientset(), 0), l,
		clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		func(*v1alpha1.DynamicMemoryPool) (provision.Backend, error) { built++; return dev, nil }, func() {})
	pool := &v1alpha1.DynamicMemoryPool{
		ObjectMeta: metav1.ObjectMeta{Name: "cxl-a", Generation: 1},
		Spec: v1alpha1.DynamicMemoryPoolSpec{
			Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
			Capacity:   resource.MustParse("16Gi"),
			BlockSize:  resource.MustParse("1Gi"),
			HostWindow: resource.MustParse("16Gi"),
			Nodes:      []v1alpha1.PoolNode{{Name: "node1", HostID: 0}, {Name: "node2", HostID: 3}},
		},
	}

	_, _, err = g.Device("cxl-a", "node1")
	assert.Equal(t, ledger.CodeUnavailable, ledger.CodeOf(err), "an unknown pool has no device: %v", err)

	g.apply(ctx, pool)
	b, id, err := g.Device("cxl-a", "node2")
	require.NoError(t, err)
	assert.Same(t, dev, b)
	assert.Equal(t, int32(3), id)
	_, _, err = g.Device("cxl-a", "node9")
	assert.Equal(t, ledger.CodeNotFound, ledger.CodeOf(err), "a node not attached has no host ID: %v", err)
	_, hostIDs, ok := g.Devices("cxl-a")
	require.True(t, ok)
	assert.Equal(t, map[string]int32{"node1": 0, "node2": 3}, hostIDs)
	require.Eventually(t, func() bool {
		snap := l.Snapshot()
		return len(snap.Pools) == 1 && snap.Pools[0].Ready
	}, 10*time.Second, time.Millisecond, "the probe marks the pool ready in the ledger")

	refused := pool.DeepCopy()
	refused.Generation = 2
	refused.Spec.BlockSize = resource.MustParse("3Gi") // 16Gi is not a multiple
	refused.Spec.Nodes = []v1alpha1.PoolNode{{Name: "node2", HostID: 7}}
	g.apply(ctx, refused)
	_, id, err = g.Device("cxl-a", "node2")
	require.NoError(t, err)
	assert.Equal(t, int32(3), id, "a spec the ledger refuses leaves the previous host IDs in force")
	e, ok := g.statusOf("cxl-a")
	require.True(t, ok)
	assert.Equal(t, int64(2), e.generation)
	assert.Contains(t, e.specError, "capacity must be a positive multiple of the block size")

	g.remove(ctx, "cxl-a")
	_, _, err = g.Device("cxl-a", "node2")
	assert.Equal(t, ledger.CodeUnavailable, ledger.CodeOf(err), "a removed pool has no device: %v", err)
	_, ok = l.PoolSpec("cxl-a")
	assert.False(t, ok, "the ledger forgot the pool")
	assert.Equal(t, 1, built, "one backend was built")
}
