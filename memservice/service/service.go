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

// Package service wires the memory service together: pools from DynamicMemoryPool
// objects, the ledger, the device backends, DynamicMemoryClaim persistence, the
// ResourceClaim reconciler, the gRPC server and the metrics endpoint, under leader
// election. cmd/memservice runs it; integration tests run it in-process.
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
	dminformers "github.com/dynamicmemory/kube-dynamic-memory/api/client/informers/externalversions"
	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/metricsserver"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/reconciler"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/server"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/signer"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/store"
)

// DefaultPoolStatusInterval is the default Config.PoolStatusInterval. The defaults
// of the other durations are their owners': ledger.DefaultReservationTTL,
// reconciler.DefaultProvisionGracePeriod and provision.DefaultAgentCommandTimeout.
const DefaultPoolStatusInterval = time.Second

// MinPoolStatusInterval is the shortest PoolStatusInterval: each write sends every
// node's share of the pool to the API server.
const MinPoolStatusInterval = 100 * time.Millisecond

// Leader election timing: a leader renews its Lease every retryPeriod and gives it up
// when it could not renew for renewDeadline; a standby takes the Lease over once it
// has gone unrenewed for leaseDuration.
const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
)

// Config configures a Service.
type Config struct {
	// RESTConfig reaches the Kubernetes API server.
	RESTConfig *rest.Config
	// ListenAddress of the gRPC server ("127.0.0.1:0" picks a free port; see Addr).
	ListenAddress string
	// Metrics serves /metrics over HTTPS to callers allowed by the API server, and
	// /healthz and /readyz (Address empty: none; package metricsserver).
	Metrics metricsserver.Options
	// TLS files of the gRPC server (mutual TLS: clients must present a certificate
	// signed by CAFile).
	TLS struct {
		CAFile, CertFile, KeyFile string
	}
	// Signer, when its CA files are set, makes the service hold the CA of its clients:
	// instead of TLS files it serves with a certificate it issues itself (for
	// ServingNames), and while leading it signs the PodCertificateRequests of its
	// clients' pods and publishes the CA as a ClusterTrustBundle (package signer).
	Signer struct {
		// CAFile and CAKeyFile hold the CA (its file may hold the previous CA after
		// it during a rotation: both are trusted).
		CAFile, CAKeyFile string
		// ServingNames are the DNS names and IPs of the serving certificate.
		ServingNames []string
		signer.Config
	}
	// ReservationTTL: a Reserved entry not provisioned within it is dropped
	// (default ledger.DefaultReservationTTL).
	ReservationTTL time.Duration
	// ProvisionGracePeriod: provisioned memory whose claim got no pod within it is
	// released (default reconciler.DefaultProvisionGracePeriod).
	ProvisionGracePeriod time.Duration
	// AgentCommandTimeout bounds waiting for a node agent to online memory (default
	// provision.DefaultAgentCommandTimeout).
	AgentCommandTimeout time.Duration
	// PoolStatusInterval is the least time between two status writes of a
	// DynamicMemoryPool (at least MinPoolStatusInterval; default
	// DefaultPoolStatusInterval): after a change the writer waits this long, then
	// writes the latest status of every changed pool.
	PoolStatusInterval time.Duration
	// SnapshotInterval is the least time between two WatchPools snapshots (default
	// server.DefaultSnapshotInterval).
	SnapshotInterval time.Duration
	// LeaderElection on a Lease: only the leader serves; others wait. The leader's
	// record writes name its Identity, which the API server checks against the
	// Lease's holder (store.LeaderPolicy), and it touches a device only while its own
	// view says it holds the Lease.
	LeaderElection struct {
		Enabled                   bool
		Namespace, Name, Identity string
	}
	// Clock (default: real).
	Clock clock.WithTicker
	// NewBackend builds a pool's device backend (default: from the pool's spec).
	// Tests use it to share one simulated device between service instances.
	NewBackend func(pool *v1alpha1.DynamicMemoryPool) (provision.Backend, error)
}

