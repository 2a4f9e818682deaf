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
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	schedconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
)

// reversedSuffix marks a workload's size in the round run in the opposite order
// (test/perf/schedulerperf: A B B A).
const reversedSuffix = "-reversed"

// Profiles of the scheduler_perf workloads: every size runs once per profile; the
// baseline is the profile of the stock plugins alone.
const (
	baselineProfile = schedconfig.BaselineProfile
	pluginProfile   = schedconfig.DefaultProfile
)

// schedulerTargets are the least throughput, as a share of the baseline's from the
// same run, each scheduler_perf test case must reach.
var schedulerTargets = []struct {
	testCase, baseline string
	ratio              float64
}{
	{"NonDynamicPods", "the stock plugins (" + baselineProfile + ")", 0.97},
	{"DynamicMemoryClaims", "DRA only (" + baselineProfile + ")", 0.90},
}

// benchTarget is a target on one metric of a Go benchmark.
type benchTarget struct {
	what string
	// name matches the benchmark, unit its metric.
	name, unit *regexp.Regexp
	// limit in the metric's unit; atMost says whether it is an upper bound.
	limit  float64
	atMost bool
	// show formats the metric's value.
	show func(v float64) string
	// relative, when set, gives the figure and its limit from the results of a
	// run (a target set against the baseline of the same run); name, unit and limit
	// are then not used.
	relative func(results []benchResult) (v, limit float64, shown string, ok bool)
}

// sharedPoolTargets are on the ResourceSlice writes of scheduler_perf's SharedPool
// test case (test/perf/schedulerperf/sharedpool_test.go reports them).
var sharedPoolTargets = []benchTarget{
	{
		what: "scheduler_perf `SharedPool`: ResourceSlice writes per provisioned pod ≤ 1 at 100 nodes per pool, filled to 95%",
		name: regexp.MustCompile(`^BenchmarkPerfScheduling/SharedPool/100Nodes-Fill95_` + pluginProfile + `$`), unit: regexp.MustCompile(`^slice-writes/pod$`),
		limit: 1, atMost: true, show: func(v float64) string { return fmt.Sprintf("%.2f writes/pod", v) },
	},
}

// sharedPoolUnits are the figures of the SharedPool test case beyond throughput.
var sharedPoolUnits = []string{"slice-writes/pod", "requeues/pod", "attempts/pod"}

var memserviceTargets = []benchTarget{
	{
		what: "gRPC Reserve p99 ≤ 2 ms at 2,000/s offered by 64 clients (open loop)",
		name: regexp.MustCompile(`^BenchmarkGRPCReservePaced/clients=64/rate=2000$`), unit: regexp.MustCompile(`^p99-µs$`),
		limit: 2000, atMost: true, show: func(v float64) string { return fmt.Sprintf("p99 %.2f ms", v/1000) },
	},
	{
		what: "ledger ≥ 200,000 Reserve+Release pairs/s on one core",
		name: regexp.MustCompile(`^BenchmarkReserveRelease$`), unit: regexp.MustCompile(`^pairs/s$`),
		limit: 200000, show: func(v float64) string { return fmt.Sprintf("%s pairs/s", thousands(v)) },
	},
}

// The e2e benchmarks of the project and their baseline (DRA only), same run: 200
// pods at once, and one pod at a time on an idle cluster.
var (
	endToEndOurs     = "BenchmarkPodsToRunning/profile=" + schedconfig.DynamicMemoryProfile
	endToEndBaseline = "BenchmarkPodsToRunning/profile=" + schedconfig.BaselineProfile
	idleOurs         = "BenchmarkIdlePodToRunning/profile=" + schedconfig.DynamicMemoryProfile
	idleBaseline     = "BenchmarkIdlePodToRunning/profile=" + schedconfig.BaselineProfile
)

// metricOf is a metric of the named benchmark's result.
func metricOf(results []benchResult, name, unit string) (float64, bool) {
	for _, res := range results {
		if res.Name == name {
			v, ok := res.Metrics[unit]
			return v, ok
		}
	}
	return 0, false
}

