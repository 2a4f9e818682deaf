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
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/server"
)

func TestValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name string
		req  any
		want string // "" means valid
	}{
		{"a complete reserve request", &memservicev1.ReserveRequest{Claim: claim(1), Node: "node1", Bytes: 1}, ""},
		{"an uppercase UID is a UID", &memservicev1.ReserveRequest{Claim: &memservicev1.ClaimRef{Uid: strings.ToUpper(uid(1)), Namespace: "ns", Name: "c"}, Node: "n", Bytes: 1}, ""},
		{"a UID without dashes", &memservicev1.ReserveRequest{Claim: &memservicev1.ClaimRef{Uid: strings.ReplaceAll(uid(1), "-", ""), Namespace: "ns", Name: "c"}, Node: "n", Bytes: 1}, "claim.uid: must be a UID"},
		{"a namespace that is no DNS label", &memservicev1.AddMemoryRequest{Claim: &memservicev1.ClaimRef{Uid: uid(1), Namespace: "a.b", Name: "c"}, Node: "n", Bytes: 1}, "claim.namespace: invalid name"},
		{"a pool that is no name", &memservicev1.AddMemoryRequest{Claim: claim(1), Node: "n", Pool: "Pool!", Bytes: 1}, "pool: invalid name"},
		{"remove without UID", &memservicev1.RemoveMemoryRequest{}, "claim_uid: required"},
		{"hello without node", &memservicev1.AgentHello{}, "hello.node: required"},
		{"hello with a long version", &memservicev1.AgentHello{Node: "n", Version: strings.Repeat("v", 257)}, "hello.version: at most 256 characters"},
		{"hello with more claims online than a host can hold", &memservicev1.AgentHello{Node: "n", HostState: &memservicev1.HostState{
			Online: make([]*memservicev1.OnlineClaim, server.MaxHostClaims+1)}}, "hello.host_state.online: at most 4096 claims, got 4097"},
		{"hello with a claim UID longer than a UID", &memservicev1.AgentHello{Node: "n", HostState: &memservicev1.HostState{
			Online: []*memservicev1.OnlineClaim{{ClaimUid: uid(1)}, {ClaimUid: strings.Repeat("u", 129)}}}}, "hello.host_state.online[1].claim_uid: at most 128 characters"},
		{"hello with a claim in too many NUMA nodes", &memservicev1.AgentHello{Node: "n", HostState: &memservicev1.HostState{
			Online: []*memservicev1.OnlineClaim{{ClaimUid: uid(1), NumaNodes: make([]int32, 65)}}}}, "hello.host_state.online[0].numa_nodes: at most 64, got 65"},
		{"hello with its host state", &memservicev1.AgentHello{Node: "n", Version: "v1.0.0", HostState: &memservicev1.HostState{
			Online: []*memservicev1.OnlineClaim{{ClaimUid: uid(1), Bytes: gi, NumaNodes: []int32{1}}}}}, ""},
		{"capacity for all nodes", &memservicev1.GetCapacityRequest{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := server.Validate(tc.req)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.want)
			assert.Equal(t, ledger.CodeInvalid, ledger.CodeOf(err))
		})
	}
}

// FuzzValidateReserve checks that validation never panics, that what it accepts the
// ledger can hold without overflow, and that every refusal names a field.
func FuzzValidateReserve(f *testing.F) {
	f.Add(uid(1), "default", "claim-1", "node1", "", int64(1<<30), "pod", uid(2))
	f.Add("x", "", "", "", "Pool", int64(-1), "", "")
	f.Add(uid(1), "ns", strings.Repeat("a", 300), "n", "p", int64(1)<<62, "p", "nope")
	fields := []string{"claim", "claim.uid", "claim.namespace", "claim.name", "pod.name", "pod.uid", "node", "pool", "bytes"}
	f.Fuzz(func(t *testing.T, claimUID, ns, name, node, pool string, bytes int64, podName, podUID string) {
		req := &memservicev1.ReserveRequest{
			Claim: &memservicev1.ClaimRef{Uid: claimUID, Namespace: ns, Name: name},
			Pod:   &memservicev1.PodRef{Name: podName, Uid: podUID},
			Node:  node, Pool: pool, Bytes: bytes,
		}
		err := server.Validate(req)
		if err == nil {
			if bytes <= 0 || bytes > server.MaxRequestBytes {
				t.Fatalf("accepted bytes %d", bytes)
			}
			if _, ok := ledger.RoundUp(bytes, 1<<40); !ok {
				t.Fatalf("accepted bytes %d that overflow when rounded", bytes)
			}
			return
		}
		if ledger.CodeOf(err) != ledger.CodeInvalid {
			t.Fatalf("refusal %v is not CodeInvalid", err)
		}
		named := false
		for _, f := range fields {
			if strings.HasPrefix(err.Error(), f+": ") {
				named = true
			}
		}
		if !named {
			t.Fatalf("refusal %q names no field", err)
		}
	})
}
