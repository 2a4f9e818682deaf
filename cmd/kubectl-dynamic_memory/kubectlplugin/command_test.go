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
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	fakediscovery "k8s.io/client-go/discovery/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	dmfake "github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/fake"
	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the current output")

// fakeCluster holds the fake clients of one test.
type fakeCluster struct {
	kube *kubefake.Clientset
	dm   *dmfake.Clientset
}

// newFakeCluster serves the fixtures; withCRDs controls whether discovery lists the
// project's API group.
func newFakeCluster(t *testing.T, withCRDs bool) *fakeCluster {
	t.Helper()
	var kubeObjects []runtime.Object
	for _, n := range fixtureNodes() {
		kubeObjects = append(kubeObjects, n)
	}
	for _, p := range fixturePods() {
		kubeObjects = append(kubeObjects, p)
	}
	for _, c := range fixtureResourceClaims() {
		kubeObjects = append(kubeObjects, c)
	}
	for _, e := range fixtureEvents() {
		kubeObjects = append(kubeObjects, e)
	}
	kube := kubefake.NewClientset(kubeObjects...)
	if withCRDs {
		kube.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
			GroupVersion: v1alpha1.SchemeGroupVersion.String(),
			APIResources: []metav1.APIResource{
				{Name: ClaimsResource.Resource, Namespaced: true, Kind: "DynamicMemoryClaim"},
				{Name: PoolsResource.Resource, Namespaced: false, Kind: "DynamicMemoryPool"},
			},
		}}
	}

	var dmObjects []runtime.Object
	for _, p := range fixturePools() {
		dmObjects = append(dmObjects, serialized(t, p))
	}
	for _, c := range fixtureClaims() {
		dmObjects = append(dmObjects, serialized(t, c))
	}
	return &fakeCluster{kube: kube, dm: dmfake.NewSimpleClientset(dmObjects...)}
}

// serialized is obj as an API server returns it: through JSON, so that its times
// have whole seconds.
func serialized[T any](t *testing.T, obj *T) *T {
	t.Helper()
	data, err := json.Marshal(obj)
	require.NoError(t, err)
	out := new(T)
	require.NoError(t, json.Unmarshal(data, out))
	return out
}

// run executes the plugin with args against the fake cluster and returns stdout and
// stderr and the error.
func (c *fakeCluster) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "absent"))
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	env := &Environment{
		Streams: streams,
		Flags:   genericclioptions.NewConfigFlags(false),
		Clock:   clocktesting.NewFakePassiveClock(now),
		NewClients: func(*genericclioptions.ConfigFlags) (*Clients, error) {
			return &Clients{Kube: c.kube, DynamicMemory: c.dm}, nil
		},
	}
	cmd := NewCommandWithEnvironment(env)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// assertGolden compares got with testdata/name.golden, or rewrites it with -update.
func assertGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "golden file missing: run go test ./cmd/kubectl-dynamic_memory/kubectlplugin -update")
	assert.Equal(t, string(want), got, "output differs from %s (run with -update to accept)", path)
}

func TestCommandOutput(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"get-claims", []string{"get", "claims", "-n", "shop"}},
		{"get-claims-all-namespaces", []string{"get", "claims", "-A"}},
		{"get-claims-wide", []string{"get", "claims", "-A", "-o", "wide"}},
		{"get-claims-named-yaml", []string{"get", "claims", "-n", "shop", "web-1-mem-q9d4s", "-o", "yaml"}},
		{"get-claims-json", []string{"get", "claim", "-n", "default", "-o", "json"}},
		{"get-pools", []string{"get", "pools"}},
		{"get-pools-yaml", []string{"get", "pools", "-o", "yaml"}},
		{"describe-claim", []string{"describe", "claim", "web-0-mem-k7x2p", "-n", "shop"}},
		{"describe-claim-failed", []string{"describe", "claim", "reservation-rc-batch"}},
		{"describe-claim-provisioning", []string{"describe", "claim", "web-1-mem-q9d4s", "--namespace=shop"}},
		{"top-nodes", []string{"top", "nodes"}},
		{"why-pending", []string{"why", "big", "-n", "shop"}},
		{"why-running", []string{"why", "web-0", "-n", "shop"}},
		{"why-no-dynamic-memory", []string{"why", "plain"}},
		{"why-provisioning", []string{"why", "web-1", "-n", "shop"}},
		{"why-other-scheduler", []string{"why", "stray"}},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			out, errOut, err := newFakeCluster(t, true).run(t, tc.args...)
			require.NoError(t, err)
			assert.Empty(t, errOut)
			assertGolden(t, tc.golden, out)
		})
	}
}

