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

package provisiontest

import (
	"context"
	"fmt"
	"sync"

	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

// Conditions records the conditions written on claims (provision.Conditions), one
// line per write: "<claim UID> ReleaseBlocked=True: <message>" or
// "<claim UID> ReleaseBlocked=False".
type Conditions struct {
	mu     sync.Mutex
	writes []string
}

var _ provision.Conditions = (*Conditions)(nil)

func (c *Conditions) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, s)
}

// ReleaseBlocked records ReleaseBlocked=True with the message.
func (c *Conditions) ReleaseBlocked(_ context.Context, r ledger.Reservation, message string) error {
	c.add(fmt.Sprintf("%s ReleaseBlocked=True: %s", r.Claim.UID, message))
	return nil
}

// ReleaseUnblocked records ReleaseBlocked=False.
func (c *Conditions) ReleaseUnblocked(_ context.Context, r ledger.Reservation) error {
	c.add(r.Claim.UID + " ReleaseBlocked=False")
	return nil
}

// Writes returns the writes so far, oldest first.
func (c *Conditions) Writes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.writes...)
}
