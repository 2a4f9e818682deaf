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

package provision_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision/provisiontest"
)

// blockingStore holds Create until released, and reports whether the write's context
// was canceled by then.
type blockingStore struct {
	orderedStore
	entered, release chan struct{}
	canceled         chan error
}

func (s *blockingStore) Create(ctx context.Context, r ledger.Reservation) error {
	close(s.entered)
	<-s.release
	s.canceled <- ctx.Err()
	return s.orderedStore.Create(ctx, r)
}

// A record write the service sent before it was told to stop completes: canceled in
// flight, it could still land on the API server after the process is gone and after
// a new instance rebuilt its ledger without it.
func TestARecordWriteInFlightOutlivesTheServiceStopping(t *testing.T) {
	l := ledger.New(nil, ledger.Options{})
	require.NoError(t, l.SetPool(ledger.Pool{Name: "p", Capacity: 8 * gi, BlockSize: gi, HostWindow: 8 * gi, Nodes: []string{"n"}}))
	l.SetPoolReady("p", true, "")
	st := &blockingStore{entered: make(chan struct{}), release: make(chan struct{}), canceled: make(chan error, 1)}
	m := provision.New(provision.Config{Ledger: l, Devices: provisiontest.Devices{Pool: "p", Backend: &flakyDevice{}, HostIDs: map[string]int32{"n": 0}},
		Agents: &agents{}, Store: st, RetryInterval: time.Millisecond, MaxRetryInterval: 5 * time.Millisecond})
	ctx, stop := context.WithCancel(context.Background())
	m.Start(ctx)
	go func() { _, _ = m.AddMemory(context.Background(), req("u")) }()

	<-st.entered
	stop() // SIGTERM while the record is being created
	close(st.release)
	assert.NoError(t, <-st.canceled, "the write in flight was not canceled")
	m.Wait()
}