// TestOutputFormats prints each get and top command in each output format that
// kubectl get has, with its selection flags.
func TestOutputFormats(t *testing.T) {
	commands := []struct {
		name string
		args []string
	}{
		{"get-claims", []string{"get", "claims", "-A"}},
		{"get-pools", []string{"get", "pools"}},
		{"top-nodes", []string{"top", "nodes"}},
	}
	formats := []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"wide", []string{"-o", "wide"}},
		{"no-headers", []string{"--no-headers"}},
		{"show-labels", []string{"--show-labels"}},
		{"name", []string{"-o", "name"}},
		{"json", []string{"-o", "json"}},
		{"yaml", []string{"-o", "yaml"}},
		{"jsonpath", []string{"-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}"}},
		{"custom-columns", []string{"-o", "custom-columns=NAME:.metadata.name,KIND:.kind"}},
	}
	for _, c := range commands {
		for _, f := range formats {
			name := c.name + "-" + f.name
			t.Run(name, func(t *testing.T) {
				out, errOut, err := newFakeCluster(t, true).run(t, append(slices.Clone(c.args), f.args...)...)
				require.NoError(t, err)
				assert.Empty(t, errOut)
				assertGolden(t, filepath.Join("formats", name), out)
			})
		}
	}
}

// TestSelectors checks that -l selects claims, pools and nodes by label.
func TestSelectors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"get", "claims", "-A", "-l", v1alpha1.LabelPool + "=cxl-a", "-o", "name"},
			"dynamicmemoryclaim.dynamicmemory.io/web-0-mem-k7x2p\ndynamicmemoryclaim.dynamicmemory.io/web-1-mem-q9d4s\n"},
		{[]string{"get", "claims", "-n", "shop", "-l", v1alpha1.LabelNode + "=node-2", "-o", "name"},
			"dynamicmemoryclaim.dynamicmemory.io/web-1-mem-q9d4s\n"},
		{[]string{"get", "pools", "-l", "example.com/rack", "-o", "name"},
			"dynamicmemorypool.dynamicmemory.io/cxl-a\n"},
		{[]string{"top", "nodes", "-l", "!" + deploy.NodeLabel, "-o", "jsonpath={.items[*].metadata.name}"},
			"node-5"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, _, err := newFakeCluster(t, true).run(t, tc.args...)
			require.NoError(t, err)
			assert.Equal(t, tc.want, out)
		})
	}
}

