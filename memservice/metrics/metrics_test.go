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

package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki/pkitest"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
)

// TestEveryNameIsExported gathers the registry after one of each labelled metric was
// used and checks that Names lists exactly the dynamic_memory_ metrics it exports.
func TestEveryNameIsExported(t *testing.T) {
	l := ledger.New(nil, ledger.Options{ReservationTTL: time.Minute})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "a", Capacity: 1 << 30, BlockSize: 1 << 27, HostWindow: 1 << 30, Nodes: []string{"n1"}}))
	_, err := l.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: "u"}, Node: "n1", Bytes: 1})
	require.Error(t, err, "the pool is not ready yet")
	l.SetPoolReady("a", true, "")
	_, err = l.Reserve(ledger.Request{Claim: ledger.ClaimRef{UID: "u"}, Node: "n1", Bytes: 1})
	require.NoError(t, err)
	_, ok := l.SetAside(ledger.Reservation{Claim: ledger.ClaimRef{UID: "lost"}, Node: "n1", Pool: "a", Bytes: 1 << 27}, "could not be restored")
	require.True(t, ok)
	pkitest.LoadCertificate(t)
	m := metrics.New(l, func() []string { return []string{"n1"} })

	m.Allocations.WithLabelValues("a").Inc()
	m.AllocationErrors.WithLabelValues("a", "backend").Inc()
	m.ReservationsMade.WithLabelValues("a").Inc()
	m.Releases.WithLabelValues("a").Inc()
	m.Provisioning.WithLabelValues("a").Observe(1)
	m.Release.WithLabelValues("a").Observe(1)
	m.BackendOp.WithLabelValues("a", "add").Observe(1)
	m.BackendErrors.WithLabelValues("a", "add").Inc()
	m.AgentCommand.WithLabelValues("online", "ok").Observe(1)
	m.GRPCRequests.WithLabelValues("Reserve", "OK").Inc()
	m.GRPCDuration.WithLabelValues("Reserve").Observe(1)
	m.ReconcileReleases.WithLabelValues("deleted").Inc()
	m.ReleasesBlocked.WithLabelValues("a", "n1").Inc()
	m.ClaimsAdopted.WithLabelValues("provisioning").Inc()
	m.CertificateRequests.WithLabelValues("issued", "Issued").Inc()

	families, err := m.Registry.Gather()
	require.NoError(t, err)
	var exported []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "dynamic_memory_") {
			exported = append(exported, f.GetName())
		}
	}
	assert.ElementsMatch(t, metrics.Names, exported)
	for _, seed := range []string{"dynamic_memory_allocations_total", "dynamic_memory_allocation_errors_total",
		"dynamic_memory_current_usage_bytes", "dynamic_memory_provisioning_duration_seconds"} {
		assert.Contains(t, metrics.Names, seed)
	}
	for _, f := range families {
		if f.GetName() == metrics.CurrentUsageBytes {
			require.Len(t, f.GetMetric(), 1)
			assert.Equal(t, float64(1<<27), f.GetMetric()[0].GetGauge().GetValue(), "usage is the rounded reservation")
			labels := map[string]string{}
			for _, lp := range f.GetMetric()[0].GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			assert.Equal(t, map[string]string{"pool": "a", "node": "n1"}, labels)
		}
	}
}
