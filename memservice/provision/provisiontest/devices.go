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
