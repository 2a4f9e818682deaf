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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	schedulerapi "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	pluginconfig "github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
	schedconfig "github.com/dynamicmemory/kube-dynamic-memory/scheduler/config"
)

// loadConfig reads a configuration the way kube-scheduler does (defaults applied)
// and validates it.
func loadConfig(t *testing.T, data []byte) *schedulerapi.KubeSchedulerConfiguration {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	logger, _ := ktesting.NewTestContext(t)
	cfg, err := options.LoadConfigFromFile(logger, file)
	require.NoError(t, err)
	require.NoError(t, validation.ValidateKubeSchedulerConfiguration(cfg))
	return cfg
}

// pluginArgs returns the DynamicMemory args of a profile, defaulted and validated.
func pluginArgs(t *testing.T, cfg *schedulerapi.KubeSchedulerConfiguration, profile string) *pluginconfig.DynamicMemoryArgs {
	t.Helper()
	for _, p := range cfg.Profiles {
		if p.SchedulerName != profile {
			continue
		}
		for _, pc := range p.PluginConfig {
			if pc.Name != pluginconfig.PluginName {
				continue
			}
			raw, ok := pc.Args.(*runtime.Unknown)
			require.True(t, ok, "out-of-tree args reach the plugin as runtime.Unknown, got %T", pc.Args)
			args := &pluginconfig.DynamicMemoryArgs{}
			require.NoError(t, yaml.UnmarshalStrict(raw.Raw, args))
			pluginconfig.SetDefaults(args)
			require.Empty(t, pluginconfig.Validate(field.NewPath("args"), args))
			return args
		}
	}
	return nil
}

func TestShippedConfiguration(t *testing.T) {
	cfg := loadConfig(t, schedconfig.YAML)
	require.Len(t, cfg.Profiles, 2)
	assert.Equal(t, schedconfig.DefaultProfile, cfg.Profiles[0].SchedulerName)
	assert.Equal(t, schedconfig.DynamicMemoryProfile, cfg.Profiles[1].SchedulerName)

	// Both profiles run DynamicMemory after DynamicResources (multiPoint appends it
	// to the defaults), with the same args; its Filter is also named at the filter
	// extension point, which the framework orders before every multiPoint plugin:
	// a node of a full pool is turned down before the DRA allocator searches it.
	for _, p := range cfg.Profiles {
		names := enabledPlugins(p.Plugins.MultiPoint)
		require.Contains(t, names, pluginconfig.PluginName, "profile %s", p.SchedulerName)
		require.Contains(t, names, "DynamicResources", "profile %s", p.SchedulerName)
		assert.Greater(t, indexOf(names, pluginconfig.PluginName), indexOf(names, "DynamicResources"), "profile %s", p.SchedulerName)
		assert.Equal(t, []string{pluginconfig.PluginName}, enabledPlugins(p.Plugins.Filter), "profile %s: Filter first", p.SchedulerName)
	}
	args := pluginArgs(t, cfg, schedconfig.DynamicMemoryProfile)
	require.NotNil(t, args)
	assert.Equal(t, args, pluginArgs(t, cfg, schedconfig.DefaultProfile), "both profiles have the same args")
	assert.Equal(t, deploy.MemoryServiceAddress, args.Address, "the scheduler reaches the memservice Service of manifests/memservice")
	assert.Equal(t, pluginconfig.MostAllocated, args.ScoringStrategy.Type)
}

func TestRenderAddsTheBaselineProfile(t *testing.T) {
	data, err := schedconfig.Render(schedconfig.Options{Baseline: true})
	require.NoError(t, err)
	cfg := loadConfig(t, data)
	require.Len(t, cfg.Profiles, 3)
	assert.Equal(t, schedconfig.BaselineProfile, cfg.Profiles[2].SchedulerName)
	names := enabledPlugins(cfg.Profiles[2].Plugins.MultiPoint)
	assert.NotContains(t, names, pluginconfig.PluginName)
	assert.Contains(t, names, "DynamicResources")
	assert.Nil(t, pluginArgs(t, cfg, schedconfig.BaselineProfile))
}

