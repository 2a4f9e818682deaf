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
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
)

// The two chart versions of the upgrade: the same chart packaged as two releases
// (make chart VERSION=...), whose images differ, so the upgrade replaces every pod.
var chartReleases = []struct{ version, appVersion string }{
	{"0.1.0", "v0.1.0"},
	{"0.2.0", "v0.2.0"},
}

// TestChartOnLocalCluster needs the local cluster (make cluster-bins), bin/helm (make
// helm) and the project's binaries (make build). It installs the packaged chart onto
// the local cluster, where kwok runs its pods and the real components run as
// processes on what the chart installed (RBAC, admission policies, CRDs); then holds
// memory in claims across a helm upgrade to the next version, and uninstalls.
func TestChartOnLocalCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), 10*time.Minute)
	defer cancel()
	packages := make([]string, len(chartReleases))
	dist := t.TempDir()
	for i, r := range chartReleases {
		_, err := helm(t, "package", chartDir, "--version", r.version, "--app-version", r.appVersion, "--destination", dist)
		require.NoError(t, err)
		packages[i] = filepath.Join(dist, releaseName+"-"+r.version+".tgz")
	}

	var kubeconfig string
	// The release record lives in kube-system; the chart's objects in its own namespaces.
	helmOn := func(args ...string) (string, error) {
		return helm(t, append(args, "--kubeconfig", kubeconfig, "--namespace", metav1.NamespaceSystem)...)
	}
	dir := t.TempDir()
	sys, err := system.Start(ctx, system.Options{
		Dir:      dir,
		Nodes:    3,
		Progress: system.NewProgress(&testWriter{t: t}, clock.RealClock{}),
		Install: func(ctx context.Context, c *cluster.Cluster) error {
			// Every node is attached to a pool (docs/operations.md, step 0): the
			// chart's node components run there, as kwok pods beside the agents and
			// DRA plugins the system runs itself.
			for _, node := range c.Nodes() {
				patch := []byte(`{"metadata":{"labels":{"` + deploy.NodeLabel + `":"true"}}}`)
				if _, err := c.Client().CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
					return fmt.Errorf("label node %s: %w", node, err)
				}
			}
			kubeconfig = c.Kubeconfig()
			_, err := helmOn("install", releaseName, packages[0])
			return err
		},
	})
	require.NoError(t, err, "start the system on the chart's installation")
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range sys.Cluster.Processes() {
				t.Logf("---- last 30 lines of %s ----\n%s", p.LogFile, p.LogTail(30))
			}
		}
		assert.NoError(t, sys.Stop(), "stop the system")
	})
	kube := sys.Kube()

	t.Run("install brings the Deployments and DaemonSets to Running", func(t *testing.T) {
		waitRolledOut(ctx, t, kube, chartReleases[0].appVersion, len(sys.Cluster.Nodes()))
	})

	const ns = "chart-upgrade"
	workloads := []system.Workload{system.NewWorkload("held-a", 4), system.NewWorkload("held-b", 8), system.NewWorkload("held-c", 2)}
	require.NoError(t, sys.CreateWorkloads(ctx, ns, workloads, nil))
	require.NoError(t, sys.WaitRunning(ctx, ns, system.Names(workloads), 2*time.Minute))
	waitClaimsOnline(ctx, t, sys, ns, len(workloads))
	before := snapshotHeld(ctx, t, sys, ns)
	require.Len(t, before.Claims, len(workloads), "a DynamicMemoryClaim per workload")

	t.Run("upgrade keeps every claim and record", func(t *testing.T) {
		// Version B adds a pool: the CRD is served now, so the release may hold pools.
		_, err := helmOn("upgrade", releaseName, packages[1],
			"--set-json", `pools=[{"name":"chart-pool","spec":{"backend":{"type":"Simulated"},"capacity":"8Gi","blockSize":"1Gi","hostWindow":"4Gi","nodes":[{"name":"`+sys.Cluster.Nodes()[0]+`","hostID":0}]}}]`)
		require.NoError(t, err)
		// The memory service's Deployment is recreated on an upgrade: its process is
		// restarted the same way, and rebuilds its ledger from the records.
		require.NoError(t, sys.Restart(ctx, system.Memservice))
		waitRolledOut(ctx, t, kube, chartReleases[1].appVersion, len(sys.Cluster.Nodes()))
		require.NoError(t, sys.WaitAgentsConnected(ctx))

		after := snapshotHeld(ctx, t, sys, ns)
		assert.Equal(t, before, after, "claims, allocations, the memory service's ledger and the hosts' memory are unchanged by the upgrade")
		_, err = sys.DynamicMemory().DynamicMemoryV1alpha1().DynamicMemoryPools().Get(ctx, "chart-pool", metav1.GetOptions{})
		assert.NoError(t, err, "the pool of the upgrade's values")

		// The system still serves: a new pod gets its memory.
		more := []system.Workload{system.NewWorkload("after-upgrade", 2)}
		require.NoError(t, sys.CreateWorkloads(ctx, ns, more, nil))
		require.NoError(t, sys.WaitRunning(ctx, ns, system.Names(more), 2*time.Minute))
		waitClaimsOnline(ctx, t, sys, ns, len(workloads)+len(more))
		before = snapshotHeld(ctx, t, sys, ns)
	})

	t.Run("uninstall leaves the memory held and its records", func(t *testing.T) {
		// Uninstalling deletes the components' pods: stop the processes standing in
		// for them, gracefully, as the kubelet would.
		for _, name := range sys.Components() {
			require.NoError(t, sys.Terminate(name), name)
		}
		_, err := helmOn("uninstall", releaseName, "--wait", "--timeout", "3m")
		require.NoError(t, err)
		for _, ns := range []string{deploy.Namespace, deploy.NodeNamespace} {
			_, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "namespace %s is gone: %v", ns, err)
		}
		_, err = kube.ResourceV1().DeviceClasses().Get(ctx, "dynamic-memory.dynamicmemory.io", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the DeviceClass is gone: no new claim is allocated: %v", err)

		// Kept: the CRDs, so every DynamicMemoryClaim and pool; the pods keep their
		// claims' allocations and the hosts their memory online. Nothing runs that
		// would release it; installing the chart again resumes from the records.
		kept := snapshotHeld(ctx, t, sys, ns)
		assert.Equal(t, before.Claims, kept.Claims, "every DynamicMemoryClaim is kept, unchanged")
		assert.Equal(t, before.Allocations, kept.Allocations, "every ResourceClaim keeps its allocation")
		assert.Equal(t, before.Journal, kept.Journal, "no memory block was offlined on any host")
		pools, err := sys.ListPools(ctx)
		require.NoError(t, err)
		var names []string
		for _, p := range pools {
			names = append(names, p.Name)
		}
		assert.Contains(t, names, "chart-pool", "the release's pool is kept (helm.sh/resource-policy: keep)")
		_, err = kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, v1alpha1.RecordPolicy, metav1.GetOptions{})
		assert.NoError(t, err, "the records stay protected from deletion (helm.sh/resource-policy: keep)")
		for _, w := range workloads {
			pod, err := kube.CoreV1().Pods(ns).Get(ctx, w.Name, metav1.GetOptions{})
			if assert.NoError(t, err) {
				assert.Equal(t, corev1.PodRunning, pod.Status.Phase, "pod %s keeps running", w.Name)
			}
		}
	})
}

