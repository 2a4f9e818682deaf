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

package node_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	drametrics "github.com/dynamicmemory/kube-dynamic-memory/draplugin/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
	agentmetrics "github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
)

// TestNodeBinariesAgainstTheLocalCluster runs bin/memservice, bin/node-agent and
// bin/dra-plugin as processes, wired by their flags the way the node DaemonSet wires
// them: the agent connects and shows on the node, the plugin publishes the slice,
// both serve /metrics (HTTPS, to a token allowed to read them) and /healthz, and a
// provisioned claim ends up online and prepared. It needs the binaries (make build).
func TestNodeBinariesAgainstTheLocalCluster(t *testing.T) {
	// The installation's RBAC: its metrics-reader role reads the metrics.
	cl := clustertest.Start(t, cluster.Options{InstallCRDs: true, InstallRBAC: true, Kwok: true, Nodes: 1})
	bins := map[string]string{}
	for _, name := range []string{"memservice", "node-agent", "dra-plugin"} {
		bins[name] = filepath.Join(cl.BinDir(), name)
		if _, err := os.Stat(bins[name]); err != nil {
			t.Skipf("skipped: %s is not built (run make build): %v", bins[name], err)
		}
	}
	node := cluster.NodeName(cluster.DefaultNodePrefix, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kube := cl.Client()
	dm, err := versioned.NewForConfig(cl.RESTConfig())
	require.NoError(t, err)
	createPool(ctx, t, dm, node)

	dir := t.TempDir()
	bundle, err := pki.WriteBundle(filepath.Join(dir, "certs"), []string{"127.0.0.1"}, []string{node})
	require.NoError(t, err)
	grpcAddr, agentMetrics, pluginMetrics := freeAddr(t), freeAddr(t), freeAddr(t)
	start := func(name string, args ...string) {
		t.Helper()
		_, err := cl.StartProcess(ctx, name, bins[name], args...)
		require.NoError(t, err)
	}
	start("memservice", "--kubeconfig="+cl.Kubeconfig(), "--listen="+grpcAddr, "--metrics=", "--tls-dir="+bundle.Dir, "--leader-elect=false")
	memserviceFlags := func(role string) []string {
		member := role + "-" + node
		return []string{"--node-name=" + node, "--kubeconfig=" + cl.Kubeconfig(), "--memservice-address=" + grpcAddr,
			"--memservice-ca=" + bundle.CAFile(), "--memservice-cert=" + bundle.CertFile(member), "--memservice-key=" + bundle.KeyFile(member)}
	}
	start("node-agent", append(memserviceFlags("agent"), "--host-backend=simulated", "--manage-cgroup=false",
		"--checkpoint-file="+filepath.Join(dir, "agent", "node-agent.json"), "--metrics-address="+agentMetrics, "--heartbeat-interval=1s")...)
	pluginDir, regDir, cdiDir := filepath.Join(dir, "plugin"), filepath.Join(dir, "registry"), filepath.Join(dir, "cdi")
	require.NoError(t, os.MkdirAll(pluginDir, 0o755))
	require.NoError(t, os.MkdirAll(regDir, 0o755))
	start("dra-plugin", append(memserviceFlags("draplugin"), "--plugin-data-dir="+pluginDir, "--registrar-dir="+regDir,
		"--cdi-dir="+cdiDir, "--metrics-address="+pluginMetrics)...)

	require.Eventually(t, func() bool {
		n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil && conditionStatus(n, nodestatus.ConditionAgentReady) == corev1.ConditionTrue
	}, 2*time.Minute, 200*time.Millisecond, "the agent shows Ready on its node")
	require.Eventually(t, func() bool {
		list, err := kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 1 && len(list.Items[0].Spec.Devices) == 1
	}, 2*time.Minute, 200*time.Millisecond, "the plugin publishes the node's slice")

	metrics, err := cl.MetricsClient(ctx)
	require.NoError(t, err)
	for addr, names := range map[string][]string{agentMetrics: agentmetrics.Names(), pluginMetrics: drametrics.Names()} {
		assert.Equal(t, "ok\n", get(t, metrics, "https://"+addr+"/healthz"))
		body := get(t, metrics, "https://"+addr+"/metrics")
		for _, name := range names {
			assert.True(t, strings.Contains(body, "# TYPE "+name+" "), "%s does not serve %s", addr, name)
		}
	}
	assert.Equal(t, "ok\n", get(t, metrics, "https://"+agentMetrics+"/readyz"))

	sched, err := client.Dial(ctx, client.Config{Address: grpcAddr, CAFile: bundle.CAFile(), CertFile: bundle.CertFile("scheduler"), KeyFile: bundle.KeyFile("scheduler")})
	require.NoError(t, err)
	defer func() { _ = sched.Close() }()
	rc := createAllocatedClaim(ctx, t, kube, node, "3Gi")
	resp, err := sched.AddMemory(ctx, &memservicev1.AddMemoryRequest{
		Claim: &memservicev1.ClaimRef{Uid: string(rc.UID), Namespace: rc.Namespace, Name: rc.Name}, Node: node, Pool: poolName, Bytes: 3 * gi,
	})
	require.NoError(t, err)
	require.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_ONLINE, resp.GetReservation().GetState(), resp.GetReservation().GetMessage())
	require.Eventually(t, func() bool {
		n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		q := n.Status.Capacity[nodestatus.ResourceName]
		return err == nil && q.Value() == 3*gi
	}, time.Minute, 200*time.Millisecond, "node status shows 3Gi online")
	assert.Contains(t, get(t, metrics, "https://"+agentMetrics+"/metrics"), agentmetrics.OnlineBytesName+" 3.221225472e+09")

	prepared := prepare(ctx, t, pluginDir, rc)
	require.Empty(t, prepared.Claims[string(rc.UID)].Error)
	spec, err := os.ReadFile(filepath.Join(cdiDir, "dcd.dynamicmemory.io_memory-"+string(rc.UID)+".json"))
	require.NoError(t, err)
	assert.Contains(t, string(spec), "DYNAMIC_MEMORY_BYTES=3221225472")
}

// freeAddr is a free 127.0.0.1 port, for a process that listens on it next.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	var body string
	require.Eventually(t, func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		defer func() { _ = resp.Body.Close() }()
		data, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return false
		}
		body = string(data)
		return true
	}, 30*time.Second, 100*time.Millisecond, "GET %s", url)
	return body
}
