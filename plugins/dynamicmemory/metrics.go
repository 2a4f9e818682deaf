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
	"sync"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

const (
	metricsNamespace = "dynamic_memory"
	metricsSubsystem = "scheduler"
)

// Values of the "reason" label of reserveFailures.
const (
	reasonExhausted   = "exhausted"   // the pool or the host window had no room
	reasonUnavailable = "unavailable" // the memory service did not answer in time
	reasonError       = "error"       // any other error
)

// Values of the "result" label of provisioningDuration.
const (
	resultOnline  = "online"
	resultFailed  = "failed"
	resultTimeout = "timeout"
	resultError   = "error"
)

var (
	reserveAttempts = metrics.NewCounter(&metrics.CounterOpts{
		Namespace:      metricsNamespace,
		Subsystem:      metricsSubsystem,
		Name:           "reserve_attempts_total",
		Help:           "Reservations the DynamicMemory plugin asked the memory service for, one per ResourceClaim.",
		StabilityLevel: metrics.ALPHA,
	})
	reserveFailures = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      metricsNamespace,
		Subsystem:      metricsSubsystem,
		Name:           "reserve_failures_total",
		Help:           "Reservations the memory service refused or did not answer, by reason (exhausted, unavailable, error).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	provisioningDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace:      metricsNamespace,
		Subsystem:      metricsSubsystem,
		Name:           "provisioning_duration_seconds",
		Help:           "Time PreBind waited for the memory service to bring a claim's memory online, by result (online, failed, timeout, error).",
		Buckets:        metrics.ExponentialBuckets(0.01, 2, 15), // 10ms .. ~164s
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	poolCacheConnected = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      metricsNamespace,
		Subsystem:      metricsSubsystem,
		Name:           "pool_cache_connected",
		Help:           "1 while the pool cache receives the memory service's pool snapshots, 0 otherwise (dynamic-memory pods are then rejected).",
		StabilityLevel: metrics.ALPHA,
	})
	poolCacheRevision = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      metricsNamespace,
		Subsystem:      metricsSubsystem,
		Name:           "pool_cache_revision",
		Help:           "Revision of the last pool snapshot the cache received.",
		StabilityLevel: metrics.ALPHA,
	})
	poolCacheStale = metrics.NewGaugeFunc(&metrics.GaugeOpts{
		Namespace:      metricsNamespace,
		Subsystem:      metricsSubsystem,
		Name:           "pool_cache_stale_seconds",
		Help:           "Seconds since the pool cache was last known to be current: 0 while connected, growing while disconnected.",
		StabilityLevel: metrics.ALPHA,
	}, staleSeconds)
)

// MetricNames lists the full names of the plugin's metrics, as they appear on the
// scheduler's /metrics endpoint (dashboards and alert rules refer to these).
func MetricNames() []string {
	names := []string{
		"reserve_attempts_total",
		"reserve_failures_total",
		"provisioning_duration_seconds",
		"pool_cache_connected",
		"pool_cache_revision",
		"pool_cache_stale_seconds",
	}
	for i, n := range names {
		names[i] = metrics.BuildFQName(metricsNamespace, metricsSubsystem, n)
	}
	return append(names, pki.ExpiryMetric)
}

var registerMetrics sync.Once

// RegisterMetrics registers the plugin's metrics with the component-base legacy
// registry, which the scheduler serves on /metrics. It is idempotent; acquiring a connection (New) calls it before its pool cache runs.
func RegisterMetrics() {
	registerMetrics.Do(func() {
		legacyregistry.MustRegister(reserveAttempts, reserveFailures, provisioningDuration,
			poolCacheConnected, poolCacheRevision)
		legacyregistry.RawMustRegister(poolCacheStale, pki.NewExpiryCollector())
	})
}

// liveCaches are the pool caches whose staleness pool_cache_stale_seconds reports
// (one per profile that enables the plugin; usually one).
var liveCaches = struct {
	sync.Mutex
	caches map[*poolCache]struct{}
}{caches: map[*poolCache]struct{}{}}

func trackCache(c *poolCache) {
	liveCaches.Lock()
	defer liveCaches.Unlock()
	liveCaches.caches[c] = struct{}{}
}

func untrackCache(c *poolCache) {
	liveCaches.Lock()
	defer liveCaches.Unlock()
	delete(liveCaches.caches, c)
}

// staleSeconds is the largest staleness of the live caches.
func staleSeconds() float64 {
	liveCaches.Lock()
	defer liveCaches.Unlock()
	var worst time.Duration
	for c := range liveCaches.caches {
		worst = max(worst, c.staleness())
	}
	return worst.Seconds()
}