func (c *Config) validate() error {
	var errs []error
	if c.RESTConfig == nil {
		errs = append(errs, errors.New("restConfig is required"))
	}
	if c.ListenAddress == "" {
		errs = append(errs, errors.New("listenAddress is required, for example :8443 or 127.0.0.1:0"))
	}
	switch tls, sig := c.TLS.CAFile != "" || c.TLS.CertFile != "" || c.TLS.KeyFile != "", c.Signer.CAFile != "" || c.Signer.CAKeyFile != ""; {
	case tls && sig:
		errs = append(errs, errors.New("give either tls (files of a certificate bundle) or signer (a CA the service issues from), not both"))
	case sig && (c.Signer.CAFile == "" || c.Signer.CAKeyFile == "" || len(c.Signer.ServingNames) == 0):
		errs = append(errs, errors.New("signer.caFile, signer.caKeyFile and signer.servingNames are required to sign"))
	case !sig && (c.TLS.CAFile == "" || c.TLS.CertFile == "" || c.TLS.KeyFile == ""):
		errs = append(errs, errors.New("tls.caFile, tls.certFile and tls.keyFile are required (make a dev bundle with: memservice certs), or signer's CA files"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"reservationTTL", c.ReservationTTL}, {"provisionGracePeriod", c.ProvisionGracePeriod}, {"agentCommandTimeout", c.AgentCommandTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", d.name, d.v))
		}
	}
	if c.PoolStatusInterval != 0 && c.PoolStatusInterval < MinPoolStatusInterval {
		errs = append(errs, fmt.Errorf("poolStatusInterval must be at least %s, got %s", MinPoolStatusInterval, c.PoolStatusInterval))
	}
	if c.SnapshotInterval < 0 {
		errs = append(errs, fmt.Errorf("snapshotInterval must not be negative, got %s", c.SnapshotInterval))
	}
	if le := c.LeaderElection; le.Enabled && (le.Namespace == "" || le.Name == "" || le.Identity == "") {
		errs = append(errs, errors.New("leaderElection.namespace, name and identity are required when leader election is enabled"))
	}
	if le := c.LeaderElection; le.Enabled && len(le.Identity) > store.MaxLeaderIdentity {
		errs = append(errs, fmt.Errorf("leaderElection.identity must be at most %d characters (it names the leader in every record write), got %d", store.MaxLeaderIdentity, len(le.Identity)))
	}
	return errors.Join(errs...)
}

// Service is one memory service instance.
type Service struct {
	cfg      Config
	kube     kubernetes.Interface
	store    *store.Store
	ledger   *ledger.Ledger
	sessions *session.Registry
	manager  *provision.Manager
	// reconciler keeps the ledger in step with the ResourceClaims and writes their
	// device conditions; it runs while leading.
	reconciler *reconciler.Reconciler
	metrics    *metrics.Metrics
	server     *server.Server
	listener   net.Listener
	httpSrv    *metricsserver.Server // nil without Metrics.Address
	pools      *registry
	status     *statusWriter
	lease      *leaseHold // nil without leader election
	signer     *signer.Signer
	events     record.EventBroadcaster

	serving atomic.Bool
	ready   chan struct{}
	once    sync.Once
	notify  chan struct{} // pool status writer kick
}

// New checks the config, loads the certificates and opens the gRPC listener.
func New(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("memory service config: %w", err)
	}
	if cfg.AgentCommandTimeout == 0 {
		cfg.AgentCommandTimeout = provision.DefaultAgentCommandTimeout
	}
	if cfg.PoolStatusInterval == 0 {
		cfg.PoolStatusInterval = DefaultPoolStatusInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	kube, err := kubernetes.NewForConfig(cfg.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	// Custom resources are served as JSON only.
	dmConfig := rest.CopyConfig(cfg.RESTConfig)
	dmConfig.ContentType = runtime.ContentTypeJSON
	dm, err := versioned.NewForConfig(dmConfig)
	if err != nil {
		return nil, fmt.Errorf("%s client: %w", v1alpha1.SchemeGroupVersion, err)
	}
	var tlsConfig *tls.Config
	var authority *pki.Authority
	if cfg.Signer.CAFile != "" {
		if authority, err = pki.NewAuthority(cfg.Signer.CAFile, cfg.Signer.CAKeyFile); err == nil {
			lifetime := cfg.Signer.Lifetime
			if lifetime == 0 {
				lifetime = signer.DefaultLifetime
			}
			tlsConfig, err = authority.ServerTLSConfig(cfg.Signer.ServingNames, lifetime)
		}
	} else {
		tlsConfig, err = pki.ServerTLSConfig(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.CAFile)
	}
	if err != nil {
		return nil, fmt.Errorf("memory service TLS: %w", err)
	}
	s := &Service{
		cfg: cfg, kube: kube,
		sessions: session.NewRegistry(),
		ready:    make(chan struct{}),
		notify:   make(chan struct{}, 1),
	}
	var lease provision.Lease
	if le := cfg.LeaderElection; le.Enabled {
		// The Lease carries the holder's version, for `kubectl dynamic-memory version`.
		lock := &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
			Client:     kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
			Labels:     map[string]string{deploy.VersionLabel: deploy.VersionLabelValue(version.Version)},
		}
		// Real time, as the leader elector's: the Lease is held in real time.
		s.lease = newLeaseHold(lock, clock.RealClock{}, leaseDuration)
		lease = s.lease
		s.store = store.New(dm.DynamicMemoryV1alpha1(), le.Identity)
	} else {
		s.store = store.New(dm.DynamicMemoryV1alpha1(), "")
	}
	s.ledger = ledger.New(cfg.Clock, ledger.Options{ReservationTTL: cfg.ReservationTTL, OnChange: s.changed})
	s.metrics = metrics.New(s.ledger, s.sessions.Connected)
	newBackend := cfg.NewBackend
	if newBackend == nil {
		newBackend = func(pool *v1alpha1.DynamicMemoryPool) (provision.Backend, error) { return NewBackend(pool, cfg.Clock) }
	}
	s.pools = newRegistry(dminformers.NewSharedInformerFactory(dm, 0), s.ledger, cfg.Clock, newBackend, s.changed)
	s.status = &statusWriter{
		client: dm.DynamicMemoryV1alpha1(), ledger: s.ledger, pools: s.pools, connected: s.sessions.Connected,
		metrics: s.metrics, clock: cfg.Clock, interval: cfg.PoolStatusInterval, notify: s.notify,
	}
	s.events = record.NewBroadcaster()
	s.manager = provision.New(provision.Config{
		Ledger: s.ledger, Devices: s.pools, Agents: s.sessions, Store: s.store, Lease: lease, Metrics: s.metrics, Clock: cfg.Clock,
		AgentCommandTimeout: cfg.AgentCommandTimeout,
		Conditions:          s.store, Events: s.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "memservice"}),
		Settled: func(uid string) { s.reconciler.Settled(uid) },
	})
	s.reconciler = reconciler.New(reconciler.Config{
		Client: s.kube, Ledger: s.ledger, Releaser: s.manager, Provisioner: s.manager,
		Events: s.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "memservice"}), Metrics: s.metrics, Clock: cfg.Clock,
		ProvisionGracePeriod: cfg.ProvisionGracePeriod,
	})
	s.server, err = server.New(server.Config{
		TLS: tlsConfig, Ledger: s.ledger, Manager: s.manager, Sessions: s.sessions, Metrics: s.metrics,
		Clock: cfg.Clock, SnapshotInterval: cfg.SnapshotInterval, Serving: s.serving.Load,
	})
	if err != nil {
		return nil, err
	}
	if authority != nil {
		sc := cfg.Signer.Config
		sc.Client, sc.Authority, sc.Metrics, sc.Clock = kube, authority, s.metrics, cfg.Clock
		sc.Events = s.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "memservice"})
		if s.signer, err = signer.New(sc); err != nil {
			return nil, err
		}
	}
	s.sessions.OnChange = s.changed
	s.sessions.OnOpen = s.reconcileHost
	s.sessions.OnProgress = func(node string, p *memservicev1.CommandProgress) {
		s.ledger.SetMessage(p.GetClaimUid(), fmt.Sprintf("node agent of %s: %s (%d of %d blocks)", node, p.GetMessage(), p.GetBlocksDone(), p.GetBlocksTotal()))
	}
	lis, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenAddress, err)
	}
	s.listener = lis
	if cfg.Metrics.Address != "" {
		if s.httpSrv, err = metricsserver.New(metricsserver.Config{
			Options: cfg.Metrics, Kube: kube,
			Metrics: promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}),
			Ready: func() error {
				if !s.serving.Load() {
					return errors.New("not serving: standby or starting")
				}
				return nil
			},
		}); err != nil {
			_ = lis.Close()
			return nil, err
		}
	}
	return s, nil
}

