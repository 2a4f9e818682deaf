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

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"k8s.io/klog/v2"
)

// execute runs one command and reports its result on the session it came from.
func (a *Agent) execute(ctx context.Context, cmd *memservicev1.AgentCommand, s *sender) {
	var result *memservicev1.CommandResult
	switch c := cmd.Command.(type) {
	case *memservicev1.AgentCommand_Online:
		result = a.online(ctx, cmd.CommandId, c.Online, s)
	case *memservicev1.AgentCommand_Offline:
		result = a.offline(ctx, cmd.CommandId, c.Offline, s)
	default:
		result = &memservicev1.CommandResult{CommandId: cmd.CommandId, Outcome: memservicev1.CommandResult_OUTCOME_FAILED,
			Message: fmt.Sprintf("command %s has no online or offline command: this agent (%s) may be older than the memory service", cmd.CommandId, a.cfg.Version)}
	}
	if err := s.send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Result{Result: result}}); err != nil {
		klog.FromContext(ctx).Info("Could not report a command result; the next hello reports the host state", "command", cmd.CommandId, "claimUID", result.ClaimUid, "err", err)
	}
}

// claimOf is the claim a command acts on ("" for a command of neither kind).
func claimOf(cmd *memservicev1.AgentCommand) string {
	switch c := cmd.Command.(type) {
	case *memservicev1.AgentCommand_Online:
		return c.Online.GetClaimUid()
	case *memservicev1.AgentCommand_Offline:
		return c.Offline.GetClaimUid()
	}
	return ""
}

func (a *Agent) progress(ctx context.Context, s *sender, commandID, claimUID string) hostmem.Progress {
	return func(p hostmem.Step) {
		if p.Busy {
			a.cfg.Metrics.OfflineBusyRetries.Inc()
		}
		err := s.send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Progress{Progress: &memservicev1.CommandProgress{
			CommandId: commandID, ClaimUid: claimUID, BlocksDone: int32(p.Done), BlocksTotal: int32(p.Total), Message: p.Message,
		}}})
		if err != nil {
			klog.FromContext(ctx).V(4).Info("Progress report not sent", "command", commandID, "err", err)
		}
	}
}

func (a *Agent) online(ctx context.Context, id string, cmd *memservicev1.OnlineCommand, s *sender) *memservicev1.CommandResult {
	logger := klog.FromContext(ctx).WithValues("command", id, "claimUID", cmd.ClaimUid, "pool", cmd.Pool)
	ctx = klog.NewContext(ctx, logger)
	start := a.cfg.Clock.Now()
	fail := func(msg string) *memservicev1.CommandResult {
		logger.Error(nil, "Onlining claim memory failed", "reason", msg)
		a.cfg.Metrics.Commands.WithLabelValues(metrics.CommandOnline, "failed").Inc()
		a.cfg.Metrics.CommandErrors.WithLabelValues(metrics.CommandOnline).Inc()
		return &memservicev1.CommandResult{CommandId: id, ClaimUid: cmd.ClaimUid, Outcome: memservicev1.CommandResult_OUTCOME_FAILED, Message: msg}
	}
	if cmd.ClaimUid == "" {
		return fail("online command has no claim_uid")
	}
	if hbs := a.cfg.Host.BlockSize(); cmd.BlockSizeBytes > 0 && cmd.BlockSizeBytes%hbs != 0 {
		return fail(fmt.Sprintf("pool %s block size %d is not a multiple of node %s memory block size %d: set the pool's blockSize to a multiple of %d", cmd.Pool, cmd.BlockSizeBytes, a.cfg.Node, hbs, hbs))
	}
	req := hostmem.Request{ClaimUID: cmd.ClaimUid, Pool: cmd.Pool, Extents: memservicev1.ToExtents(cmd.Extents)}
	if cmd.Bytes > 0 && req.Bytes() != cmd.Bytes {
		return fail(fmt.Sprintf("online command for claim %s: extents hold %d bytes, bytes says %d", cmd.ClaimUid, req.Bytes(), cmd.Bytes))
	}
	// The intent is checkpointed before a block is touched (see intent.go).
	plan, err := a.intend(ctx, req)
	if err != nil {
		return fail(err.Error())
	}
	res := plan.online
	if res == nil {
		onlined, err := a.cfg.Host.Online(ctx, plan.req, a.progress(ctx, s, id, cmd.ClaimUid))
		if err != nil {
			a.onlineFailed(ctx, plan, err)
			return fail(err.Error())
		}
		res = &onlined
	}
	a.cfg.Metrics.OnlineDuration.Observe(a.cfg.Clock.Since(start).Seconds())
	a.cfg.Metrics.Commands.WithLabelValues(metrics.CommandOnline, "online").Inc()
	a.update(func(cp *checkpoint) {
		delete(cp.Pending, cmd.ClaimUid)
		cp.Claims[cmd.ClaimUid] = onlineClaim{Pool: cmd.Pool, Extents: req.Extents, Bytes: res.Bytes, NUMANodes: res.NUMANodes}
	})
	a.changed(ctx)
	msg := describe(res.Bytes, res.NUMANodes)
	logger.Info("Claim memory online", "bytes", res.Bytes, "numaNodes", res.NUMANodes, "duration", a.cfg.Clock.Since(start))
	return &memservicev1.CommandResult{CommandId: id, ClaimUid: cmd.ClaimUid, Outcome: memservicev1.CommandResult_OUTCOME_ONLINE, NumaNodes: res.NUMANodes, Message: msg}
}

