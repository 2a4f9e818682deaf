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
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Journal operations, the "op" of a JournalEntry.
const (
	JournalOnline  = "online"
	JournalOffline = "offline"
)

// JournalEntry is one line of a simulated host's journal: a memory block that changed
// state. The file is JSON Lines, one entry per line, appended as the transitions
// happen:
//
//	{"time":"2026-12-01T10:00:00.123456789Z","op":"online","pool":"cxl-a","block":3,"claim":"6f1c..."}
type JournalEntry struct {
	// Time is when the block changed state (RFC 3339 with nanoseconds).
	Time time.Time `json:"time"`
	// Op is JournalOnline or JournalOffline.
	Op string `json:"op"`
	// Pool is the pool whose region holds the block.
	Pool string `json:"pool"`
	// Block is the block's index in the pool's region: extent offset / block size.
	Block int `json:"block"`
	// Claim is the ResourceClaim UID of the request that changed the block.
	Claim string `json:"claim"`
}

// ReadJournal reads a simulated host's journal. A missing file is an empty journal;
// a last line without its newline (a write cut short) is ignored; any other line that
// is not an entry is an error naming its line number.
func ReadJournal(file string) ([]JournalEntry, error) {
	entries, _, err := readJournal(file)
	return entries, err
}

// readJournal also returns how many bytes of the file are whole lines.
func readJournal(file string) ([]JournalEntry, int64, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read host journal: %w", err)
	}
	whole := bytes.LastIndexByte(data, '\n') + 1
	var entries []JournalEntry
	for i, line := range bytes.SplitAfter(data[:whole], []byte("\n")) {
		if len(line) == 0 {
			continue // after the last newline
		}
		var e JournalEntry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, 0, fmt.Errorf("host journal %s line %d: %w", file, i+1, err)
		}
		if e.Op != JournalOnline && e.Op != JournalOffline {
			return nil, 0, fmt.Errorf("host journal %s line %d: op %q is neither %s nor %s", file, i+1, e.Op, JournalOnline, JournalOffline)
		}
		entries = append(entries, e)
	}
	return entries, int64(whole), nil
}

// appendJournal appends one entry to the journal with a single write(2) on a file
// opened with O_APPEND, so that entries of concurrent writers never interleave.
func appendJournal(file string, e JournalEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode host journal entry: %w", err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open host journal: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		_ = f.Close()
		return fmt.Errorf("append to host journal %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("append to host journal %s: %w", file, err)
	}
	return nil
}
