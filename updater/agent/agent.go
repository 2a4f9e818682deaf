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
	// Online refuses blocks online already unless req.Resume says they are the
	// claim's (hostmem.ErrOnlineNotOurs).
	Online(ctx context.Context, req hostmem.Request, progress hostmem.Progress) (hostmem.Result, error)
	Offline(ctx context.Context, req hostmem.Request, progress hostmem.Progress) error
	// Check reports the memory if all of it is online (hostmem.ErrNotOnline if not).
	Check(ctx context.Context, req hostmem.Request) (hostmem.Result, error)
	// Offlined is nil if no block of the memory is online (hostmem.ErrStillOnline
	// if some is); it touches nothing.
	Offlined(ctx context.Context, req hostmem.Request) error
}

// NodeStatus shows the agent's state on the Node object.
type NodeStatus interface {
	Update(ctx context.Context, s nodestatus.Status) error
}

// Limiter keeps the pod cgroup's memory limit at the kubelet's value plus the pool
// memory online. Set hands persist the state to checkpoint before it writes a new
// limit, and writes nothing if persist fails.
type Limiter interface {
	Set(onlineBytes int64, persist func(cgroup.State) error) (int64, error)
	State() cgroup.State
	// Drifted tells whether the limit in effect is not the one Set last wrote.
	Drifted() (bool, error)
}

// Config configures an Agent. Node, Client, Host and Metrics are required.
type Config struct {
	// Node is the Kubernetes node the agent runs on; its certificate must name it.
	Node string
	// Client talks to the memory service.
	Client memservicev1.MemoryServiceClient
	// Host onlines and offlines memory.
	Host Host
	// NodeStatus and Limiter are optional.
	NodeStatus NodeStatus
	Limiter    Limiter
	Metrics    *metrics.Metrics
	// Clock paces heartbeats and reconnects.
	Clock clock.WithTicker
	// CheckpointFile keeps the claims online across restarts (empty: in memory only).
	// A file that cannot be parsed is renamed to <file>.corrupt-<time> and the agent
	// starts with an empty checkpoint: it then knows of no claim's memory, so it
	// onlines no block that is online already and offlines none it cannot prove is
	// offline.
	CheckpointFile string
	// HeartbeatInterval is how often host state is sent. Default 10s.
	HeartbeatInterval time.Duration
	// CgroupCheckInterval is how often the agent reads the pod cgroup limit to find
	// a value the kubelet wrote (it does when it starts) and raise it again.
	// Default 1s.
	CgroupCheckInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between session attempts, and
	// between node status write attempts. Defaults 1s, 30s.
	MinBackoff, MaxBackoff time.Duration
	// NodeStatusInterval is the least time between two node status writes; the
	// changes made meanwhile are written together. Default DefaultNodeStatusInterval;
	// negative: each change is written as it comes.
	NodeStatusInterval time.Duration
	// Version is reported in the hello.
	Version string
}

// DefaultNodeStatusInterval is the default Config.NodeStatusInterval: the node
// status is for people and monitoring, and the kubelet computes its own every 10s
// (nodeStatusUpdateFrequency). The first change after a quiet interval is written at
// once; a burst of pods starting or ending on the node costs one write per interval
// (at 1s it was a quarter of a request a pod in the 200-pod benchmark).
const DefaultNodeStatusInterval = 10 * time.Second

