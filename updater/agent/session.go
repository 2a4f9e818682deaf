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

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"k8s.io/klog/v2"
)

// sessions opens sessions with the memory service one after the other, waiting
// with exponential backoff between failed attempts, until ctx ends.
func (a *Agent) sessions(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	backoff := reconnectBackoff{min: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			a.cfg.Metrics.SessionReconnects.Inc()
		}
		started := a.cfg.Clock.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.setConnected(ctx, false, err)
		delay := backoff.next(a.cfg.Clock.Since(started))
		logger.Error(err, "Session with the memory service ended, reconnecting", "after", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.Clock.After(delay):
		}
	}
}

// reconnectBackoff is the wait before the next session: it doubles from min up to
// max while sessions fail within min, and starts again from min after a session that
// was up for at least min. A memory service restarted a few times in a row must not
// leave its agents waiting the longest backoff, unable to provision, once it is back
// (the chaos suite found agents idle for 30 s after such restarts); one that drops
// every session at once is not hammered.
type reconnectBackoff struct {
	min, max time.Duration
	last     time.Duration
}

// next is the wait after a session that lasted lasted.
func (b *reconnectBackoff) next(lasted time.Duration) time.Duration {
	switch {
	case b.last == 0 || lasted >= b.min:
		b.last = b.min
	default:
		b.last = min(2*b.last, b.max)
	}
	return b.last
}

// session runs one AgentSession: hello, then commands and heartbeats until the
// stream breaks or ctx ends.
func (a *Agent) session(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.cfg.Client.AgentSession(sctx)
	if err != nil {
		return fmt.Errorf("open agent session: %w", err)
	}
	s := &sender{stream: stream}
	hello := &memservicev1.AgentHello{Node: a.cfg.Node, HostState: a.hostState(), Version: a.cfg.Version}
	if err := s.send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	// The first command or an error tells whether the service took the hello; the
	// connection counts as up once the hello is sent, so that a service with
	// nothing to say still sees a Ready agent.
	a.setConnected(ctx, true, nil)
	logger.Info("Session with the memory service open", "node", a.cfg.Node, "claimsOnline", len(hello.HostState.Online))

	var heartbeat sync.WaitGroup
	defer heartbeat.Wait()
	heartbeat.Go(func() { a.heartbeat(sctx, s) })
	defer cancel()
	for {
		cmd, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("memory service closed the session")
		}
		if err != nil {
			return fmt.Errorf("receive command: %w", err)
		}
		// Commands outlive the session: memory half onlined must be finished even
		// if the stream breaks; the next hello reports the outcome. Run waits for
		// them. The commands of one claim run in the order they were received.
		wait, done := a.queue.turn(claimOf(cmd))
		a.commands.Go(func() {
			defer done()
			wait()
			a.execute(ctx, cmd, s)
		})
	}
}

// heartbeat sends the host state every HeartbeatInterval.
func (a *Agent) heartbeat(ctx context.Context, s *sender) {
	ticker := a.cfg.Clock.NewTicker(a.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
			if err := s.send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_HostState{HostState: a.hostState()}}); err != nil {
				klog.FromContext(ctx).V(2).Info("Sending host state failed", "err", err)
				return
			}
			a.changed(ctx) // retries node status and cgroup updates that failed
		}
	}
}

// sender serializes sends on a stream (gRPC allows one sender at a time).
type sender struct {
	mu     sync.Mutex
	stream memservicev1.MemoryService_AgentSessionClient
}

func (s *sender) send(m *memservicev1.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}
