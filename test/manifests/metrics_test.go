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
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime"

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

	data, err := os.ReadFile(filepath.Join(repoRoot(t), chartDir, "files", "dashboard.json"))
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

	var alerts []string
	for _, r := range alertRules(t) {
		check("alert "+r.Alert, r.Expr)
		alerts = append(alerts, r.Alert)
	}
	for _, want := range []string{"DynamicMemoryAllocationFailures", "DynamicMemoryPoolNearlyFull", "DynamicMemoryProvisioningSlow", "DynamicMemoryAgentDown"} {
		assert.Contains(t, alerts, want)
	}

	// The seed metrics of the design are on the dashboard.
	for _, seed := range []string{"dynamic_memory_allocations_total", "dynamic_memory_allocation_errors_total", "dynamic_memory_current_usage_bytes", "dynamic_memory_provisioning_duration_seconds"} {
		assert.True(t, used[seed], "the dashboard shows %s", seed)
	}
}

// alertRule is one rule of the PrometheusRule.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	Annotations map[string]string `json:"annotations"`
}

// alertRules reads the alert rules of manifests/monitoring, as kustomize builds them.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
	rule := find(t, build(t, "manifests/monitoring"), "PrometheusRule", "dynamic-memory")
	var spec struct {
		Groups []struct {
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(rule.Object["spec"].(map[string]any), &spec))
	var rules []alertRule
	for _, g := range spec.Groups {
		rules = append(rules, g.Rules...)
	}
	require.NotEmpty(t, rules)
	return rules
}

// runbookURL is where the runbooks are published: docs/runbooks.md of the repository.
const runbookURL = "https://github.com/dynamicmemory/kube-dynamic-memory/blob/main/docs/runbooks.md"

// markdownSections splits a Markdown document into its level-2 sections, by the anchor
// GitHub gives each heading.
func markdownSections(doc string) map[string]string {
	sections := map[string]string{}
	anchor := ""
	for _, line := range strings.Split(doc, "\n") {
		if heading, ok := strings.CutPrefix(line, "## "); ok {
			anchor = headingAnchor(heading)
			sections[anchor] = ""
			continue
		}
		if anchor != "" {
			sections[anchor] += line + "\n"
		}
	}
	return sections
}

// headingAnchor is the anchor GitHub gives a Markdown heading: lower case, without
// punctuation, spaces as hyphens.
func headingAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestAlertsHaveRunbooks checks that every alert links its runbook in docs/runbooks.md:
// a runbook_url whose anchor is a section there, which names the metrics the alert's
// query uses and how to confirm it with the kubectl plugin; and that every runbook is
// an alert's.
func TestAlertsHaveRunbooks(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "runbooks.md"))
	require.NoError(t, err)
	sections := markdownSections(string(data))
	exported := map[string]bool{}
	for _, names := range exportedMetrics() {
		for _, n := range names {
			exported[n] = true
		}
	}
	linked := map[string]bool{}
	for _, r := range alertRules(t) {
		link := r.Annotations["runbook_url"]
		if !assert.NotEmpty(t, link, "alert %s has a runbook_url annotation", r.Alert) {
			continue
		}
		page, anchor, _ := strings.Cut(link, "#")
		assert.Equal(t, runbookURL, page, "alert %s: runbook_url points into docs/runbooks.md", r.Alert)
		assert.Equal(t, headingAnchor(r.Alert), anchor, "alert %s: runbook_url's anchor is the alert's section", r.Alert)
		section, ok := sections[anchor]
		if !assert.True(t, ok, "alert %s: docs/runbooks.md has no section %q (a heading \"## %s\")", r.Alert, anchor, r.Alert) {
			continue
		}
		linked[anchor] = true
		for _, metric := range referencedMetrics(r.Expr, exported) {
			assert.Contains(t, section, metric, "the runbook of %s says what its metric %s means", r.Alert, metric)
		}
		assert.Contains(t, section, "kubectl dynamic-memory", "the runbook of %s says how to confirm it with the kubectl plugin", r.Alert)
		for _, part := range []string{"**Meaning.**", "**Confirm.**", "**Act.**"} {
			assert.Contains(t, section, part, "the runbook of %s has its part %s", r.Alert, part)
		}
	}
	for anchor := range sections {
		assert.True(t, linked[anchor], "docs/runbooks.md section %q is the runbook of no alert", anchor)
	}
}

func TestHeadingAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"DynamicMemoryNoLeader":                         "dynamicmemorynoleader",
		"2. See what you got: `kubectl dynamic-memory`": "2-see-what-you-got-kubectl-dynamic-memory",
		"Metrics and alerts":                            "metrics-and-alerts",
	} {
		assert.Equal(t, want, headingAnchor(heading))
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