// Agent is the node agent.
type Agent struct {
	cfg   Config
	queue claimQueue
	// changeMu serializes the updates that follow a change (see changed) and the
	// changes of the checkpoint (update, record), so that a save never writes a
	// checkpoint older than a change made while it was written. Taken before mu.
	changeMu sync.Mutex
	// saved is the checkpoint content last written (guarded by changeMu).
	saved []byte
	// commands are the commands still running.
	commands sync.WaitGroup
	// status writes the node status in the background (nil without NodeStatus).
	status *statusWriter
	// corrupt, if the checkpoint could not be parsed, says why and where it was
	// set aside; Run logs it.
	corrupt error

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
	if cfg.CgroupCheckInterval == 0 {
		cfg.CgroupCheckInterval = time.Second
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
	if cfg.NodeStatusInterval == 0 {
		cfg.NodeStatusInterval = DefaultNodeStatusInterval
	}
	cp, err := loadCheckpoint(cfg.CheckpointFile)
	var corrupt error
	if errors.Is(err, errCorrupt) {
		// Starting empty is safe (nothing recorded proves any memory is a claim's),
		// failing would be a crash loop that no restart cures.
		cfg.Metrics.CheckpointCorrupt.Set(1)
		cp = emptyCheckpoint()
		kept, rerr := setAside(cfg.CheckpointFile, cfg.Clock.Now())
		corrupt = fmt.Errorf("%w (kept as %s)", err, kept)
		if rerr != nil {
			corrupt = errors.Join(err, rerr)
		}
	} else if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, cp: cp, corrupt: corrupt, queue: claimQueue{tails: map[string]chan struct{}{}}}
	if cfg.NodeStatus != nil {
		a.status = newStatusWriter(cfg.NodeStatus, cfg.Clock, cfg.NodeStatusInterval, cfg.MinBackoff, cfg.MaxBackoff)
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
	if a.cfg.Limiter != nil {
		writer.Go(func() { a.guardCgroup(ctx) })
	}
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

// restore keeps the checkpointed claims whose memory is still online and makes the
// others intents again, so the first hello tells the service the truth and an offline
// command still finds whatever is left of their memory.
func (a *Agent) restore(ctx context.Context) {
	logger := klog.FromContext(ctx)
	if a.corrupt != nil {
		logger.Error(a.corrupt, "The agent checkpoint cannot be parsed; starting with an empty one. No memory online on this node is recorded as a claim's: none of it is offlined, and onlining it for a claim is refused, until a person resolves it", "checkpoint", a.cfg.CheckpointFile)
	}
	a.mu.Lock()
	claims := maps.Clone(a.cp.Claims)
	pending := len(a.cp.Pending)
	a.mu.Unlock()
	kept := 0
	for uid, c := range claims {
		res, err := a.cfg.Host.Check(ctx, hostmem.Request{ClaimUID: uid, Pool: c.Pool, Extents: c.Extents})
		if err != nil {
			logger.Info("Claim memory from the checkpoint is no longer online, not reporting it", "claimUID", uid, "err", err)
			a.update(func(cp *checkpoint) {
				delete(cp.Claims, uid)
				cp.Pending[uid] = pendingClaim{Pool: c.Pool, Extents: c.Extents}
			})
			continue
		}
		c.NUMANodes, c.Bytes = res.NUMANodes, res.Bytes
		a.update(func(cp *checkpoint) { cp.Claims[uid] = c })
		kept++
	}
	logger.Info("Restored the claims online on this host from the checkpoint", "online", kept, "checkpointed", len(claims), "pending", pending)
	a.changed(ctx)
}

// update changes the checkpoint in memory; the next save writes it.
func (a *Agent) update(change func(cp *checkpoint)) {
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	change(&a.cp)
}

// record changes the checkpoint and writes it before returning. A change that
// returns an error, or that could not be written, is undone and its error returned.
func (a *Agent) record(change func(cp *checkpoint) error) error {
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	a.mu.Lock()
	before := a.cp.clone()
	err := change(&a.cp)
	cp := a.cp.clone()
	a.mu.Unlock()
	if err == nil {
		err = a.saveIfChanged(cp)
	}
	if err != nil {
		a.mu.Lock()
		a.cp.Claims, a.cp.Pending = before.Claims, before.Pending
		a.mu.Unlock()
	}
	return err
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
	cp := a.cp.clone()
	status := a.nodeStatusLocked()
	a.mu.Unlock()

	var online int64
	for _, c := range cp.Claims {
		online += c.Bytes
	}
	status.OnlineBytes = online
	a.cfg.Metrics.OnlineBytes.Set(float64(online))
	if a.cfg.Limiter != nil {
		// The limit about to be written is checkpointed first: a crash right after
		// the write must not leave a checkpoint that takes it for the kubelet's.
		limit, err := a.cfg.Limiter.Set(online, func(st cgroup.State) error {
			cp.Cgroup = st
			return a.saveIfChanged(cp)
		})
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

// guardCgroup reads the pod cgroup limit every CgroupCheckInterval and, when it is
// not the agent's (the kubelet writes its node allocatable when it starts, taking
// back the raise while pods use the pool memory), brings it up to date at once,
// whether or not the memory service is reachable.
func (a *Agent) guardCgroup(ctx context.Context) {
	logger := klog.FromContext(ctx)
	ticker := a.cfg.Clock.NewTicker(a.cfg.CgroupCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
		drifted, err := a.cfg.Limiter.Drifted()
		if err != nil {
			logger.Error(err, "Reading the pod cgroup memory limit failed")
			continue
		}
		if drifted {
			logger.Info("The pod cgroup memory limit was rewritten (a kubelet restart?): setting it again")
			a.changed(ctx)
		}
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

// describe says where memory went, for the command result and logs.
func describe(bytes int64, numa []int32) string {
	return fmt.Sprintf("%d MiB online in NUMA node(s) %v", bytes>>20, numa)
}
