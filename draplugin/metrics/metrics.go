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

// Package metrics holds the DRA kubelet plugin's Prometheus metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// Metric names, all with the project's dynamic_memory_ prefix.
const (
	PrepareClaimsName     = "dynamic_memory_draplugin_prepare_claims_total"
	PrepareErrorsName     = "dynamic_memory_draplugin_prepare_errors_total"
	PrepareDurationName   = "dynamic_memory_draplugin_prepare_duration_seconds"
	UnprepareClaimsName   = "dynamic_memory_draplugin_unprepare_claims_total"
	UnprepareErrorsName   = "dynamic_memory_draplugin_unprepare_errors_total"
	UnprepareDurationName = "dynamic_memory_draplugin_unprepare_duration_seconds"
	PublishedDevicesName  = "dynamic_memory_draplugin_published_devices"
	SliceUpdatesName      = "dynamic_memory_draplugin_slice_updates_total"
)

// Names lists every metric the plugin exports, for dashboards and alert rules.
func Names() []string {
	return []string{
		PrepareClaimsName, PrepareErrorsName, PrepareDurationName,
		UnprepareClaimsName, UnprepareErrorsName, UnprepareDurationName,
		PublishedDevicesName, SliceUpdatesName, pki.ExpiryMetric,
	}
}

// Reasons a claim fails to prepare, the "reason" label.
const (
	ReasonNotOnline       = "not_online"
	ReasonNotFound        = "not_found"
	ReasonWrongNode       = "wrong_node"
	ReasonMemoryService   = "memory_service"
	ReasonCDI             = "cdi"
	ReasonWrongAllocation = "wrong_allocation"
)

// Metrics are the plugin's metrics in their own registry.
type Metrics struct {
	registry *prometheus.Registry

	// PrepareClaims counts claims the kubelet asked to prepare.
	PrepareClaims prometheus.Counter
	// PrepareErrors counts claims that failed to prepare, by reason.
	PrepareErrors *prometheus.CounterVec
	// PrepareDuration is the time to prepare one claim.
	PrepareDuration prometheus.Histogram
	// UnprepareClaims counts claims the kubelet asked to unprepare.
	UnprepareClaims prometheus.Counter
	// UnprepareErrors counts claims that failed to unprepare.
	UnprepareErrors prometheus.Counter
	// UnprepareDuration is the time to unprepare one claim.
	UnprepareDuration prometheus.Histogram
	// PublishedDevices is the number of devices (attached pools) in the node's ResourceSlice.
	PublishedDevices prometheus.Gauge
	// SliceUpdates counts the times the node's devices changed and were handed to
	// the ResourceSlice controller: each is one ResourceSlice write.
	SliceUpdates prometheus.Counter
}

// New creates the metrics and registers them, with the Go and process collectors.
func New() *Metrics {
	buckets := prometheus.ExponentialBuckets(0.0005, 2.5, 12)
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		PrepareClaims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: PrepareClaimsName, Help: "ResourceClaims the kubelet asked to prepare.",
		}),
		PrepareErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: PrepareErrorsName, Help: "ResourceClaims that failed to prepare, by reason (not_online, not_found, wrong_node, memory_service, cdi, wrong_allocation).",
		}, []string{"reason"}),
		PrepareDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: PrepareDurationName, Help: "Time to prepare one ResourceClaim: memory service check and CDI spec.", Buckets: buckets,
		}),
		UnprepareClaims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: UnprepareClaimsName, Help: "ResourceClaims the kubelet asked to unprepare.",
		}),
		UnprepareErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: UnprepareErrorsName, Help: "ResourceClaims that failed to unprepare.",
		}),
		UnprepareDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: UnprepareDurationName, Help: "Time to unprepare one ResourceClaim.", Buckets: buckets,
		}),
		PublishedDevices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: PublishedDevicesName, Help: "Devices (pools attached to this node) in the node's ResourceSlice.",
		}),
		SliceUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: SliceUpdatesName, Help: "Times the node's devices changed and its ResourceSlice was written again.",
		}),
	}
	m.registry.MustRegister(
		m.PrepareClaims, m.PrepareErrors, m.PrepareDuration,
		m.UnprepareClaims, m.UnprepareErrors, m.UnprepareDuration, m.PublishedDevices, m.SliceUpdates, pki.NewExpiryCollector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Every series exists from the start, at zero, so rates and alerts see it.
	for _, reason := range Reasons() {
		m.PrepareErrors.WithLabelValues(reason)
	}
	return m
}

// Reasons lists the values of the "reason" label.
func Reasons() []string {
	return []string{ReasonNotOnline, ReasonNotFound, ReasonWrongNode, ReasonMemoryService, ReasonCDI, ReasonWrongAllocation}
}

// Registry is where the metrics are registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}
