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

package session_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/yaml"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
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

// An agent that cannot offline memory because a block stays busy answers BUSY: the
// error is ErrMemoryBusy, not ErrAgentFailed, with the agent's words.
func TestABusyAnswerIsItsOwnError(t *testing.T) {
	r := session.NewRegistry()
	s := r.Open("n1", &memservicev1.AgentHello{Node: "n1"})
	res := make(chan error, 1)
	go func() {
		_, err := r.Offline(context.Background(), "n1", &memservicev1.OfflineCommand{ClaimUid: "u1"})
		res <- err
	}()
	answer(t, r, s, memservicev1.CommandResult_OUTCOME_BUSY, "offline memory block 9: still busy after 10 attempts")
	err := <-res
	assert.ErrorIs(t, err, session.ErrMemoryBusy)
	assert.NotErrorIs(t, err, session.ErrAgentFailed)
	assert.EqualError(t, err, "node agent cannot offline memory, a block stays busy: node n1, claim u1: offline memory block 9: still busy after 10 attempts")
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

// What a node agent sends ends up in its claims' records: its words are cut, and an
// ONLINE answer with more NUMA nodes than a claim's record holds is a failure.
func TestAgentInputIsBounded(t *testing.T) {
	r := session.NewRegistry()
	var got []*memservicev1.CommandProgress
	r.OnProgress = func(_ string, p *memservicev1.CommandProgress) { got = append(got, p) }
	s := r.Open("n1", &memservicev1.AgentHello{Node: "n1"})

	long := strings.Repeat("é", session.MaxAgentMessageLength)
	require.NoError(t, r.Handle(s, &memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Progress{Progress: &memservicev1.CommandProgress{ClaimUid: "u1", Message: long}}}))
	require.Len(t, got, 1)
	assert.LessOrEqual(t, len(got[0].GetMessage()), session.MaxAgentMessageLength)
	assert.True(t, utf8.ValidString(got[0].GetMessage()), "the cut keeps whole characters")
	assert.True(t, strings.HasPrefix(got[0].GetMessage(), "éé"))

	online := func(numa []int32, msg string) (*memservicev1.CommandResult, error) {
		res := make(chan error, 1)
		var out *memservicev1.CommandResult
		go func() {
			var err error
			out, err = r.Online(context.Background(), "n1", &memservicev1.OnlineCommand{ClaimUid: "u1"})
			res <- err
		}()
		cmd := <-s.Commands()
		require.NoError(t, r.Handle(s, &memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Result{Result: &memservicev1.CommandResult{
			CommandId: cmd.GetCommandId(), Outcome: memservicev1.CommandResult_OUTCOME_ONLINE, NumaNodes: numa, Message: msg,
		}}}))
		err := <-res
		return out, err
	}
	out, err := online(make([]int32, session.MaxNUMANodes), long)
	require.NoError(t, err, "as many NUMA nodes as a claim records")
	assert.Len(t, out.GetNumaNodes(), session.MaxNUMANodes)
	assert.LessOrEqual(t, len(out.GetMessage()), session.MaxAgentMessageLength)

	_, err = online(make([]int32, 1000), "")
	assert.ErrorIs(t, err, session.ErrAgentFailed)
	assert.ErrorContains(t, err, "node n1, claim u1: the agent reported 1000 NUMA nodes, a claim's memory goes into at most 64")

	_, err = online([]int32{0, -1}, "")
	assert.ErrorIs(t, err, session.ErrAgentFailed)
	assert.ErrorContains(t, err, "the agent reported NUMA node -1, which is no NUMA node")
}

// The bounds are the DynamicMemoryClaim CRD's (manifests/crds), which the kubebuilder
// markers of api/v1alpha1 generate and which cannot name a Go constant.
func TestBoundsMatchTheClaimCRD(t *testing.T) {
	data, err := os.ReadFile("../../manifests/crds/dynamicmemory.io_dynamicmemoryclaims.yaml")
	require.NoError(t, err)
	js, err := yaml.ToJSON(data)
	require.NoError(t, err)
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Status struct {
								Properties struct {
									Message   struct{ MaxLength int } `json:"message"`
									NUMANodes struct{ MaxItems int }  `json:"numaNodes"`
								} `json:"properties"`
							} `json:"status"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	require.NoError(t, json.Unmarshal(js, &crd))
	require.NotEmpty(t, crd.Spec.Versions)
	for _, v := range crd.Spec.Versions {
		status := v.Schema.OpenAPIV3Schema.Properties.Status.Properties
		assert.Equal(t, v1alpha1.ClaimMessageMaxLength, status.Message.MaxLength, "%s: status.message maxLength", v.Name)
		assert.Equal(t, session.MaxNUMANodes, status.NUMANodes.MaxItems, "%s: status.numaNodes maxItems", v.Name)
	}
	assert.Less(t, session.MaxAgentMessageLength+2*253+200, v1alpha1.ClaimMessageMaxLength,
		"an agent's words, wrapped with node and claim names, fit status.message")
}
