// Package agent is the node agent's core: it holds an AgentSession with the memory
// service for its node, onlines and offlines pool memory on command, and keeps the
// node's view current (node status, pod cgroup limit, claim device conditions).
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/cgroup"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Host makes pool memory online and offline on this machine.
type Host interface {
	BlockSize() int64
	Online(ctx context.Context, req hostmem.Request, progress hostmem.Progress) (hostmem.Result, error)
	Offline(ctx context.Context, req hostmem.Request, progress hostmem.Progress) error
	Check(ctx context.Context, req hostmem.Request) (hostmem.Result, error)
}

// NodeStatus shows the agent's state on the Node object.
type NodeStatus interface {
	Update(ctx context.Context, s nodestatus.Status) error
}

// Limiter keeps the pod cgroup's memory limit at the kubelet's value plus the pool
// memory online.
type Limiter interface {
	Set(onlineBytes int64) (int64, error)
	State() cgroup.State
}

// ClaimStatus writes device conditions on the claims.
type ClaimStatus interface {
	Online(claimUID, message string)
	Failed(claimUID, message string)
	Forget(claimUID string)
}

// Config configures an Agent. Node, Client, Host and Metrics are required.
type Config struct {
	// Node is the Kubernetes node the agent runs on; its certificate must name it.
	Node string
	// Client talks to the memory service.
	Client memservicev1.MemoryServiceClient
	// Host onlines and offlines memory.
	Host Host
	// NodeStatus, Limiter and Claims are optional.
	NodeStatus NodeStatus
	Limiter    Limiter
	Claims     ClaimStatus
	Metrics    *metrics.Metrics
	// Clock paces heartbeats and reconnects.
	Clock clock.WithTicker
	// CheckpointFile keeps the claims online across restarts (empty: in memory only).
	CheckpointFile string
	// HeartbeatInterval is how often host state is sent. Default 10s.
	HeartbeatInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between session attempts, and
	// between node status write attempts. Defaults 1s, 30s.
	MinBackoff, MaxBackoff time.Duration
	// Version is reported in the hello.
	Version string
}

// Agent is the node agent.
type Agent struct {
	cfg   Config
	queue claimQueue
	// changeMu serializes the updates that follow a change (see changed).
	changeMu sync.Mutex
	// saved is the checkpoint content last written (guarded by changeMu).
	saved []byte
	// commands are the commands still running.
	commands sync.WaitGroup
	// status writes the node status in the background (nil without NodeStatus).
	status *statusWriter

	mu        sync.Mutex
	cp        checkpoint
	connected bool
	stopped   bool
	lastError string
}

