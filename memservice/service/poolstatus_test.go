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
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	dminformers "github.com/dynamicmemory/kube-dynamic-memory/api/client/informers/externalversions"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

const (
	gi                 = int64(1) << 30
	testStatusInterval = 2 * time.Second
)

// statusTest runs the pool status writer of a service with one pool, "cxl-a" (16Gi),
// on a fake clock, against an API server that records the status patches.
type statusTest struct {
	t       *testing.T
	clock   *clocktesting.FakeClock
	ledger  *ledger.Ledger
	w       *statusWriter
	patches chan v1alpha1.DynamicMemoryPoolStatus
	claims  int
}

// newStatusTest starts the writer. onPatch, if set, is called with the number of
// each patch (from 1) before it is answered, and returns the HTTP status to answer.
func newStatusTest(t *testing.T, onPatch func(st *statusTest, n int) int) *statusTest {
	st := &statusTest{
		t:       t,
		clock:   clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		patches: make(chan v1alpha1.DynamicMemoryPoolStatus, 100),
	}
	var count atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPatch || !strings.HasSuffix(r.URL.Path, "/dynamicmemorypools/cxl-a/status") {
			http.Error(w, "unexpected request", http.StatusNotFound)
			return
		}
		var body struct {
			Status v1alpha1.DynamicMemoryPoolStatus `json:"status"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		st.patches <- body.Status
		code := http.StatusOK
		if onPatch != nil {
			code = onPatch(st, int(count.Add(1)))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if code == http.StatusOK {
			fmt.Fprint(w, `{"apiVersion":"dynamicmemory.io/v1alpha1","kind":"DynamicMemoryPool","metadata":{"name":"cxl-a"}}`)
			return
		}
		fmt.Fprintf(w, `{"apiVersion":"v1","kind":"Status","status":"Failure","message":"injected","code":%d}`, code)
	}))
	t.Cleanup(api.Close)
	dm, err := versioned.NewForConfig(&rest.Config{Host: api.URL, QPS: 1000, Burst: 1000})
	require.NoError(t, err)

	notify := make(chan struct{}, 1)
	// The ledger kicks the status writer as Service.changed does.
	l := ledger.New(st.clock, ledger.Options{OnChange: func() {
		select {
		case notify <- struct{}{}:
		default:
		}
	}})
	sessions := session.NewRegistry()
	require.NoError(t, l.SetPool(ledger.Pool{Name: "cxl-a", Capacity: 16 * gi, BlockSize: gi, HostWindow: 16 * gi, Nodes: []string{"node1", "node2"}}))
	l.SetPoolReady("cxl-a", true, "")
	pools := newRegistry(dminformers.NewSharedInformerFactory(dm, 0), l, st.clock, nil, func() {})
	pools.pools["cxl-a"] = &poolEntry{generation: 1}
	st.ledger = l
	st.w = &statusWriter{
		client: dm.DynamicMemoryV1alpha1(), ledger: l, pools: pools, connected: sessions.Connected,
		metrics: metrics.New(l, sessions.Connected), clock: st.clock, interval: testStatusInterval, notify: notify,
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, st.w.run(ctx)) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return st
}

// reserve reserves 1Gi on node1 for a new claim (also from the API server's handler:
// no require).
func (st *statusTest) reserve() {
	st.t.Helper()
	st.claims++
	_, err := st.ledger.Reserve(ledger.Request{
		Claim: ledger.ClaimRef{UID: fmt.Sprintf("claim-%d", st.claims), Namespace: "default", Name: fmt.Sprintf("c%d", st.claims)},
		Node:  "node1", Pool: "cxl-a", Bytes: gi,
	})
	assert.NoError(st.t, err)
}

// waitTimer waits until the writer waits out the interval.
func (st *statusTest) waitTimer() {
	st.t.Helper()
	require.Eventually(st.t, st.clock.HasWaiters, 10*time.Second, time.Millisecond, "the writer waits for the interval to end")
}

// patch returns the next status written.
func (st *statusTest) patch() v1alpha1.DynamicMemoryPoolStatus {
	st.t.Helper()
	select {
	case p := <-st.patches:
		return p
	case <-time.After(10 * time.Second):
		st.t.Fatal("no status written")
		return v1alpha1.DynamicMemoryPoolStatus{}
	}
}

// assertReserved checks the pool's and node1's reserved bytes in a written status.
func assertReserved(t *testing.T, st v1alpha1.DynamicMemoryPoolStatus, reserved int64, msg string) {
	t.Helper()
	require.NotNil(t, st.Reserved, msg)
	require.NotNil(t, st.Free, msg)
	assert.Equal(t, reserved, st.Reserved.Value(), msg+": pool reserved")
	assert.Equal(t, 16*gi-reserved, st.Free.Value(), msg+": pool free")
	require.Len(t, st.Nodes, 2, msg)
	assert.Equal(t, reserved, st.Nodes[0].Reserved.Value(), msg+": node1 reserved")
}

func TestPoolStatusChangesWithinTheIntervalAreOneWrite(t *testing.T) {
	st := newStatusTest(t, nil)
	assertReserved(t, st.patch(), 0, "the status written on leading")

	for range 10 {
		st.reserve()
	}
	st.waitTimer()
	st.clock.Step(testStatusInterval - time.Nanosecond)
	assert.True(t, st.clock.HasWaiters(), "the writer still waits")
	assert.Empty(t, st.patches, "nothing written within the interval")

	st.clock.Step(time.Nanosecond)
	assertReserved(t, st.patch(), 10*gi, "one write with the latest state")

	st.reserve()
	st.waitTimer()
	st.clock.Step(testStatusInterval)
	assertReserved(t, st.patch(), 11*gi, "the next write, with no other in between")
}

func TestPoolStatusFinalStateIsWritten(t *testing.T) {
	for _, tc := range []struct {
		name string
		// during runs while the second status is written and returns the HTTP
		// status to answer; wantFinal is the reserved bytes the last write shows.
		during    func(st *statusTest) int
		wantFinal int64
		wantErrs  float64
	}{
		{
			name:      "a change made while the status is written",
			during:    func(st *statusTest) int { st.reserve(); return http.StatusOK },
			wantFinal: 4 * gi,
		},
		{
			name:      "a write that fails, with no change after it",
			during:    func(*statusTest) int { return http.StatusInternalServerError },
			wantFinal: 3 * gi,
			wantErrs:  1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStatusTest(t, func(st *statusTest, n int) int {
				if n != 2 {
					return http.StatusOK
				}
				return tc.during(st)
			})
			assertReserved(t, st.patch(), 0, "the status written on leading")

			for range 3 {
				st.reserve()
			}
			st.waitTimer()
			st.clock.Step(testStatusInterval)
			assertReserved(t, st.patch(), 3*gi, "the write after the burst")

			st.waitTimer()
			st.clock.Step(testStatusInterval)
			assertReserved(t, st.patch(), tc.wantFinal, "the final state, one interval later")
			assert.Equal(t, tc.wantErrs, testutil.ToFloat64(st.w.metrics.StatusWriteErrors))
		})
	}
}
