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

package manifests

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	shipped "github.com/dynamicmemory/kube-dynamic-memory/manifests"
)

var update = flag.Bool("update", false, "rewrite the chart's golden renders in testdata/chart")

const (
	chartDir    = "charts/kube-dynamic-memory"
	releaseName = "kube-dynamic-memory"
	// poolAPI is the kind the chart renders pools as, which it asks the API server
	// for (helm template --api-versions gives it without a cluster).
	poolAPI = "dynamicmemory.io/v1alpha1/DynamicMemoryPool"
)

// valueSets are the golden renders: testdata/chart/<name>.yaml holds the values (kind:
// kind/values.yaml), <name>.golden.yaml what the chart renders from them but the CRDs.
// The default values' render is manifests/ itself (make generate, checked by make
// verify and TestManifestsAreTheChartsRender).
var valueSets = []string{"second-scheduler", "certificates", "compatibility", "pools-monitoring", "kind"}

func valuesFile(t testing.TB, set string) string {
	if set == "kind" {
		return filepath.Join(repoRoot(t), "kind", "values.yaml")
	}
	return filepath.Join(repoRoot(t), "test", "manifests", "testdata", "chart", set+".yaml")
}

// helm runs bin/helm (make helm) in the repository root and returns its stdout; a
// failure returns stderr in the error.
func helm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(repoRoot(t), "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		require.FailNow(t, "helm is not built", "%s: run 'make helm' (make test builds it)", bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = repoRoot(t)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &helmError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

type helmError struct {
	args   []string
	err    error
	stderr string
}

func (e *helmError) Error() string {
	return "helm " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + e.stderr
}

// render runs helm template on the chart with extra arguments (-f, --set).
func render(t testing.TB, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helm(t, append([]string{"template", releaseName, chartDir, "--api-versions", poolAPI}, args...)...)
	require.NoError(t, err)
	return decodeAll(t, []byte(out))
}

func TestChartLints(t *testing.T) {
	_, err := helm(t, "lint", "--strict", chartDir)
	require.NoError(t, err)
	for _, set := range valueSets {
		// helm lint has no --api-versions: the pools need their CRD served
		// (TestChartRejectsBadValues), the render checks them (TestChartGoldenRenders).
		_, err := helm(t, "lint", "--strict", chartDir, "-f", valuesFile(t, set), "--set-json", "pools=[]")
		assert.NoError(t, err, "values %s", set)
	}
}

// TestChartGoldenRenders compares each value set's render with its golden file
// (go test ./test/manifests -run TestChartGoldenRenders -update rewrites them).
func TestChartGoldenRenders(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set, func(t *testing.T) {
			out, err := helm(t, "template", releaseName, chartDir, "--api-versions", poolAPI, "-f", valuesFile(t, set))
			require.NoError(t, err)
			out = withoutCRDs(out)
			golden := filepath.Join(repoRoot(t), "test", "manifests", "testdata", "chart", set+".golden.yaml")
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(out), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "golden render missing: go test ./test/manifests -run TestChartGoldenRenders -update")
			assert.Equal(t, string(want), out, "render of %s differs from %s: if the change is intended, rerun with -update", set, golden)
		})
	}
}

// withoutCRDs drops the CustomResourceDefinitions from a render: they are controller-gen's
// output, the same in every value set (TestManifestsAreTheChartsRender and make verify
// check them).
func withoutCRDs(render string) string {
	docs := strings.Split(render, "\n---\n")
	kept := docs[:0]
	for _, d := range docs {
		if !strings.Contains(d, "\nkind: CustomResourceDefinition\n") {
			kept = append(kept, d)
		}
	}
	return strings.Join(kept, "\n---\n")
}

// TestManifestsAreTheChartsRender checks that manifests/ is the chart rendered with its
// default values (and monitoring), as make generate writes it: kustomize users and the
// chart's users get the same objects.
func TestManifestsAreTheChartsRender(t *testing.T) {
	key := func(o *unstructured.Unstructured) string {
		return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
	}
	fromChart := map[string]*unstructured.Unstructured{}
	for _, o := range render(t, "--set", "monitoring.enabled=true") {
		fromChart[key(o)] = o
	}
	var fromManifests []string
	for _, dir := range []string{"manifests", "manifests/monitoring"} {
		for _, o := range build(t, dir) {
			fromManifests = append(fromManifests, key(o))
			if want, ok := fromChart[key(o)]; assert.True(t, ok, "%s of %s is not in the chart's render", key(o), dir) {
				assert.Equal(t, want.Object, o.Object, "%s: manifests/ is stale: run make generate", key(o))
			}
		}
	}
	for k := range fromChart {
		assert.Contains(t, fromManifests, k, "the chart's %s is missing from manifests/ (a kustomization.yaml does not list it)", k)
	}
}