var endToEndTargets = []benchTarget{
	{
		what: "e2e, 200 pods at once (zero backend latency): p50 pod created → Running ≤ 1.5 × DRA only",
		relative: func(results []benchResult) (float64, float64, string, bool) {
			ours, ok1 := metricOf(results, endToEndOurs, "running-p50-s")
			base, ok2 := metricOf(results, endToEndBaseline, "running-p50-s")
			return ours, 1.5 * base, fmt.Sprintf("p50 %.2f s, %.2f × DRA only's %.2f s (same run)", ours, ours/base, base), ok1 && ok2 && base > 0
		},
	},
	{
		what: "e2e, one pod on an idle cluster (zero backend latency): p50 pod created → Running ≤ DRA only + 100 ms",
		relative: func(results []benchResult) (float64, float64, string, bool) {
			figures := map[string]float64{}
			for _, m := range []struct{ name, unit string }{
				{idleOurs, "over-dra-p50-ms"}, {idleOurs, "running-p50-ms"}, {idleBaseline, "running-p50-ms"},
				{idleOurs, "over-dra-p90-ms"}, {idleOurs, "running-p90-ms"}, {idleBaseline, "running-p90-ms"},
			} {
				v, ok := metricOf(results, m.name, m.unit)
				if !ok {
					return 0, 0, "", false
				}
				figures[m.name+" "+m.unit] = v
			}
			over := figures[idleOurs+" over-dra-p50-ms"]
			return over, 100, fmt.Sprintf("p50 %.0f ms against DRA only's %.0f ms: %+.0f ms (p90 %.0f ms against %.0f ms: %+.0f ms; same run)",
				figures[idleOurs+" running-p50-ms"], figures[idleBaseline+" running-p50-ms"], over,
				figures[idleOurs+" running-p90-ms"], figures[idleBaseline+" running-p90-ms"], figures[idleOurs+" over-dra-p90-ms"]), true
		},
	},
	{
		what: "e2e: API requests per provisioned pod ≤ DRA only + 4 (all clients, creation until the pools are whole and the pods and claims gone)",
		relative: func(results []benchResult) (float64, float64, string, bool) {
			k8s, ok1 := metricOf(results, endToEndOurs, "k8s-requests/pod")
			project, ok2 := metricOf(results, endToEndOurs, "project-requests/pod")
			base, ok3 := metricOf(results, endToEndBaseline, "k8s-requests/pod")
			return k8s + project, base + 4, fmt.Sprintf("%.1f (Kubernetes' components %.1f, this project's %.1f); DRA only %.1f (same run)", k8s+project, k8s, project, base), ok1 && ok2 && ok3
		},
	},
	{
		what: "e2e: pools full again ≤ 30 s after deletion",
		name: regexp.MustCompile(`^BenchmarkPodsToRunning/profile=dynamic-memory-scheduler$`), unit: regexp.MustCompile(`(?i)^(pools-full|pools-full-again|release)-(s|ms)$`),
		limit: 30, atMost: true, show: func(v float64) string { return fmt.Sprintf("%.1f s", v) },
	},
}

// report is everything docs/benchmarks.md shows.
type report struct {
	machine        machine
	schedulerItems []dataItem
	schedulerRun   suite
	memservice     suite
	endToEnd       suite
	// notes are hand-written findings (markdown), shown after the targets.
	notes string
}

// schedRun is one scheduler_perf workload: a size of a test case for one profile.
type schedRun struct {
	testCase, size, profile string
	// rounds are the average throughputs of each run, in run order, by round ("" for
	// the first order, "reversed" for the pair run the other way round).
	rounds map[string][]float64
	// throughput buckets (Average, Perc50, ...) in pods/s, medians over runs.
	throughput map[string]float64
	// duration of the measured pods' scheduling, s.
	duration float64
	runs     int
	// extensionPoints: average duration by extension point, ms.
	extensionPoints map[string]float64
	// plugins: average duration of a plugin at an extension point, by plugin and
	// extension point, ms (sampled by the scheduler).
	plugins map[string]map[string]float64
}