// New validates the configuration and loads the checkpoint.
func New(cfg Config) (*Agent, error) {
	var errs []error
	if cfg.Node == "" {
		errs = append(errs, errors.New("node name is required (--node-name or NODE_NAME)"))
	}
	if cfg.Client == nil {
		errs = append(errs, errors.New("memory service client is required"))
	}
	if cfg.Host == nil {
		errs = append(errs, errors.New("host backend is required"))
	}
	if cfg.Metrics == nil {
		errs = append(errs, errors.New("metrics are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	cp, err := loadCheckpoint(cfg.CheckpointFile)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, cp: cp, queue: claimQueue{tails: map[string]chan struct{}{}}}
	if cfg.NodeStatus != nil {
		a.status = newStatusWriter(cfg.NodeStatus, cfg.Clock, cfg.MinBackoff, cfg.MaxBackoff)
	}
	return a, nil
}

// Connected tells whether the agent holds a session with the memory service.
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.connected
}

// Run checks what of the checkpoint is still online, then keeps a session with the
// memory service until ctx ends. The node status is written in the background
// meanwhile; the last one, saying that the agent stopped, before Run returns.
func (a *Agent) Run(ctx context.Context) error {
	var writer sync.WaitGroup
	if a.status != nil {
		writer.Go(func() { a.status.run(ctx) })
	}
	a.restore(ctx)
	err := a.sessions(ctx)
	a.commands.Wait()
	// Say on the node that the agent is gone, with a context of its own: ctx has
	// ended, and with it the writer.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	a.setConnected(stopCtx, false, nil)
	writer.Wait()
	if a.status != nil {
		if ferr := a.status.write(stopCtx); ferr != nil {
			klog.FromContext(ctx).Error(ferr, "Updating the node status on stop failed")
		}
	}
	return err
}

// restore keeps the checkpointed claims whose memory is still online and drops
// the others, so the first hello tells the service the truth.
func (a *Agent) restore(ctx context.Context) {
	logger := klog.FromContext(ctx)
	a.mu.Lock()
	claims := maps.Clone(a.cp.Claims)
	a.mu.Unlock()
	kept := 0
	for uid, c := range claims {
		res, err := a.cfg.Host.Check(ctx, hostmem.Request{ClaimUID: uid, Pool: c.Pool, Extents: c.Extents})
		a.mu.Lock()
		if err != nil {
			// Not reported online; the pool is kept so that an offline command for
			// whatever is left of it goes to the right region.
			logger.Info("Claim memory from the checkpoint is no longer online, not reporting it", "claimUID", uid, "err", err)
			delete(a.cp.Claims, uid)
			a.cp.Pools[uid] = c.Pool
		} else {
			c.NUMANodes, c.Bytes = res.NUMANodes, res.Bytes
			a.cp.Claims[uid] = c
			kept++
		}
		a.mu.Unlock()
	}
	logger.Info("Restored the claims online on this host from the checkpoint", "online", kept, "checkpointed", len(claims))
	a.changed(ctx)
}

// hostState is what the service is told about this host.
func (a *Agent) hostState() *memservicev1.HostState {
	a.mu.Lock()
	defer a.mu.Unlock()
	hs := &memservicev1.HostState{MemoryBlockBytes: a.cfg.Host.BlockSize()}
	for _, uid := range slices.Sorted(maps.Keys(a.cp.Claims)) {
		c := a.cp.Claims[uid]
		hs.Online = append(hs.Online, &memservicev1.OnlineClaim{ClaimUid: uid, Bytes: c.Bytes, NumaNodes: c.NUMANodes})
		hs.OnlineBytes += c.Bytes
	}
	return hs
}

// changed brings everything that follows the online bytes up to date: checkpoint,
// pod cgroup limit, node status and metrics. Calls are serialized; the claims are
// read under the agent's lock, the I/O is done outside it. The checkpoint and the
// cgroup limit are written before changed returns, so before a command is
// acknowledged; the node status is handed to the background writer (an API server
// round trip must not delay the command). Failures are logged and retried at the
// next change or heartbeat; they do not undo the memory operation.
func (a *Agent) changed(ctx context.Context) {
	logger := klog.FromContext(ctx)
	a.changeMu.Lock()
	defer a.changeMu.Unlock()

	a.mu.Lock()
	cp := checkpoint{Claims: maps.Clone(a.cp.Claims), Pools: maps.Clone(a.cp.Pools), Cgroup: a.cp.Cgroup}
	status := a.nodeStatusLocked()
	a.mu.Unlock()

	var online int64
	for _, c := range cp.Claims {
		online += c.Bytes
	}
	status.OnlineBytes = online
	a.cfg.Metrics.OnlineBytes.Set(float64(online))
	if a.cfg.Limiter != nil {
		limit, err := a.cfg.Limiter.Set(online)
		if err != nil {
			logger.Error(err, "Adjusting the pod cgroup memory limit failed")
		} else {
			a.cfg.Metrics.KubepodsLimit.Set(float64(limit))
		}
		cp.Cgroup = a.cfg.Limiter.State()
		a.mu.Lock()
		a.cp.Cgroup = cp.Cgroup
		a.mu.Unlock()
	}
	if err := a.saveIfChanged(cp); err != nil {
		logger.Error(err, "Saving the agent checkpoint failed")
	}
	if a.status != nil {
		a.status.set(status)
	}
}

// saveIfChanged writes the checkpoint when its content differs from the last
// write (heartbeats call changed too). Called with changeMu held.
func (a *Agent) saveIfChanged(cp checkpoint) error {
	if a.cfg.CheckpointFile == "" {
		return nil
	}
	data, err := cp.encode()
	if err != nil {
		return err
	}
	if bytes.Equal(data, a.saved) {
		return nil
	}
	if err := writeAtomically(a.cfg.CheckpointFile, data); err != nil {
		return err
	}
	a.saved = data
	return nil
}

// nodeStatusLocked is the agent's condition on the node (without the bytes).
func (a *Agent) nodeStatusLocked() nodestatus.Status {
	s := nodestatus.Status{Ready: a.connected}
	switch {
	case a.connected:
		s.Reason, s.Message = "SessionEstablished", "the node agent holds a session with the memory service"
	case a.stopped:
		s.Reason, s.Message = "AgentStopped", "the node agent is not running"
	case a.lastError != "":
		s.Reason, s.Message = "SessionLost", "no session with the memory service: "+a.lastError
	default:
		s.Reason, s.Message = "NoSession", "the node agent has no session with the memory service"
	}
	return s
}

func (a *Agent) setConnected(ctx context.Context, connected bool, lastErr error) {
	a.mu.Lock()
	a.connected = connected
	if lastErr != nil {
		a.lastError = lastErr.Error()
	}
	a.mu.Unlock()
	if connected {
		a.cfg.Metrics.SessionConnected.Set(1)
	} else {
		a.cfg.Metrics.SessionConnected.Set(0)
	}
	a.changed(ctx)
}

// claimQueue runs the commands of each claim one at a time, in the order the service
// sent them: a command takes its turn when it is received (on the session's receive
// loop) and its work waits for the previous command of the same claim. (A lock taken
// by each command's goroutine would let an offline run before the online sent just
// before it, leaving memory online for a released claim.)
type claimQueue struct {
	mu    sync.Mutex
	tails map[string]chan struct{}
}

// turn takes the next turn for a claim: wait blocks until the claim's earlier turns
// ended, done ends this one.
func (q *claimQueue) turn(claimUID string) (wait, done func()) {
	q.mu.Lock()
	prev := q.tails[claimUID]
	mine := make(chan struct{})
	q.tails[claimUID] = mine
	q.mu.Unlock()
	wait = func() {
		if prev != nil {
			<-prev
		}
	}
	done = func() {
		q.mu.Lock()
		if q.tails[claimUID] == mine {
			delete(q.tails, claimUID)
		}
		q.mu.Unlock()
		close(mine)
	}
	return wait, done
}

// describe says where memory went, for conditions and logs.
func describe(bytes int64, numa []int32) string {
	return fmt.Sprintf("%d MiB online in NUMA node(s) %v", bytes>>20, numa)
}
