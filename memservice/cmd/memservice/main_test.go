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
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	logsapi "k8s.io/component-base/logs/api/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

func TestMain(m *testing.M) {
	// Every test runs the command, which applies the (same) logging configuration.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	os.Exit(m.Run())
}

// run runs the memservice command with args and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCertsWritesADevBundle(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, "certs", "--dir", dir, "--server-names", "127.0.0.1,memservice", "--nodes", "node1, node2")
	require.NoError(t, err)
	assert.Contains(t, out, "wrote CA")
	b := pki.Bundle{Dir: dir}
	for _, member := range []string{"server", "scheduler", "admin", "agent-node1", "draplugin-node2"} {
		_, err := os.Stat(b.CertFile(member))
		assert.NoError(t, err, member)
	}
	_, err = pki.ServerTLSConfig(b.CertFile("server"), b.KeyFile("server"), b.CAFile())
	assert.NoError(t, err)
}

func TestServeNeedsItsTLSFiles(t *testing.T) {
	_, err := run(t, "--kubeconfig", "/nonexistent", "--leader-elect=false")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--kubeconfig /nonexistent")
}

func TestPoolStatusIntervalIsValidated(t *testing.T) {
	for _, tc := range []struct {
		name, value, wantErr string
	}{
		{"below the minimum", "50ms", "--pool-status-interval must be at least 100ms, got 50ms"},
		{"zero", "0s", "--pool-status-interval must be at least 100ms, got 0s"},
		{"negative", "-2s", "--pool-status-interval must be at least 100ms, got -2s"},
		{"not a duration", "often", `invalid argument "often" for "--pool-status-interval" flag`},
		// Accepted: serving then fails on the next step, the kubeconfig.
		{"the minimum", "100ms", "--kubeconfig /nonexistent"},
		{"minutes", "1m", "--kubeconfig /nonexistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, "--kubeconfig", "/nonexistent", "--leader-elect=false", "--pool-status-interval="+tc.value)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func TestFlagDefaults(t *testing.T) {
	cmd := newCommand()
	for flag, want := range map[string]string{
		"listen":                 ":8443",
		"metrics":                ":8080",
		"metrics-tls-cert-file":  "",
		"metrics-tls-key-file":   "",
		"reservation-ttl":        "1m0s",
		"provision-grace-period": "5m0s",
		"agent-command-timeout":  "2m0s",
		"pool-status-interval":   "1s",
		"leader-elect":           "true",
		"leader-elect-namespace": "dynamic-memory-system",
		"leader-elect-name":      "memservice",
		"kube-api-qps":           "200",
		"kube-api-burst":         "400",
		"kubeconfig":             "",
		"v":                      "0",
	} {
		f := cmd.Flags().Lookup(flag)
		if assert.NotNil(t, f, "--%s", flag) {
			assert.Equal(t, want, f.DefValue, "--%s", flag)
		}
	}
	for flag, want := range map[string]string{
		"signer-name":                 "dynamicmemory.io/memservice",
		"signer-service-accounts":     "[scheduler=dynamic-memory-system/scheduler,agent=dynamic-memory-node/node-agent,draplugin=dynamic-memory-node/dra-plugin]",
		"signer-certificate-lifetime": "6h0m0s",
		"serving-names":               "[memservice,memservice.dynamic-memory-system.svc,localhost,127.0.0.1]",
	} {
		assert.Equal(t, want, cmd.Flags().Lookup(flag).DefValue, "--%s: the manifests rely on it", flag)
	}
	certs, _, err := cmd.Find([]string{"certs"})
	require.NoError(t, err)
	assert.Equal(t, "memservice,memservice.dynamic-memory-system.svc,localhost,127.0.0.1", certs.Flags().Lookup("server-names").DefValue)
}

// TestLeaderIdentityIsUniquePerProcess: two instances on one host (a crashed one and
// the one started after it) must not share a leader identity, or the new one would
// take the Lease at once while a write of the crashed one may still land (the chaos
// suite saw it land after the new one rebuilt from the records).
func TestLeaderIdentityIsUniquePerProcess(t *testing.T) {
	kubeconfig := unreachableKubeconfig(t)
	identity := func() string {
		o := newOptions()
		o.kube.Kubeconfig = kubeconfig
		require.NoError(t, o.complete())
		return o.cfg.LeaderElection.Identity
	}
	host, err := os.Hostname()
	require.NoError(t, err)
	first, second := identity(), identity()
	assert.NotEqual(t, first, second)
	assert.True(t, strings.HasPrefix(first, host+"_"), "%q names the host", first)

	o := newOptions()
	o.kube.Kubeconfig = kubeconfig
	o.cfg.LeaderElection.Identity = "given"
	require.NoError(t, o.complete())
	assert.Equal(t, "given", o.cfg.LeaderElection.Identity, "--leader-elect-identity is kept")
}

func TestSignerFlagsAreValidated(t *testing.T) {
	caDir := t.TempDir()
	_, err := run(t, "certs", "--dir", caDir)
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"a pair without a namespace", []string{"--signer-service-accounts=agent=node-agent"},
			`--signer-service-accounts: "agent=node-agent" is not role=namespace/serviceaccount`},
		{"the admin role", []string{"--signer-service-accounts=admin=ops/kubectl"},
			`ServiceAccount ops/kubectl: role "admin" cannot be given to pods`},
		{"a lifetime the API server refuses", []string{"--signer-certificate-lifetime=10m"},
			"certificate lifetime must be at least 1h0m0s"},
		{"a CA directory and a TLS bundle", []string{"--tls-dir=" + caDir},
			"give either tls (files of a certificate bundle) or signer (a CA the service issues from), not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--kubeconfig", unreachableKubeconfig(t), "--leader-elect=false", "--listen=127.0.0.1:0", "--signer-ca-dir=" + caDir}, tc.args...)
			_, err := run(t, args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

// unreachableKubeconfig is a kubeconfig of an API server nobody serves: enough for
// the flags to be completed.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))
	return kubeconfig
}
