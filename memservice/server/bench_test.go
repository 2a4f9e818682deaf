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

package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

// BenchmarkGRPCReserve measures Reserve over loopback mutual TLS with 1, 16 and 64
// concurrent clients, each on its own connection. Each Reserved entry is dropped from
// the ledger in process right after, so the pool never fills; only Reserve is timed
// for the percentiles. ns/op is wall time per Reserve across all clients.
func BenchmarkGRPCReserve(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			h := newHarness(b)
			conns := make([]*client.Client, clients)
			for i := range conns {
				conns[i] = h.dial("scheduler")
			}
			runConcurrent(b, conns, func(c *client.Client, n int) {
				u := fmt.Sprintf("0b7c3f6e-1d2a-4c5b-8e9f-%012d", n)
				_, err := c.Reserve(context.Background(), &memservicev1.ReserveRequest{
					Claim: &memservicev1.ClaimRef{Uid: u, Namespace: "default", Name: "c"}, Node: "node1", Bytes: 128 * mi,
				})
				if err != nil {
					b.Error(err)
				}
			}, func(n int) { h.ledger.BeginRelease(fmt.Sprintf("0b7c3f6e-1d2a-4c5b-8e9f-%012d", n)) })
		})
	}
}

// BenchmarkGRPCReservePaced sends Reserve from 64 clients at a fixed total rate
// (open loop), the way a scheduler's Reserve calls arrive, so the percentiles show
// the service's latency rather than the queueing of a saturated closed loop.
func BenchmarkGRPCReservePaced(b *testing.B) {
	for _, rate := range []int{500, 2000} {
		b.Run(fmt.Sprintf("clients=64/rate=%d", rate), func(b *testing.B) {
			h := newHarness(b)
			conns := make([]*client.Client, 64)
			for i := range conns {
				conns[i] = h.dial("scheduler")
			}
			interval := time.Duration(len(conns)) * time.Second / time.Duration(rate)
			runPaced(b, conns, interval, func(c *client.Client, n int) {
				u := fmt.Sprintf("0b7c3f6e-1d2a-4c5b-8e9f-%012d", n)
				_, err := c.Reserve(context.Background(), &memservicev1.ReserveRequest{
					Claim: &memservicev1.ClaimRef{Uid: u, Namespace: "default", Name: "c"}, Node: "node1", Bytes: 128 * mi,
				})
				if err != nil {
					b.Error(err)
				}
				h.ledger.BeginRelease(u)
			})
		})
	}
}

// BenchmarkGRPCAddRemoveCycle measures AddMemory (record, simulated device at zero
// latency, a fake node agent onlines) then RemoveMemory with wait (agent offlines,
// device releases), over loopback mutual TLS. The percentiles are of whole cycles.
func BenchmarkGRPCAddRemoveCycle(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			h := newHarness(b)
			h.startAgent(h.dial("agent-node1"), "node1")
			conns := make([]*client.Client, clients)
			for i := range conns {
				conns[i] = h.dial("scheduler")
			}
			runConcurrent(b, conns, func(c *client.Client, n int) {
				u := fmt.Sprintf("0b7c3f6e-1d2a-4c5b-8e9f-%012d", n)
				resp, err := c.AddMemory(context.Background(), &memservicev1.AddMemoryRequest{
					Claim: &memservicev1.ClaimRef{Uid: u, Namespace: "default", Name: "c"}, Node: "node1", Bytes: 128 * mi,
				})
				if err != nil || resp.GetReservation().GetState() != memservicev1.ReservationState_RESERVATION_STATE_ONLINE {
					b.Errorf("AddMemory: %v %v", err, resp.GetReservation().GetMessage())
					return
				}
				if _, err := c.RemoveMemory(context.Background(), &memservicev1.RemoveMemoryRequest{ClaimUid: u, Wait: true}); err != nil {
					b.Error(err)
				}
			}, nil)
		})
	}
}

// runPaced has each client call op once per interval (staggered) until b.N calls
// are done: an open loop, each call due at a fixed time whatever happened to the one
// before. It reports the latency of op from when it started (p50-µs, p99-µs), from
// when it was due (due-p99-µs: a call held up by a slow one before it counts the
// wait, as a scheduler's Reserve waiting behind another would), and how late the
// calls started (late-p99-µs: the harness's own delay, its clients sharing the
// machine's cores with the service).
func runPaced(b *testing.B, conns []*client.Client, interval time.Duration, op func(c *client.Client, n int)) {
	warm(b, conns)
	var next atomic.Int64
	lat, fromDue, late := make([][]time.Duration, len(conns)), make([][]time.Duration, len(conns)), make([][]time.Duration, len(conns))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			due := start.Add(interval * time.Duration(i) / time.Duration(len(conns)))
			for {
				n := int(next.Add(1))
				if n > b.N {
					return
				}
				time.Sleep(time.Until(due))
				t0 := time.Now()
				op(c, n)
				lat[i] = append(lat[i], time.Since(t0))
				fromDue[i] = append(fromDue[i], time.Since(due))
				late[i] = append(late[i], t0.Sub(due))
				due = due.Add(interval)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	reportPercentiles(b, slices.Concat(lat...))
	b.ReportMetric(p99(slices.Concat(fromDue...)), "due-p99-µs")
	b.ReportMetric(p99(slices.Concat(late...)), "late-p99-µs")
}

func p99(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[(len(ds)-1)*99/100].Microseconds())
}

func reportPercentiles(b *testing.B, all []time.Duration) {
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// runConcurrent runs b.N calls of op spread over the clients and reports ops/s and
// the p50/p99 latency of op; after runs untimed after each op.
func runConcurrent(b *testing.B, conns []*client.Client, op func(c *client.Client, n int), after func(n int)) {
	warm(b, conns)
	var next atomic.Int64
	lat := make([][]time.Duration, len(conns))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpuStart := time.Now(), processCPU()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1))
				if n > b.N {
					return
				}
				t0 := time.Now()
				op(c, n)
				lat[i] = append(lat[i], time.Since(t0))
				if after != nil {
					after(n)
				}
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU()-cpuStart
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	// CPU time of this process (client and server) per call: what a call costs,
	// whatever else the machine runs.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	reportPercentiles(b, slices.Concat(lat...))
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// warm makes every connection do its TLS handshake before the timer starts.
func warm(b *testing.B, conns []*client.Client) {
	for _, c := range conns {
		if _, err := c.GetCapacity(context.Background(), &memservicev1.GetCapacityRequest{}); err != nil {
			b.Fatal(err)
		}
	}
}
