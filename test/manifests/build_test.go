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

// Package manifests tests the Helm chart and the manifests rendered from it: the chart
// lints and renders its value sets as their golden files, every kustomization builds,
// the local cluster accepts the result, RBAC grants each component what it needs and
// no more, the scheduler Deployment mounts the shipped scheduler configuration, the
// kind config is what kind/demo.sh needs, and the chart installs, upgrades with claims
// held, and uninstalls on the local cluster.
package manifests

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	shipped "github.com/dynamicmemory/kube-dynamic-memory/manifests"
	pluginconfig "github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

// repoRoot is the repository root, found from this file's location.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// kustomizations lists every directory under manifests/ with a kustomization.yaml,
// relative to the repository root.
func kustomizations(t testing.TB) []string {
	t.Helper()
	root := repoRoot(t)
	var dirs []string
	walk := func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			dirs = append(dirs, rel)
		}
		return nil
	}
	require.NoError(t, filepath.WalkDir(filepath.Join(root, "manifests"), walk))
	return dirs
}

// build runs kustomize on dir (relative to the repository root) and returns the objects.
func build(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(t), dir))
	require.NoError(t, err, "kustomize build %s", dir)
	out, err := resources.AsYaml()
	require.NoError(t, err)
	return decodeAll(t, out)
}

func decodeAll(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		require.NoError(t, err)
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// find returns the object of the given kind and name, failing the test if absent.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	require.Failf(t, "object missing", "%s %s not in the build", kind, name)
	return nil
}

func TestEveryKustomizationBuilds(t *testing.T) {
	dirs := kustomizations(t)
	for _, want := range []string{"manifests", "manifests/crds", "manifests/deviceclass", "manifests/namespace",
		"manifests/rbac", "manifests/memservice", "manifests/scheduler", "manifests/node",
		"manifests/monitoring", "manifests/samples"} {
		assert.Contains(t, dirs, want, "%s/kustomization.yaml", want)
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			objs := build(t, dir)
			require.NotEmpty(t, objs)
			for _, o := range objs {
				assert.NotEmpty(t, o.GetAPIVersion(), "%s %s has an apiVersion", o.GetKind(), o.GetName())
				assert.NotEmpty(t, o.GetName(), "a %s has a name", o.GetKind())
			}
		})
	}
}

func TestTopLevelHoldsEveryComponent(t *testing.T) {
	objs := build(t, "manifests")
	for _, want := range []struct{ kind, name string }{
		{"CustomResourceDefinition", "dynamicmemorypools.dynamicmemory.io"},
		{"CustomResourceDefinition", "dynamicmemoryclaims.dynamicmemory.io"},
		{"DeviceClass", "dynamic-memory.dynamicmemory.io"},
		{"Namespace", deploy.Namespace},
		{"Namespace", deploy.NodeNamespace},
		{"Deployment", "memservice"},
		{"NetworkPolicy", "memservice"},
		{"Deployment", "dynamic-memory-scheduler"},
		{"DaemonSet", "node-agent"},
		{"DaemonSet", "dra-plugin"},
		// Only the memory service's leader writes records (store.LeaderPolicy).
		{"ValidatingAdmissionPolicy", "dynamic-memory-memservice-leader"},
		{"ValidatingAdmissionPolicyBinding", "dynamic-memory-memservice-leader"},
		// Only the memory service removes records (v1alpha1.RecordPolicy).
		{"ValidatingAdmissionPolicy", v1alpha1.RecordPolicy},
		{"ValidatingAdmissionPolicyBinding", v1alpha1.RecordPolicy},
	} {
		find(t, objs, want.kind, want.name)
	}
	// The node components, which need host access, apart from the others.
	for _, o := range objs {
		if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" || o.GetKind() == "ServiceAccount" || o.GetKind() == "Service" {
			want := deploy.Namespace
			if o.GetName() == deploy.NodeAgentServiceAccount || o.GetName() == deploy.DRAPluginServiceAccount {
				want = deploy.NodeNamespace
			}
			assert.Equal(t, want, o.GetNamespace(), "%s %s", o.GetKind(), o.GetName())
		}
	}
	for ns, level := range map[string]string{deploy.Namespace: "restricted", deploy.NodeNamespace: "privileged"} {
		assert.Equal(t, level, find(t, objs, "Namespace", ns).GetLabels()["pod-security.kubernetes.io/enforce"], "Pod Security level of %s", ns)
	}
}

