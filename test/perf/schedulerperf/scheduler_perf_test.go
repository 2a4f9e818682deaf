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
	"os"
	"testing"

	_ "k8s.io/component-base/logs/json/register"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	perf "k8s.io/kubernetes/test/integration/scheduler_perf"

	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
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
	env := &environment{}
	registry := frameworkruntime.Registry{dynamicmemory.Name: env.pluginFactory}
	perf.RunBenchmarkPerfScheduling(b, configFile, topic, registry,
		perf.WithPreRunFn(env.preRun),
		perf.WithPrepareFn(env.prepare),
	)
}