// schedulerRuns groups the data items by workload.
func (r *report) schedulerRuns() []*schedRun {
	type acc struct {
		run        *schedRun
		throughput map[string][]float64
		duration   []float64
		ext        map[string][]float64
		plugins    map[string]map[string][]float64
	}
	byKey := map[string]*acc{}
	var keys []string
	for _, item := range r.schedulerItems {
		testCase, size, profile, ok := parseWorkloadName(item.Labels["Name"])
		if !ok {
			continue
		}
		round := ""
		if s, reversed := strings.CutSuffix(size, reversedSuffix); reversed {
			size, round = s, "reversed"
		}
		key := testCase + "/" + size + "_" + profile
		a, seen := byKey[key]
		if !seen {
			a = &acc{
				run:        &schedRun{testCase: testCase, size: size, profile: profile, throughput: map[string]float64{}, extensionPoints: map[string]float64{}, rounds: map[string][]float64{}},
				throughput: map[string][]float64{},
				ext:        map[string][]float64{},
				plugins:    map[string]map[string][]float64{},
			}
			byKey[key] = a
			keys = append(keys, key)
		}
		switch item.Labels["Metric"] {
		case "SchedulingThroughput":
			for bucket, v := range item.Data {
				a.throughput[bucket] = append(a.throughput[bucket], v)
			}
			a.run.rounds[round] = append(a.run.rounds[round], item.Data["Average"])
		case "SchedulingDuration":
			a.duration = append(a.duration, item.Data["Duration"])
		case "scheduler_framework_extension_point_duration_seconds":
			if ep := item.Labels["extension_point"]; ep != "" {
				if v, ok := item.Data["Average"]; ok {
					a.ext[ep] = append(a.ext[ep], toMillis(v, item.Unit))
				}
			}
		case "scheduler_plugin_execution_duration_seconds":
			plugin, ep := item.Labels["plugin"], item.Labels["extension_point"]
			if v, ok := item.Data["Average"]; ok && plugin != "" && ep != "" {
				if a.plugins[plugin] == nil {
					a.plugins[plugin] = map[string][]float64{}
				}
				a.plugins[plugin][ep] = append(a.plugins[plugin][ep], toMillis(v, item.Unit))
			}
		}
	}
	out := make([]*schedRun, 0, len(keys))
	for _, k := range keys {
		a := byKey[k]
		for bucket, vs := range a.throughput {
			a.run.throughput[bucket] = median(vs)
		}
		for ep, vs := range a.ext {
			a.run.extensionPoints[ep] = median(vs)
		}
		a.run.plugins = map[string]map[string]float64{}
		for plugin, eps := range a.plugins {
			a.run.plugins[plugin] = map[string]float64{}
			for ep, vs := range eps {
				a.run.plugins[plugin][ep] = median(vs)
			}
		}
		a.run.duration = median(a.duration)
		a.run.runs = max(len(a.throughput["Average"]), len(a.duration))
		out = append(out, a.run)
	}
	return out
}

// parseWorkloadName splits a data item's name,
// "BenchmarkPerfScheduling/<test case>/<size>_<profile>/<namespace>", into its parts.
func parseWorkloadName(name string) (testCase, size, profile string, ok bool) {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		for _, p := range []string{baselineProfile, pluginProfile} {
			if s, found := strings.CutSuffix(parts[i], "_"+p); found && s != "" {
				return parts[i-1], s, p, true
			}
		}
	}
	return "", "", "", false
}

// toMillis converts a duration in unit (scheduler_perf reports ms) to ms.
func toMillis(v float64, unit string) float64 {
	switch unit {
	case "s":
		return v * 1000
	case "us", "µs":
		return v / 1000
	}
	return v
}

// pair is the baseline and plugin runs of one size of a test case.
type pair struct {
	testCase, size   string
	baseline, plugin *schedRun
}

// ratios are the plugin's average throughput over the baseline's of each pair of runs
// (the n-th run of each profile in the same round).
func (p pair) ratios() []float64 {
	if p.baseline == nil || p.plugin == nil {
		return nil
	}
	var out []float64
	for round, base := range p.baseline.rounds {
		for i, b := range base {
			if i < len(p.plugin.rounds[round]) && b > 0 {
				out = append(out, p.plugin.rounds[round][i]/b)
			}
		}
	}
	slices.Sort(out)
	return out
}