func TestChartImagesDefaultToAppVersion(t *testing.T) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	data, err := os.ReadFile(filepath.Join(repoRoot(t), chartDir, "Chart.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(data, &chart))
	require.NotEmpty(t, chart.AppVersion)

	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"default: the chart's appVersion": {want: ":" + chart.AppVersion},
		"image.tag and repository":        {args: []string{"--set", "image.tag=v9.9.9", "--set", "image.repository=registry.example/dm"}, want: ":v9.9.9"},
	} {
		t.Run(name, func(t *testing.T) {
			images := 0
			for _, o := range render(t, c.args...) {
				if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
					continue
				}
				for _, ctr := range podSpec(t, o).Containers {
					images++
					assert.True(t, strings.HasSuffix(ctr.Image, c.want), "%s %s runs %s, want tag %s", o.GetKind(), o.GetName(), ctr.Image, c.want)
					if len(c.args) > 0 {
						assert.True(t, strings.HasPrefix(ctr.Image, "registry.example/dm/"), ctr.Image)
					}
				}
			}
			assert.Equal(t, 4, images, "memservice, scheduler, node agent and DRA plugin")
		})
	}
}

// TestChartRejectsBadValues checks that values.schema.json (and the templates' own
// checks) refuse values that cannot work, naming the value.
func TestChartRejectsBadValues(t *testing.T) {
	for name, c := range map[string]struct {
		args []string
		want []string
	}{
		"an image tag of latest, which nothing publishes": {
			args: []string{"--set", "image.tag=latest"}, want: []string{"image.tag"},
		},
		"an unknown identity mode": {
			args: []string{"--set", "identity.mode=spiffe"}, want: []string{"identity.mode", "podCertificate", "certificates"},
		},
		"an unknown scheduler mode": {
			args: []string{"--set", "scheduler.mode=replace"}, want: []string{"scheduler.mode", "cluster", "second", "none"},
		},
		"a misspelt value": {
			args: []string{"--set", "memservice.replica=3"}, want: []string{"memservice", "replica"},
		},
		"a CA certificate without its key": {
			args: []string{"--set", "identity.podCertificate.caCert=PEM"}, want: []string{"caKey"},
		},
		"certificates without the nodes to issue them for": {
			args: []string{"--set", "identity.mode=certificates"}, want: []string{"/identity/certificates/nodes", "minItems"},
		},
		"a region that is not a CXL region or DAX device": {
			args: []string{"--set", "nodeAgent.regions.cxl-pool-a=/dev/mem"}, want: []string{"nodeAgent.regions.cxl-pool-a"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := helm(t, append([]string{"template", releaseName, chartDir}, c.args...)...)
			require.Error(t, err)
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
	t.Run("pools before the API server serves their CRD", func(t *testing.T) {
		_, err := helm(t, "template", releaseName, chartDir, "-f", valuesFile(t, "pools-monitoring"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "pools: the API server does not serve dynamicmemory.io/v1alpha1 DynamicMemoryPool yet")
		assert.Contains(t, err.Error(), "then add the pools with helm upgrade")
	})
}

// schedulerConfigOf returns the KubeSchedulerConfiguration a render gives the scheduler.
func schedulerConfigOf(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	data, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap", "dynamic-memory-scheduler-config").Object, "data", "scheduler-config.yaml")
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(data), &cfg))
	return cfg
}

func profileNames(cfg map[string]any) []string {
	var names []string
	for _, p := range cfg["profiles"].([]any) {
		names = append(names, p.(map[string]any)["schedulerName"].(string))
	}
	return names
}

func args(t *testing.T, objs []*unstructured.Unstructured, kind, name string) []string {
	t.Helper()
	return podSpec(t, find(t, objs, kind, name)).Containers[0].Args
}

// TestChartSchedulerModes checks what each scheduler.mode installs: the cluster's
// scheduler (both profiles, the stock Lease), a second scheduler (its own profile and
// Lease, DRA plugins with binding conditions for the stock scheduler), or none.
func TestChartSchedulerModes(t *testing.T) {
	t.Run("cluster", func(t *testing.T) {
		objs := render(t)
		cfg := schedulerConfigOf(t, objs)
		assert.ElementsMatch(t, []string{"default-scheduler", "dynamic-memory-scheduler"}, profileNames(cfg))
		assert.Nil(t, cfg["leaderElection"], "the stock Lease kube-system/kube-scheduler")
		assert.Contains(t, args(t, objs, "DaemonSet", "dra-plugin"), "--binding-conditions=false")
		assert.Equal(t, string(shipped.SchedulerConfig), func() string {
			data, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap", "dynamic-memory-scheduler-config").Object, "data", "scheduler-config.yaml")
			return data
		}(), "the Go code embeds the default render")
	})
	t.Run("second", func(t *testing.T) {
		objs := render(t, "--set", "scheduler.mode=second")
		cfg := schedulerConfigOf(t, objs)
		assert.Equal(t, []string{"dynamic-memory-scheduler"}, profileNames(cfg))
		assert.Equal(t, map[string]any{"leaderElect": true, "resourceNamespace": deploy.Namespace, "resourceName": "dynamic-memory-scheduler"}, cfg["leaderElection"])
		role := find(t, objs, "Role", "dynamic-memory:scheduler:leader-election")
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		assert.Equal(t, []any{"dynamic-memory-scheduler"}, rules[1].(map[string]any)["resourceNames"], "the scheduler may hold its own Lease")
		assert.Contains(t, args(t, objs, "DaemonSet", "dra-plugin"), "--binding-conditions=true")
	})
	t.Run("none", func(t *testing.T) {
		objs := render(t, "--set", "scheduler.mode=none")
		for _, o := range objs {
			assert.NotContains(t, o.GetName(), "scheduler", "%s %s installed without a scheduler", o.GetKind(), o.GetName())
		}
		assert.Contains(t, args(t, objs, "DaemonSet", "dra-plugin"), "--binding-conditions=true")
	})
}

// TestChartCertificatesMode checks the identities of identity.mode certificates: no
// podCertificate volume anywhere, the memory service serves with Secret memservice-tls,
// and each listed node has its own node agent and DRA plugin mounting only its Secrets.
func TestChartCertificatesMode(t *testing.T) {
	objs := render(t, "-f", valuesFile(t, "certificates"))
	memservice := podSpec(t, find(t, objs, "Deployment", "memservice"))
	assert.Contains(t, memservice.Containers[0].Args, "--tls-cert=/etc/dynamic-memory/tls/tls.crt")
	assert.NotContains(t, memservice.Containers[0].Args, "--signer-ca-dir=/etc/dynamic-memory/ca")
	assert.Equal(t, "memservice-tls", memservice.Volumes[0].Secret.SecretName)
	assert.Equal(t, "scheduler-tls", podSpec(t, find(t, objs, "Deployment", "dynamic-memory-scheduler")).Volumes[1].Secret.SecretName)

	var daemonSets []string
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		daemonSets = append(daemonSets, o.GetName())
		var ds appsv1.DaemonSet
		require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ds))
		node := ds.Spec.Template.Spec.NodeSelector["kubernetes.io/hostname"]
		require.NotEmpty(t, node, "%s runs on one node", ds.Name)
		assert.Equal(t, "true", ds.Spec.Template.Spec.NodeSelector[deploy.NodeLabel], "%s keeps the attached-node selector", ds.Name)
		component := strings.TrimSuffix(ds.Name, "-"+node)
		assert.Equal(t, component+"-"+node, ds.Spec.Template.Spec.Volumes[len(ds.Spec.Template.Spec.Volumes)-1].Secret.SecretName, "%s mounts its node's Secret only", ds.Name)
	}
	assert.ElementsMatch(t, []string{"node-agent-worker-1", "dra-plugin-worker-1", "node-agent-worker-2", "dra-plugin-worker-2"}, daemonSets)
	for _, o := range objs {
		if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
			for _, v := range podSpec(t, o).Volumes {
				assert.Nil(t, v.Projected, "%s %s: no podCertificate volume in certificates mode", o.GetKind(), o.GetName())
			}
		}
	}
}