func (a *Agent) offline(ctx context.Context, id string, cmd *memservicev1.OfflineCommand, s *sender) *memservicev1.CommandResult {
	logger := klog.FromContext(ctx).WithValues("command", id, "claimUID", cmd.ClaimUid)
	ctx = klog.NewContext(ctx, logger)
	start := a.cfg.Clock.Now()
	fail := func(msg string) *memservicev1.CommandResult {
		logger.Error(nil, "Offlining claim memory failed", "reason", msg)
		a.cfg.Metrics.Commands.WithLabelValues(metrics.CommandOffline, "failed").Inc()
		a.cfg.Metrics.CommandErrors.WithLabelValues(metrics.CommandOffline).Inc()
		return &memservicev1.CommandResult{CommandId: id, ClaimUid: cmd.ClaimUid, Outcome: memservicev1.CommandResult_OUTCOME_FAILED, Message: msg}
	}
	if cmd.ClaimUid == "" {
		return fail("offline command has no claim_uid")
	}
	// Only memory the checkpoint records as the claim's (online, or intended) is
	// offlined, in the recorded pool and extents (an older agent's intent has no
	// extents: the command's are used). Of memory it has no record of, the agent
	// only proves that the command's blocks are offline, and touches none. Without a
	// known region the host refuses either: a region is never guessed.
	req := hostmem.Request{ClaimUID: cmd.ClaimUid, Pool: cmd.Pool, Extents: memservicev1.ToExtents(cmd.Extents)}
	a.mu.Lock()
	known, online := a.cp.Claims[cmd.ClaimUid]
	intent, pending := a.cp.Pending[cmd.ClaimUid]
	a.mu.Unlock()
	switch {
	case online:
		req.Pool, req.Extents = known.Pool, known.Extents
	case pending:
		req.Pool = intent.Pool
		if len(intent.Extents) > 0 {
			req.Extents = intent.Extents
		}
	case len(req.Extents) > 0:
		if err := a.cfg.Host.Offlined(ctx, req); err != nil {
			if errors.Is(err, hostmem.ErrStillOnline) {
				return fail(notRecorded(cmd.ClaimUid, err))
			}
			return fail(err.Error())
		}
	}
	if (online || pending) && len(req.Extents) > 0 {
		if err := a.cfg.Host.Offline(ctx, req, a.progress(ctx, s, id, cmd.ClaimUid)); err != nil {
			res := fail(err.Error())
			if errors.Is(err, hostmem.ErrBusy) {
				res.Outcome = memservicev1.CommandResult_OUTCOME_BUSY // the memory is online and whole
			}
			return res
		}
	}
	a.cfg.Metrics.OfflineDuration.Observe(a.cfg.Clock.Since(start).Seconds())
	a.cfg.Metrics.Commands.WithLabelValues(metrics.CommandOffline, "offline").Inc()
	a.update(func(cp *checkpoint) {
		delete(cp.Claims, cmd.ClaimUid)
		delete(cp.Pending, cmd.ClaimUid)
	})
	a.changed(ctx)
	logger.Info("Claim memory offline", "duration", a.cfg.Clock.Since(start))
	return &memservicev1.CommandResult{CommandId: id, ClaimUid: cmd.ClaimUid, Outcome: memservicev1.CommandResult_OUTCOME_OFFLINE}
}
