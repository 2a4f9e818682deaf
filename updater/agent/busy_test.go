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
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
)

// pinned is a host whose memory cannot be offlined while pinned is set: its offline
// fails as the sysfs backend's does when a block stays busy, leaving the memory
// online.
type pinned struct {
	*hostmem.Simulated
	mu     sync.Mutex
	pinned bool
}

func (p *pinned) set(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pinned = v
}

func (p *pinned) Offline(ctx context.Context, req hostmem.Request, progress hostmem.Progress) error {
	p.mu.Lock()
	pinned := p.pinned
	p.mu.Unlock()
	if pinned {
		return fmt.Errorf("claim %s: offline memory block 1: %w after 10 attempts (pages in use that cannot be migrated)", req.ClaimUID, hostmem.ErrBusy)
	}
	return p.Simulated.Offline(ctx, req, progress)
}

// A block that stays busy is its own outcome, BUSY, naming the block: the memory
// service tells it from other failures. The claim's memory stays online and
// recorded, and a later offline takes it.
func TestAgentAnswersBusyWhenABlockStaysBusy(t *testing.T) {
	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	host := &pinned{Simulated: sim}
	h := startAgentOn(t, filepath.Join(t.TempDir(), "agent.json"), host, sim, &fakeNode{})
	s := h.svc.session(t)
	require.NotNil(t, s.next(t).GetHello())
	s.send(t, onlineCmd("c1", "uid-1", 0, 256*mib))
	require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)

	host.set(true)
	s.send(t, offlineCmd("c2", "uid-1", 0, 256*mib))
	res := s.result(t)
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_BUSY, res.Outcome)
	assert.Equal(t, "claim uid-1: offline memory block 1: still busy after 10 attempts (pages in use that cannot be migrated)", res.Message)
	assert.Equal(t, 2, sim.OnlineBlocks(), "the memory stays online")
	saved, err := loadCheckpoint(h.cp)
	require.NoError(t, err)
	assert.Contains(t, saved.Claims, "uid-1", "the memory stays the claim's")

	host.set(false)
	s.send(t, offlineCmd("c3", "uid-1", 0, 256*mib))
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_OFFLINE, s.result(t).Outcome)
	assert.Equal(t, 0, sim.OnlineBlocks())
}