// waitRolledOut waits until the chart's Deployments run every replica, ready (the
// memory service's standbys too: kwok's pods are ready at once), with images of the
// tag, and its DaemonSets have a ready pod on each of nodes nodes.
func waitRolledOut(ctx context.Context, t *testing.T, kube kubernetes.Interface, tag string, nodes int) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		last = ""
		for _, name := range []string{"memservice", "dynamic-memory-scheduler"} {
			d, err := kube.AppsV1().Deployments(deploy.Namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			if !deploymentDone(d, tag) {
				last = fmt.Sprintf("Deployment %s: %d of %d replicas updated, %d available (image %s)", name,
					d.Status.UpdatedReplicas, *d.Spec.Replicas, d.Status.AvailableReplicas, d.Spec.Template.Spec.Containers[0].Image)
				return false, nil
			}
		}
		for _, name := range []string{"node-agent", "dra-plugin"} {
			ds, err := kube.AppsV1().DaemonSets(deploy.NodeNamespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			if int(ds.Status.NumberReady) != nodes || int(ds.Status.UpdatedNumberScheduled) != nodes || !strings.HasSuffix(ds.Spec.Template.Spec.Containers[0].Image, ":"+tag) {
				last = fmt.Sprintf("DaemonSet %s: %d of %d nodes ready, %d updated", name, ds.Status.NumberReady, nodes, ds.Status.UpdatedNumberScheduled)
				return false, nil
			}
		}
		pods, err := kube.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || !strings.HasSuffix(p.Spec.Containers[0].Image, ":"+tag) {
				last = fmt.Sprintf("pod %s is %s with %s", p.Name, p.Status.Phase, p.Spec.Containers[0].Image)
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(t, err, "the chart's workloads roll out with tag %s: %s", tag, last)
}

func deploymentDone(d *appsv1.Deployment, tag string) bool {
	want := *d.Spec.Replicas
	return d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == want &&
		d.Status.Replicas == want && d.Status.AvailableReplicas == want &&
		strings.HasSuffix(d.Spec.Template.Spec.Containers[0].Image, ":"+tag)
}

// waitClaimsOnline waits until namespace has n DynamicMemoryClaims, every one Online.
func waitClaimsOnline(ctx context.Context, t *testing.T, sys *system.System, namespace string, n int) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		claims, err := sys.ListClaims(ctx, namespace)
		if err != nil {
			return false, err
		}
		online := 0
		for _, c := range claims {
			if c.CurrentPhase() == v1alpha1.PhaseOnline {
				online++
			}
		}
		last = fmt.Sprintf("%d of %d claims Online", online, len(claims))
		return len(claims) == n && online == n, nil
	})
	require.NoError(t, err, "%d DynamicMemoryClaims Online in %s: %s", n, namespace, last)
}

