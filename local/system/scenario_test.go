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
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

const gi = int64(1) << 30

// TestDefaultScenarioPremises checks what the demo claims about its scenario against
// the demo's pools: the fitting pods fit in any order of scheduling, and the oversize
// pod is turned down by the pool-wide view (it fits a host window of cxl-pool-b).
func TestDefaultScenarioPremises(t *testing.T) {
	nodes := []string{"n0", "n1", "n2", "n3"}
	pools := DefaultPools(nodes, 0)
	sc := DefaultScenario("demo")
	require.Len(t, pools, 2)
	a, b := pools[0], pools[1]
	require.Equal(t, PoolA, a.Name)
	require.Equal(t, PoolB, b.Name)

	var capacity int64
	for _, p := range pools {
		capacity += p.Spec.Capacity.Value()
		assert.Len(t, p.Spec.Nodes, len(nodes), "pool %s is attached to every node", p.Name)
	}
	free := capacity - Total(sc.Fitting)
	assert.Equal(t, 168*gi, Total(sc.Fitting))
	assert.Equal(t, 24*gi, free)

	// Both pools are shared beyond their capacity: room in a node's window does not
	// mean room in the pool, and only the pool-wide view decides.
	for _, p := range pools {
		assert.Greater(t, p.Spec.HostWindow.Value()*int64(len(nodes)), p.Spec.Capacity.Value(), "%s is shared beyond its capacity", p.Name)
	}

	// Headroom: no pod is larger than the smallest window, and before each pod the
	// memory left (what is still to come plus the final slack) is at least twice the
	// pod, so one of the two pools has room for it. Pods are created (and queued)
	// largest first, so the windows of cxl-pool-a are not fragmented by small pods
	// before the large ones come.
	for _, w := range sc.Fitting {
		assert.LessOrEqual(t, w.Memory.Value(), a.Spec.HostWindow.Value(), "pod %s fits a window of %s", w.Name, a.Name)
		assert.GreaterOrEqual(t, free+w.Memory.Value(), 2*w.Memory.Value(), "pod %s", w.Name)
	}

	over := sc.Oversize.Memory.Value()
	assert.Greater(t, over, free, "the oversize pod asks more than is left in all pools")
	assert.Greater(t, over, a.Spec.HostWindow.Value(), "the oversize pod does not fit a node's window of %s", a.Name)
	assert.LessOrEqual(t, over, b.Spec.HostWindow.Value(), "the oversize pod fits a node's window of %s", b.Name)
}

func TestNewPools(t *testing.T) {
	pools := NewPools([]PoolSpec{{Name: "p", Capacity: "8Gi", HostWindow: "4Gi", LatencyClass: "high"}}, []string{"x", "y"}, 100*time.Millisecond)
	require.Len(t, pools, 1)
	p := pools[0]
	assert.Equal(t, "p", p.Name)
	assert.Equal(t, v1alpha1.BackendSimulated, p.Spec.Backend.Type)
	assert.Equal(t, 8*gi, p.Spec.Capacity.Value())
	assert.Equal(t, 4*gi, p.Spec.HostWindow.Value())
	assert.Equal(t, gi, p.Spec.BlockSize.Value())
	assert.Equal(t, []v1alpha1.PoolNode{{Name: "x", HostID: 0}, {Name: "y", HostID: 1}}, p.Spec.Nodes)
	assert.Equal(t, "high", p.Spec.Attributes[v1alpha1.AttributeLatencyClass])
	require.NotNil(t, p.Spec.Backend.Simulated)
	assert.Equal(t, 100*time.Millisecond, p.Spec.Backend.Simulated.AddLatency.Duration)
	assert.Equal(t, 50*time.Millisecond, p.Spec.Backend.Simulated.ReleaseLatency.Duration)

	instant := NewPools([]PoolSpec{{Name: "p", Capacity: "8Gi", HostWindow: "4Gi"}}, []string{"x"}, 0)
	assert.Nil(t, instant[0].Spec.Backend.Simulated, "a device without latency needs no simulated settings")
}

func TestPodAndTemplate(t *testing.T) {
	w := NewWorkload("web", 12)
	pod := PodFor("ns", w)
	assert.Equal(t, SchedulerName, pod.Spec.SchedulerName)
	require.Len(t, pod.Spec.ResourceClaims, 1)
	assert.Equal(t, "web", *pod.Spec.ResourceClaims[0].ResourceClaimTemplateName)
	require.Len(t, pod.Spec.Containers, 1)
	assert.Equal(t, []corev1.ResourceClaim{{Name: pod.Spec.ResourceClaims[0].Name}}, pod.Spec.Containers[0].Resources.Claims)

	tmpl := TemplateFor("ns", w)
	assert.Equal(t, "web", tmpl.Name)
	require.Len(t, tmpl.Spec.Spec.Devices.Requests, 1)
	req := tmpl.Spec.Spec.Devices.Requests[0].Exactly
	require.NotNil(t, req)
	assert.Equal(t, dra.DeviceClassName, req.DeviceClassName)
	got := req.Capacity.Requests[dra.CapacityMemory]
	assert.Equal(t, 12*gi, got.Value())
}

func TestProgress(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var out bytes.Buffer
	p := NewProgress(&out, clk)
	step := p.Step("Starting %s", "etcd")
	clk.SetTime(clk.Now().Add(1500 * time.Millisecond))
	step.Done()
	step = p.Step("Starting the memory service")
	clk.SetTime(clk.Now().Add(200 * time.Millisecond))
	p.Printf("  a line in between")
	step.Done("listening on %s", "127.0.0.1:1")
	assert.Equal(t, `[   0.0s] Starting etcd ... done in 1.5s
[   1.5s] Starting the memory service ... 
[   1.7s]   a line in between
[   1.7s]   done in 200ms (listening on 127.0.0.1:1)
`, out.String())

	var nilProgress *Progress
	nilProgress.Step("nothing").Done()
	nilProgress.Printf("nothing")
	assert.Zero(t, nilProgress.Elapsed())
}

func TestNamesAndTotal(t *testing.T) {
	ws := []Workload{NewWorkload("a", 1), {Name: "b", Memory: resource.MustParse("512Mi")}}
	assert.Equal(t, []string{"a", "b"}, Names(ws))
	assert.Equal(t, gi+gi/2, Total(ws))
}
