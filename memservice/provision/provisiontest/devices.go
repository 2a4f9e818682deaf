// Package provisiontest has test doubles for the provision package's interfaces.
package provisiontest

import (
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

// Devices is a pool registry of one pool's device (provision.Devices).
type Devices struct {
	Pool    string
	Backend provision.Backend
	HostIDs map[string]int32
}

var _ provision.Devices = Devices{}

// Device returns the backend of Pool and the host ID of node, with the registry's
// errors for another pool or an unknown node.
func (d Devices) Device(pool, node string) (provision.Backend, int32, error) {
	if pool != d.Pool {
		return nil, 0, ledger.Errorf(ledger.CodeUnavailable, "pool %s has no device backend", pool)
	}
	id, ok := d.HostIDs[node]
	if !ok {
		return nil, 0, ledger.Errorf(ledger.CodeNotFound, "node %s has no host ID on the device of pool %s", node, pool)
	}
	return d.Backend, id, nil
}
