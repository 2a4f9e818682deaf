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

// Package session keeps the node agents' AgentSession streams: one per node, and the
// commands in flight on them. The provisioning code sends a command to a node and
// waits for its result; if the agent's session drops, the command is sent again on
// its next session (agents treat commands as idempotent).
package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

// Registry holds the sessions. Safe for concurrent use.
type Registry struct {
	// OnOpen is called (in its own goroutine) when a node's session opens, with the
	// host state the agent reported in its Hello.
	OnOpen func(node string, state *memservicev1.HostState)
	// OnProgress is called for every progress report, its message cut to
	// MaxAgentMessageLength. The caller of Handle decides which reports reach it:
	// only those on claims of the session's node.
	OnProgress func(node string, p *memservicev1.CommandProgress)
	// OnChange is called when the set of connected nodes changes.
	OnChange func()

	nextID atomic.Uint64

	mu       sync.Mutex
	sessions map[string]*Session
	changed  chan struct{} // closed and replaced at every open
}

// NewRegistry makes an empty registry.
func NewRegistry() *Registry {
	return &Registry{sessions: map[string]*Session{}, changed: make(chan struct{})}
}

// Session is one agent's stream.
type Session struct {
	node     string
	commands chan *memservicev1.AgentCommand
	done     chan struct{}
	once     sync.Once

	mu      sync.Mutex
	pending map[string]chan *memservicev1.CommandResult
}

// Node is the session's node.
func (s *Session) Node() string { return s.node }

// Commands delivers the commands to send to the agent.
func (s *Session) Commands() <-chan *memservicev1.AgentCommand { return s.commands }

// Done is closed when the session is closed or replaced.
func (s *Session) Done() <-chan struct{} { return s.done }

func (s *Session) close() { s.once.Do(func() { close(s.done) }) }

// Open starts a session for a node; an older session of the node is closed.
func (r *Registry) Open(node string, hello *memservicev1.AgentHello) *Session {
	s := &Session{
		node:     node,
		commands: make(chan *memservicev1.AgentCommand, 64),
		done:     make(chan struct{}),
		pending:  map[string]chan *memservicev1.CommandResult{},
	}
	r.mu.Lock()
	if old, ok := r.sessions[node]; ok {
		old.close()
	}
	r.sessions[node] = s
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.OnChange != nil {
		r.OnChange()
	}
	if r.OnOpen != nil {
		go r.OnOpen(node, hello.GetHostState())
	}
	return s
}

// Close ends a session (if it is still the node's current one).
func (r *Registry) Close(s *Session) {
	s.close()
	r.mu.Lock()
	current := r.sessions[s.node] == s
	if current {
		delete(r.sessions, s.node)
	}
	r.mu.Unlock()
	if current && r.OnChange != nil {
		r.OnChange()
	}
}

