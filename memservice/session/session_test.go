package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

func answer(t *testing.T, r *session.Registry, s *session.Session, outcome memservicev1.CommandResult_Outcome, msg string) *memservicev1.AgentCommand {
	t.Helper()
	select {
	case cmd := <-s.Commands():
		require.NoError(t, r.Handle(s, &memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Result{Result: &memservicev1.CommandResult{
			CommandId: cmd.GetCommandId(), Outcome: outcome, Message: msg, NumaNodes: []int32{2},
		}}}))
		return cmd
	case <-time.After(5 * time.Second):
		t.Fatal("no command arrived")
		return nil
	}
}

func TestOnlineWaitsForTheAgentAndReturnsItsAnswer(t *testing.T) {
	r := session.NewRegistry()
	res := make(chan error, 1)
	go func() {
		out, err := r.Online(context.Background(), "n1", &memservicev1.OnlineCommand{ClaimUid: "u1"})
		if err == nil && len(out.GetNumaNodes()) != 1 {
			t.Errorf("numa nodes %v", out.GetNumaNodes())
		}
		res <- err
	}()
	time.Sleep(20 * time.Millisecond) // the command waits for a session
	s := r.Open("n1", &memservicev1.AgentHello{Node: "n1"})
	cmd := answer(t, r, s, memservicev1.CommandResult_OUTCOME_ONLINE, "")
	assert.Equal(t, "u1", cmd.GetOnline().GetClaimUid())
	require.NoError(t, <-res)
	assert.Equal(t, []string{"n1"}, r.Connected())
}

func TestACommandIsSentAgainOnTheNextSession(t *testing.T) {
	r := session.NewRegistry()
	first := r.Open("n1", &memservicev1.AgentHello{Node: "n1"})
	res := make(chan error, 1)
	go func() {
		_, err := r.Offline(context.Background(), "n1", &memservicev1.OfflineCommand{ClaimUid: "u1"})
		res <- err
	}()
	<-first.Commands() // delivered, but the session drops before the answer
	r.Close(first)
	assert.Empty(t, r.Connected())
	second := r.Open("n1", &memservicev1.AgentHello{Node: "n1"})
	cmd := answer(t, r, second, memservicev1.CommandResult_OUTCOME_OFFLINE, "")
	assert.Equal(t, "u1", cmd.GetOffline().GetClaimUid())
	require.NoError(t, <-res)
}

func TestFailuresAndDeadlines(t *testing.T) {
	r := session.NewRegistry()
	s := r.Open("n1", &memservicev1.AgentHello{Node: "n1"})
	res := make(chan error, 1)
	go func() {
		_, err := r.Online(context.Background(), "n1", &memservicev1.OnlineCommand{ClaimUid: "u1"})
		res <- err
	}()
	answer(t, r, s, memservicev1.CommandResult_OUTCOME_FAILED, "block 7: EBUSY")
	err := <-res
	assert.ErrorIs(t, err, session.ErrAgentFailed)
	assert.ErrorContains(t, err, "node n1, claim u1: block 7: EBUSY")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = r.Online(ctx, "n2", &memservicev1.OnlineCommand{ClaimUid: "u2"})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "node agent of n2 is not connected")

	assert.Error(t, r.Handle(s, &memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: &memservicev1.AgentHello{Node: "n1"}}}),
		"a second Hello is refused")
}

func TestANewSessionReplacesTheOld(t *testing.T) {
	r := session.NewRegistry()
	old := r.Open("n1", &memservicev1.AgentHello{Node: "n1"})
	r.Open("n1", &memservicev1.AgentHello{Node: "n1", HostState: &memservicev1.HostState{OnlineBytes: 5}})
	select {
	case <-old.Done():
	default:
		t.Fatal("the old session was not closed")
	}
	r.Close(old) // closing the replaced session keeps the new one
	assert.Equal(t, []string{"n1"}, r.Connected())
}
