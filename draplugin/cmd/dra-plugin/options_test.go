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
)

func TestMain(m *testing.M) {
	// Every test runs the command, which applies the (same) logging configuration.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	os.Exit(m.Run())
}

// run runs the dra-plugin command with args and returns its error.
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
	dir := t.TempDir()
	// Valid flags get as far as the Kubernetes client, which fails on this kubeconfig.
	const noKubeconfig = "--kubeconfig /nonexistent"
	valid := []string{"--node-name=node-1", "--memservice-address=memservice:8443", "--memservice-ca=ca.crt",
		"--memservice-cert=draplugin.crt", "--memservice-key=draplugin.key", "--plugin-data-dir=" + dir, "--registrar-dir=" + dir,
		"--kubeconfig=/nonexistent"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"all set", valid, []string{noKubeconfig}},
		{"nothing set", []string{"--plugin-data-dir=/nonexistent", "--registrar-dir=" + dir}, []string{
			"--node-name (or NODE_NAME) is required", "memory service client: address is required",
			"--plugin-data-dir=/nonexistent: must be an existing directory",
		}},
		{"empty CDI dir", append(append([]string{}, valid...), "--cdi-dir="), []string{"--cdi-dir is required"}},
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

func TestNodeNameDefaultsToTheEnvironment(t *testing.T) {
	t.Setenv("NODE_NAME", "node-7")
	assert.Equal(t, "node-7", newOptions().nodeName)
}
