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

// Package pki holds the mutual-TLS conventions of the memory service: how a client's
// certificate says who it is (role and node), and a small certificate authority that
// issues development and test certificates.
//
// A client certificate carries its role in Subject.Organization as
// "dynamicmemory.io:<role>" and, for node-bound roles (agent, draplugin), the node name
// as Subject.CommonName. The memory service authorizes every call from that identity.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// Role is what a client of the memory service is allowed to do.
type Role string

const (
	// RoleScheduler reserves, provisions and releases memory, and watches pools.
	RoleScheduler Role = "scheduler"
	// RoleAgent is a node agent: it may open an AgentSession for its own node only.
	RoleAgent Role = "agent"
	// RoleDRAPlugin is a DRA kubelet plugin: it may read reservations of its own node.
	RoleDRAPlugin Role = "draplugin"
	// RoleAdmin may read everything (kubectl plugin, operators).
	RoleAdmin Role = "admin"
)

const orgPrefix = "dynamicmemory.io:"

// Identity is who a client certificate names.
type Identity struct {
	Role Role
	// Node is set for node-bound roles (agent, draplugin).
	Node string
}

func (id Identity) String() string {
	if id.Node == "" {
		return string(id.Role)
	}
	return string(id.Role) + "/" + id.Node
}

// NodeBound tells whether the role acts for one node only.
func (r Role) NodeBound() bool { return r == RoleAgent || r == RoleDRAPlugin }

func (r Role) valid() bool {
	switch r {
	case RoleScheduler, RoleAgent, RoleDRAPlugin, RoleAdmin:
		return true
	}
	return false
}

// Validate checks that the identity can be put in a certificate.
func (id Identity) Validate() error {
	if !id.Role.valid() {
		return fmt.Errorf("role %q is not one of scheduler, agent, draplugin, admin", id.Role)
	}
	if id.Role.NodeBound() && id.Node == "" {
		return fmt.Errorf("role %s needs a node name", id.Role)
	}
	if !id.Role.NodeBound() && id.Node != "" {
		return fmt.Errorf("role %s is not bound to a node, got node %q", id.Role, id.Node)
	}
	return nil
}

// IdentityFromCert reads the identity of a verified client certificate.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("no client certificate")
	}
	var id Identity
	for _, org := range cert.Subject.Organization {
		if r, ok := strings.CutPrefix(org, orgPrefix); ok {
			if id.Role != "" {
				return Identity{}, fmt.Errorf("certificate %q names more than one role", cert.Subject.CommonName)
			}
			id.Role = Role(r)
		}
	}
	if id.Role == "" {
		return Identity{}, fmt.Errorf("certificate %q has no organization %q<role>", cert.Subject.CommonName, orgPrefix)
	}
	if id.Role.NodeBound() {
		id.Node = cert.Subject.CommonName
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
	}
	return id, nil
}