// TestIdentitiesComeFromTheSigner checks that no Secret holds a client's key: the
// scheduler, node agents and DRA plugins mount their certificate from a podCertificate
// volume of the memory service's signer and its CA from the signer's
// ClusterTrustBundle, and their flags (or plugin args) name the files of that volume;
// the memory service mounts the CA it signs with.
func TestIdentitiesComeFromTheSigner(t *testing.T) {
	objs := build(t, "manifests")
	wantFiles := []string{"/etc/dynamic-memory/identity/ca.crt", "/etc/dynamic-memory/identity/tls.crt", "/etc/dynamic-memory/identity/tls.key"}
	for _, c := range []struct{ kind, name, serviceAccount string }{
		{"Deployment", "dynamic-memory-scheduler", deploy.SchedulerServiceAccount},
		{"DaemonSet", "node-agent", deploy.NodeAgentServiceAccount},
		{"DaemonSet", "dra-plugin", deploy.DRAPluginServiceAccount},
	} {
		spec := podSpec(t, find(t, objs, c.kind, c.name))
		assert.Equal(t, c.serviceAccount, spec.ServiceAccountName, "%s runs as the ServiceAccount the signer signs for", c.name)
		var identity *corev1.ProjectedVolumeSource
		for _, v := range spec.Volumes {
			assert.Nil(t, v.Secret, "%s mounts no Secret (volume %s)", c.name, v.Name)
			if v.Name == "identity" {
				identity = v.Projected
			}
		}
		require.NotNil(t, identity, "%s has a projected volume named identity", c.name)
		require.Len(t, identity.Sources, 2, c.name)
		pc, ctb := identity.Sources[0].PodCertificate, identity.Sources[1].ClusterTrustBundle
		require.NotNil(t, pc, "%s: a podCertificate source", c.name)
		require.NotNil(t, ctb, "%s: a clusterTrustBundle source", c.name)
		assert.Equal(t, deploy.SignerName, pc.SignerName, c.name)
		assert.Equal(t, "tls.crt", pc.CertificateChainPath, c.name)
		assert.Equal(t, "tls.key", pc.KeyPath, c.name)
		assert.Equal(t, deploy.SignerName, *ctb.SignerName, c.name)
		assert.Equal(t, "ca.crt", ctb.Path, c.name)
		mounted := false
		for _, m := range spec.Containers[0].VolumeMounts {
			mounted = mounted || (m.Name == "identity" && m.MountPath == "/etc/dynamic-memory/identity")
		}
		assert.True(t, mounted, "%s mounts the identity volume at /etc/dynamic-memory/identity", c.name)
		if c.kind == "DaemonSet" {
			args := spec.Containers[0].Args
			for i, flag := range []string{"--memservice-ca=", "--memservice-cert=", "--memservice-key="} {
				assert.Contains(t, args, flag+wantFiles[i], c.name)
			}
		}
	}
	for _, args := range pluginArgs(t, string(shipped.SchedulerConfig)) {
		assert.Equal(t, wantFiles, []string{args.CAFile, args.CertFile, args.KeyFile}, "the scheduler plugin reads the identity volume")
	}

	spec := podSpec(t, find(t, objs, "Deployment", "memservice"))
	assert.Equal(t, "memservice-ca", spec.Volumes[0].Secret.SecretName)
	assert.Contains(t, spec.Containers[0].Args, "--signer-ca-dir=/etc/dynamic-memory/ca")
}