// ratio is the median of the pairs' ratios.
func (p pair) ratio() (float64, bool) {
	rs := p.ratios()
	if len(rs) == 0 {
		return 0, false
	}
	return median(rs), true
}

// spread says how far the pairs' ratios lie apart, and in how many orders they ran.
func (p pair) spread() string {
	rs := p.ratios()
	if len(rs) < 2 {
		return "one pair"
	}
	orders := "one order"
	if len(p.baseline.rounds) > 1 {
		orders = "both orders"
	}
	return fmt.Sprintf("%d pairs in %s, %.3f–%.3f", len(rs), orders, rs[0], rs[len(rs)-1])
}

func pairs(runs []*schedRun) []pair {
	var out []pair
	index := map[string]int{}
	for _, r := range runs {
		key := r.testCase + "/" + r.size
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, pair{testCase: r.testCase, size: r.size})
		}
		switch r.profile {
		case baselineProfile:
			out[i].baseline = r
		case pluginProfile:
			out[i].plugin = r
		}
	}
	return out
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Generated by `make bench` (`hack/bench.sh` runs the benchmarks and writes their raw output into\n")
	w("[`docs/benchmarks/`](%s); `go run ./hack/benchreport` turns it into this page). Do not edit\n", resultsDirInMarkdown)
	w("by hand: run `make bench` again. The figures of each suite come from one run on the machine\n")
	w("described here (its \"Run of\" line says when, and how loaded the machine was); ratios compare\n")
	w("two workloads of that same run, never figures of different runs.\n\n")

	w("## Machine and run\n\n| | |\n| --- | --- |\n")
	for _, k := range r.machine.keys {
		w("| %s | %s |\n", k, mdEscape(r.machine.values[k]))
	}
	w("\n")

	runs := r.schedulerRuns()
	ps := pairs(runs)
	w("## Targets\n\n| Target | Figure | Status |\n| --- | --- | --- |\n")
	for _, t := range schedulerTargets {
		found := false
		for _, p := range ps {
			if p.testCase != t.testCase {
				continue
			}
			ratio, ok := p.ratio()
			if !ok {
				continue
			}
			found = true
			w("| `%s` %s: %s throughput ≥ %.2f × %s (median of pairs) | %.3f (%s; medians %.1f vs %.1f pods/s) | %s |\n",
				t.testCase, p.size, pluginProfile, t.ratio, t.baseline, ratio, p.spread(),
				p.plugin.throughput["Average"], p.baseline.throughput["Average"], status(ratio >= t.ratio))
		}
		if !found {
			w("| `%s`: %s throughput ≥ %.2f × %s | — | not measured |\n", t.testCase, pluginProfile, t.ratio, t.baseline)
		}
	}
	for _, t := range sharedPoolTargets {
		w("%s", t.row(r.schedulerRun.results))
	}
	for _, t := range memserviceTargets {
		w("%s", t.row(r.memservice.results))
	}
	for _, t := range endToEndTargets {
		w("%s", t.row(r.endToEnd.results))
	}
	w("\n")
	if strings.TrimSpace(r.notes) != "" {
		w("## Findings\n\n")
		w("Written by hand from the profiles of this run ([`%s%s`](%s%s)); the tables below are generated.\n\n",
			resultsDirInMarkdown, notesFile, resultsDirInMarkdown, notesFile)
		w("%s\n\n", strings.TrimSpace(r.notes))
	}

	r.schedulerSection(w, runs, ps)
	benchSection(w, "Memory service", "Go benchmarks of the in-process ledger and of the gRPC API over loopback mutual TLS\n"+
		"(`memservice/ledger`, `memservice/server`). The closed-loop gRPC benchmarks keep every client busy, so\n"+
		"their percentiles include queueing on this machine's cores; the paced ones send at a fixed total rate,\n"+
		"10 s per rate.\n"+
		"The ledger benchmark runs on one core (`-cpu 1`).", r.memservice)
	benchSection(w, "End to end", "Pods on the local cluster (etcd, kube-apiserver, kube-controller-manager, kwok, the\n"+
		"scheduler, the memory service with simulated devices at zero latency, node agents). The same pods run\n"+
		"four times on one system, in the order A B B A, each profile's figures the mean of its two runs:\n"+
		"`profile=without-dynamic-memory` is the baseline (a profile of the stock plugins: their\n"+
		"claims allocated by DRA alone, nothing waits for their memory), `profile=dynamic-memory-scheduler` the\n"+
		"project. API requests per pod come from the API server's audit log, creation until the pools are whole and the pods and claims gone,\n"+
		"watches not counted. The steps of a pod: its claim\n"+
		"made from the template (`claimed`), bound, Running. `BenchmarkSchedulers` compares, for 50 pods, the\n"+
		"schedulers a pod may meet: this project's two profiles (both run DynamicMemory; on one system, in\n"+
		"the order A B B A) and the stock kube-scheduler in compatibility mode (`scheduler=stock`, on a\n"+
		"system of its own: binding conditions, polled every 5 s by its PreBind). `BenchmarkIdlePodToRunning`\n"+
		"runs one pod at a time on an otherwise idle cluster (created, Running, deleted, the pools whole again,\n"+
		"then the next), 20 pods per profile in rounds of A B B A; `over-dra` is the project's percentile less\n"+
		"DRA only's.", r.endToEnd)
	return b.String()
}

