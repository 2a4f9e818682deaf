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

package driver

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	dmfake "github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
)

// TestPublisherWritesTheSliceOnlyWhenADeviceChanges changes a shared pool's status
// the way the memory service does while other nodes reserve from it: the node's
// slice is written again only when its device changes.
func TestPublisherWritesTheSliceOnlyWhenADeviceChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p := pool("pool-a", "1Gi", "16Gi", nil, "node-1", "node-2")
	dm := dmfake.NewSimpleClientset(&p)

	var mu sync.Mutex
	var capacities []string
	m := metrics.New()
	pub := &Publisher{
		Node: "node-1", DynamicMemory: dm, Metrics: m,
		Publish: func(_ context.Context, r resourceslice.DriverResources) error {
			mu.Lock()
			defer mu.Unlock()
			c := r.Pools["node-1"].Slices[0].Devices[0].Capacity["memory"]
			capacities = append(capacities, c.Value.String())
			return nil
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, pub.Run(ctx))
	}()
	published := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), capacities...)
	}
	require.Eventually(t, func() bool { return len(published()) == 1 }, 10*time.Second, 10*time.Millisecond, "the first publish")

	pools := dm.DynamicMemoryV1alpha1().DynamicMemoryPools()
	setFree := func(free string) {
		t.Helper()
		cur, err := pools.Get(ctx, "pool-a", metav1.GetOptions{})
		require.NoError(t, err)
		cur.Status.Nodes = []v1alpha1.PoolNodeStatus{{Name: "node-1", Reserved: resource.MustParse("2Gi"), Free: resource.MustParse(free)}}
		_, err = pools.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	// Other nodes take the pool: the 16Gi published offers node-1 14Gi, which stays
	// while its free share is at least half of that (10Gi, 7Gi), and is written
	// again at 6Gi: 8Gi, what the node holds plus its share. 4Gi is kept again; at
	// 0 the device is exactly full. (A handler may already see the next status in
	// its cache; each step's publish is the same either way.)
	setFree("10Gi")
	setFree("7Gi")
	setFree("6Gi")
	require.Eventually(t, func() bool { return len(published()) == 2 }, 10*time.Second, 10*time.Millisecond)
	setFree("4Gi")
	setFree("0")
	require.Eventually(t, func() bool { return len(published()) == 3 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	<-done
	assert.Equal(t, []string{"16Gi", "8Gi", "2Gi"}, published())
	assert.Equal(t, 3.0, testutil.ToFloat64(m.SliceUpdates))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.PublishedDevices))
}
