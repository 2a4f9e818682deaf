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

// Package metrics defines the memory service's Prometheus metrics. Names start with
// dynamic_memory_; Names lists them all (the dashboard and alert rules are checked
// against it).
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

// Metric names.
const (
	AllocationsTotal            = "dynamic_memory_allocations_total"
	AllocationErrorsTotal       = "dynamic_memory_allocation_errors_total"
	ReservationsTotal           = "dynamic_memory_reservations_total"
	ReservationsExpiredTotal    = "dynamic_memory_reservations_expired_total"
	ReleasesTotal               = "dynamic_memory_releases_total"
	ProvisioningDuration        = "dynamic_memory_provisioning_duration_seconds"
	ReleaseDuration             = "dynamic_memory_release_duration_seconds"
	BackendOperationDuration    = "dynamic_memory_backend_operation_duration_seconds"
	BackendErrorsTotal          = "dynamic_memory_backend_errors_total"
	AgentCommandDuration        = "dynamic_memory_agent_command_duration_seconds"
	GRPCRequestsTotal           = "dynamic_memory_grpc_requests_total"
	GRPCRequestDuration         = "dynamic_memory_grpc_request_duration_seconds"
	CurrentUsageBytes           = "dynamic_memory_current_usage_bytes"
	OnlineBytes                 = "dynamic_memory_online_bytes"
	PoolCapacityBytes           = "dynamic_memory_pool_capacity_bytes"
	PoolFreeBytes               = "dynamic_memory_pool_free_bytes"
	PoolReady                   = "dynamic_memory_pool_ready"
	Reservations                = "dynamic_memory_reservations"
	AgentConnected              = "dynamic_memory_agent_connected"
	WatchSubscribers            = "dynamic_memory_watch_subscribers"
	Leader                      = "dynamic_memory_leader"
	StatusWritesTotal           = "dynamic_memory_status_writes_total"
	StatusWriteErrorsTotal      = "dynamic_memory_status_write_errors_total"
	ReconcileReleasesTotal      = "dynamic_memory_reconcile_releases_total"
	ReconcileOrphanExtentsTotal = "dynamic_memory_reconcile_orphan_extents_total"
	ClaimsSetAside              = "dynamic_memory_claims_set_aside"
	PoolWithheldBytes           = "dynamic_memory_pool_withheld_bytes"
	ClaimsReleaseBlocked        = "dynamic_memory_claims_release_blocked"
	ClaimsAdoptedTotal          = "dynamic_memory_claims_adopted_total"
	CertificateRequestsTotal    = "dynamic_memory_certificate_requests_total"
)

// Names lists every metric the service exports, for dashboards and tests.
var Names = []string{
	AllocationsTotal, AllocationErrorsTotal, ReservationsTotal, ReservationsExpiredTotal,
	ReleasesTotal, ProvisioningDuration, ReleaseDuration, BackendOperationDuration,
	BackendErrorsTotal, AgentCommandDuration, GRPCRequestsTotal, GRPCRequestDuration,
	CurrentUsageBytes, OnlineBytes, PoolCapacityBytes, PoolFreeBytes, PoolReady,
	Reservations, AgentConnected, WatchSubscribers, Leader, StatusWritesTotal,
	StatusWriteErrorsTotal, ReconcileReleasesTotal, ReconcileOrphanExtentsTotal,
	ClaimsSetAside, PoolWithheldBytes, ClaimsReleaseBlocked, ClaimsAdoptedTotal,
	CertificateRequestsTotal, pki.ExpiryMetric,
}