// TestChartDisruptionBudgets checks the PodDisruptionBudgets: a drain evicts one
// scheduler at a time and never the memory service's leader (the only ready replica),
// while a standby may always go.
func TestChartDisruptionBudgets(t *testing.T) {
	objs := render(t)
	sched := find(t, objs, "PodDisruptionBudget", "dynamic-memory-scheduler")
	v, _, _ := unstructured.NestedFieldNoCopy(sched.Object, "spec", "maxUnavailable")
	assert.EqualValues(t, 1, v)
	mem := find(t, objs, "PodDisruptionBudget", "memservice")
	v, _, _ = unstructured.NestedFieldNoCopy(mem.Object, "spec", "minAvailable")
	assert.EqualValues(t, 1, v)
	policy, _, _ := unstructured.NestedString(mem.Object, "spec", "unhealthyPodEvictionPolicy")
	assert.Equal(t, "AlwaysAllow", policy)
	for _, pdb := range []*unstructured.Unstructured{sched, mem} {
		sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
		tmpl, _, _ := unstructured.NestedStringMap(find(t, objs, "Deployment", pdb.GetName()).Object, "spec", "template", "metadata", "labels")
		for k, v := range sel {
			assert.Equal(t, v, tmpl[k], "PodDisruptionBudget %s selects its Deployment's pods", pdb.GetName())
		}
	}
	off := render(t, "--set", "scheduler.podDisruptionBudget.enabled=false", "--set", "memservice.podDisruptionBudget.enabled=false")
	for _, o := range off {
		assert.NotEqual(t, "PodDisruptionBudget", o.GetKind(), o.GetName())
	}
}

// TestCRDsOutliveTheRelease checks that the chart keeps its CRDs (and its pools) on
// uninstall: deleting a CRD deletes every record of memory held.
func TestCRDsOutliveTheRelease(t *testing.T) {
	objs := render(t, "-f", valuesFile(t, "pools-monitoring"))
	kept := 0
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" || o.GetKind() == "DynamicMemoryPool" {
			assert.Equal(t, "keep", o.GetAnnotations()["helm.sh/resource-policy"], "%s %s", o.GetKind(), o.GetName())
			kept++
		}
	}
	assert.Equal(t, 3, kept, "two CRDs and the value set's pool")
}