func (r *report) schedulerSection(w func(string, ...any), runs []*schedRun, ps []pair) {
	w("## Scheduler throughput (scheduler_perf)\n\n")
	w("Upstream's scheduler_perf (`test/perf/schedulerperf`, test cases in\n")
	w("[`performance-config.yaml`](../test/perf/schedulerperf/performance-config.yaml)): a real kube-apiserver and\n")
	w("etcd, the scheduler in-process with the shipped configuration (both profiles run DynamicMemory)\n")
	w("plus the profile `without-dynamic-memory` (the stock plugins alone), the memory\n")
	w("service in-process (simulated devices at zero latency) and a simulated node agent per node.\n")
	w("`NonDynamicPods` creates plain pods, `DynamicMemoryClaims` pods with a 1Gi–4Gi claim of the\n")
	w("dynamic memory DeviceClass; each size runs for `without-dynamic-memory` (the baseline: for claims\n")
	w("that is DRA only, DynamicResources without DynamicMemory) and for `default-scheduler`.\n")
	w("Throughput is scheduler_perf's `SchedulingThroughput` (pods bound per second, sampled each\n")
	w("second while the measured pods are scheduled); the duration is the time to schedule all of them.\n")
	w("Each pair runs twice, A B then B A (the second round's sizes end in `-reversed`), so that\n")
	w("neither profile gains from its place; a profile's figures are the medians of its runs, and the\n")
	w("ratio is the median of the pairs' ratios (the targets give their spread).\n\n")
	for _, c := range r.schedulerRun.commands {
		w("Command: `%s`%s\n\n", c, failure(r.schedulerRun, c))
	}
	if len(runs) == 0 {
		w("No results (`%s`).\n\n", schedulerPerfJSON)
		return
	}
	w("| Test case | Size | Profile | Throughput avg (pods/s) | p50 | p90 | p99 | Duration (s) | Ratio to baseline (avg) | Ratio to baseline (duration) |\n")
	w("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range ps {
		for _, run := range []*schedRun{p.baseline, p.plugin} {
			if run == nil {
				continue
			}
			ratio, byDuration := "1 (baseline)", "1 (baseline)"
			if run == p.plugin {
				ratio, byDuration = "—", "—"
				if v, ok := p.ratio(); ok {
					ratio = fmt.Sprintf("%.3f", v)
				}
				if p.baseline != nil && run.duration > 0 {
					byDuration = fmt.Sprintf("%.3f", p.baseline.duration/run.duration)
				}
			}
			w("| %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %.2f | %s | %s |\n",
				run.testCase, run.size, run.profile, run.throughput["Average"], run.throughput["Perc50"],
				run.throughput["Perc90"], run.throughput["Perc99"], run.duration, ratio, byDuration)
		}
	}
	if n := runs[0].runs; n > 1 {
		w("\nEach figure is the median of %d runs (`-count`).\n", n)
	}
	w("\n")

	// Extension points the plugin takes part in, where the two profiles differ.
	eps := []string{"PreFilter", "Filter", "Score", "Reserve", "PreBind"}
	haveExt := false
	for _, run := range runs {
		if len(run.extensionPoints) > 0 {
			haveExt = true
		}
	}
	if !haveExt {
		return
	}
	w("Average duration of the scheduling framework's extension points (ms, all plugins of the\n")
	w("profile; `scheduler_framework_extension_point_duration_seconds`). PreBind of\n")
	w("`%s` includes the wait until the node agent reports the memory online;\n", pluginProfile)
	w("it runs in the binding goroutine, not in the scheduling cycle.\n\n")
	w("| Test case | Size | Profile | %s |\n| --- | --- | --- |%s\n", strings.Join(eps, " | "), strings.Repeat(" ---: |", len(eps)))
	for _, p := range ps {
		for _, run := range []*schedRun{p.baseline, p.plugin} {
			if run == nil {
				continue
			}
			cells := make([]string, len(eps))
			for i, ep := range eps {
				cells[i] = "—"
				if v, ok := run.extensionPoints[ep]; ok {
					cells[i] = fmt.Sprintf("%.3f", v)
				}
			}
			w("| %s | %s | %s | %s |\n", run.testCase, run.size, run.profile, strings.Join(cells, " | "))
		}
	}
	w("\n")
	r.pluginTable(w, ps, eps)
	r.sharedPoolTable(w)
}