// held is what a claim holds, as the cluster and the memory service record it.
type held struct {
	// Claims are the DynamicMemoryClaims by namespace/name: UID, phase and spec.
	Claims map[string]string
	// Allocations are the ResourceClaims' UIDs and allocations by namespace/name.
	Allocations map[string]string
	// Ledger is the memory service's reserved and online bytes by pool and node, for
	// the system's own pools.
	Ledger map[string]string
	// Journal counts each node's memory block onlines and offlines.
	Journal map[string]string
}

func snapshotHeld(ctx context.Context, t *testing.T, sys *system.System, namespace string) held {
	t.Helper()
	h := held{Claims: map[string]string{}, Allocations: map[string]string{}, Ledger: map[string]string{}, Journal: map[string]string{}}
	claims, err := sys.ListClaims(ctx, namespace)
	require.NoError(t, err)
	for _, c := range claims {
		spec, err := json.Marshal(c.Spec)
		require.NoError(t, err)
		h.Claims[c.Namespace+"/"+c.Name] = fmt.Sprintf("uid %s phase %s spec %s", c.UID, c.CurrentPhase(), spec)
	}
	rcs, err := sys.Kube().ResourceV1().ResourceClaims(namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, rc := range rcs.Items {
		alloc, err := json.Marshal(rc.Status.Allocation)
		require.NoError(t, err)
		h.Allocations[rc.Namespace+"/"+rc.Name] = fmt.Sprintf("uid %s allocation %s", rc.UID, alloc)
	}
	if resp, err := sys.Admin().GetCapacity(ctx, &memservicev1.GetCapacityRequest{}); err == nil {
		for _, p := range resp.GetPools() {
			if !slices.ContainsFunc(sys.Pools, func(want v1alpha1.DynamicMemoryPool) bool { return want.Name == p.GetName() }) {
				continue
			}
			h.Ledger[p.GetName()] = fmt.Sprintf("reserved %d online %d", p.GetReservedBytes(), p.GetOnlineBytes())
			for _, n := range p.GetNodes() {
				h.Ledger[p.GetName()+"/"+n.GetNode()] = fmt.Sprintf("reserved %d online %d", n.GetReservedBytes(), n.GetOnlineBytes())
			}
		}
	} else {
		h.Ledger["error"] = "the memory service does not answer"
	}
	for _, node := range sys.Cluster.Nodes() {
		entries, err := hostmem.ReadJournal(sys.HostJournal(node))
		require.NoError(t, err)
		online, offline := 0, 0
		for _, e := range entries {
			if e.Op == hostmem.JournalOnline {
				online++
			} else {
				offline++
			}
		}
		h.Journal[node] = fmt.Sprintf("%d blocks onlined, %d offlined", online, offline)
	}
	return h
}

// testWriter sends the system's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
