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

package ledger_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

var propertySeed = flag.Uint64("ledger.seed", 0, "seed of TestPropertyRandomConcurrentOperations (0: time-based)")

// TestPropertyRandomConcurrentOperations runs random Reserve / Provision / online /
// fail / release / expire operations from several goroutines on a few pools and nodes,
// and checks the ledger's invariants after every operation.
func TestPropertyRandomConcurrentOperations(t *testing.T) {
	seed := *propertySeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -ledger.seed=%d)", seed, seed)

	pools := []ledger.Pool{
		{Name: "a", Capacity: 8 * gi, BlockSize: 256 * mi, HostWindow: 4 * gi, Nodes: []string{"n1", "n2", "n3"}},
		{Name: "b", Capacity: 4 * gi, BlockSize: gi, HostWindow: 3 * gi, Nodes: []string{"n2", "n3", "n4"}},
	}
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	l, clk := newLedger(t, pools...)
	var clockMu sync.Mutex

	const workers, opsPerWorker = 8, 1500 // 12,000 operations
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := range opsPerWorker {
				uid := fmt.Sprintf("claim-%d", rng.IntN(40))
				node := nodes[rng.IntN(len(nodes))]
				r := ledger.Request{Claim: ledger.ClaimRef{UID: uid}, Node: node, Bytes: 1 + rng.Int64N(2*gi)}
				if rng.IntN(3) == 0 {
					r.Pool = pools[rng.IntN(len(pools))].Name
				}
				var op string
				switch k := rng.IntN(100); {
				case k < 30:
					op = "reserve"
					_, _ = l.Reserve(r)
				case k < 50:
					op = "provision"
					_, _, _ = l.Provision(r)
				case k < 62:
					op = "online"
					_, _ = l.MarkOnline(uid, []int32{0})
				case k < 66:
					op = "fail"
					_, _ = l.MarkFailed(uid, "injected")
				case k < 82:
					op = "begin-release"
					l.BeginRelease(uid)
				case k < 95:
					op = "released"
					_, _ = l.MarkReleased(uid)
				default:
					op = "expire"
					clockMu.Lock()
					clk.Step(time.Duration(rng.IntN(40)) * time.Second)
					clockMu.Unlock()
					l.Expire()
				}
				if err := l.CheckInvariants(); err != nil {
					errs <- fmt.Errorf("seed %d, worker %d, op %d (%s %s): %w", seed, w, i, op, uid, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// At quiescence: release everything, the pools are full again.
	for _, r := range l.List() {
		if _, _, pending := l.BeginRelease(r.Claim.UID); pending {
			_, err := l.MarkReleased(r.Claim.UID)
			require.NoError(t, err, "seed %d", seed)
		}
	}
	for _, p := range l.Snapshot().Pools {
		require.Equal(t, p.Capacity, p.Free, "seed %d: pool %s is full again", seed, p.Name)
	}
	require.NoError(t, l.CheckInvariants(), "seed %d", seed)
}

// BenchmarkReserveRelease measures Reserve followed by a release of the Reserved entry,
// what the scheduler's Reserve/Unreserve costs in the ledger. One pair per op.
func BenchmarkReserveRelease(b *testing.B) {
	l, _ := newLedger(b, ledger.Pool{Name: "a", Capacity: 1 << 40, BlockSize: 128 * mi, HostWindow: 1 << 40, Nodes: []string{"n1", "n2"}})
	uids := make([]string, 4096)
	for i := range uids {
		uids[i] = fmt.Sprintf("8c9f5a1e-0000-4000-8000-%012d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start, cpuStart := time.Now(), processCPU()
	for i := 0; b.Loop(); i++ {
		uid := uids[i%len(uids)]
		if _, err := l.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: uid}, Node: "n1", Bytes: gi}); err != nil {
			b.Fatal(err)
		}
		if _, _, pending := l.BeginRelease(uid); pending {
			b.Fatal("a Reserved entry needs no hardware release")
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
	// Pairs per second of CPU this process used: the rate on one whole core,
	// whatever else the machine runs.
	if cpu := processCPU() - cpuStart; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "pairs/cpu-s")
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
