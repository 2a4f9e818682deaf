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
	"time"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"
)

// connectedStatus is the node status of a connected agent with online bytes.
func connectedStatus(online int64) nodestatus.Status {
	return nodestatus.Status{OnlineBytes: online, Ready: true, Reason: "SessionEstablished", Message: "the node agent holds a session with the memory service"}
}

// startAgentWithHeldNodeStatus starts an agent whose node status writes the API
// server holds, and waits until its first write (after the session's hello) hangs.
func startAgentWithHeldNodeStatus(t *testing.T, cpFile string) (*harness, *fakeSession, *fakeNode) {
	t.Helper()
	host := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	node := holdingNode()
	h := startAgentOn(t, cpFile, host, host, node)
	s := h.svc.session(t)
	require.NotNil(t, s.next(t).GetHello())
	node.nextHeld(t)
	return h, s, node
}

func TestAgentAcknowledgesAnOnlineWhileTheNodeStatusWriteIsHeld(t *testing.T) {
	h, s, node := startAgentWithHeldNodeStatus(t, filepath.Join(t.TempDir(), "agent.json"))

	s.send(t, onlineCmd("c1", "uid-1", 0, 128*mib))
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)
	assert.Empty(t, node.written(), "the node status write is still held")
	assert.Equal(t, 128*mib, h.limiter.bytes(), "the pod cgroup limit is set before the command is acknowledged")
	saved, err := loadCheckpoint(h.cp)
	require.NoError(t, err)
	assert.Contains(t, saved.Claims, "uid-1", "the checkpoint is written before the command is acknowledged")

	node.release()
	require.Eventually(t, func() bool { return node.last() == connectedStatus(128*mib) }, 10*time.Second, time.Millisecond,
		"the node status shows the memory once the API server answers")
}

func TestAgentWritesOnlyTheNewestNodeStatus(t *testing.T) {
	_, s, node := startAgentWithHeldNodeStatus(t, "")

	const claims = 4
	for i := range int64(claims) {
		s.send(t, onlineCmd(fmt.Sprintf("c%d", i), fmt.Sprintf("uid-%d", i), i*128*mib, 128*mib))
		require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)
	}
	node.release()

	want := connectedStatus(claims * 128 * mib)
	require.Eventually(t, func() bool { return node.last() == want }, 10*time.Second, time.Millisecond)
	written := node.written()
	assert.Len(t, written, 2, "the write held, then one write of the newest status for %d changes: %v", claims, written)
}

func TestAgentRetriesAFailedNodeStatusWrite(t *testing.T) {
	tests := []struct {
		name     string
		failures int
	}{
		{"one failed write", 1},
		{"failures past the longest backoff", 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host := hostmem.NewSimulated(hostmem.SimulatedConfig{})
			h := startAgent(t, "", host)
			s := h.svc.session(t)
			require.NotNil(t, s.next(t).GetHello())
			require.Eventually(t, func() bool { return h.node.last() == connectedStatus(0) }, 10*time.Second, time.Millisecond)

			h.node.failNext(tc.failures)
			s.send(t, onlineCmd("c1", "uid-1", 0, 128*mib))
			require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)
			// Step the fake clock through the backoffs (and heartbeats, which
			// retry too) until the write lands.
			require.Eventually(t, func() bool {
				h.clock.Step(time.Second)
				return h.node.last() == connectedStatus(128*mib)
			}, 10*time.Second, 10*time.Millisecond, "the node status was not written")
			assert.Equal(t, tc.failures, h.node.failedWrites())
		})
	}
}

func TestAgentWritesTheNodeStatusWhenItStops(t *testing.T) {
	h, s, node := startAgentWithHeldNodeStatus(t, "")
	s.send(t, onlineCmd("c1", "uid-1", 0, 128*mib))
	require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)

	// The agent stops while a write is held: that write gives up with the
	// agent's context, and Run writes the final status before it returns.
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop() }()
	want := nodestatus.Status{OnlineBytes: 128 * mib, Reason: "AgentStopped", Message: "the node agent is not running"}
	assert.Equal(t, want, node.nextHeld(t), "the status written on stop")
	node.release()
	require.NoError(t, <-stopped)
	assert.Equal(t, []nodestatus.Status{want}, node.written())
}

func TestStatusWriterRetriesAfterABackoff(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		// delays are the waits expected before each retry.
		delays []time.Duration
	}{
		{"one failure waits the minimum backoff", 1, []time.Duration{time.Second}},
		{"the backoff doubles up to the maximum", 4, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := testingclock.NewFakeClock(time.Now())
			node := &fakeNode{failures: tc.failures}
			w := newStatusWriter(node, clk, 0, time.Second, 4*time.Second)
			runWriter(t, w)

			w.set(connectedStatus(128 * mib))
			for i, d := range tc.delays {
				require.Eventually(t, clk.HasWaiters, 10*time.Second, time.Millisecond, "the writer waits to retry (retry %d)", i+1)
				clk.Step(d - time.Nanosecond)
				assert.True(t, clk.HasWaiters(), "retry %d comes after %v, not before", i+1, d)
				clk.Step(time.Nanosecond)
			}
			require.Eventually(t, func() bool { return node.last() == connectedStatus(128*mib) }, 10*time.Second, time.Millisecond)
			assert.Equal(t, tc.failures, node.failedWrites())
		})
	}
}

func TestStatusWriterSkipsTheStatusAlreadyWritten(t *testing.T) {
	node := &fakeNode{}
	w := newStatusWriter(node, testingclock.NewFakeClock(time.Now()), time.Second, time.Second, time.Minute)
	ctx := context.Background()
	for _, s := range []nodestatus.Status{connectedStatus(0), connectedStatus(0), connectedStatus(128 * mib), connectedStatus(128 * mib)} {
		w.set(s)
		require.NoError(t, w.write(ctx))
	}
	assert.Equal(t, []nodestatus.Status{connectedStatus(0), connectedStatus(128 * mib)}, node.written(), "a heartbeat does not write the same status again")
}

// A burst of changes costs one write per interval: the first change is written at
// once, the ones that follow within the interval together when it has passed.
func TestStatusWriterHoldsWritesAnIntervalApart(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	node := &fakeNode{}
	w := newStatusWriter(node, clk, time.Second, time.Second, time.Minute)
	runWriter(t, w)

	w.set(connectedStatus(128 * mib))
	require.Eventually(t, func() bool { return len(node.written()) == 1 }, 10*time.Second, time.Millisecond, "the first change is written at once")
	for i := int64(2); i <= 5; i++ {
		w.set(connectedStatus(i * 128 * mib))
	}
	require.Eventually(t, clk.HasWaiters, 10*time.Second, time.Millisecond, "the writer waits out the interval")
	assert.Len(t, node.written(), 1, "nothing more within the interval")
	clk.Step(time.Second)
	require.Eventually(t, func() bool { return len(node.written()) == 2 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, []nodestatus.Status{connectedStatus(128 * mib), connectedStatus(5 * 128 * mib)}, node.written(), "the changes of the interval in one write")
}

// runWriter runs w until the test ends.
func runWriter(t *testing.T, w *statusWriter) {
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { w.run(ctx) })
	t.Cleanup(func() {
		cancel()
		run.Wait()
	})
}