// Metrics holds the service's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	Allocations         *prometheus.CounterVec // pool
	AllocationErrors    *prometheus.CounterVec // pool, reason
	ReservationsMade    *prometheus.CounterVec // pool
	ReservationsExpired prometheus.Counter
	Releases            *prometheus.CounterVec   // pool
	Provisioning        *prometheus.HistogramVec // pool
	Release             *prometheus.HistogramVec // pool
	BackendOp           *prometheus.HistogramVec // pool, operation
	BackendErrors       *prometheus.CounterVec   // pool, operation
	AgentCommand        *prometheus.HistogramVec // command, outcome
	GRPCRequests        *prometheus.CounterVec   // method, code
	GRPCDuration        *prometheus.HistogramVec // method
	WatchSubs           prometheus.Gauge
	IsLeader            prometheus.Gauge
	StatusWrites        prometheus.Counter
	StatusWriteErrors   prometheus.Counter
	ReconcileReleases   *prometheus.CounterVec // reason
	ClaimsAdopted       *prometheus.CounterVec // result
	OrphanExtents       prometheus.Counter
	ReleasesBlocked     *prometheus.GaugeVec   // pool, node
	CertificateRequests *prometheus.CounterVec // result, reason
}

// State is what the gauges are read from at scrape time.
type State interface {
	Snapshot() ledger.Snapshot
	List() []ledger.Reservation
	SetAsideClaims() []ledger.SetAside
}

