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