// MetricsAddr is the address of /metrics, /healthz and /readyz ("" without Metrics.Address).
func (s *Service) MetricsAddr() string {
	if s.httpSrv == nil {
		return ""
	}
	return s.httpSrv.Addr()
}

// Addr is the gRPC server's address (host:port).
func (s *Service) Addr() string { return s.listener.Addr().String() }

// Ready is closed once this instance leads and serves requests.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Ledger exposes the ledger, for tests that check its invariants.
func (s *Service) Ledger() *ledger.Ledger { return s.ledger }

// Metrics exposes the metrics, for tests.
func (s *Service) Metrics() *metrics.Metrics { return s.metrics }

// changed is the ledger's and sessions' change hook: never blocks.
func (s *Service) changed() {
	s.server.Notify()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends (nil then), or until leadership is lost or a component
// fails (an error: the process should exit and start again as a candidate). Run may
// be called once.
func (s *Service) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("memservice")
	ctx = klog.NewContext(ctx, logger)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.events.Shutdown()

	var wg sync.WaitGroup
	errc := make(chan error, 1) // the first error stops the service; later ones are logged
	run := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: %w", name, err)
				select {
				case errc <- err:
				default:
					logger.Error(err, "Component stopped")
				}
			}
		}()
	}
	run("grpc server", func(ctx context.Context) error { return s.server.Serve(ctx, s.listener) })
	if s.httpSrv != nil {
		run("metrics server", s.httpSrv.Serve)
	}
	run("pools", s.pools.run)
	defer func() {
		cancel()
		wg.Wait()
		s.manager.Wait()
	}()

	if !s.pools.waitSynced(ctx) {
		return nil
	}
	if !s.cfg.LeaderElection.Enabled {
		run("leader", s.lead)
	} else if err := s.elect(ctx, run); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

