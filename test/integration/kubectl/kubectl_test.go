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

// Package kubectl tests the kubectl plugin against a real kube-apiserver: the local
// cluster (make cluster-bins).
package kubectl

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
	"github.com/dynamicmemory/kube-dynamic-memory/cmd/kubectl-dynamic_memory/kubectlplugin"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
)

// syncBuffer is a buffer that a command running in a goroutine writes while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

func countMatches(pattern, s string) int {
	return len(regexp.MustCompile(pattern).FindAllString(s, -1))
}

// plugin runs `kubectl dynamic-memory` against the cluster.
type plugin struct {
	kubeconfig string
}

// start runs the plugin with args until ctx ends; wait returns its error.
func (p plugin) start(ctx context.Context, args ...string) (out, errOut *syncBuffer, wait func() error) {
	out, errOut = &syncBuffer{}, &syncBuffer{}
	cmd := kubectlplugin.NewCommandWithEnvironment(&kubectlplugin.Environment{
		Streams: genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: out, ErrOut: errOut},
		Flags:   genericclioptions.NewConfigFlags(false),
		Clock:   clock.RealClock{},
	})
	cmd.SetArgs(append([]string{"--kubeconfig", p.kubeconfig}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	return out, errOut, func() error { return <-done }
}

// run runs the plugin with args to the end.
func (p plugin) run(ctx context.Context, args ...string) (string, string, error) {
	out, errOut, wait := p.start(ctx, args...)
	err := wait()
	return out.String(), errOut.String(), err
}

// TestAgainstLocalCluster runs the plugin against a real kube-apiserver: first without
// the CRDs, then with them, a pool, a claim it watches change, and the memory
// service's Lease.
func TestAgainstLocalCluster(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "absent"))
	p := plugin{kubeconfig: c.Kubeconfig()}

	t.Run("without the CRDs", func(t *testing.T) {
		for _, args := range [][]string{{"get", "claims", "-A"}, {"get", "pools"}, {"top", "nodes"}, {"describe", "claim", "x"}} {
			_, _, err := p.run(ctx, args...)
			require.Error(t, err, "%v", args)
			assert.Equal(t, "the dynamic memory CRDs are not installed (the API server does not serve dynamicmemory.io/v1alpha1): install them with kubectl apply -k manifests/crds", err.Error())
		}
	})

	root, err := cluster.RepoRoot()
	require.NoError(t, err)
	require.NoError(t, c.Apply(ctx, filepath.Join(root, "manifests", "crds")))
	dm, err := versioned.NewForConfig(c.RESTConfig())
	require.NoError(t, err)

	t.Run("pools", func(t *testing.T) {
		_, errOut, err := p.run(ctx, "get", "pools")
		require.NoError(t, err)
		assert.Equal(t, "No DynamicMemoryPools found.\n", errOut)

		_, err = dm.DynamicMemoryV1alpha1().DynamicMemoryPools().Create(ctx, &v1alpha1.DynamicMemoryPool{
			ObjectMeta: metav1.ObjectMeta{Name: "cxl-a", Labels: map[string]string{"example.com/rack": "r1"}},
			Spec: v1alpha1.DynamicMemoryPoolSpec{
				Backend:    v1alpha1.PoolBackend{Type: v1alpha1.BackendSimulated},
				Capacity:   resource.MustParse("64Gi"),
				BlockSize:  resource.MustParse("1Gi"),
				HostWindow: resource.MustParse("32Gi"),
				Nodes:      []v1alpha1.PoolNode{{Name: "node-1"}, {Name: "node-2", HostID: 1}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		out, _, err := p.run(ctx, "get", "pools")
		require.NoError(t, err)
		assert.Regexp(t, `(?m)^cxl-a\s+Simulated\s+64Gi\s+-\s+-\s+-\s+1Gi\s+32Gi\s+2\s+Unknown\s+\d+s$`, out)
		assert.Regexp(t, `(?m)^cxl-a\s+node-2\s+-\s+-\s+-\s+unknown$`, out)

		out, _, err = p.run(ctx, "get", "pools", "-l", "example.com/rack=r1", "-o", "name")
		require.NoError(t, err)
		assert.Equal(t, "dynamicmemorypool.dynamicmemory.io/cxl-a\n", out)
		out, _, err = p.run(ctx, "get", "pools", "-l", "example.com/rack=r2", "-o", "name")
		require.NoError(t, err)
		assert.Empty(t, out)
	})

	t.Run("get claims -w sees a claim created and provisioned", func(t *testing.T) {
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		out, errOut, wait := p.start(watchCtx, "get", "claims", "-n", "default", "-w")
		require.Eventually(t, func() bool { return errOut.String() != "" }, 30*time.Second, 50*time.Millisecond, "the watch lists first")
		assert.Equal(t, "No DynamicMemoryClaims found in namespace default.\n", errOut.String())

		claims := dm.DynamicMemoryV1alpha1().DynamicMemoryClaims("default")
		claim, err := claims.Create(ctx, &v1alpha1.DynamicMemoryClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "reservation-rc-web", Labels: map[string]string{v1alpha1.LabelPool: "cxl-a"}},
			Spec: v1alpha1.DynamicMemoryClaimSpec{
				ClaimRef:  v1alpha1.ClaimReference{Name: "web-mem", UID: "rc-web"},
				PodRef:    &v1alpha1.PodReference{Name: "web"},
				Node:      "node-1",
				Pool:      "cxl-a",
				Requested: resource.MustParse("4Gi"),
				Size:      resource.MustParse("4Gi"),
				// As the memory service records a claim before adding its extents.
				Extents: []v1alpha1.Extent{{Offset: 0, Length: 4 << 30}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			return regexpMatch(`(?m)^reservation-rc-web\s+Provisioning\s+node-1\s+cxl-a\s+4Gi\s+web\s+-\s+\d+s$`, out.String())
		}, 30*time.Second, 50*time.Millisecond, "the watch prints the new claim; output so far:\n%s", out)

		claim.Status = v1alpha1.DynamicMemoryClaimStatus{
			Phase:                v1alpha1.PhaseOnline,
			ProvisioningDuration: &metav1.Duration{Duration: 1500 * time.Millisecond},
		}
		_, err = claims.UpdateStatus(ctx, claim, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			return regexpMatch(`(?m)^reservation-rc-web\s+Online\s+node-1\s+cxl-a\s+4Gi\s+web\s+1.5s\s+\d+s$`, out.String())
		}, 30*time.Second, 50*time.Millisecond, "the watch prints the claim online; output so far:\n%s", out)

		stopWatch()
		require.NoError(t, wait(), "the watch ends without error when interrupted")
		assert.Regexp(t, `^NAME\s+PHASE`, out.String(), "one header, before the first row")
		assert.Equal(t, 1, countMatches(`(?m)^NAME\s`, out.String()))
	})

	t.Run("version", func(t *testing.T) {
		out, _, err := p.run(ctx, "version")
		require.Error(t, err)
		assert.Equal(t, "Client Version: "+version.Version+"\n", out)
		assert.Contains(t, err.Error(), "the memory service is unreachable: its Lease dynamic-memory-system/memservice does not exist")

		// The Lease as the memory service's leader election writes it.
		_, err = c.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: deploy.Namespace}}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = c.Client().CoordinationV1().Leases(deploy.Namespace).Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: deploy.MemoryServiceName, Labels: map[string]string{deploy.VersionLabel: "v0.3.0"}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To("memservice-7d9f-x2k9p"),
				LeaseDurationSeconds: ptr.To[int32](15),
				RenewTime:            &metav1.MicroTime{Time: time.Now()},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		out, _, err = p.run(ctx, "version")
		require.NoError(t, err)
		assert.Equal(t, "Client Version: "+version.Version+"\nServer Version: v0.3.0 (memory service instance memservice-7d9f-x2k9p)\n", out)
	})
}
