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
