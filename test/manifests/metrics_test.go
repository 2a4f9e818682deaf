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

package manifests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	drapluginmetrics "github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	memservicemetrics "github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
	agentmetrics "github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
)

// exportedMetrics are the names the components register, by component.
func exportedMetrics() map[string][]string {
	return map[string][]string{
		"memservice": memservicemetrics.Names,
		"scheduler":  dynamicmemory.MetricNames(),
		"node-agent": agentmetrics.Names(),
		"dra-plugin": drapluginmetrics.Names(),
	}
}

// metricName matches the project's metric names in a PromQL expression.
var metricName = regexp.MustCompile(`\bdynamic_memory_[a-z0-9_]+`)

// referencedMetrics returns the dynamic_memory_* names in a PromQL expression, with
// the series suffixes of histograms (_bucket, _sum, _count) mapped to the histogram.
func referencedMetrics(expr string, exported map[string]bool) []string {
	var names []string
	for _, name := range metricName.FindAllString(expr, -1) {
		if !exported[name] {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && exported[base] {
					name = base
				}
			}
		}
		names = append(names, name)
	}
	return names
}

// TestDashboardAndAlertsUseExportedMetrics checks that every dashboard panel query and
// every alert rule names only metrics that the components really export, and that
// each names at least one of them.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	exported := map[string]bool{}
	for component, names := range exportedMetrics() {
		require.NotEmpty(t, names, "%s exports metrics", component)
		for _, n := range names {
			exported[n] = true
		}
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		names := referencedMetrics(expr, exported)
		assert.NotEmpty(t, names, "%s: the query names no dynamic_memory_ metric: %s", where, expr)
		for _, n := range names {
			assert.True(t, exported[n], "%s: metric %s is not exported by any component (query: %s)", where, n, expr)
			used[n] = true
		}
	}

	data, err := os.ReadFile(filepath.Join(repoRoot(t), "manifests", "monitoring", "dashboard.json"))
	require.NoError(t, err)
	var dashboard struct {
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dashboard))
	queries := 0
	for _, p := range dashboard.Panels {
		if p.Type == "row" {
			continue
		}
		assert.NotEmpty(t, p.Targets, "panel %q has queries", p.Title)
		for _, target := range p.Targets {
			check("dashboard panel "+p.Title, target.Expr)
			queries++
		}
	}
	assert.Greater(t, queries, 10)

	rule := find(t, build(t, "manifests/monitoring"), "PrometheusRule", "dynamic-memory")
	groups, _, err := unstructured.NestedSlice(rule.Object, "spec", "groups")
	require.NoError(t, err)
	var alerts []string
	for _, g := range groups {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			r := r.(map[string]any)
			alert, _ := r["alert"].(string)
			expr, _ := r["expr"].(string)
			check("alert "+alert, expr)
			alerts = append(alerts, alert)
		}
	}
	for _, want := range []string{"DynamicMemoryAllocationFailures", "DynamicMemoryPoolNearlyFull", "DynamicMemoryProvisioningSlow", "DynamicMemoryAgentDown"} {
		assert.Contains(t, alerts, want)
	}

	// The seed metrics of the design are on the dashboard.
	for _, seed := range []string{"dynamic_memory_allocations_total", "dynamic_memory_allocation_errors_total", "dynamic_memory_current_usage_bytes", "dynamic_memory_provisioning_duration_seconds"} {
		assert.True(t, used[seed], "the dashboard shows %s", seed)
	}
}

func TestReferencedMetrics(t *testing.T) {
	exported := map[string]bool{"dynamic_memory_x_seconds": true, "dynamic_memory_total": true}
	tests := []struct {
		expr string
		want []string
	}{
		{`histogram_quantile(0.9, sum by (le) (rate(dynamic_memory_x_seconds_bucket[5m])))`, []string{"dynamic_memory_x_seconds"}},
		{`rate(dynamic_memory_total[1m]) / rate(dynamic_memory_x_seconds_count[1m])`, []string{"dynamic_memory_total", "dynamic_memory_x_seconds"}},
		{`up{job="x"} == 0`, nil},
		{`dynamic_memory_unknown_bucket`, []string{"dynamic_memory_unknown_bucket"}},
	}
	for _, tc := range tests {
		got := referencedMetrics(tc.expr, exported)
		assert.True(t, slices.Equal(tc.want, got), "%s: got %v, want %v", tc.expr, got, tc.want)
	}
}
