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

package server_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

func progress(uid, message string) *memservicev1.AgentMessage {
	return &memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Progress{Progress: &memservicev1.CommandProgress{
		CommandId: "c", ClaimUid: uid, BlocksDone: 1, BlocksTotal: 2, Message: message,
	}}}
}

// A node agent is trusted with its own node only: its progress reports reach the
// claims reserved on its node, and what it writes fits the DynamicMemoryClaim CRD.
func TestAgentProgressReachesOnlyClaimsOnItsNodeAndFitsTheCRD(t *testing.T) {
	h := newHarness(t)
	sched := h.dial("scheduler")
	agent1 := h.startAgent(h.dial("agent-node1"), "node1")
	agent2 := h.startAgent(h.dial("agent-node2"), "node2")
	ctx := context.Background()
	_, err := sched.Reserve(ctx, &memservicev1.ReserveRequest{Claim: claim(1), Node: "node1", Bytes: gi})
	require.NoError(t, err)
	_, err = sched.Reserve(ctx, &memservicev1.ReserveRequest{Claim: claim(2), Node: "node2", Bytes: gi})
	require.NoError(t, err)
	message := func(n int) string {
		r, ok := h.ledger.Get(uid(n))
		require.True(t, ok)
		return r.Message
	}

	require.NoError(t, agent2.send(progress(uid(1), "node2 writes on a claim of node1")))
	require.NoError(t, agent2.send(progress(uid(99), "node2 writes on a claim nobody holds")))
	require.NoError(t, agent2.send(progress(uid(2), "block 1 busy, retry 3")))
	require.Eventually(t, func() bool { return strings.Contains(message(2), "block 1 busy, retry 3") }, 5*time.Second, 5*time.Millisecond,
		"the agent's report on its own claim arrives (after the two before it on the same stream)")
	assert.Equal(t, "node agent of node2: block 1 busy, retry 3 (1 of 2 blocks)", message(2))
	assert.NotContains(t, message(1), "node2", "a report on another node's claim is dropped")
	_, ok := h.ledger.Get(uid(99))
	assert.False(t, ok)

	require.NoError(t, agent1.send(progress(uid(1), strings.Repeat("é", 100_000))))
	require.Eventually(t, func() bool { return strings.HasPrefix(message(1), "node agent of node1: é") }, 5*time.Second, 5*time.Millisecond)
	assert.LessOrEqual(t, utf8.RuneCountInString(message(1)), crdMessageMaxLength, "the message fits status.message")
	assert.True(t, utf8.ValidString(message(1)), "truncation keeps whole characters")
}

// What an agent answers a command with ends up in the claim's status: a failure's
// words and the NUMA nodes. Either must fit the CRD, or every later write of the
// claim's status fails.
func TestAgentResultsFitTheCRD(t *testing.T) {
	h := newHarness(t)
	sched := h.dial("scheduler")
	agent := h.startAgent(h.dial("agent-node1"), "node1")
	ctx := context.Background()

	agent.mu.Lock()
	agent.fail = strings.Repeat("EBUSY ", 10_000)
	agent.mu.Unlock()
	resp, err := sched.AddMemory(ctx, &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "node1", Bytes: gi})
	require.NoError(t, err)
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_FAILED, resp.GetReservation().GetState())
	assert.Contains(t, resp.GetReservation().GetMessage(), "EBUSY EBUSY")
	assert.LessOrEqual(t, utf8.RuneCountInString(resp.GetReservation().GetMessage()), crdMessageMaxLength)

	agent.mu.Lock()
	agent.fail = ""
	agent.numa = make([]int32, 1000)
	agent.mu.Unlock()
	resp, err = sched.AddMemory(ctx, &memservicev1.AddMemoryRequest{Claim: claim(2), Node: "node1", Bytes: gi})
	require.NoError(t, err)
	assert.Equal(t, memservicev1.ReservationState_RESERVATION_STATE_FAILED, resp.GetReservation().GetState(),
		"an agent that reports more NUMA nodes than a claim can record is refused")
	assert.Contains(t, resp.GetReservation().GetMessage(), "1000 NUMA nodes")

	require.Eventually(t, func() bool {
		for _, e := range h.ev.all() {
			if e == "store update "+uid(2)+" Failed" {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	assert.Empty(t, h.store.refused, "every status write fits the CRD")
}