// New registers every metric in a new registry; gauges of pools, usage and
// reservations are read from state at scrape time, connected from the agent sessions.
func New(state State, connected func() []string) *Metrics {
	latency := []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: AllocationsTotal, Help: "Claims whose memory was provisioned and went online, by pool.",
		}, []string{"pool"}),
		AllocationErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: AllocationErrorsTotal, Help: "Failed reservations and provisionings, by pool and reason (exhausted, backend, agent, store, invalid, other).",
		}, []string{"pool", "reason"}),
		ReservationsMade: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ReservationsTotal, Help: "Reservations made in the ledger, by pool.",
		}, []string{"pool"}),
		ReservationsExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: ReservationsExpiredTotal, Help: "Reserved entries dropped because their TTL passed without provisioning.",
		}),
		Releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ReleasesTotal, Help: "Provisioned claims whose extents went back to the pool, by pool.",
		}, []string{"pool"}),
		Provisioning: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: ProvisioningDuration, Help: "Time from the start of provisioning to the memory being online, by pool.", Buckets: latency,
		}, []string{"pool"}),
		Release: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: ReleaseDuration, Help: "Time from the start of a release to the extents being back in the pool, by pool.", Buckets: latency,
		}, []string{"pool"}),
		BackendOp: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: BackendOperationDuration, Help: "Duration of device backend operations, by pool and operation (add, release, list).", Buckets: latency,
		}, []string{"pool", "operation"}),
		BackendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: BackendErrorsTotal, Help: "Device backend operations that failed, by pool and operation.",
		}, []string{"pool", "operation"}),
		AgentCommand: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: AgentCommandDuration, Help: "Time for a node agent to answer a command, by command (online, offline) and outcome.", Buckets: latency,
		}, []string{"command", "outcome"}),
		GRPCRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: GRPCRequestsTotal, Help: "gRPC requests handled, by method and status code.",
		}, []string{"method", "code"}),
		GRPCDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: GRPCRequestDuration, Help: "Duration of unary gRPC requests, by method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30},
		}, []string{"method"}),
		WatchSubs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: WatchSubscribers, Help: "Open WatchPools streams.",
		}),
		IsLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: Leader, Help: "1 if this instance is the leader and serves requests.",
		}),
		StatusWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: StatusWritesTotal, Help: "DynamicMemoryPool status updates written.",
		}),
		StatusWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: StatusWriteErrorsTotal, Help: "DynamicMemoryPool status updates that failed.",
		}),
		ReconcileReleases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ReconcileReleasesTotal, Help: "Releases started by the reconciler, by reason (deallocated, deleted, reallocated, not-reserved-for-pod).",
		}, []string{"reason"}),
		OrphanExtents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: ReconcileOrphanExtentsTotal, Help: "Extents found on a device with no claim, released at start.",
		}),
		ReleasesBlocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: ClaimsReleaseBlocked, Help: "Claims being released whose memory cannot be taken back: their node agent cannot offline it because a memory block stays busy (condition ReleaseBlocked), by pool and node.",
		}, []string{"pool", "node"}),
		ClaimsAdopted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ClaimsAdoptedTotal, Help: "Claims allocated by another scheduler (no reservation) that the service provisioned, by result (provisioning, refused, failed).",
		}, []string{"result"}),
		CertificateRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: CertificateRequestsTotal, Help: "PodCertificateRequests of the memory service's signer answered, by result (issued, denied, failed) and reason.",
		}, []string{"result", "reason"}),
	}
	m.Registry.MustRegister(
		m.Allocations, m.AllocationErrors, m.ReservationsMade, m.ReservationsExpired, m.Releases,
		m.Provisioning, m.Release, m.BackendOp, m.BackendErrors, m.AgentCommand,
		m.GRPCRequests, m.GRPCDuration, m.WatchSubs, m.IsLeader, m.StatusWrites,
		m.StatusWriteErrors, m.ReconcileReleases, m.OrphanExtents, m.ReleasesBlocked,
		m.ClaimsAdopted, m.CertificateRequests, &stateCollector{state: state, connected: connected}, pki.NewExpiryCollector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

var (
	usageDesc = prometheus.NewDesc(CurrentUsageBytes,
		"Pool memory held by claims on a node (reserved, provisioning, online or releasing), bytes.", []string{"pool", "node"}, nil)
	onlineDesc = prometheus.NewDesc(OnlineBytes,
		"Pool memory online on a node, bytes.", []string{"pool", "node"}, nil)
	capacityDesc = prometheus.NewDesc(PoolCapacityBytes, "Capacity of a pool, bytes.", []string{"pool"}, nil)
	freeDesc     = prometheus.NewDesc(PoolFreeBytes, "Capacity of a pool not held by any claim, bytes.", []string{"pool"}, nil)
	readyDesc    = prometheus.NewDesc(PoolReady, "1 if the pool's backend answers and the pool serves reservations.", []string{"pool"}, nil)
	stateDesc    = prometheus.NewDesc(Reservations, "Reservations by pool and state.", []string{"pool", "state"}, nil)
	agentDesc    = prometheus.NewDesc(AgentConnected, "1 if the node agent of a node holds a session.", []string{"node"}, nil)
	setAsideDesc = prometheus.NewDesc(ClaimsSetAside,
		"DynamicMemoryClaims the service could not restore after a restart (condition SetAside), by pool: not served until a person resolves them.", []string{"pool"}, nil)
	withheldDesc = prometheus.NewDesc(PoolWithheldBytes,
		"Device ranges of a pool withheld for claims that could not be restored, bytes.", []string{"pool"}, nil)
)

// stateCollector reads the ledger at scrape time: no cost per operation.
type stateCollector struct {
	state     State
	connected func() []string
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{usageDesc, onlineDesc, capacityDesc, freeDesc, readyDesc, stateDesc, agentDesc, setAsideDesc, withheldDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.state.Snapshot().Pools {
		ch <- prometheus.MustNewConstMetric(capacityDesc, prometheus.GaugeValue, float64(p.Capacity), p.Name)
		ch <- prometheus.MustNewConstMetric(freeDesc, prometheus.GaugeValue, float64(p.Free), p.Name)
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, boolValue(p.Ready), p.Name)
		ch <- prometheus.MustNewConstMetric(withheldDesc, prometheus.GaugeValue, float64(p.Withheld), p.Name)
		for _, h := range p.Hosts {
			ch <- prometheus.MustNewConstMetric(usageDesc, prometheus.GaugeValue, float64(h.Reserved), p.Name, h.Node)
			ch <- prometheus.MustNewConstMetric(onlineDesc, prometheus.GaugeValue, float64(h.Online), p.Name, h.Node)
		}
	}
	counts := map[[2]string]int{}
	for _, r := range c.state.List() {
		counts[[2]string{r.Pool, string(r.State)}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	setAside := map[string]int{}
	for _, a := range c.state.SetAsideClaims() {
		setAside[a.Pool]++
	}
	for pool, n := range setAside {
		ch <- prometheus.MustNewConstMetric(setAsideDesc, prometheus.GaugeValue, float64(n), pool)
	}
	if c.connected != nil {
		for _, n := range c.connected() {
			ch <- prometheus.MustNewConstMetric(agentDesc, prometheus.GaugeValue, 1, n)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
