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

package cluster_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestStartMissingBinaryNamesTheMakeTarget(t *testing.T) {
	_, err := cluster.Start(testContext(t), cluster.Options{Dir: t.TempDir(), BinDir: t.TempDir(), ManifestsDir: t.TempDir()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "etcd is missing")
	assert.Contains(t, err.Error(), "make cluster-bins")
}

func TestStartInvalidOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    cluster.Options
		wantErr string
	}{
		{name: "no run directory", opts: cluster.Options{}, wantErr: "Dir is required"},
		{name: "nodes without kwok", opts: cluster.Options{Dir: t.TempDir(), Nodes: 2}, wantErr: "Nodes needs Kwok"},
		{name: "port out of range", opts: cluster.Options{Dir: t.TempDir(), APIServerPort: 70000}, wantErr: "APIServerPort must be 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cluster.Start(testContext(t), tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func TestStartTakenPortIsAClearError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	// Stand-ins for the binaries: the port is checked before anything runs.
	binDir := t.TempDir()
	for _, name := range []string{cluster.Etcd, cluster.KubeAPIServer} {
		require.NoError(t, os.WriteFile(filepath.Join(binDir, name), []byte("#!/bin/false\n"), 0o755))
	}
	_, err = cluster.Start(testContext(t), cluster.Options{Dir: t.TempDir(), BinDir: binDir, ManifestsDir: t.TempDir(), APIServerPort: port})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "apiserver port "+strconv.Itoa(port)+" on 127.0.0.1 is taken")
}

// TestClusterLifecycleWithRealBinaries starts etcd, kube-apiserver,
// kube-controller-manager and kwok from bin/ and checks what the other packages rely
// on: Ready nodes with the requested memory, extra processes, Attach from the run
// directory, "already running", and that Stop leaves no process behind.
func TestClusterLifecycleWithRealBinaries(t *testing.T) {
	ctx := testContext(t)
	c := clustertest.Start(t, cluster.Options{
		Nodes:             2,
		NodeMemory:        "32Gi",
		ControllerManager: true,
		Kwok:              true,
		InstallCRDs:       true,
	})

	nodes, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, nodes.Items, 2)
	for i, node := range nodes.Items {
		assert.Equal(t, c.NodeName(i), node.Name)
		assert.True(t, cluster.NodeReady(&node), "node %s Ready", node.Name)
		assert.Equal(t, "32Gi", node.Status.Allocatable.Memory().String(), "node %s allocatable memory", node.Name)
	}

	t.Run("more nodes", func(t *testing.T) {
		require.NoError(t, c.CreateNodes(ctx, []string{"extra-node"}, "4Gi"))
		node, err := c.Client().CoreV1().Nodes().Get(ctx, "extra-node", metav1.GetOptions{})
		require.NoError(t, err)
		assert.True(t, cluster.NodeReady(node))
		assert.Equal(t, "4Gi", node.Status.Capacity.Memory().String())
		assert.Contains(t, c.Nodes(), "extra-node")
	})

	t.Run("extra process logs to the run directory and stops", func(t *testing.T) {
		p, err := c.StartProcess(ctx, "sleeper", "/bin/sh", "-c", "echo hello from sleeper; exec sleep 600")
		require.NoError(t, err)
		_, err = c.StartProcess(ctx, "sleeper", "/bin/sleep", "600")
		require.ErrorContains(t, err, "already running")
		require.Eventually(t, func() bool { return strings.Contains(p.LogTail(5), "hello from sleeper") }, 10*time.Second, 50*time.Millisecond)
		require.NoError(t, p.Kill())
		assert.False(t, p.Running())
		assert.NoFileExists(t, filepath.Join(c.Dir(), "pids", "sleeper.pid"))
		// The name can be used again once the process has exited.
		p2, err := c.StartProcess(ctx, "sleeper", "/bin/sleep", "600")
		require.NoError(t, err)
		assert.True(t, p2.Running())
	})

	t.Run("attach finds the running cluster", func(t *testing.T) {
		attached, err := cluster.Attach(c.Dir())
		require.NoError(t, err)
		assert.Equal(t, c.Server(), attached.Server())
		names := map[string]bool{}
		for _, p := range attached.Processes() {
			names[p.Name] = true
		}
		for _, want := range []string{cluster.Etcd, cluster.KubeAPIServer, cluster.KubeControllerManager, cluster.Kwok, "sleeper"} {
			assert.True(t, names[want], "attached process %s", want)
		}
		_, err = attached.Client().CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
		assert.NoError(t, err)
	})

	t.Run("a second start in the same directory says it is running", func(t *testing.T) {
		_, err := cluster.Start(ctx, cluster.Options{Dir: c.Dir()})
		require.Error(t, err)
		assert.True(t, errors.Is(err, cluster.ErrAlreadyRunning), "got %v", err)
	})

	t.Run("a bound pod runs and a deleted pod goes away", func(t *testing.T) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "runs", Namespace: metav1.NamespaceDefault},
			Spec: corev1.PodSpec{
				NodeName:   c.NodeName(0),
				Containers: []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
		pods := c.Client().CoreV1().Pods(metav1.NamespaceDefault)
		_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		require.NoError(t, err)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			got, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
			require.NoError(ct, err)
			assert.Equal(ct, corev1.PodRunning, got.Status.Phase)
			assert.NotEmpty(ct, got.Status.PodIP)
		}, time.Minute, 100*time.Millisecond)
		require.NoError(t, pods.Delete(ctx, pod.Name, metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			_, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
			return err != nil
		}, time.Minute, 100*time.Millisecond)
	})

	procs := c.Processes()
	require.NoError(t, c.Stop())
	for _, p := range procs {
		assert.False(t, p.Running(), "%s still running after Stop", p.Name)
		_, err := os.Stat("/proc/" + strconv.Itoa(p.Pid))
		assert.True(t, os.IsNotExist(err), "%s (pid %d) still exists after Stop", p.Name, p.Pid)
	}
	_, err = cluster.Attach(c.Dir())
	assert.True(t, errors.Is(err, cluster.ErrNotRunning), "attach after stop: %v", err)
}