// sharedPoolTable shows, for each run of the SharedPool test case, the
// ResourceSlice writes, requeues and scheduling attempts per measured pod.
func (r *report) sharedPoolTable(w func(string, ...any)) {
	var rows []string
	for _, res := range r.schedulerRun.results {
		workload, ok := strings.CutPrefix(res.Name, "BenchmarkPerfScheduling/SharedPool/")
		if !ok {
			continue
		}
		cells := make([]string, len(sharedPoolUnits))
		for i, u := range sharedPoolUnits {
			cells[i] = "—"
			if v, ok := res.Metrics[u]; ok {
				cells[i] = fmt.Sprintf("%.2f", v)
			}
		}
		rows = append(rows, fmt.Sprintf("| %s | %s |\n", workload, strings.Join(cells, " | ")))
	}
	if len(rows) == 0 {
		return
	}
	w("`SharedPool`: one pool shared by all nodes, filled by the measured pods; each node's\n")
	w("ResourceSlice is published by the DRA plugin's publisher from the pool status. Per measured\n")
	w("pod: writes to the ResourceSlices until they are quiet again, the scheduler's requeues by\n")
	w("cluster events (`scheduler_queue_incoming_pods_total`) and its scheduling attempts.\n\n")
	w("| Workload | ResourceSlice writes/pod | Requeues/pod | Attempts/pod |\n| --- | ---: | ---: | ---: |\n")
	for _, row := range rows {
		w("%s", row)
	}
	w("\n")
}

