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

package kubectlplugin

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/clustertest"
)

// TestAgainstLocalCluster runs the plugin against a real kube-apiserver (the local
// cluster: make cluster-bins): first without the CRDs, then with them and a pool.
func TestAgainstLocalCluster(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "absent"))
	run := func(args ...string) (string, string, error) {
		streams, _, out, errOut := genericiooptions.NewTestIOStreams()
		cmd := NewCommandWithEnvironment(&Environment{
			Streams: streams,
			Flags:   genericclioptions.NewConfigFlags(false),
			Clock:   clock.RealClock{},
		})
		cmd.SetArgs(append([]string{"--kubeconfig", c.Kubeconfig()}, args...))
		err := cmd.ExecuteContext(ctx)
		return out.String(), errOut.String(), err
	}

	t.Run("without the CRDs", func(t *testing.T) {
		for _, args := range [][]string{{"get", "claims", "-A"}, {"get", "pools"}, {"top", "nodes"}, {"describe", "claim", "x"}} {
			_, _, err := run(args...)
			require.Error(t, err, "%v", args)
			assert.Equal(t, "the dynamic memory CRDs are not installed (the API server does not serve dynamicmemory.io/v1alpha1): install them with kubectl apply -k manifests/crds", err.Error())
		}
	})

	root, err := cluster.RepoRoot()
	require.NoError(t, err)
	require.NoError(t, c.Apply(ctx, filepath.Join(root, "manifests", "crds")))

	t.Run("with the CRDs", func(t *testing.T) {
		_, errOut, err := run("get", "pools")
		require.NoError(t, err)
		assert.Equal(t, "No DynamicMemoryPools found.\n", errOut)

		_, _, err = run("describe", "claim", "nope", "-n", "default")
		require.Error(t, err)
		assert.Equal(t, `DynamicMemoryClaim "nope" not found in namespace "default" (list them with: kubectl dynamic-memory get claims -n default)`, err.Error())

		dm, err := versioned.NewForConfig(c.RESTConfig())
		require.NoError(t, err)
		pool := fixturePools()[0]
		_, err = dm.DynamicMemoryV1alpha1().DynamicMemoryPools().Create(ctx, &v1alpha1.DynamicMemoryPool{
			ObjectMeta: metav1.ObjectMeta{Name: pool.Name},
			Spec:       pool.Spec,
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		out, _, err := run("get", "pools")
		require.NoError(t, err)
		assert.Regexp(t, `(?m)^cxl-a\s+Simulated\s+64Gi\s+-\s+-\s+-\s+1Gi\s+32Gi\s+4\s+Unknown\s+\d+s$`, out)
		assert.Regexp(t, `(?m)^cxl-a\s+node-4\s+-\s+-\s+-\s+unknown$`, out)
	})
}
