package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

func TestCertsWritesADevBundle(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	require.NoError(t, run([]string{"certs", "--dir", dir, "--server-names", "127.0.0.1,memservice", "--nodes", "node1, node2"}, &out))
	assert.Contains(t, out.String(), "wrote CA")
	b := pki.Bundle{Dir: dir}
	for _, member := range []string{"server", "scheduler", "admin", "agent-node1", "draplugin-node2"} {
		_, err := os.Stat(b.CertFile(member))
		assert.NoError(t, err, member)
	}
	_, err := pki.ServerTLSConfig(b.CertFile("server"), b.KeyFile("server"), b.CAFile())
	assert.NoError(t, err)
}

func TestServeNeedsItsTLSFiles(t *testing.T) {
	err := run([]string{"--kubeconfig", "/nonexistent", "--leader-elect=false"}, &bytes.Buffer{})
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
		{"not a duration", "often", `invalid value "often" for flag -pool-status-interval`},
		// Accepted: serving then fails on the next step, the kubeconfig.
		{"the minimum", "100ms", "--kubeconfig /nonexistent"},
		{"minutes", "1m", "--kubeconfig /nonexistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run([]string{"--kubeconfig", "/nonexistent", "--leader-elect=false", "--pool-status-interval=" + tc.value}, &bytes.Buffer{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}
