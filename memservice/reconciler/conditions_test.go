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

package reconciler_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/reconciler"
)

// onNode is a claim allocated (or not) on node n1, from the driver's DRA pool of
// that node, whose allocation waits for the device condition Online (binding
// conditions).
func onNode(name, uid string, allocated bool) *resourcev1.ResourceClaim {
	c := resourceClaim(name, uid, allocated, allocated)
	if allocated {
		c.Status.Allocation.Devices.Results[0].Pool = "n1"
		c.Status.Allocation.Devices.Results[0].BindingConditions = []string{dra.ConditionOnline}
	}
	return c
}

// unawaited is onNode without binding conditions: nothing waits for its Online.
func unawaited(name, uid string) *resourcev1.ResourceClaim {
	c := onNode(name, uid, true)
	c.Status.Allocation.Devices.Results[0].BindingConditions = nil
	return c
}

// condition is claim name's device condition of type typ, nil if it has none.
func (e *env) condition(t *testing.T, name, typ string) *metav1.Condition {
	t.Helper()
	c, err := e.client.ResourceV1().ResourceClaims("default").Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	for _, d := range c.Status.Devices {
		if d.Driver == dra.DriverName && d.Pool == "n1" {
			return meta.FindStatusCondition(d.Conditions, typ)
		}
	}
	return nil
}

// provisionFailed provisions claim name and marks its provisioning failed.
func (e *env) provisionFailed(t *testing.T, name, uid, message string) {
	t.Helper()
	e.provision(t, name, uid, false)
	_, err := e.ledger.MarkFailed(uid, message)
	require.NoError(t, err)
}

func (e *env) applies() (n int) {
	for _, a := range e.client.Actions() {
		if a.Matches("patch", "resourceclaims") && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

// The memory service writes the device conditions from its ledger, once the claim
// shows its allocation: Online=True when the memory is online, ProvisioningFailed
// when provisioning failed. A claim allocated after its memory went online (the
// scheduler writes the allocation while the memory is provisioned) gets them when
// the allocation arrives; a claim that has them is not written again.
func TestTheServiceWritesTheDeviceConditionsOnceTheClaimIsAllocated(t *testing.T) {
	e := newEnv(t, onNode("online", "u-online", true), onNode("late", "u-late", false), onNode("failed", "u-failed", true))
	e.provision(t, "online", "u-online", true)
	e.provision(t, "late", "u-late", true)
	e.provisionFailed(t, "failed", "u-failed", "the node agent of n1 could not online block 3")
	ctx := run(t, e.rec)

	require.Eventually(t, func() bool { return e.applies() == 2 }, 5*time.Second, 5*time.Millisecond,
		"the restored claims that are allocated get their conditions")
	online := e.condition(t, "online", dra.ConditionOnline)
	require.NotNil(t, online)
	assert.Equal(t, metav1.ConditionTrue, online.Status)
	assert.Equal(t, reconciler.ReasonMemoryOnline, online.Reason)
	assert.Equal(t, "1Gi of pool cxl-a online on node n1 (NUMA [])", online.Message)
	failed := e.condition(t, "failed", dra.ConditionProvisioningFailed)
	require.NotNil(t, failed)
	assert.Equal(t, metav1.ConditionTrue, failed.Status)
	assert.Equal(t, reconciler.ReasonProvisioningFailed, failed.Reason)
	assert.Equal(t, "the node agent of n1 could not online block 3", failed.Message)
	assert.Nil(t, e.condition(t, "late", dra.ConditionOnline), "not allocated yet: nothing to write on")

	e.rec.Settled("u-late")
	_, err := e.client.ResourceV1().ResourceClaims("default").UpdateStatus(ctx, onNode("late", "u-late", true), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		c := e.condition(t, "late", dra.ConditionOnline)
		return c != nil && c.Status == metav1.ConditionTrue
	}, 5*time.Second, 5*time.Millisecond, "written when the allocation arrives")

	applied := e.applies()
	e.rec.Settled("u-online")
	e.rec.Settled("u-failed")
	late, err := e.client.ResourceV1().ResourceClaims("default").Get(ctx, "late", metav1.GetOptions{})
	require.NoError(t, err)
	late.Labels = map[string]string{"changed": "yes"} // an event of the informer
	_, err = e.client.ResourceV1().ResourceClaims("default").Update(ctx, late, metav1.UpdateOptions{})
	require.NoError(t, err)
	// A claim queued after all of these (one worker, in order): once its conditions
	// are written, the others were looked at.
	e.provision(t, "sentinel", "u-sentinel", true)
	_, err = e.client.ResourceV1().ResourceClaims("default").Create(ctx, onNode("sentinel", "u-sentinel", true), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.condition(t, "sentinel", dra.ConditionOnline) != nil }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, applied+1, e.applies(), "conditions the claims have are not written again; only the new claim's are")
}

// Online is written where a scheduler waits for it (the allocation's binding
// conditions name it) or where the claim's conditions say otherwise: a claim that
// DynamicMemory's PreBind provisioned, without binding conditions, gets no write
// (its record says Online), while one that shows an earlier ProvisioningFailed is
// corrected. A failure is written on every claim.
func TestOnlineIsWrittenWhereAWaitOrAnEarlierConditionNeedsIt(t *testing.T) {
	stale := unawaited("stale", "u-stale")
	stale.Status.Devices = []resourcev1.AllocatedDeviceStatus{{Driver: dra.DriverName, Pool: "n1", Device: "cxl-a", Conditions: []metav1.Condition{
		{Type: dra.ConditionOnline, Status: metav1.ConditionFalse, Reason: reconciler.ReasonProvisioningFailed, Message: "pool cxl-a exhausted"},
		{Type: dra.ConditionProvisioningFailed, Status: metav1.ConditionTrue, Reason: reconciler.ReasonProvisioningFailed, Message: "pool cxl-a exhausted"},
	}}}
	e := newEnv(t, unawaited("quiet", "u-quiet"), stale, unawaited("failed", "u-failed"), onNode("awaited", "u-awaited", true))
	e.provision(t, "quiet", "u-quiet", true)
	e.provision(t, "stale", "u-stale", true)
	e.provisionFailed(t, "failed", "u-failed", "the node agent of n1 could not online block 3")
	run(t, e.rec)

	require.Eventually(t, func() bool { return e.applies() == 2 }, 5*time.Second, 5*time.Millisecond, "stale and failed")
	// The awaited claim is provisioned after the others were queued, and the queue
	// has one worker, in order: once its condition is written, all were looked at.
	e.provision(t, "awaited", "u-awaited", true)
	e.rec.Settled("u-awaited")
	require.Eventually(t, func() bool { return e.condition(t, "awaited", dra.ConditionOnline) != nil }, 5*time.Second, 5*time.Millisecond)
	assert.Nil(t, e.condition(t, "quiet", dra.ConditionOnline), "nothing waits for it: not written")
	online := e.condition(t, "stale", dra.ConditionOnline)
	require.NotNil(t, online)
	assert.Equal(t, metav1.ConditionTrue, online.Status, "the earlier failure is corrected")
	failed := e.condition(t, "failed", dra.ConditionProvisioningFailed)
	require.NotNil(t, failed)
	assert.Equal(t, metav1.ConditionTrue, failed.Status)
	assert.Equal(t, 3, e.applies(), "stale, failed and awaited")
}
