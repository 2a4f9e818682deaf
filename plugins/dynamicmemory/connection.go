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
	"slices"
	"sync"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/memservice/client"
	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
)

// connection is what the plugin instances of one scheduler share for one memory
// service: the client and the pool cache. A scheduler makes one instance per profile
// that enables the plugin (the shipped configuration enables it in both); sharing the
// cache means one WatchPools stream, and a reservation in flight in one profile is
// subtracted by the Filter of every other, so two profiles do not race each other for
// the same pool memory.
type connection struct {
	client memservicev1.MemoryServiceClient
	cache  *poolCache

	mu sync.Mutex
	// rejected are the rejected pods of every instance on this connection: each is
	// activated when the shared cache sees capacity come back.
	rejected []*rejectedPods
}

func newConnection(c memservicev1.MemoryServiceClient, clk clock.Clock) *connection {
	conn := &connection{client: c, cache: newPoolCache(c, clk)}
	conn.cache.onFreed = conn.activate
	return conn
}

// addRejected has the cache activate r's pods too.
func (c *connection) addRejected(r *rejectedPods) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected = append(c.rejected, r)
}

func (c *connection) removeRejected(r *rejectedPods) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected = slices.DeleteFunc(c.rejected, func(x *rejectedPods) bool { return x == r })
}

func (c *connection) activate(logger klog.Logger, v *cacheView) {
	c.mu.Lock()
	rejected := slices.Clone(c.rejected)
	c.mu.Unlock()
	for _, r := range rejected {
		r.activate(logger, v)
	}
}

// connections are the process's connections to memory services, by client
// configuration. A connection lives while a plugin instance that uses it does: its
// pool cache stops and its client closes when the last instance's context ends.
var connections = &connectionSet{open: map[client.Config]*sharedConnection{}}

type connectionSet struct {
	mu   sync.Mutex
	open map[client.Config]*sharedConnection
}

type sharedConnection struct {
	*connection
	users int
	stop  context.CancelFunc
}

// acquire returns the connection for cfg, dialing it and starting its cache for the
// first user, and adds r to the pods it activates. Both last until ctx ends.
func (s *connectionSet) acquire(ctx context.Context, cfg client.Config, r *rejectedPods) (*connection, error) {
	// The pool cache reports into the plugin's metrics: registered before it runs.
	RegisterMetrics()
	s.mu.Lock()
	defer s.mu.Unlock()
	shared, ok := s.open[cfg]
	if !ok {
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		logger := klog.FromContext(ctx).WithValues("plugin", Name)
		logger.Info("Watching the memory service's pools", "address", cfg.Address)
		// The cache outlives the context of its first user when others still use it.
		cacheCtx, stop := context.WithCancel(klog.NewContext(context.Background(), logger))
		shared = &sharedConnection{connection: newConnection(c, clock.RealClock{}), stop: stop}
		s.open[cfg] = shared
		go func() {
			shared.cache.run(cacheCtx)
			if err := c.Close(); err != nil {
				logger.Error(err, "Close the memory service connection")
			}
		}()
	}
	shared.users++
	shared.addRejected(r)
	context.AfterFunc(ctx, func() { s.release(cfg, shared, r) })
	return shared.connection, nil
}

func (s *connectionSet) release(cfg client.Config, shared *sharedConnection, r *rejectedPods) {
	s.mu.Lock()
	defer s.mu.Unlock()
	shared.removeRejected(r)
	shared.users--
	if shared.users > 0 {
		return
	}
	shared.stop()
	if s.open[cfg] == shared {
		delete(s.open, cfg)
	}
}
