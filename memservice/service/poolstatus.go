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
	"encoding/json"
	"reflect"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	dmclient "github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/typed/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
)

// statusWriter writes the DynamicMemoryPools' status: every node's share of the pool
// from the ledger, and the Ready condition.
type statusWriter struct {
	client    dmclient.DynamicMemoryPoolsGetter
	ledger    *ledger.Ledger
	pools     *registry
	connected func() []string
	metrics   *metrics.Metrics
	clock     clock.Clock
	interval  time.Duration
	// notify is kicked (never blocking) on every change.
	notify chan struct{}
}

// run writes the pools' status after changes, at most once per interval: after a
// change it waits out the interval, then writes the latest status of every pool, so
// that a burst of changes is one write and the last change is always written. A
// failed write is tried again after the interval.
func (w *statusWriter) run(ctx context.Context) error {
	for {
		// Changes signalled until now are in the status written next.
		select {
		case <-w.notify:
		default:
		}
		if w.writeAll(ctx) {
			select {
			case <-ctx.Done():
				return nil
			case <-w.notify:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.clock.After(w.interval):
		}
	}
}

// writeAll writes the status of every pool whose status changed since its last
// write. It reports false if a write failed and should be tried again.
func (w *statusWriter) writeAll(ctx context.Context) bool {
	connected := map[string]bool{}
	for _, n := range w.connected() {
		connected[n] = true
	}
	ok := true
	for _, ps := range w.ledger.Snapshot().Pools {
		e, known := w.pools.statusOf(ps.Name)
		if !known {
			continue
		}
		st := poolStatus(ps, e, connected)
		if e.hasWritten && reflect.DeepEqual(st, e.written) {
			continue
		}
		data, err := json.Marshal(map[string]any{"status": st})
		if err == nil {
			_, err = w.client.DynamicMemoryPools().Patch(ctx, ps.Name, types.MergePatchType, data, metav1.PatchOptions{}, "status")
		}
		if err != nil {
			w.metrics.StatusWriteErrors.Inc()
			klog.FromContext(ctx).Error(err, "Writing pool status", "pool", ps.Name)
			// A deleted pool has no status to write; the ledger drops it once its claims are released.
			ok = ok && apierrors.IsNotFound(err)
			continue
		}
		w.metrics.StatusWrites.Inc()
		w.pools.setWritten(ps.Name, st)
	}
	return ok
}

func quantity(n int64) *resource.Quantity { return resource.NewQuantity(n, resource.BinarySI) }

// poolStatus is the status of a pool: the ledger's numbers, and the conditions last
// written with Ready brought up to date.
func poolStatus(ps ledger.PoolStatus, e poolEntry, connected map[string]bool) v1alpha1.DynamicMemoryPoolStatus {
	st := v1alpha1.DynamicMemoryPoolStatus{
		ObservedGeneration: e.generation,
		Free:               quantity(ps.Free),
		Reserved:           quantity(ps.Reserved),
		Online:             quantity(ps.Online),
		Conditions:         append([]metav1.Condition(nil), e.written.Conditions...),
	}
	for _, h := range ps.Hosts {
		st.Nodes = append(st.Nodes, v1alpha1.PoolNodeStatus{
			Name: h.Node, Reserved: *quantity(h.Reserved), Online: *quantity(h.Online), Free: *quantity(h.Free),
			AgentConnected: connected[h.Node],
		})
	}
	cond := metav1.Condition{Type: v1alpha1.PoolConditionReady, Status: metav1.ConditionTrue, Reason: "Serving", Message: "the backend answers and the pool serves reservations", ObservedGeneration: e.generation}
	switch {
	case e.specError != "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "SpecNotApplied", e.specError
	case !ps.Ready:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "BackendNotReady", ps.Message
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}
