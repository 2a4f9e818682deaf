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

package server

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/session"
)

// MaxRequestBytes is the largest size a request may ask for (1 PiB).
const MaxRequestBytes = int64(1) << 50

// MaxHostClaims is the most claims a node agent may report online on its host in
// its Hello; the service answers each with a command, so the list is bounded.
const MaxHostClaims = 4096

// Every validate function returns a ledger.CodeInvalid error whose message starts
// with the field path, or nil.

func invalid(field, format string, args ...any) error {
	return ledger.Errorf(ledger.CodeInvalid, "%s: %s", field, fmt.Sprintf(format, args...))
}

// isUID tells whether s is a UID in the RFC 4122 text form Kubernetes uses
// (8-4-4-4-12 hex digits).
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func validateUID(field, uid string) error {
	if uid == "" {
		return invalid(field, "required")
	}
	if !isUID(uid) {
		return invalid(field, "must be a UID (RFC 4122), got %q", uid)
	}
	return nil
}

func validateName(field, name string, required bool, check func(string) []string) error {
	if name == "" {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if errs := check(name); len(errs) > 0 {
		return invalid(field, "invalid name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

func validateClaim(c *memservicev1.ClaimRef) error {
	if c == nil {
		return invalid("claim", "required")
	}
	if err := validateUID("claim.uid", c.GetUid()); err != nil {
		return err
	}
	if err := validateName("claim.namespace", c.GetNamespace(), true, validation.IsDNS1123Label); err != nil {
		return err
	}
	return validateName("claim.name", c.GetName(), true, validation.IsDNS1123Subdomain)
}

func validatePod(p *memservicev1.PodRef) error {
	if p == nil {
		return nil
	}
	if err := validateName("pod.name", p.GetName(), false, validation.IsDNS1123Subdomain); err != nil {
		return err
	}
	if p.GetUid() != "" {
		return validateUID("pod.uid", p.GetUid())
	}
	return nil
}

func validateBytes(n int64) error {
	switch {
	case n <= 0:
		return invalid("bytes", "must be positive, got %d", n)
	case n > MaxRequestBytes:
		return invalid("bytes", "must be at most %d (1Pi), got %d", MaxRequestBytes, n)
	}
	return nil
}

func validateReserve(req *memservicev1.ReserveRequest) error {
	return validateAllocation(req.GetClaim(), req.GetPod(), req.GetNode(), req.GetPool(), req.GetBytes())
}

func validateAddMemory(req *memservicev1.AddMemoryRequest) error {
	return validateAllocation(req.GetClaim(), req.GetPod(), req.GetNode(), req.GetPool(), req.GetBytes())
}

func validateAllocation(c *memservicev1.ClaimRef, p *memservicev1.PodRef, node, pool string, bytes int64) error {
	if err := validateClaim(c); err != nil {
		return err
	}
	if err := validatePod(p); err != nil {
		return err
	}
	if err := validateName("node", node, true, validation.IsDNS1123Subdomain); err != nil {
		return err
	}
	if err := validateName("pool", pool, false, validation.IsDNS1123Subdomain); err != nil {
		return err
	}
	return validateBytes(bytes)
}

func validateRemoveMemory(req *memservicev1.RemoveMemoryRequest) error {
	return validateUID("claim_uid", req.GetClaimUid())
}

func validateGetReservation(req *memservicev1.GetReservationRequest) error {
	return validateUID("claim_uid", req.GetClaimUid())
}

func validateGetCapacity(req *memservicev1.GetCapacityRequest) error {
	return validateName("node", req.GetNode(), false, validation.IsDNS1123Subdomain)
}

// Bounds of a Hello's other fields: the version is logged with every line of the
// session; a claim UID is at most as long as DynamicMemoryClaim spec.claim.uid.
const (
	maxVersionLength = 256
	maxUIDLength     = 128
)

// validateHello checks a node agent's first message, bounding everything an
// untrusted node sends (see also session.Registry.Handle for later messages).
func validateHello(h *memservicev1.AgentHello) error {
	if h == nil {
		return invalid("hello", "the first message of a session must be a Hello")
	}
	if err := validateName("hello.node", h.GetNode(), true, validation.IsDNS1123Subdomain); err != nil {
		return err
	}
	if n := len(h.GetVersion()); n > maxVersionLength {
		return invalid("hello.version", "at most %d characters, got %d", maxVersionLength, n)
	}
	online := h.GetHostState().GetOnline()
	if len(online) > MaxHostClaims {
		return invalid("hello.host_state.online", "at most %d claims, got %d", MaxHostClaims, len(online))
	}
	for i, c := range online {
		if n := len(c.GetClaimUid()); n > maxUIDLength {
			return invalid(fmt.Sprintf("hello.host_state.online[%d].claim_uid", i), "at most %d characters, got %d", maxUIDLength, n)
		}
		if n := len(c.GetNumaNodes()); n > session.MaxNUMANodes {
			return invalid(fmt.Sprintf("hello.host_state.online[%d].numa_nodes", i), "at most %d, got %d", session.MaxNUMANodes, n)
		}
	}
	return nil
}

// Validate checks any request message of the service; for the fuzz test and for
// callers that want to check a request before sending it.
func Validate(req any) error {
	switch r := req.(type) {
	case *memservicev1.ReserveRequest:
		return validateReserve(r)
	case *memservicev1.AddMemoryRequest:
		return validateAddMemory(r)
	case *memservicev1.RemoveMemoryRequest:
		return validateRemoveMemory(r)
	case *memservicev1.GetReservationRequest:
		return validateGetReservation(r)
	case *memservicev1.GetCapacityRequest:
		return validateGetCapacity(r)
	case *memservicev1.AgentHello:
		return validateHello(r)
	case *memservicev1.WatchPoolsRequest:
		return nil
	}
	return fmt.Errorf("no validation for %T", req)
}