func podSpec(t *testing.T, o *unstructured.Unstructured) corev1.PodSpec {
	t.Helper()
	raw, found, err := unstructured.NestedMap(o.Object, "spec", "template", "spec")
	require.NoError(t, err)
	require.True(t, found, "%s %s has a pod template", o.GetKind(), o.GetName())
	var spec corev1.PodSpec
	require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(raw, &spec))
	return spec
}

func TestMemserviceDeployment(t *testing.T) {
	objs := build(t, "manifests")
	var d appsv1.Deployment
	require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, "Deployment", "memservice").Object, &d))
	assert.Equal(t, int32(2), *d.Spec.Replicas, "two replicas: one leader, one standby")
	args := d.Spec.Template.Spec.Containers[0].Args
	assert.Contains(t, args, "--leader-elect=true")
}

func TestKindValuesUseLoadedImagesAndSimulatedHost(t *testing.T) {
	objs := render(t, "-f", valuesFile(t, "kind"))
	for _, kind := range []string{"Deployment", "DaemonSet"} {
		for _, o := range objs {
			if o.GetKind() != kind {
				continue
			}
			containers, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			require.NoError(t, err)
			for _, c := range containers {
				image := c.(map[string]any)["image"].(string)
				assert.True(t, strings.HasSuffix(image, ":dev"), "%s %s runs %s, want the :dev image kind/demo.sh loads", kind, o.GetName(), image)
				assert.Equal(t, "Never", c.(map[string]any)["imagePullPolicy"], "%s %s: the loaded image, never pulled", kind, o.GetName())
			}
		}
	}
	var agent appsv1.DaemonSet
	require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, "DaemonSet", "node-agent").Object, &agent))
	args := agent.Spec.Template.Spec.Containers[0].Args
	assert.Contains(t, args, "--host-backend=simulated")
	assert.NotContains(t, args, "--host-backend=sysfs")
	assert.Contains(t, args, "--manage-cgroup=false")
	assert.NotContains(t, args, "--manage-cgroup=true")
}

// TestNodeComponentsRunOnAttachedNodesOnly checks that the node DaemonSets select the
// nodes labelled as attached to a CXL pool (TestKindClusterConfig: kind's workers are).
func TestNodeComponentsRunOnAttachedNodesOnly(t *testing.T) {
	for _, name := range []string{"node-agent", "dra-plugin"} {
		var ds appsv1.DaemonSet
		require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(find(t, build(t, "manifests"), "DaemonSet", name).Object, &ds))
		assert.Equal(t, "true", ds.Spec.Template.Spec.NodeSelector[deploy.NodeLabel], "DaemonSet %s runs where %s=true", name, deploy.NodeLabel)
	}
}

// TestSchedulerConfigMounted checks that the scheduler Deployment runs with the one
// shipped configuration (which the Go code embeds as manifests.SchedulerConfig): the
// rendered ConfigMap manifests/scheduler/configmap.yaml holds it, the Deployment
// mounts that ConfigMap where its --config flag points, and the plugin's
// args there reach the memservice Service of manifests/memservice.
func TestSchedulerConfigMounted(t *testing.T) {
	objs := build(t, "manifests/scheduler")
	var cm *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && strings.HasPrefix(o.GetName(), "dynamic-memory-scheduler-config") {
			cm = o
		}
	}
	require.NotNil(t, cm, "scheduler ConfigMap generated")
	data, _, _ := unstructured.NestedString(cm.Object, "data", "scheduler-config.yaml")
	assert.Equal(t, string(shipped.SchedulerConfig), data, "the ConfigMap holds the embedded configuration unchanged")

	args := pluginArgs(t, data)
	require.Len(t, args, 2, "both profiles configure %s", pluginconfig.PluginName)
	assert.Equal(t, args[0], args[1], "with the same args")
	assert.Equal(t, deploy.MemoryServiceAddress, args[0].Address,
		"the Deployment's scheduler reaches the memservice Service of manifests/memservice")

	var d appsv1.Deployment
	require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, "Deployment", "dynamic-memory-scheduler").Object, &d))
	var mountedAt string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm.GetName() {
			for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
				if m.Name == v.Name {
					mountedAt = m.MountPath
				}
			}
		}
	}
	require.NotEmpty(t, mountedAt, "the Deployment mounts the generated ConfigMap %s", cm.GetName())
	assert.Contains(t, d.Spec.Template.Spec.Containers[0].Command, "--config="+mountedAt+"/scheduler-config.yaml",
		"the scheduler reads the mounted file")
}

