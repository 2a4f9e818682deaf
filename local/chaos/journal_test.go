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

package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/types"

	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
)

func TestReplayFindsEveryViolation(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	entry := func(node string, s int, op, claim string, block int) hostEntry {
		return hostEntry{node: node, JournalEntry: hostmem.JournalEntry{Time: at(s), Op: op, Pool: "p", Block: block, Claim: claim}}
	}
	// Pod "pod-a" of claim "a" is bound from 10 s and deleted at 20 s; pod "pod-b"
	// of claim "b" is bound from 10 s and never deleted.
	obs := &observer{
		boundAt:   map[types.UID]time.Time{"pa": at(10), "pb": at(10)},
		deletedAt: map[types.UID]time.Time{"pa": at(20)},
		podOf:     map[types.UID]types.UID{"a": "pa", "b": "pb"},
		podName:   map[types.UID]string{"pa": "pod-a", "pb": "pod-b"},
	}
	pools := map[string]limits{"p": {capacity: 3, window: 2}}

	tests := []struct {
		name    string
		entries []hostEntry
		want    []string // substrings, one per violation, in order
	}{
		{
			name: "online, then offline after the pod was deleted, is clean",
			entries: []hostEntry{
				entry("n0", 1, hostmem.JournalOnline, "a", 0),
				entry("n0", 21, hostmem.JournalOffline, "a", 0),
			},
		},
		{
			name: "an offline while the pod is bound is found",
			entries: []hostEntry{
				entry("n0", 1, hostmem.JournalOnline, "b", 0),
				entry("n0", 15, hostmem.JournalOffline, "b", 0),
			},
			want: []string{"offlined while pod pod-b of claim b was bound and not deleted"},
		},
		{
			name: "an online of a block online already is found",
			entries: []hostEntry{
				entry("n0", 1, hostmem.JournalOnline, "a", 0),
				entry("n0", 2, hostmem.JournalOnline, "c", 0),
			},
			want: []string{"onlined for claim c while online for claim a"},
		},
		{
			name: "an offline for another claim is found",
			entries: []hostEntry{
				entry("n0", 1, hostmem.JournalOnline, "c", 0),
				entry("n0", 2, hostmem.JournalOffline, "d", 0),
			},
			want: []string{"offlined for claim d while online for claim c"},
		},
		{
			name: "an offline of an offline block is found",
			entries: []hostEntry{
				entry("n0", 2, hostmem.JournalOffline, "d", 0),
			},
			want: []string{"offlined while offline"},
		},
		{
			name: "the host window and the capacity are kept, across nodes and out of order",
			entries: []hostEntry{
				entry("n1", 3, hostmem.JournalOnline, "e", 0),
				entry("n0", 1, hostmem.JournalOnline, "c", 0),
				entry("n0", 2, hostmem.JournalOnline, "c", 1),
				entry("n0", 4, hostmem.JournalOnline, "c", 2),
			},
			want: []string{"node n0: 3 blocks of pool p online, host window 2", "pool p: 4 blocks online across nodes, capacity 3"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checks, violations := newHostState().replay(tc.entries, pools, obs)
			assert.Positive(t, checks)
			if assert.Len(t, violations, len(tc.want), "violations: %q", violations) {
				for i, w := range tc.want {
					assert.Contains(t, violations[i], w)
				}
			}
		})
	}
}
