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

package schedulerperf

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
	schedulerconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
)

// testCase is the part of a scheduler_perf test case these checks read.
type testCase struct {
	Name                string `json:"name"`
	SchedulerConfigPath string `json:"schedulerConfigPath"`
	Workloads           []struct {
		Name   string         `json:"name"`
		Labels []string       `json:"labels"`
		Params map[string]any `json:"params"`
	} `json:"workloads"`
}

// TestPerformanceConfigPairsProfiles checks that every size of every test case runs
// for both profiles with the same parameters, and that make test and make bench
// each find a pair: a ratio between the profiles is only meaningful that way.
func TestPerformanceConfigPairsProfiles(t *testing.T) {
	data, err := os.ReadFile(configFile)
	require.NoError(t, err)
	var cases []testCase
	require.NoError(t, yaml.Unmarshal(data, &cases))
	require.Len(t, cases, 3)
	profiles := []string{schedulerconfig.BaselineProfile, schedulerconfig.DefaultProfile}

	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			assert.Empty(t, tc.SchedulerConfigPath, "the benchmark sets schedulerConfigPath")
			type size struct {
				labels   []string
				params   map[string]any
				profiles []string
			}
			sizes := map[string]*size{} // by workload name without the profile
			for _, w := range tc.Workloads {
				profile, _ := w.Params["schedulerName"].(string)
				require.Contains(t, profiles, profile, "workload %s: params.schedulerName", w.Name)
				base, ok := strings.CutSuffix(w.Name, "_"+profile)
				require.True(t, ok, "workload %s: the name must end in _%s", w.Name, profile)
				params := maps.Clone(w.Params)
				delete(params, "schedulerName")
				labels := slices.Sorted(slices.Values(w.Labels))
				s, seen := sizes[base]
				if !seen {
					sizes[base] = &size{labels: labels, params: params, profiles: []string{profile}}
					continue
				}
				assert.Equal(t, s.params, params, "workload %s: params differ from the other profile's", w.Name)
				assert.Equal(t, s.labels, labels, "workload %s: labels differ from the other profile's", w.Name)
				s.profiles = append(s.profiles, profile)
			}
			labelled := map[string]bool{}
			for base, s := range sizes {
				assert.ElementsMatch(t, profiles, s.profiles, "size %s must run once per profile", base)
				for _, l := range s.labels {
					labelled[l] = true
				}
			}
			assert.True(t, labelled["integration-test"], "no integration-test workloads: make test would not run this test case")
			assert.True(t, labelled["performance"], "no performance workloads: make bench would not run this test case")
		})
	}
}

// TestBenchmarkConfigurationHasBothProfiles checks what the benchmark runs: every test
// case points at a scheduler configuration with the shipped profiles, which run
// DynamicMemory, and the baseline profile, which does not.
func TestBenchmarkConfigurationHasBothProfiles(t *testing.T) {
	file, err := writeTestCases(t.TempDir())
	require.NoError(t, err)
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	var cases []testCase
	require.NoError(t, yaml.Unmarshal(data, &cases))
	require.Len(t, cases, 3)
	for _, tc := range cases {
		require.FileExists(t, tc.SchedulerConfigPath, "test case %s", tc.Name)
		cfg, err := os.ReadFile(tc.SchedulerConfigPath)
		require.NoError(t, err)
		var sched configv1.KubeSchedulerConfiguration
		require.NoError(t, yaml.UnmarshalStrict(cfg, &sched))
		plugin := map[string]bool{}
		for _, p := range sched.Profiles {
			plugin[*p.SchedulerName] = p.Plugins != nil && p.Plugins.MultiPoint.Enabled != nil &&
				slices.ContainsFunc(p.Plugins.MultiPoint.Enabled, func(e configv1.Plugin) bool { return e.Name == dynamicmemory.Name })
		}
		assert.Equal(t, map[string]bool{
			schedulerconfig.DefaultProfile:       true,
			schedulerconfig.DynamicMemoryProfile: true,
			schedulerconfig.BaselineProfile:      false,
		}, plugin, "which profiles run DynamicMemory")

		// The performance workloads run A B B A: their second round, reversed.
		var order, want []string
		for _, w := range tc.Workloads {
			if slices.Contains(w.Labels, "performance") {
				order = append(order, w.Name)
			}
		}
		sizes := map[string][]string{"SharedPool": {"100Nodes-Fill50", "100Nodes-Fill95"}}[tc.Name]
		if sizes == nil {
			sizes = []string{"500Nodes"}
		}
		for _, size := range sizes {
			want = append(want, size+"_"+schedulerconfig.BaselineProfile, size+"_"+schedulerconfig.DefaultProfile)
		}
		for _, size := range slices.Backward(sizes) {
			want = append(want, size+reversedSuffix+"_"+schedulerconfig.DefaultProfile, size+reversedSuffix+"_"+schedulerconfig.BaselineProfile)
		}
		assert.Equal(t, want, order, "test case %s", tc.Name)
	}
}
