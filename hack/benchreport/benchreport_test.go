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

package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestParseBenchLine(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    benchResult
		ok      bool
		wantErr string
	}{
		{
			name: "a result with custom metrics loses its GOMAXPROCS suffix",
			line: "BenchmarkGRPCReserve/clients=64-2   \t 20000\t 70000 ns/op\t 14000 ops/s\t 9800 p99-µs",
			want: benchResult{
				Name: "BenchmarkGRPCReserve/clients=64", N: 20000,
				Metrics: map[string]float64{"ns/op": 70000, "ops/s": 14000, "p99-µs": 9800},
				Units:   []string{"ns/op", "ops/s", "p99-µs"},
			},
			ok: true,
		},
		{
			name: "a result run with -cpu 1 has no suffix",
			line: "BenchmarkReserveRelease \t 3000000\t 800.0 ns/op\t 1250000 pairs/s",
			want: benchResult{
				Name: "BenchmarkReserveRelease", N: 3000000,
				Metrics: map[string]float64{"ns/op": 800, "pairs/s": 1250000},
				Units:   []string{"ns/op", "pairs/s"},
			},
			ok: true,
		},
		{name: "the header of logged output is not a result", line: "--- BENCH: BenchmarkGRPCReserve/clients=64-2"},
		{name: "a benchmark name alone is not a result", line: "BenchmarkPerfScheduling"},
		{name: "a log line is not a result", line: "I1127 01:29:40.439216 8480 etcd.go:115] starting etcd"},
		{name: "a skipped benchmark is not a result", line: "BenchmarkX/y-2 \t skipped: disabled by label filter"},
		{
			name:    "a metric that is not a number is an error",
			line:    "BenchmarkX-2 \t 10\t abc ns/op",
			wantErr: `metric "ns/op" has value "abc"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := parseBenchLine(tc.line)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.ok, ok)
			if tc.ok {
				assert.Equal(t, tc.want, got)
			}
		})
	}
}

func TestParseBenchMergesRunsIntoMediansAndKeepsCommands(t *testing.T) {
	out := strings.Join([]string{
		"# command: go test ./a/",
		"BenchmarkA-2 \t 1\t 10 ns/op",
		"# command: go test ./b/ -count 3",
		"BenchmarkB \t 1\t 30 ns/op",
		"BenchmarkB \t 1\t 10 ns/op",
		"BenchmarkB \t 1\t 20 ns/op",
		"# command: go test ./c/",
		"--- FAIL: BenchmarkC",
		"# failed: exit status 1",
	}, "\n")
	got, err := parseBench(strings.NewReader(out))
	require.NoError(t, err)
	assert.Equal(t, []string{"go test ./a/", "go test ./b/ -count 3", "go test ./c/"}, got.commands)
	assert.Equal(t, map[string]string{"go test ./c/": "exit status 1"}, got.failed)
	require.Len(t, got.results, 2)
	assert.Equal(t, "BenchmarkA", got.results[0].Name)
	assert.Equal(t, "go test ./a/", got.results[0].Command)
	assert.Equal(t, "BenchmarkB", got.results[1].Name)
	assert.Equal(t, "go test ./b/ -count 3", got.results[1].Command)
	assert.InDelta(t, 20, got.results[1].Metrics["ns/op"], 1e-9, "median of 30, 10, 20")
}

func TestParseBenchJoinsAResultSplitByLogLines(t *testing.T) {
	out := strings.Join([]string{
		"BenchmarkGRPCAddRemoveCycle/clients=1-2                 \tI1127 02:11:57.882865 2052 server.go:236] \"Node agent connected\"",
		"I1127 02:12:00.422992    2052 server.go:272] \"Node agent disconnected\"",
		"    3714\t    659613 ns/op\t      1516 ops/s\t      3304 p99-µs",
		"I1127 02:12:00.450635    2052 server.go:236] \"Node agent connected\"",
		"BenchmarkGRPCAddRemoveCycle/clients=16-2 \t 4000\t 500000 ns/op",
	}, "\n")
	got, err := parseBench(strings.NewReader(out))
	require.NoError(t, err)
	require.Len(t, got.results, 2)
	assert.Equal(t, "BenchmarkGRPCAddRemoveCycle/clients=1", got.results[0].Name)
	assert.Equal(t, int64(3714), got.results[0].N)
	assert.Equal(t, map[string]float64{"ns/op": 659613, "ops/s": 1516, "p99-µs": 3304}, got.results[0].Metrics)
	assert.Equal(t, "BenchmarkGRPCAddRemoveCycle/clients=16", got.results[1].Name)
}

func TestParseWorkloadName(t *testing.T) {
	tests := []struct {
		name, testCase, size, profile string
		ok                            bool
	}{
		{"BenchmarkPerfScheduling/NonDynamicPods/500Nodes_without-dynamic-memory/measure", "NonDynamicPods", "500Nodes", "without-dynamic-memory", true},
		{"BenchmarkPerfScheduling/DynamicMemoryClaims/4Nodes_default-scheduler/measure", "DynamicMemoryClaims", "4Nodes", "default-scheduler", true},
		{"BenchmarkPerfScheduling/SchedulingBasic/500Nodes/measure", "", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testCase, size, profile, ok := parseWorkloadName(tc.name)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.testCase, testCase)
			assert.Equal(t, tc.size, size)
			assert.Equal(t, tc.profile, profile)
		})
	}
}

func TestTargetRow(t *testing.T) {
	results := []benchResult{{
		Name: "BenchmarkGRPCReservePaced/clients=64/rate=2000", Metrics: map[string]float64{"p99-µs": 2500}, Units: []string{"p99-µs"},
	}}
	assert.Contains(t, memserviceTargets[0].row(results), "**missed**", "p99 2.5 ms > 2 ms")
	results[0].Metrics["p99-µs"] = 1500
	assert.Contains(t, memserviceTargets[0].row(results), "**met**", "p99 1.5 ms ≤ 2 ms")
	assert.Contains(t, memserviceTargets[1].row(results), "not measured", "no ledger benchmark")

	e2e := []benchResult{
		{Name: "BenchmarkPodsToRunning/profile=without-dynamic-memory", Metrics: map[string]float64{"running-p50-s": 0.9, "k8s-requests/pod": 15}},
		{Name: "BenchmarkPodsToRunning/profile=dynamic-memory-scheduler", Metrics: map[string]float64{"running-p50-s": 1.2, "k8s-requests/pod": 16, "project-requests/pod": 2.5}},
	}
	row := endToEndTargets[0].row(e2e)
	assert.Contains(t, row, "p50 1.20 s, 1.33 × DRA only's 0.90 s (same run)")
	assert.Contains(t, row, "**met**", "1.2 s ≤ 1.5 × 0.9 s")
	row = endToEndTargets[2].row(e2e)
	assert.Contains(t, row, "18.5 (Kubernetes' components 16.0, this project's 2.5); DRA only 15.0 (same run)")
	assert.Contains(t, row, "**met**", "18.5 ≤ 15 + 4")
	e2e[1].Metrics["project-requests/pod"] = 3.5
	assert.Contains(t, endToEndTargets[2].row(e2e), "**missed**", "19.5 > 15 + 4")
	delete(e2e[0].Metrics, "running-p50-s")
	assert.Contains(t, endToEndTargets[0].row(e2e), "not measured", "no baseline")

	idle := []benchResult{
		{Name: "BenchmarkIdlePodToRunning/profile=without-dynamic-memory", Metrics: map[string]float64{"running-p50-ms": 57.4, "running-p90-ms": 65.9}},
		{Name: "BenchmarkIdlePodToRunning/profile=dynamic-memory-scheduler", Metrics: map[string]float64{
			"running-p50-ms": 115.1, "running-p90-ms": 168.9, "over-dra-p50-ms": 57.7, "over-dra-p90-ms": 103,
		}},
	}
	row = endToEndTargets[1].row(idle)
	assert.Contains(t, row, "p50 115 ms against DRA only's 57 ms: +58 ms (p90 169 ms against 66 ms: +103 ms; same run)")
	assert.Contains(t, row, "**met**", "57.7 ms ≤ 100 ms over DRA only")
	idle[1].Metrics["over-dra-p50-ms"] = 100.5
	assert.Contains(t, endToEndTargets[1].row(idle), "**missed**", "100.5 ms > 100 ms over DRA only")
	delete(idle[0].Metrics, "running-p50-ms")
	assert.Contains(t, endToEndTargets[1].row(idle), "not measured", "no baseline")
}

// TestReportGolden renders testdata/results: the plugin profile reaches 0.98 of the
// baseline for plain pods (met) and 0.85 for claims (missed), the gRPC p99 misses
// and the ledger meets its target, and the end-to-end benchmark failed.
func TestReportGolden(t *testing.T) {
	r, err := load(filepath.Join("testdata", "results"))
	require.NoError(t, err)
	got := r.markdown()
	golden := filepath.Join("testdata", "benchmarks.golden.md")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), got, "run go test ./hack/benchreport -update to accept the new output")

	assert.Contains(t, got, "| `NonDynamicPods` 500Nodes: default-scheduler throughput ≥ 0.97 × the stock plugins (without-dynamic-memory) (median of pairs) | 0.980 (one pair; medians 196.0 vs 200.0 pods/s) | **met** |")
	assert.Contains(t, got, "| `DynamicMemoryClaims` 500Nodes: default-scheduler throughput ≥ 0.90 × DRA only (without-dynamic-memory) (median of pairs) | 0.850 (one pair; medians 85.0 vs 100.0 pods/s) | **missed** |")
	assert.Contains(t, got, "| ledger ≥ 200,000 Reserve+Release pairs/s on one core | 1,111,111 pairs/s (`BenchmarkReserveRelease`) | **met** |")
	assert.Contains(t, got, "| e2e, 200 pods at once (zero backend latency): p50 pod created → Running ≤ 1.5 × DRA only | — | not measured |")
	assert.Contains(t, got, "## Findings\n\nWritten by hand from the profiles of this run")
	assert.Contains(t, got, "The plugin's Reserve waits on the memory service inside the scheduling cycle.\n")
	assert.Contains(t, got, "Command: `go test ./test/perf/e2e/ -run ^$ -bench . -benchtime=1x -timeout 30m` — **failed** (exit status 1;")
}

func TestLoadNeedsTheMachineFile(t *testing.T) {
	_, err := load(t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "hack/bench.sh writes it")
}

// TestPairsRunInBothOrders: the rounds of a pair (A B, then B A as "-reversed") are
// paired run by run, the ratio is the median of the pairs' ratios, and the spread
// names their range and that both orders ran.
func TestPairsRunInBothOrders(t *testing.T) {
	throughput := func(workload string, avg float64) dataItem {
		return dataItem{
			Labels: map[string]string{"Name": "BenchmarkPerfScheduling/NonDynamicPods/" + workload + "/measure", "Metric": "SchedulingThroughput"},
			Data:   map[string]float64{"Average": avg},
		}
	}
	r := &report{schedulerItems: []dataItem{
		throughput("500Nodes_without-dynamic-memory", 245),
		throughput("500Nodes_default-scheduler", 197),
		throughput("500Nodes-reversed_default-scheduler", 246.6),
		throughput("500Nodes-reversed_without-dynamic-memory", 213.8),
	}}
	ps := pairs(r.schedulerRuns())
	require.Len(t, ps, 1, "both orders are one size")
	assert.Equal(t, "500Nodes", ps[0].size)
	ratio, ok := ps[0].ratio()
	require.True(t, ok)
	// The pairs' ratios: 197/245 = 0.804 and 246.6/213.8 = 1.153; their median 0.979.
	assert.InDelta(t, (197/245.0+246.6/213.8)/2, ratio, 1e-9)
	assert.Equal(t, "2 pairs in both orders, 0.804–1.153", ps[0].spread())
	assert.InDelta(t, (245+213.8)/2, ps[0].baseline.throughput["Average"], 1e-9, "the profile's figure is the median of its runs")
}
