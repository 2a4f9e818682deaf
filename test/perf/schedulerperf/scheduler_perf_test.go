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

// Package schedulerperf measures the DynamicMemory scheduler plugin with upstream's
// scheduler_perf (k8s.io/kubernetes/test/integration/scheduler_perf): the test cases
// of performance-config.yaml run each workload once per profile, against a real
// API server and etcd (etcd from bin/, on PATH) and the scheduler in-process with
// the plugin in its registry.
//
// make bench runs the performance workloads:
//
//	go test -run '^$' -bench BenchmarkPerfScheduling -benchtime=1x \
//	  -perf-scheduling-label-filter=performance -data-items-dir=DIR ./test/perf/schedulerperf/
//
// make test runs the small integration-test variants the same way, with
// -perf-scheduling-label-filter=integration-test. Without -bench, nothing runs but
// the checks of the configuration.
package schedulerperf

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "k8s.io/component-base/logs/json/register"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	perf "k8s.io/kubernetes/test/integration/scheduler_perf"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
	schedconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
)

// configFile holds the test cases.
const configFile = "performance-config.yaml"

// topic names the benchmark's JSON results file:
// BenchmarkPerfScheduling_benchmark_<topic>_<time>.json in -data-items-dir.
const topic = "dynamic_memory"

func TestMain(m *testing.M) {
	if err := perf.InitTests(); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func BenchmarkPerfScheduling(b *testing.B) {
	cases, err := writeTestCases(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	env := &environment{}
	registry := frameworkruntime.Registry{dynamicmemory.Name: env.pluginFactory}
	perf.RunBenchmarkPerfScheduling(b, cases, topic, registry,
		perf.WithPreRunFn(env.preRun),
		perf.WithPrepareFn(env.prepare),
	)
}

// reversedSuffix marks the size of a workload's second round, run in the opposite
// order (hack/benchreport pairs the rounds).
const reversedSuffix = "-reversed"

// withReversedRounds appends to a test case's workloads those labelled performance
// again, in reverse order and with reversedSuffix after their size: each pair then
// runs A B B A, so that neither profile profits from its place (the scheduler, API
// server and etcd start anew for each workload, the test process does not).
func withReversedRounds(workloads any) any {
	list, ok := workloads.([]any)
	if !ok {
		return workloads
	}
	out := slices.Clone(list)
	for _, w := range slices.Backward(list) {
		m, ok := w.(map[string]any)
		if !ok || !slices.Contains(toStrings(m["labels"]), "performance") {
			continue
		}
		name, _ := m["name"].(string)
		size, profile, found := strings.Cut(name, "_")
		if !found {
			continue
		}
		c := maps.Clone(m)
		c["name"] = size + reversedSuffix + "_" + profile
		out = append(out, c)
	}
	return out
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// writeTestCases writes into dir the shipped scheduler configuration plus the
// baseline profile (without-dynamic-memory), and the test cases of configFile pointed at it; it returns the
// test cases' file. Paths in the test cases stay relative to this directory.
func writeTestCases(dir string) (string, error) {
	schedFile := filepath.Join(dir, "scheduler-config.yaml")
	if err := schedconfig.Write(schedFile, schedconfig.Options{Baseline: true}); err != nil {
		return "", err
	}
	data, err := os.ReadFile(configFile)
	if err != nil {
		return "", err
	}
	var cases []map[string]any
	if err := yaml.Unmarshal(data, &cases); err != nil {
		return "", fmt.Errorf("parse %s: %w", configFile, err)
	}
	for _, tc := range cases {
		if _, set := tc["schedulerConfigPath"]; set {
			return "", fmt.Errorf("%s: test case %v sets schedulerConfigPath; the benchmark sets it", configFile, tc["name"])
		}
		tc["schedulerConfigPath"] = schedFile
		tc["workloads"] = withReversedRounds(tc["workloads"])
	}
	if data, err = yaml.Marshal(cases); err != nil {
		return "", err
	}
	file := filepath.Join(dir, configFile)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return "", err
	}
	return file, nil
}