func TestDescribeFindsClaimByResourceClaimName(t *testing.T) {
	c := newFakeCluster(t, true)
	// The DynamicMemoryClaim of default/batch-mem is named after its UID; the user
	// knows the ResourceClaim's name.
	rc := memoryClaim("batch-mem", "default", "rc-batch", "4Gi")
	_, err := c.kube.ResourceV1().ResourceClaims("default").Create(context.Background(), rc, metav1.CreateOptions{})
	require.NoError(t, err)
	out, _, err := c.run(t, "describe", "claim", "batch-mem")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^Name:\s+reservation-rc-batch$`, out)
	assert.Regexp(t, `(?m)^Phase:\s+Failed$`, out)
}

func TestEmptyListsSayWhereTheyLooked(t *testing.T) {
	out, errOut, err := newFakeCluster(t, true).run(t, "get", "claims", "-n", "empty")
	require.NoError(t, err)
	assert.Empty(t, out)
	assert.Equal(t, "No DynamicMemoryClaims found in namespace empty.\n", errOut)
}

// closedAddress returns an address nothing listens on.
func closedAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestErrorsAreOneClearLine(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		crds    bool
		prepare func(*fakeCluster)
		want    string
	}{
		{
			name: "CRDs not installed",
			args: []string{"get", "claims", "-A"},
			want: "the dynamic memory CRDs are not installed (the API server does not serve dynamicmemory.io/v1alpha1): install them with kubectl apply -k manifests/crds",
		},
		{
			name: "CRDs not installed, describe",
			args: []string{"describe", "claim", "web-0-mem-k7x2p", "-n", "shop"},
			want: "the dynamic memory CRDs are not installed (the API server does not serve dynamicmemory.io/v1alpha1): install them with kubectl apply -k manifests/crds",
		},
		{
			name: "unknown claim",
			args: []string{"describe", "claim", "nope", "-n", "shop"},
			crds: true,
			want: `DynamicMemoryClaim "nope" not found in namespace "shop" (list them with: kubectl dynamic-memory get claims -n shop)`,
		},
		{
			name: "unknown claim in get",
			args: []string{"get", "claims", "nope", "-n", "shop"},
			crds: true,
			want: `DynamicMemoryClaim "nope" not found in namespace "shop" (list them with: kubectl dynamic-memory get claims -n shop)`,
		},
		{
			name: "unknown pod",
			args: []string{"why", "ghost", "-n", "shop"},
			crds: true,
			want: `pod "ghost" not found in namespace "shop"`,
		},
		{
			name: "unsupported output",
			args: []string{"top", "nodes", "-o", "table"},
			crds: true,
			want: `unsupported output format "table" for -o: use one of json, yaml, kyaml, name, go-template, go-template-file, template, templatefile, jsonpath, jsonpath-as-json, jsonpath-file, custom-columns, custom-columns-file, wide`,
		},
		{
			name: "bad jsonpath",
			args: []string{"get", "claims", "-o", "jsonpath={.items[*"},
			crds: true,
			want: `-o jsonpath={.items[*: error parsing jsonpath {.items[*, unterminated array`,
		},
		{
			name: "bad custom columns",
			args: []string{"get", "pools", "-o", "custom-columns=NAME"},
			crds: true,
			want: `-o custom-columns=NAME: unexpected custom-columns spec: NAME, expected <header>:<json-path-expr>`,
		},
		{
			name: "bad selector",
			args: []string{"get", "claims", "-l", "a=b=c"},
			crds: true,
			want: `-l "a=b=c" is not a label selector (e.g. -l dynamicmemory.io/pool=cxl-a): found '=', expected: ',' or 'end of string'`,
		},
		{
			name: "name with all namespaces",
			args: []string{"get", "claims", "-A", "x"},
			crds: true,
			want: "a claim name cannot be combined with --all-namespaces: use -n NAMESPACE",
		},
		{
			name: "unauthorized",
			args: []string{"get", "pools", "--server", "https://api.example.test:6443"},
			crds: true,
			prepare: func(c *fakeCluster) {
				c.dm.PrependReactor("list", "dynamicmemorypools", func(clienttesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewUnauthorized("token expired")
				})
			},
			want: "the API server at https://api.example.test:6443 rejected the credentials: list DynamicMemoryPools: token expired",
		},
		{
			name: "unknown resource",
			args: []string{"get", "nodes"},
			crds: true,
			want: `unknown resource "nodes" for "kubectl dynamic-memory get": use claims or pools`,
		},
		{
			name: "forbidden",
			args: []string{"top", "nodes"},
			crds: true,
			prepare: func(c *fakeCluster) {
				c.kube.PrependReactor("list", "nodes", func(clienttesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "",
						errors.New(`User "alice" cannot list resource "nodes" in API group "" at the cluster scope`))
				})
			},
			want: `not allowed: list nodes: nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeCluster(t, tc.crds)
			if tc.prepare != nil {
				tc.prepare(c)
			}
			out, _, err := c.run(t, tc.args...)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
			assert.NotContains(t, err.Error(), "\n")
			assert.Empty(t, out)
		})
	}
}

func TestNoClusterReachable(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "absent"))
	addr := closedAddress(t)
	for _, args := range [][]string{{"get", "claims"}, {"get", "pools"}, {"top", "nodes"}, {"why", "web-0"}, {"describe", "claim", "x"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			streams, out, _, _ := genericiooptions.NewTestIOStreams()
			cmd := NewCommandWithEnvironment(&Environment{
				Streams: streams,
				Flags:   genericclioptions.NewConfigFlags(false),
				Clock:   clocktesting.NewFakePassiveClock(now),
			})
			cmd.SetArgs(append([]string{"--server", "https://" + addr}, args...))
			err := cmd.ExecuteContext(context.Background())
			require.Error(t, err)
			assert.Regexp(t, `^cannot reach the Kubernetes API server at https://`+addr+`: dial tcp `+addr+`: connect: connection refused \(is the cluster running\? check --kubeconfig and --context\)$`, err.Error())
			assert.Empty(t, out.String())
		})
	}
}
