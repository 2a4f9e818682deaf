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

package hostmem

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

func simRequest(claim, pool string, block, blocks int64) Request {
	return Request{ClaimUID: claim, Pool: pool, Extents: []v1alpha1.Extent{{Offset: block * SimulatedBlockSize, Length: blocks * SimulatedBlockSize}}}
}

func TestSimulatedOnlineRefusesBlocksOnlineAlreadyUnlessResuming(t *testing.T) {
	ctx := context.Background()
	s := NewSimulated(SimulatedConfig{})
	_, err := s.Online(ctx, simRequest("uid-1", "pool-a", 1, 1), nil)
	require.NoError(t, err)

	_, err = s.Online(ctx, simRequest("uid-2", "pool-a", 0, 2), nil)
	require.ErrorIs(t, err, ErrOnlineNotOurs)
	assert.Contains(t, err.Error(), "claim uid-2: memory block(s) [1] of pool pool-a are online already")
	assert.Equal(t, 1, s.OnlineBlocks(), "block 0 is not onlined either")

	resume := simRequest("uid-1", "pool-a", 1, 1)
	resume.Resume = true
	_, err = s.Online(ctx, resume, nil)
	require.NoError(t, err, "the claim's own block")
	assert.Equal(t, 1, s.OnlineBlocks())
}

func TestSimulatedPoolsAreSeparateRegions(t *testing.T) {
	ctx := context.Background()
	s := NewSimulated(SimulatedConfig{})
	_, err := s.Online(ctx, simRequest("uid-1", "pool-a", 0, 2), nil)
	require.NoError(t, err)
	_, err = s.Online(ctx, simRequest("uid-2", "pool-b", 0, 2), nil)
	require.NoError(t, err, "block 0 of pool-b is not block 0 of pool-a")
	assert.Equal(t, 4, s.OnlineBlocks())

	_, err = s.Check(ctx, simRequest("uid-3", "pool-c", 0, 1))
	require.ErrorIs(t, err, ErrNotOnline)
	require.NoError(t, s.Offlined(ctx, simRequest("uid-3", "pool-c", 0, 1)))
	err = s.Offlined(ctx, simRequest("uid-2", "pool-b", 1, 2))
	require.ErrorIs(t, err, ErrStillOnline)
	assert.Contains(t, err.Error(), "memory block(s) [1] of pool pool-b are online")

	require.NoError(t, s.Offline(ctx, simRequest("uid-2", "pool-b", 0, 2), nil))
	_, err = s.Check(ctx, simRequest("uid-1", "pool-a", 0, 2))
	require.NoError(t, err, "offlining pool-b leaves pool-a online")
}

// The journal is the simulated host's memory across restarts: a second host on the
// same journal starts where the first stopped, and only transitions are written.
func TestSimulatedJournalKeepsTheHostAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	journal := filepath.Join(t.TempDir(), "host-journal.jsonl")
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC))
	first, err := OpenSimulated(SimulatedConfig{Clock: clk}, journal)
	require.NoError(t, err)
	_, err = first.Online(ctx, simRequest("uid-1", "pool-a", 2, 2), nil)
	require.NoError(t, err)
	_, err = first.Online(ctx, simRequest("uid-2", "pool-b", 2, 1), nil)
	require.NoError(t, err)
	resume := simRequest("uid-1", "pool-a", 2, 2)
	resume.Resume = true
	_, err = first.Online(ctx, resume, nil)
	require.NoError(t, err)
	require.NoError(t, first.Offline(ctx, simRequest("uid-2", "pool-b", 2, 1), nil))
	require.NoError(t, first.Offline(ctx, simRequest("uid-2", "pool-b", 2, 1), nil))

	data, err := os.ReadFile(journal)
	require.NoError(t, err)
	assert.Equal(t, `{"time":"2026-12-01T10:00:00.123456789Z","op":"online","pool":"pool-a","block":2,"claim":"uid-1"}
{"time":"2026-12-01T10:00:00.123456789Z","op":"online","pool":"pool-a","block":3,"claim":"uid-1"}
{"time":"2026-12-01T10:00:00.123456789Z","op":"online","pool":"pool-b","block":2,"claim":"uid-2"}
{"time":"2026-12-01T10:00:00.123456789Z","op":"offline","pool":"pool-b","block":2,"claim":"uid-2"}
`, string(data), "one line per transition; resuming online blocks and offlining offline ones write nothing")

	second, err := OpenSimulated(SimulatedConfig{Clock: clk}, journal)
	require.NoError(t, err)
	assert.Equal(t, first.online, second.online, "the journal replays to the same state")
	_, err = second.Check(ctx, simRequest("uid-1", "pool-a", 2, 2))
	require.NoError(t, err)
	_, err = second.Online(ctx, simRequest("uid-3", "pool-a", 3, 1), nil)
	require.ErrorIs(t, err, ErrOnlineNotOurs, "the restarted host knows block 3 is online")
	require.NoError(t, second.Offline(ctx, simRequest("uid-1", "pool-a", 2, 2), nil))

	entries, err := ReadJournal(journal)
	require.NoError(t, err)
	require.Len(t, entries, 6)
	assert.Equal(t, JournalEntry{Time: clk.Now(), Op: JournalOffline, Pool: "pool-a", Block: 3, Claim: "uid-1"}, entries[4], "offline goes highest block first")
	assert.Equal(t, JournalEntry{Time: clk.Now(), Op: JournalOffline, Pool: "pool-a", Block: 2, Claim: "uid-1"}, entries[5])
}

