package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

// TestStockScheduler runs the demo's scenario with the stock kube-scheduler
// (compatibility mode): the DRA plugins publish devices with the binding condition
// Online, the stock scheduler allocates the claims with DynamicResources alone and
// waits in PreBind, and the memory service provisions each claim allocated without a
// reservation. Every pod that fits runs with its memory online on its node, and was
// bound only once its memory was online; the oversize pod stays Pending, never
// bound, with no memory held for it; a monitor checks that no pool is ever
// over-committed; once the pods are deleted every pool is whole again.
func TestStockScheduler(t *testing.T) {
	sys := startSystem(t, 200*time.Millisecond, system.SchedulerStock)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mon := sys.StartMonitor(ctx)

	sc := system.DefaultScenario("stock")
	require.NoError(t, sys.CreateWorkloads(ctx, sc.Namespace, sc.Fitting, nil))
	require.NoError(t, sys.WaitRunning(ctx, sc.Namespace, system.Names(sc.Fitting), runTimeout))
	assertPlaced(ctx, t, sys, sc.Namespace, sc.Fitting)
	claims, err := sys.ListClaims(ctx, sc.Namespace)
	require.NoError(t, err)
	pods, err := sys.Cluster.Client().CoreV1().Pods(sc.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	boundAt := map[string]time.Time{}
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue {
				boundAt[p.Name] = c.LastTransitionTime.Time
			}
		}
	}
	require.Len(t, claims, len(sc.Fitting))
	for _, c := range claims {
		require.NotNil(t, c.Spec.PodRef, "claim %s names its pod", c.Name)
		require.NotNil(t, c.Status.OnlineAt, "claim %s is online", c.Name)
		bound, ok := boundAt[c.Spec.PodRef.Name]
		require.True(t, ok, "pod %s is bound", c.Spec.PodRef.Name)
		// Both times are in whole seconds.
		assert.False(t, bound.Before(c.Status.OnlineAt.Truncate(time.Second)),
			"pod %s was bound at %s, before its memory was online at %s", c.Spec.PodRef.Name, bound, c.Status.OnlineAt)
	}

	require.NoError(t, sys.CreateWorkloads(ctx, sc.Namespace, []system.Workload{sc.Oversize}, nil))
	reason, err := sys.WaitUnschedulable(ctx, sc.Namespace, sc.Oversize.Name, pendingTimeout)
	require.NoError(t, err)
	t.Logf("the oversize pod is Pending: %s", reason)
	pending, err := sys.Placements(ctx, sc.Namespace, []string{sc.Oversize.Name})
	require.NoError(t, err)
	assert.Equal(t, corev1.PodPending, pending[0].Phase)
	assert.Empty(t, pending[0].Node, "the oversize pod is not bound")
	assert.Empty(t, pending[0].MemoryPhase, "no memory is held for the oversize pod")

	deleteAndCheckReturned(ctx, t, sys, sc.Namespace, append(system.Names(sc.Fitting), sc.Oversize.Name))
	violations, _, _ := mon.Stop()
	assert.Empty(t, violations, "no pool was over-committed")
}
