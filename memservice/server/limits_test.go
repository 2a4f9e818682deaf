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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/server"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

// largestHello is the biggest Hello the validation accepts: every field at its bound.
func largestHello() *memservicev1.AgentHello {
	numa := make([]int32, session.MaxNUMANodes)
	for i := range numa {
		numa[i] = 1<<31 - 1
	}
	online := make([]*memservicev1.OnlineClaim, server.MaxHostClaims)
	for i := range online {
		online[i] = &memservicev1.OnlineClaim{ClaimUid: strings.Repeat("u", 128), NumaNodes: numa}
	}
	return &memservicev1.AgentHello{
		Node:      strings.Repeat("n", 253),
		Version:   strings.Repeat("v", 256),
		HostState: &memservicev1.HostState{Online: online},
	}
}

func TestLargestHelloFits(t *testing.T) {
	hello := largestHello()
	require.NoError(t, server.Validate(hello), "the largest valid Hello")
	size := proto.Size(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: hello}})
	t.Logf("the largest valid Hello is %d bytes; the limit is %d", size, server.MaxRecvMessageBytes)
	assert.Less(t, size, server.MaxRecvMessageBytes, "the largest valid Hello (%d bytes) is received", size)
	assert.Greater(t, size, server.MaxRecvMessageBytes/2, "the limit is fitted to the largest request, not far above it")
}

func TestServerLimits(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("a message over the limit is refused", func(t *testing.T) {
		stream, err := h.dial("agent-node1").AgentSession(ctx)
		require.NoError(t, err)
		hello := largestHello()
		hello.Node = "node1"
		hello.HostState.Online = append(hello.HostState.Online, hello.HostState.Online...)
		_ = stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{Hello: hello}})
		_, err = stream.Recv()
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		assert.ErrorContains(t, err, "larger than max")
	})

	t.Run("a session without a Hello ends", func(t *testing.T) {
		stream, err := h.dial("agent-node1").AgentSession(ctx)
		require.NoError(t, err)
		start := time.Now()
		_, err = stream.Recv()
		assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
		assert.ErrorContains(t, err, "no Hello within "+h.helloTimeout.String())
		assert.Less(t, time.Since(start), 10*h.helloTimeout, "ended at the Hello timeout")
	})

	t.Run("a node that opens sessions too often is told to retry later", func(t *testing.T) {
		c := h.dial("agent-node2")
		var refused error
		for i := range server.SessionOpenBurst + 2 {
			stream, err := c.AgentSession(ctx)
			require.NoError(t, err)
			require.NoError(t, stream.Send(&memservicev1.AgentMessage{Message: &memservicev1.AgentMessage_Hello{
				Hello: &memservicev1.AgentHello{Node: "node2", Version: "test"},
			}}))
			// A refused session ends at once; an accepted one waits for commands.
			recvCtx, stop := context.WithTimeout(ctx, 200*time.Millisecond)
			done := make(chan error, 1)
			go func() { _, err := stream.Recv(); done <- err }()
			select {
			case err := <-done:
				if status.Code(err) == codes.ResourceExhausted {
					refused = err
					assert.GreaterOrEqual(t, i, server.SessionOpenBurst, "session %d was refused within the burst", i)
				}
			case <-recvCtx.Done():
			}
			stop()
			if refused != nil {
				break
			}
		}
		require.Error(t, refused, "the session opens beyond the burst are refused")
		assert.ErrorContains(t, refused, "node node2 opens sessions too often")
		assert.ErrorContains(t, refused, "retry later")

		// Another node is not held back by node2.
		h.startAgent(h.dial("agent-node1"), "node1")
	})

	t.Run("a node sees its own share of a pool only", func(t *testing.T) {
		h.startAgent(h.dial("agent-node1"), "node1")
		admin, err := h.dial("admin").GetCapacity(ctx, &memservicev1.GetCapacityRequest{})
		require.NoError(t, err)
		require.Len(t, admin.GetPools(), 1)
		assert.Len(t, admin.GetPools()[0].GetNodes(), 2, "the admin sees every node")

		own, err := h.dial("draplugin-node1").GetCapacity(ctx, &memservicev1.GetCapacityRequest{Node: "node1"})
		require.NoError(t, err)
		require.Len(t, own.GetPools(), 1)
		require.Len(t, own.GetPools()[0].GetNodes(), 1)
		assert.Equal(t, "node1", own.GetPools()[0].GetNodes()[0].GetNode())
		assert.Equal(t, admin.GetPools()[0].GetFreeBytes(), own.GetPools()[0].GetFreeBytes(), "the pool's free memory")

		_, err = h.dial("draplugin-node1").GetCapacity(ctx, &memservicev1.GetCapacityRequest{Node: "node2"})
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	})
}
