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

package dynamicmemory

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// TestProfilesShareAConnectionUntilTheLastEnds acquires the connection of one memory
// service for two profiles: they get the same client and cache, the cache activates
// the rejected pods of both, and the connection closes only when both have ended.
func TestProfilesShareAConnectionUntilTheLastEnds(t *testing.T) {
	bundle, err := pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	cfg := client.Config{Address: "127.0.0.1:1", CAFile: bundle.CAFile(), CertFile: bundle.CertFile("scheduler"), KeyFile: bundle.KeyFile("scheduler")}
	set := &connectionSet{open: map[client.Config]*sharedConnection{}}
	isOpen := func() bool {
		set.mu.Lock()
		defer set.mu.Unlock()
		_, ok := set.open[cfg]
		return ok
	}

	ctx1, cancel1 := context.WithCancel(testContext(t))
	ctx2, cancel2 := context.WithCancel(testContext(t))
	defer cancel2()
	r1, r2 := newRejectedPods(nil), newRejectedPods(nil)
	c1, err := set.acquire(ctx1, cfg, r1)
	require.NoError(t, err)
	c2, err := set.acquire(ctx2, cfg, r2)
	require.NoError(t, err)
	assert.Same(t, c1, c2, "one connection for both profiles")
	assert.Equal(t, []*rejectedPods{r1, r2}, c1.rejected)

	other := cfg
	other.ServerName = "elsewhere"
	ctx3, cancel3 := context.WithCancel(testContext(t))
	c3, err := set.acquire(ctx3, other, newRejectedPods(nil))
	require.NoError(t, err)
	assert.NotSame(t, c1, c3, "another service, another connection")
	cancel3()

	cancel1()
	require.Eventually(t, func() bool {
		c1.mu.Lock()
		defer c1.mu.Unlock()
		return len(c1.rejected) == 1 && c1.rejected[0] == r2
	}, 5*time.Second, 5*time.Millisecond, "the ended profile's pods are no longer activated")
	assert.True(t, isOpen(), "the connection stays open while a profile uses it")

	cancel2()
	require.Eventually(t, func() bool { return !isOpen() }, 5*time.Second, 5*time.Millisecond, "the last profile ended: the connection is closed")
	c4, err := set.acquire(testContext(t), cfg, r1)
	require.NoError(t, err)
	assert.NotSame(t, c1, c4, "a new user after the last ended dials again")
}