func (s *Service) elect(ctx context.Context, run func(string, func(context.Context) error)) error {
	le := s.cfg.LeaderElection
	lost := make(chan struct{})
	var led atomic.Bool
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            s.lease,
		LeaseDuration:   leaseDuration,
		RenewDeadline:   renewDeadline,
		RetryPeriod:     retryPeriod,
		ReleaseOnCancel: true,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaderCtx context.Context) {
				led.Store(true)
				run("leader", func(context.Context) error { return s.lead(leaderCtx) })
			},
			OnStoppedLeading: func() {
				s.lease.lose()
				close(lost)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	s.lease.follow(elector.IsLeader)
	run("leader election", func(ctx context.Context) error {
		elector.Run(ctx)
		select {
		case <-lost:
			if ctx.Err() == nil && led.Load() {
				return fmt.Errorf("lost the lease %s/%s", le.Namespace, le.Name)
			}
		default:
		}
		return nil
	})
	return nil
}

// lead rebuilds the ledger from the records and serves until ctx ends.
func (s *Service) lead(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	logger.Info("Leading: rebuilding the ledger from DynamicMemoryClaims")
	s.manager.Start(ctx)
	// Events are recorded while leading: those of the rebuild and of the flights.
	sink := s.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.kube.CoreV1().Events("")})
	defer sink.Stop()
	events := s.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "memservice"})
	rb := &rebuilder{store: s.store, ledger: s.ledger, devices: s.pools, flights: s.manager, metrics: s.metrics, events: events}
	if s.lease != nil {
		rb.lease = s.lease
	}
	if err := rb.rebuild(ctx); err != nil {
		return err
	}
	errc := make(chan error, 3)
	go func() { errc <- s.reconciler.Run(ctx) }()
	go func() { errc <- s.status.run(ctx) }()
	if s.signer != nil {
		go func() { errc <- s.signer.Run(ctx) }()
	}

	s.serving.Store(true)
	s.metrics.IsLeader.Set(1)
	s.server.SetServing(true)
	s.once.Do(func() { close(s.ready) })
	logger.Info("Serving", "address", s.Addr())
	defer func() {
		s.serving.Store(false)
		s.metrics.IsLeader.Set(0)
		s.server.SetServing(false)
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// reconcileHost compares what a node agent reports online with the ledger when its
// session opens: memory online for a claim the ledger does not hold on that node is
// offlined (the release of its extents, if any, is the device reconciliation's).
func (s *Service) reconcileHost(node string, state *memservicev1.HostState) {
	if state == nil || !s.serving.Load() {
		return
	}
	logger := klog.Background().WithValues("node", node)
	setAside := map[string]bool{}
	for _, a := range s.ledger.SetAsideClaims() {
		setAside[a.Claim.UID] = true
	}
	for _, oc := range state.GetOnline() {
		r, ok := s.ledger.Get(oc.GetClaimUid())
		if ok && r.Node == node && r.State != v1alpha1.PhaseReleased {
			continue
		}
		if setAside[oc.GetClaimUid()] {
			logger.V(2).Info("Node agent reports memory online for a claim set aside; leaving it online", "claim", oc.GetClaimUid())
			continue
		}
		logger.Info("Node agent reports memory online for a claim the service does not hold there; offlining it", "claim", oc.GetClaimUid(), "bytes", oc.GetBytes())
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AgentCommandTimeout)
		_, err := s.sessions.Offline(ctx, node, &memservicev1.OfflineCommand{ClaimUid: oc.GetClaimUid(), Bytes: oc.GetBytes()})
		cancel()
		if err != nil {
			logger.Error(err, "Offlining memory of an unknown claim", "claim", oc.GetClaimUid())
		}
	}
}
