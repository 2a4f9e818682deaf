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

package schedulerperf

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"text/template"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/test/utils/client-go/ktesting"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/draplugin/driver"
	draMetrics "github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
)

// nodeTemplate is the node every workload creates (createNodes with it, or
// publishNodeSlices).
const nodeTemplate = "templates/node.yaml"

// quietPeriod is how long the ResourceSlices must go unchanged after the measured
// pods were scheduled before the count ends: the pool status of the last
// reservations, and the slices written from it, come after the pods are bound.
const quietPeriod = 3 * time.Second

// publishNodeSlices creates the workload's nodes and runs, for each, the DRA
// plugin's publisher (draplugin/driver.Publisher) with a ResourceSlice controller
// owned by the node, as the kubelet plugin helper does; it returns once every
// node's slice is there. The publishers stop when the workload ends.
func (r *workloadRun) publishNodeSlices(tCtx ktesting.TContext) error {
	tmpl, err := os.ReadFile(nodeTemplate)
	if err != nil {
		return err
	}
	parsed, err := template.New("node").Parse(string(tmpl))
	if err != nil {
		return fmt.Errorf("parse %s: %w", nodeTemplate, err)
	}
	dm, err := versioned.NewForConfig(tCtx.RESTConfig())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(klog.NewContext(tCtx, klog.LoggerWithName(tCtx.Logger(), "dra-plugin")))
	var wg sync.WaitGroup
	tCtx.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i := range r.nodes {
		var buf bytes.Buffer
		if err := parsed.Execute(&buf, map[string]any{"Index": i}); err != nil {
			return fmt.Errorf("render %s: %w", nodeTemplate, err)
		}
		var node v1.Node
		if err := yaml.UnmarshalStrict(buf.Bytes(), &node); err != nil {
			return fmt.Errorf("decode %s: %w", nodeTemplate, err)
		}
		created, err := tCtx.Client().CoreV1().Nodes().Create(tCtx, &node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create node %s: %w", node.Name, err)
		}
		var controller *resourceslice.Controller
		p := &driver.Publisher{
			Node: created.Name, DynamicMemory: dm, Metrics: draMetrics.New(),
			Publish: func(ctx context.Context, resources resourceslice.DriverResources) error {
				if controller != nil {
					controller.Update(&resources)
					return nil
				}
				c, err := resourceslice.StartController(ctx, resourceslice.Options{
					DriverName: dra.DriverName,
					KubeClient: tCtx.Client(),
					Owner:      &resourceslice.Owner{APIVersion: "v1", Kind: "Node", Name: created.Name, UID: created.UID},
					Resources:  &resources,
				})
				controller = c
				return err
			},
		}
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				tCtx.Errorf("publisher of node %s: %v", created.Name, err)
			}
			if controller != nil {
				controller.Stop()
			}
		})
	}
	err = wait.PollUntilContextTimeout(tCtx, 100*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
		slices, err := tCtx.Client().ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.driver=" + dra.DriverName})
		if err != nil {
			return false, err
		}
		return len(slices.Items) == r.nodes, nil
	})
	if err != nil {
		return fmt.Errorf("wait for a ResourceSlice of each of the %d nodes: %w", r.nodes, err)
	}
	return nil
}

// countSliceWrites counts, from now until the workload ends and the slices have
// been quiet for quietPeriod, the writes to the driver's ResourceSlices (watch
// events), and reports them per measured pod with the scheduler's requeues
// (scheduler_queue_incoming_pods_total by cluster events) and
// attempts (scheduler_schedule_attempts_total): slice-writes/pod, requeues/pod,
// attempts/pod.
func (r *workloadRun) countSliceWrites(tCtx ktesting.TContext) error {
	slices := tCtx.Client().ResourceV1().ResourceSlices()
	opts := metav1.ListOptions{FieldSelector: "spec.driver=" + dra.DriverName}
	list, err := slices.List(tCtx, opts)
	if err != nil {
		return err
	}
	opts.ResourceVersion = list.ResourceVersion
	w, err := slices.Watch(tCtx, opts)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	writes, last := 0, time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type == watch.Added || ev.Type == watch.Modified || ev.Type == watch.Deleted {
				mu.Lock()
				writes, last = writes+1, time.Now()
				mu.Unlock()
			}
		}
	}()
	tCtx.Cleanup(func() {
		// The measured pods are scheduled; the slices follow the pool status.
		_ = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return time.Since(last) >= quietPeriod, nil
		})
		w.Stop()
		<-done
		requeues, attempts, err := schedulerCounts()
		if err != nil {
			tCtx.Errorf("scheduler metrics: %v", err)
			return
		}
		pods := float64(r.measurePods)
		mu.Lock()
		defer mu.Unlock()
		tCtx.Logf("Shared pool: %d ResourceSlice writes, %.0f requeues, %.0f scheduling attempts for %d pods on %d nodes",
			writes, requeues, attempts, r.measurePods, r.nodes)
		if b, ok := tCtx.TB().(interface{ ReportMetric(float64, string) }); ok && pods > 0 {
			b.ReportMetric(float64(writes)/pods, "slice-writes/pod")
			b.ReportMetric(requeues/pods, "requeues/pod")
			b.ReportMetric(attempts/pods, "attempts/pod")
		}
	})
	return nil
}

// queueEventsNotRequeues are the scheduler's queue events that are not a cluster
// event moving a pod back to be tried again: its creation, its failed attempt, the
// end of its backoff.
var queueEventsNotRequeues = map[string]bool{"UnscheduledPodAdd": true, "ScheduleAttemptFailure": true, "BackoffComplete": true}

// schedulerCounts are the scheduler's requeues (pods moved back to be tried again
// by a cluster event, such as a ResourceSlice update) and scheduling attempts, from
// its metrics in the process's registry.
func schedulerCounts() (requeues, attempts float64, err error) {
	incoming, err := testutil.GetCounterValuesFromGatherer(legacyregistry.DefaultGatherer, "scheduler_queue_incoming_pods_total", nil, "event")
	if err != nil {
		return 0, 0, err
	}
	for event, v := range incoming {
		if !queueEventsNotRequeues[event] {
			requeues += v
		}
	}
	byResult, err := testutil.GetCounterValuesFromGatherer(legacyregistry.DefaultGatherer, "scheduler_schedule_attempts_total", nil, "result")
	if err != nil {
		return 0, 0, err
	}
	for _, v := range byResult {
		attempts += v
	}
	return requeues, attempts, nil
}
