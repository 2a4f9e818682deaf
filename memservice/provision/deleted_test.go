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

package provision_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision/provisiontest"
)

// provisioned brings claim u online and waits until its Online record is written.
func provisioned(t *testing.T, m *provision.Manager) {
	t.Helper()
	r, err := m.AddMemory(context.Background(), req("u"))
	require.NoError(t, err)
	require.Equal(t, v1alpha1.PhaseOnline, r.State)
	m.Wait()
}

// waitReleased waits until the ledger has claim uid Released.
func waitReleased(t *testing.T, l *ledger.Ledger, uid string) {
	t.Helper()
	require.Eventually(t, func() bool {
		r, ok := l.Get(uid)
		return ok && r.State == v1alpha1.PhaseReleased
	}, 5*time.Second, time.Millisecond)
}

// The release of a claim deleted for good writes its record once, to remove it: a
// restart would find the claim gone and release the memory just the same, so the
// Releasing mark is not needed. Any other release marks the record first, since the
// claim may be allocated again before a restart reads it.
func TestADeletedClaimsReleaseWritesItsRecordOnlyToRemoveIt(t *testing.T) {
	for _, tc := range []struct {
		name         string
		claimDeleted bool
		want         []string
	}{
		{"claim deleted", true, []string{"device release", "store Released"}},
		{"claim deallocated", false, []string{"store Releasing", "device release", "store Released"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, l, ag, st, _, _ := fencedSetup(t)
			provisioned(t, m)

			m.Release("u", tc.claimDeleted)
			waitReleased(t, l, "u")
			assert.Equal(t, append([]string{"store Provisioning", "device add", "store Online"}, tc.want...), st.events())
			assert.Equal(t, 1, ag.offlines, "the agent offlined before the device released")
			assert.Equal(t, 8*gi, l.Snapshot().Pools[0].Free)
		})
	}
}

// A deleted claim's release that has to wait says so: the record is marked Releasing
// at the first step that fails, before it is retried, and before a blocked release's
// condition (the mark writes the whole status).
func TestADeletedClaimsReleaseThatWaitsIsMarkedReleasing(t *testing.T) {
	t.Run("the device fails once", func(t *testing.T) {
		m, l, _, st, dev, _ := fencedSetup(t)
		dev.releaseFailures = 1
		provisioned(t, m)

		m.Release("u", true)
		waitReleased(t, l, "u")
		assert.Equal(t, []string{"store Provisioning", "device add", "store Online",
			"device release", "store Releasing", "device release", "store Released"}, st.events())
	})
	t.Run("the memory is busy", func(t *testing.T) {
		l := ledger.New(nil, ledger.Options{})
		require.NoError(t, l.SetPool(ledger.Pool{Name: "p", Capacity: 8 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"n"}}))
		l.SetPoolReady("p", true, "")
		st := &orderedStore{refuse: map[v1alpha1.ClaimPhase]bool{}}
		ag := &pinnedAgents{agents: &agents{}}
		m := provision.New(provision.Config{Ledger: l, Devices: provisiontest.Devices{Pool: "p", Backend: &loggingDevice{log: st}, HostIDs: map[string]int32{"n": 0}},
			Agents: ag, Store: st, Conditions: st})
		ctx, cancel := context.WithCancel(context.Background())
		m.Start(ctx)
		t.Cleanup(func() {
			cancel()
			m.Wait()
		})
		provisioned(t, m)

		ag.pin(true)
		m.Release("u", true)
		require.Eventually(t, func() bool { return ag.busyAnswers() == 1 && len(st.events()) == 5 }, 5*time.Second, time.Millisecond)
		assert.Equal(t, []string{"store Provisioning", "device add", "store Online", "store Releasing", "condition ReleaseBlocked=True"}, st.events())
	})
	t.Run("the mark is refused as fenced", func(t *testing.T) {
		m, l, _, st, dev, _ := fencedSetup(t)
		dev.releaseFailures = 1
		provisioned(t, m)

		st.mu.Lock()
		st.refuse[v1alpha1.PhaseReleasing] = true
		st.mu.Unlock()
		m.Release("u", true)
		require.Eventually(t, func() bool { return len(st.events()) == 5 }, 5*time.Second, time.Millisecond)
		m.Wait() // the flight ended: this instance no longer leads
		assert.Equal(t, []string{"store Provisioning", "device add", "store Online", "device release", "store refused Releasing"}, st.events())
		cur, _ := l.Get("u")
		assert.Equal(t, v1alpha1.PhaseReleasing, cur.State, "left for the leader to release")
	})
}
