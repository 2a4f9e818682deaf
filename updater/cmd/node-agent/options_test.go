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
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	logsapi "k8s.io/component-base/logs/api/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/command"
)

func TestMain(m *testing.M) {
	// Every test runs the command, which applies the (same) logging configuration.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	os.Exit(m.Run())
}

// run runs the node-agent command with args and returns its error.
func run(t *testing.T, args ...string) error {
	t.Helper()
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(context.Background())
}

func TestOptionsValidate(t *testing.T) {
	// Valid flags get as far as the Kubernetes client, which fails on this kubeconfig.
	const noKubeconfig = "--kubeconfig /nonexistent"
	valid := []string{"--node-name=node-1", "--memservice-address=memservice:8443", "--memservice-ca=ca.crt",
		"--memservice-cert=agent.crt", "--memservice-key=agent.key", "--kubeconfig=/nonexistent"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"all set", valid, []string{noKubeconfig}},
		{"regions", append(append([]string{}, valid...), "--region=pool-a=region0", "--region=pool-c=dax1.0", "--region-base=pool-b=4294967296"), []string{noKubeconfig}},
		{"no default region", append(append([]string{}, valid...), "--default-region-base=0x100000000"), []string{"unknown flag: --default-region-base"}},
		{"nothing set", nil, []string{"--node-name (or NODE_NAME) is required", "memory service client: address is required"}},
		{"bad values", append(append([]string{}, valid...), "--host-backend=qemu", "--offline-attempts=0", "--heartbeat-interval=0s"), []string{
			`--host-backend="qemu": must be sysfs or simulated`,
			"--offline-attempts=0: must be at least 1", "--heartbeat-interval=0s: must be positive",
		}},
		{"certificate without key", append(append([]string{}, valid...), "--metrics-tls-cert-file=tls.crt"), []string{"give both --metrics-tls-cert-file and --metrics-tls-key-file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", "")
			err := run(t, tc.args...)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			if tc.want[0] == noKubeconfig {
				assert.NotContains(t, err.Error(), "required", "the flags are valid")
				assert.NotContains(t, err.Error(), "must be", "the flags are valid")
			}
		})
	}
}

func TestRegionBaseFlagIsRepeatable(t *testing.T) {
	o := newOptions()
	cmd := command.New("node-agent", "", "", o)
	require.NoError(t, cmd.ParseFlags([]string{"--region-base=pool-a=0x10", "--region-base=pool-b=32"}))
	assert.Equal(t, regionBases{"pool-a": 16, "pool-b": 32}, o.regionBases)
	assert.Error(t, cmd.ParseFlags([]string{"--region-base=pool-a"}), "a bad value is refused while parsing")
}

func TestRegionFlagIsRepeatable(t *testing.T) {
	o := newOptions()
	cmd := command.New("node-agent", "", "", o)
	require.NoError(t, cmd.ParseFlags([]string{"--region=pool-a=region0", "--region=pool-b=dax1.0"}))
	assert.Equal(t, regionNames{"pool-a": "region0", "pool-b": "dax1.0"}, o.regions)
	for _, bad := range []string{"--region=pool-a", "--region==region0", "--region=pool-a="} {
		assert.Error(t, cmd.ParseFlags([]string{bad}), bad)
	}
}

func TestNodeNameDefaultsToTheEnvironment(t *testing.T) {
	t.Setenv("NODE_NAME", "node-7")
	assert.Equal(t, "node-7", newOptions().nodeName)
}

func TestRegionBaseFlagRejectsBadValues(t *testing.T) {
	var r regionBases
	for _, v := range []string{"pool-a", "=0x10", "pool-a=-1", "pool-a=12G"} {
		assert.Error(t, r.Set(v), v)
	}
	require.NoError(t, r.Set("pool-a=0x10"))
	assert.Equal(t, regionBases{"pool-a": 16}, r)
}