// Connected returns the nodes whose agent holds a session, sorted.
func (r *Registry) Connected() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.sessions))
	for n := range r.sessions {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Bounds of what a node agent (an untrusted node) may put into a claim's record.
const (
	// MaxAgentMessageLength is the most bytes of an agent's words (a progress report,
	// a failure) that are kept; the rest is cut. It leaves room for the words the
	// service wraps them in (node and claim names, counts), so that the claim's
	// message stays within v1alpha1.ClaimMessageMaxLength.
	MaxAgentMessageLength = 1024
	// MaxNUMANodes is the most NUMA nodes a claim's memory may go into: the maxItems
	// of DynamicMemoryClaim status.numaNodes. An agent that reports more is refused.
	MaxNUMANodes = 64
)

// bound keeps an agent's result within what a claim's record can hold: its message is
// cut, and an ONLINE answer with more NUMA nodes than a claim may record, or with a
// negative one, becomes a failure that says so.
func bound(res *memservicev1.CommandResult) {
	res.Message = ledger.Cut(res.GetMessage(), MaxAgentMessageLength)
	if res.GetOutcome() != memservicev1.CommandResult_OUTCOME_ONLINE {
		res.NumaNodes = nil
		return
	}
	if n := len(res.GetNumaNodes()); n > MaxNUMANodes {
		res.Outcome, res.NumaNodes = memservicev1.CommandResult_OUTCOME_FAILED, nil
		res.Message = fmt.Sprintf("the agent reported %d NUMA nodes, a claim's memory goes into at most %d", n, MaxNUMANodes)
		return
	}
	for _, id := range res.GetNumaNodes() {
		if id < 0 {
			res.Outcome, res.NumaNodes = memservicev1.CommandResult_OUTCOME_FAILED, nil
			res.Message = fmt.Sprintf("the agent reported NUMA node %d, which is no NUMA node", id)
			return
		}
	}
}

// Handle takes a message the agent sent after its Hello. What the agent wrote is
// bounded here (see MaxAgentMessageLength and MaxNUMANodes).
func (r *Registry) Handle(s *Session, msg *memservicev1.AgentMessage) error {
	switch m := msg.GetMessage().(type) {
	case *memservicev1.AgentMessage_Result:
		bound(m.Result)
		s.mu.Lock()
		ch, ok := s.pending[m.Result.GetCommandId()]
		delete(s.pending, m.Result.GetCommandId())
		s.mu.Unlock()
		if ok {
			ch <- m.Result
		}
	case *memservicev1.AgentMessage_Progress:
		m.Progress.Message = ledger.Cut(m.Progress.GetMessage(), MaxAgentMessageLength)
		if r.OnProgress != nil {
			r.OnProgress(s.node, m.Progress)
		}
	case *memservicev1.AgentMessage_HostState:
		// A heartbeat: the session is alive. The host is reconciled when a session opens.
	case *memservicev1.AgentMessage_Hello:
		return ledger.Errorf(ledger.CodeInvalid, "hello: sent twice in one session")
	default:
		return ledger.Errorf(ledger.CodeInvalid, "message: empty agent message")
	}
	return nil
}

// ErrAgentFailed wraps an agent's FAILED outcome.
var ErrAgentFailed = errors.New("node agent reports failure")

// ErrMemoryBusy wraps an agent's BUSY outcome: it cannot offline the memory because
// a block stays busy (pages the kernel cannot migrate). The memory is still online.
var ErrMemoryBusy = errors.New("node agent cannot offline memory, a block stays busy")

// Online has the node's agent online a claim's memory and returns the NUMA nodes. It
// waits for the agent to connect, and sends again on a new session if one drops.
func (r *Registry) Online(ctx context.Context, node string, cmd *memservicev1.OnlineCommand) (*memservicev1.CommandResult, error) {
	return r.do(ctx, node, cmd.GetClaimUid(), func(id string) *memservicev1.AgentCommand {
		return &memservicev1.AgentCommand{CommandId: id, Command: &memservicev1.AgentCommand_Online{Online: cmd}}
	}, memservicev1.CommandResult_OUTCOME_ONLINE)
}

// Offline has the node's agent offline a claim's memory.
func (r *Registry) Offline(ctx context.Context, node string, cmd *memservicev1.OfflineCommand) (*memservicev1.CommandResult, error) {
	return r.do(ctx, node, cmd.GetClaimUid(), func(id string) *memservicev1.AgentCommand {
		return &memservicev1.AgentCommand{CommandId: id, Command: &memservicev1.AgentCommand_Offline{Offline: cmd}}
	}, memservicev1.CommandResult_OUTCOME_OFFLINE)
}

func (r *Registry) do(ctx context.Context, node, uid string, build func(id string) *memservicev1.AgentCommand, want memservicev1.CommandResult_Outcome) (*memservicev1.CommandResult, error) {
	for {
		s, err := r.await(ctx, node)
		if err != nil {
			return nil, err
		}
		id := node + "-" + strconv.FormatUint(r.nextID.Add(1), 10)
		ch := make(chan *memservicev1.CommandResult, 1)
		s.mu.Lock()
		s.pending[id] = ch
		s.mu.Unlock()
		forget := func() {
			s.mu.Lock()
			delete(s.pending, id)
			s.mu.Unlock()
		}
		select {
		case s.commands <- build(id):
		case <-s.done:
			forget()
			continue
		case <-ctx.Done():
			forget()
			return nil, fmt.Errorf("send command for claim %s to the agent of node %s: %w", uid, node, ctx.Err())
		}
		select {
		case res := <-ch:
			switch res.GetOutcome() {
			case want:
				return res, nil
			case memservicev1.CommandResult_OUTCOME_FAILED:
				return res, fmt.Errorf("%w: node %s, claim %s: %s", ErrAgentFailed, node, uid, res.GetMessage())
			case memservicev1.CommandResult_OUTCOME_BUSY:
				return res, fmt.Errorf("%w: node %s, claim %s: %s", ErrMemoryBusy, node, uid, res.GetMessage())
			default:
				return res, fmt.Errorf("%w: node %s, claim %s: unexpected outcome %s", ErrAgentFailed, node, uid, res.GetOutcome())
			}
		case <-s.done:
			forget()
		case <-ctx.Done():
			forget()
			return nil, fmt.Errorf("wait for the agent of node %s to answer for claim %s: %w", node, uid, ctx.Err())
		}
	}
}

// await returns the node's session, waiting for one to open.
func (r *Registry) await(ctx context.Context, node string) (*Session, error) {
	for {
		r.mu.Lock()
		s, ok := r.sessions[node]
		changed := r.changed
		r.mu.Unlock()
		if ok {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("node agent of %s is not connected: %w", node, ctx.Err())
		}
	}
}
