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

// Package metrics holds the node agent's Prometheus metrics.
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
	OnlineBytesName        = "dynamic_memory_agent_online_bytes"
	CommandsName           = "dynamic_memory_agent_commands_total"
	CommandErrorsName      = "dynamic_memory_agent_command_errors_total"
	OnlineDurationName     = "dynamic_memory_agent_online_duration_seconds"
	OfflineDurationName    = "dynamic_memory_agent_offline_duration_seconds"
	OfflineBusyRetriesName = "dynamic_memory_agent_offline_busy_retries_total"
	SessionConnectedName   = "dynamic_memory_agent_session_connected"
	SessionReconnectsName  = "dynamic_memory_agent_session_reconnects_total"
	KubepodsLimitName      = "dynamic_memory_agent_kubepods_memory_limit_bytes"
	CheckpointCorruptName  = "dynamic_memory_agent_checkpoint_corrupt"
)

// Names lists every metric the agent exports, for dashboards and alert rules.
func Names() []string {
	return []string{
		OnlineBytesName, CommandsName, CommandErrorsName, OnlineDurationName,
		OfflineDurationName, OfflineBusyRetriesName, SessionConnectedName,
		SessionReconnectsName, KubepodsLimitName, CheckpointCorruptName, pki.ExpiryMetric,
	}
}

// Command kinds, the "command" label.
const (
	CommandOnline  = "online"
	CommandOffline = "offline"
)

// Metrics are the agent's metrics in their own registry.
type Metrics struct {
	registry *prometheus.Registry

	// OnlineBytes is the pool memory online on this node.
	OnlineBytes prometheus.Gauge
	// Commands counts commands by kind and outcome (online, offline, failed).
	Commands *prometheus.CounterVec
	// CommandErrors counts failed commands by kind.
	CommandErrors *prometheus.CounterVec
	// OnlineDuration is how long onlining a claim's memory took.
	OnlineDuration prometheus.Histogram
	// OfflineDuration is how long offlining a claim's memory took.
	OfflineDuration prometheus.Histogram
	// OfflineBusyRetries counts EBUSY answers while offlining blocks.
	OfflineBusyRetries prometheus.Counter
	// SessionConnected is 1 while the agent holds a session with the memory service.
	SessionConnected prometheus.Gauge
	// SessionReconnects counts sessions opened after the first.
	SessionReconnects prometheus.Counter
	// KubepodsLimit is the kubepods cgroup memory limit the agent set (-1: unlimited).
	KubepodsLimit prometheus.Gauge
	// CheckpointCorrupt is 1 when the agent started from a checkpoint it could not
	// parse (set aside), so it knows of no claim's memory.
	CheckpointCorrupt prometheus.Gauge
}

// latencyBuckets span a single 128 MiB block (about a millisecond) to many GiB
// with busy retries (tens of seconds).
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2.5, 14)

// New creates the metrics and registers them, with the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		OnlineBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: OnlineBytesName, Help: "Bytes of pool memory online on this node.",
		}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: CommandsName, Help: "Commands from the memory service, by command (online, offline) and outcome (online, offline, failed).",
		}, []string{"command", "outcome"}),
		CommandErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: CommandErrorsName, Help: "Commands that failed, by command (online, offline).",
		}, []string{"command"}),
		OnlineDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: OnlineDurationName, Help: "Time to make a claim's memory online: waiting for it to appear, then onlining its blocks.", Buckets: latencyBuckets,
		}),
		OfflineDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: OfflineDurationName, Help: "Time to take a claim's memory offline, busy retries included.", Buckets: latencyBuckets,
		}),
		OfflineBusyRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: OfflineBusyRetriesName, Help: "Times the kernel answered EBUSY to offlining a memory block and the agent retried.",
		}),
		SessionConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: SessionConnectedName, Help: "1 while the agent holds a session with the memory service, 0 otherwise.",
		}),
		SessionReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: SessionReconnectsName, Help: "Sessions with the memory service opened after the first one.",
		}),
		KubepodsLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: KubepodsLimitName, Help: "Memory limit of the kubepods cgroup set by the agent, bytes (-1: unlimited).",
		}),
		CheckpointCorrupt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: CheckpointCorruptName, Help: "1 if the agent started from a checkpoint it could not parse (kept as <file>.corrupt-<time>) and so knows of no claim's memory on the node, 0 otherwise.",
		}),
	}
	m.registry.MustRegister(
		m.OnlineBytes, m.Commands, m.CommandErrors, m.OnlineDuration, m.OfflineDuration,
		m.OfflineBusyRetries, m.SessionConnected, m.SessionReconnects, m.KubepodsLimit, m.CheckpointCorrupt,
		pki.NewExpiryCollector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Every series exists from the start, at zero, so rates and alerts see it.
	for command, outcomes := range map[string][]string{CommandOnline: {"online", "failed"}, CommandOffline: {"offline", "failed"}} {
		for _, outcome := range outcomes {
			m.Commands.WithLabelValues(command, outcome)
		}
		m.CommandErrors.WithLabelValues(command)
	}
	return m
}

// Registry is where the metrics are registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}
