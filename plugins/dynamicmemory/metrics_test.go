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

package dynamicmemory

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki/pkitest"
)

func TestMetricsAreRegisteredUnderTheirNames(t *testing.T) {
	pkitest.LoadCertificate(t)
	RegisterMetrics()
	RegisterMetrics() // idempotent
	reserveAttempts.Inc()
	reserveFailures.WithLabelValues(reasonExhausted).Inc()
	provisioningDuration.WithLabelValues(resultOnline).Observe(0.5)
	poolCacheConnected.Set(1)
	poolCacheRevision.Set(3)

	families, err := legacyregistry.DefaultGatherer.Gather()
	require.NoError(t, err)
	gathered := map[string]bool{}
	for _, f := range families {
		gathered[f.GetName()] = true
	}
	names := MetricNames()
	require.Len(t, names, 7)
	for _, name := range names {
		// The certificate's expiry is the one metric every component shares.
		assert.True(t, strings.HasPrefix(name, "dynamic_memory_scheduler_") || name == pki.ExpiryMetric, name)
		assert.True(t, gathered[name], "metric %s is served", name)
	}
}