func TestSimulatedJournalEntryIsWrittenBeforeTheStateChanges(t *testing.T) {
	dir := t.TempDir()
	journal := filepath.Join(dir, "missing-dir", "journal.jsonl")
	s, err := OpenSimulated(SimulatedConfig{}, journal)
	require.NoError(t, err, "a missing journal is an empty host")
	_, err = s.Online(context.Background(), simRequest("uid-1", "pool-a", 0, 1), nil)
	require.ErrorContains(t, err, "claim uid-1: online memory block 0: open host journal")
	assert.Equal(t, 0, s.OnlineBlocks(), "a transition that could not be journaled is not made")
}

func TestReadJournal(t *testing.T) {
	const online = `{"time":"2026-12-01T10:00:00Z","op":"online","pool":"p","block":1,"claim":"c"}` + "\n"
	tests := []struct {
		name    string
		content *string
		entries int
		wantErr string
	}{
		{name: "missing file", entries: 0},
		{name: "empty file", content: ptr(""), entries: 0},
		{name: "whole lines", content: ptr(online + online), entries: 2},
		{name: "a last line cut short is ignored", content: ptr(online + `{"time":"2026-12-01T10:00:00Z","op":"onl`), entries: 1},
		{name: "a bad line in the middle", content: ptr(online + "garbage\n" + online), wantErr: "line 2: invalid character"},
		{name: "an empty line", content: ptr(online + "\n"), wantErr: "line 2: unexpected end of JSON input"},
		{name: "an unknown op", content: ptr(`{"op":"reboot"}` + "\n"), wantErr: `line 1: op "reboot" is neither online nor offline`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "journal.jsonl")
			if tc.content != nil {
				require.NoError(t, os.WriteFile(file, []byte(*tc.content), 0o644))
			}
			entries, err := ReadJournal(file)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), file)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Len(t, entries, tc.entries)
		})
	}
}

// A line cut short by a crash is cut from the file when the host opens it, so the
// next entry is a line of its own and the journal stays readable.
func TestOpenSimulatedCutsAPartialLastLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "journal.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(`{"time":"2026-12-01T10:00:00Z","op":"online","pool":"p","block":0,"claim":"c"}`+"\n"+`{"time":"2026-12-0`), 0o644))
	s, err := OpenSimulated(SimulatedConfig{}, file)
	require.NoError(t, err)
	_, err = s.Online(context.Background(), simRequest("c", "p", 1, 1), nil)
	require.NoError(t, err)
	entries, err := ReadJournal(file)
	require.NoError(t, err)
	require.Len(t, entries, 2)
	assert.Equal(t, 1, entries[1].Block)
}
