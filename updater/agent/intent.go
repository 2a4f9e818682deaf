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
	"slices"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
)

// The agent acts only on memory it can prove is the claim's, and its checkpoint is
// the proof: a record (the claim's memory is online) or an intent (an online command
// was received for these extents, and whatever of them is online is the claim's).
// The intent is written, durably, before Host.Online touches a block, so a crash
// half way through leaves proof of what may be online; it becomes the record when
// the memory is online, and either goes only when the memory is offline.

// onlinePlan is what the checkpoint lets an online command do.
type onlinePlan struct {
	// req is the request for Host.Online: Resume is set when the checkpoint records
	// the memory as the claim's.
	req hostmem.Request
	// online is set when the memory is recorded online for the claim and all of it
	// is: the command has nothing to do.
	online *hostmem.Result
	// prior is the claim's intent before the command (nil: none), put back if Online
	// onlined nothing.
	prior *pendingClaim
}

// intend decides, from what the checkpoint records of the claim, what an online
// command for req may do, and records the intent to online req before any block is
// touched:
//   - memory recorded for the claim (online or intended) with the same pool and
//     extents is the claim's: if it is recorded online and Check finds all of it
//     online, there is nothing to do; otherwise Online resumes;
//   - a different pool or extents than recorded for the claim is refused;
//   - memory not recorded for the claim is onlined only if none of its blocks is
//     online and no other claim's record or intent overlaps it.
func (a *Agent) intend(ctx context.Context, req hostmem.Request) (onlinePlan, error) {
	uid := req.ClaimUID
	plan := onlinePlan{req: req}
	a.mu.Lock()
	rec, online := a.cp.Claims[uid]
	intent, pending := a.cp.Pending[uid]
	a.mu.Unlock()
	switch {
	case online:
		if !sameMemory(req, rec.Pool, rec.Extents) {
			return plan, recordedOther(req, "online", rec.Pool, rec.Extents)
		}
		if res, err := a.cfg.Host.Check(ctx, req); err == nil {
			plan.online = &res
			return plan, nil
		}
		plan.req.Resume = true
	case pending && len(intent.Extents) > 0:
		if !sameMemory(req, intent.Pool, intent.Extents) {
			return plan, recordedOther(req, "being onlined", intent.Pool, intent.Extents)
		}
		plan.req.Resume = true
		plan.prior = &intent
	case pending: // an older agent's intent: the pool only
		if intent.Pool != req.Pool {
			return plan, recordedOther(req, "being onlined", intent.Pool, nil)
		}
		plan.prior = &intent
	}
	if !plan.req.Resume {
		// Host.Online refuses blocks online already too; checking before the intent
		// is written keeps a crash from leaving an intent over memory that is not
		// the claim's.
		if err := a.cfg.Host.Offlined(ctx, req); err != nil {
			if errors.Is(err, hostmem.ErrStillOnline) {
				return plan, fmt.Errorf("%w, and nothing records it as this claim's (another claim's memory or the host's own); nothing was onlined", err)
			}
			return plan, err
		}
	}
	var overlap error
	err := a.record(func(cp *checkpoint) error {
		if other := cp.overlapping(req); other != "" {
			overlap = fmt.Errorf("claim %s: extents %v of pool %s overlap the memory of claim %s on this node; nothing was onlined", uid, req.Extents, req.Pool, other)
			return overlap
		}
		delete(cp.Claims, uid)
		cp.Pending[uid] = pendingClaim{Pool: req.Pool, Extents: req.Extents}
		return nil
	})
	if err != nil && overlap == nil {
		err = fmt.Errorf("claim %s: record the intent to online its memory: %w; nothing was onlined", uid, err)
	}
	return plan, err
}

// onlineFailed updates the checkpoint after Host.Online failed: the intent stays
// (some blocks may be online) unless Online refused the memory, onlining nothing.
func (a *Agent) onlineFailed(ctx context.Context, plan onlinePlan, err error) {
	if errors.Is(err, hostmem.ErrOnlineNotOurs) {
		a.update(func(cp *checkpoint) {
			if plan.prior != nil {
				cp.Pending[plan.req.ClaimUID] = *plan.prior
			} else {
				delete(cp.Pending, plan.req.ClaimUID)
			}
		})
	}
	a.changed(ctx)
}

// overlapping is another claim whose recorded memory overlaps req ("" if none).
func (cp checkpoint) overlapping(req hostmem.Request) string {
	overlaps := func(pool string, extents []v1alpha1.Extent) bool {
		return pool == req.Pool && slices.ContainsFunc(extents, func(e v1alpha1.Extent) bool {
			return slices.ContainsFunc(req.Extents, e.Overlaps)
		})
	}
	var others []string
	for uid, c := range cp.Claims {
		if uid != req.ClaimUID && overlaps(c.Pool, c.Extents) {
			others = append(others, uid)
		}
	}
	for uid, p := range cp.Pending {
		if uid != req.ClaimUID && overlaps(p.Pool, p.Extents) {
			others = append(others, uid)
		}
	}
	if len(others) == 0 {
		return ""
	}
	return slices.Min(others)
}

// sameMemory tells whether req names the recorded pool and extents.
func sameMemory(req hostmem.Request, pool string, extents []v1alpha1.Extent) bool {
	return req.Pool == pool && slices.Equal(req.Extents, extents)
}

// recordedOther refuses an online command for other memory than the checkpoint
// records for its claim.
func recordedOther(req hostmem.Request, state, pool string, extents []v1alpha1.Extent) error {
	recorded := "extents not recorded"
	if extents != nil {
		recorded = fmt.Sprintf("extents %v", extents)
	}
	return fmt.Errorf("claim %s has memory %s on this node in pool %s (%s); the command names pool %s extents %v: refusing to online other memory for the same claim", req.ClaimUID, state, pool, recorded, req.Pool, req.Extents)
}

// notRecorded explains an offline command refused because memory the agent has no
// record of is online.
func notRecorded(claimUID string, err error) string {
	return fmt.Sprintf("%v, but this agent has no record of onlining it for claim %s (another claim's memory, the host's own, or a lost checkpoint), so it does not offline it", err, claimUID)
}