// pluginArgs are the DynamicMemory args of each profile of a scheduler configuration.
func pluginArgs(t *testing.T, data string) []pluginconfig.DynamicMemoryArgs {
	t.Helper()
	var cfg struct {
		Profiles []struct {
			SchedulerName string `json:"schedulerName"`
			PluginConfig  []struct {
				Name string                         `json:"name"`
				Args pluginconfig.DynamicMemoryArgs `json:"args"`
			} `json:"pluginConfig"`
		} `json:"profiles"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(data), &cfg))
	var args []pluginconfig.DynamicMemoryArgs
	for _, p := range cfg.Profiles {
		for _, pc := range p.PluginConfig {
			if pc.Name == pluginconfig.PluginName {
				args = append(args, pc.Args)
			}
		}
	}
	return args
}

// TestNetworkPolicies checks that every component's pods have an ingress policy, that
// only the project's clients reach the memory service's gRPC port, and that only the
// monitoring namespace reaches any other port.
func TestNetworkPolicies(t *testing.T) {
	objs := build(t, "manifests")
	var policies []networkingv1.NetworkPolicy
	for _, o := range objs {
		if o.GetKind() == "NetworkPolicy" {
			var np networkingv1.NetworkPolicy
			require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &np))
			policies = append(policies, np)
		}
	}
	monitoring := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	covered := map[string]bool{}
	for _, np := range policies {
		name := np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"]
		require.NotEmpty(t, name, "NetworkPolicy %s selects a component's pods by name", np.Name)
		covered[name] = true
		assert.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, np.Spec.PolicyTypes, np.Name)
		for i, rule := range np.Spec.Ingress {
			require.NotEmpty(t, rule.From, "NetworkPolicy %s rule %d is open to everyone", np.Name, i)
			require.Len(t, rule.Ports, 1, "NetworkPolicy %s rule %d", np.Name, i)
			if np.Name == "memservice" && rule.Ports[0].Port.String() == "grpc" {
				// The scheduler in the service's namespace, the node components in theirs.
				require.Len(t, rule.From, 2)
				assert.Equal(t, &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "dynamic-memory-scheduler"}}, rule.From[0].PodSelector)
				assert.Nil(t, rule.From[0].NamespaceSelector)
				assert.Equal(t, &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": deploy.NodeNamespace}}, rule.From[1].NamespaceSelector)
				require.NotNil(t, rule.From[1].PodSelector)
				assert.ElementsMatch(t, []string{"node-agent", "dra-plugin"}, rule.From[1].PodSelector.MatchExpressions[0].Values, "the memory service's node clients")
				continue
			}
			assert.Equal(t, []networkingv1.NetworkPolicyPeer{monitoring}, rule.From,
				"NetworkPolicy %s: port %s only from the monitoring namespace", np.Name, rule.Ports[0].Port)
		}
	}
	for _, o := range objs {
		if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
			name, _, _ := unstructured.NestedString(o.Object, "spec", "template", "metadata", "labels", "app.kubernetes.io/name")
			assert.True(t, covered[name], "%s %s has an ingress NetworkPolicy", o.GetKind(), o.GetName())
		}
	}
}