// pluginTable shows the time of DynamicResources and DynamicMemory at each extension
// point, where the scheduler sampled it.
func (r *report) pluginTable(w func(string, ...any), ps []pair, eps []string) {
	plugins := []string{"DynamicResources", "DynamicMemory"}
	var rows []string
	for _, p := range ps {
		for _, run := range []*schedRun{p.baseline, p.plugin} {
			if run == nil {
				continue
			}
			for _, plugin := range plugins {
				times, ok := run.plugins[plugin]
				if !ok {
					continue
				}
				cells := make([]string, len(eps))
				for i, ep := range eps {
					cells[i] = "—"
					if v, ok := times[ep]; ok {
						cells[i] = fmt.Sprintf("%.3f", v)
					}
				}
				rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s |\n", run.testCase, run.size, run.profile, plugin, strings.Join(cells, " | ")))
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	w("Average time of the DRA plugin and of DynamicMemory at each extension point (ms;\n")
	w("`scheduler_plugin_execution_duration_seconds`, which the scheduler records in a sample of\n")
	w("the scheduling cycles; Filter and Score are per node).\n\n")
	w("| Test case | Size | Profile | Plugin | %s |\n| --- | --- | --- | --- |%s\n", strings.Join(eps, " | "), strings.Repeat(" ---: |", len(eps)))
	for _, row := range rows {
		w("%s", row)
	}
	w("\n")
}

// benchSection writes a table of Go benchmark results per command: one column per
// metric unit.
func benchSection(w func(string, ...any), title, intro string, st suite) {
	w("## %s\n\n%s\n\n", title, intro)
	if len(st.commands) == 0 && len(st.results) == 0 {
		w("Not run: no results.\n\n")
		return
	}
	commands := st.commands
	if len(commands) == 0 {
		commands = []string{""}
	}
	for _, c := range commands {
		var rs []benchResult
		for _, res := range st.results {
			if res.Command == c {
				rs = append(rs, res)
			}
		}
		if c != "" {
			w("Command: `%s`%s\n\n", c, failure(st, c))
		}
		if len(rs) == 0 {
			w("No results.\n\n")
			continue
		}
		var units []string
		for _, res := range rs {
			for _, u := range res.Units {
				if !slices.Contains(units, u) {
					units = append(units, u)
				}
			}
		}
		w("| Benchmark | %s |\n| --- |%s\n", strings.Join(units, " | "), strings.Repeat(" ---: |", len(units)))
		for _, res := range rs {
			cells := make([]string, len(units))
			for i, u := range units {
				cells[i] = "—"
				if v, ok := res.Metrics[u]; ok {
					cells[i] = formatValue(v)
				}
			}
			w("| `%s` | %s |\n", res.Name, strings.Join(cells, " | "))
		}
		w("\n")
	}
}

// failure is " — **failed** (why)" for a command that failed, else "".
func failure(st suite, command string) string {
	if why, ok := st.failed[command]; ok {
		return fmt.Sprintf(" — **failed** (%s; the full output is in `.run/bench/`)", why)
	}
	return ""
}

// row is the target's line of the targets table.
func (t benchTarget) row(results []benchResult) string {
	if t.relative != nil {
		v, limit, shown, ok := t.relative(results)
		if !ok {
			return fmt.Sprintf("| %s | — | not measured |\n", t.what)
		}
		return fmt.Sprintf("| %s | %s | %s |\n", t.what, shown, status(v <= limit))
	}
	for _, res := range results {
		if !t.name.MatchString(res.Name) {
			continue
		}
		for _, u := range res.Units {
			if !t.unit.MatchString(u) {
				continue
			}
			v := t.value(res, u)
			met := v >= t.limit
			if t.atMost {
				met = v <= t.limit
			}
			return fmt.Sprintf("| %s | %s (`%s`) | %s |\n", t.what, t.show(v), res.Name, status(met))
		}
	}
	return fmt.Sprintf("| %s | — | not measured |\n", t.what)
}

// value is the result's metric in the target's unit.
func (t benchTarget) value(res benchResult, unit string) float64 {
	v := res.Metrics[unit]
	if strings.HasSuffix(unit, "-ms") && t.unit.MatchString(strings.TrimSuffix(unit, "-ms")+"-s") {
		v /= 1000 // a target in seconds met by a metric in ms
	}
	return v
}

func status(met bool) string {
	if met {
		return "**met**"
	}
	return "**missed**"
}

// formatValue prints a metric compactly: integers with thousands separators, small
// values with a few significant digits.
func formatValue(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return thousands(v)
	case math.Abs(v) >= 100:
		return thousands(math.Round(v))
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// thousands prints v rounded to an integer, with commas between thousands.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", math.Round(v))
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []string
	for len(s) > 3 {
		out = append([]string{s[len(s)-3:]}, out...)
		s = s[:len(s)-3]
	}
	out = append([]string{s}, out...)
	res := strings.Join(out, ",")
	if neg {
		res = "-" + res
	}
	return res
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