func enabledPlugins(set schedulerapi.PluginSet) []string {
	var names []string
	for _, p := range set.Enabled {
		names = append(names, p.Name)
	}
	return names
}

func TestRenderPointsTheConfigurationElsewhere(t *testing.T) {
	args := &pluginconfig.DynamicMemoryArgs{Address: "127.0.0.1:9443", CAFile: "/pki/ca.crt", CertFile: "/pki/s.crt", KeyFile: "/pki/s.key"}
	data, err := schedconfig.Render(schedconfig.Options{Kubeconfig: "/run/kubeconfig", LeaderElect: ptr.To(false), Args: args})
	require.NoError(t, err)
	cfg := loadConfig(t, data)
	assert.Equal(t, "/run/kubeconfig", cfg.ClientConnection.Kubeconfig)
	assert.False(t, cfg.LeaderElection.LeaderElect)
	got := pluginArgs(t, cfg, schedconfig.DynamicMemoryProfile)
	require.NotNil(t, got)
	assert.Equal(t, "127.0.0.1:9443", got.Address)
	assert.Equal(t, "/pki/s.key", got.KeyFile)
}

// TestBinaryRefusesBadConfiguration builds the scheduler binary and starts it with
// broken plugin args: it must exit at start, naming the field.
func TestBinaryRefusesBadConfiguration(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the scheduler binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kube-scheduler")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o644))
	for _, f := range []string{"ca.crt", "s.crt", "s.key"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600))
	}
	const prefix = "profiles[default-scheduler].pluginConfig[DynamicMemory].args"
	tests := []struct {
		name    string
		edit    func(string) string
		wantErr string
	}{
		{
			name:    "misspelled field",
			edit:    func(s string) string { return strings.Replace(s, "address:", "adress:", 1) },
			wantErr: prefix + `: error unmarshaling JSON: while decoding JSON: json: unknown field \"adress\"`,
		},
		{
			name: "missing client certificate",
			edit: func(s string) string {
				return strings.Replace(s, "certFile: "+filepath.Join(dir, "s.crt"), `certFile: ""`, 1)
			},
			wantErr: prefix + ".certFile: Required value",
		},
		{
			name:    "unknown scoring strategy",
			edit:    func(s string) string { return strings.Replace(s, "type: MostAllocated", "type: Fullest", 1) },
			wantErr: prefix + `.scoringStrategy.type: Unsupported value: \"Fullest\"`,
		},
		{
			name: "CA file that does not exist",
			edit: func(s string) string {
				return strings.Replace(s, filepath.Join(dir, "ca.crt"), "/nonexistent/ca.crt", 1)
			},
			wantErr: prefix + `.caFile: Invalid value: \"/nonexistent/ca.crt\": open /nonexistent/ca.crt: no such file or directory`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good, err := schedconfig.Render(schedconfig.Options{Kubeconfig: kubeconfig, LeaderElect: ptr.To(false), Args: &pluginconfig.DynamicMemoryArgs{
				Address: "127.0.0.1:1", CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "s.crt"), KeyFile: filepath.Join(dir, "s.key"),
				ScoringStrategy: &pluginconfig.ScoringStrategy{Type: pluginconfig.MostAllocated},
			}})
			require.NoError(t, err)
			file := filepath.Join(t.TempDir(), "config.yaml")
			require.NoError(t, os.WriteFile(file, []byte(tc.edit(string(good))), 0o644))

			out, err := exec.Command(bin, "--config", file, "--secure-port", "0").CombinedOutput()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "the scheduler must exit: %s", out)
			assert.NotZero(t, exit.ExitCode())
			assert.Contains(t, string(out), tc.wantErr)
		})
	}
}

func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}
