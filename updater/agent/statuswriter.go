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

package agent

import (
	"context"
	"sync"
	"time"

	"github.com/dynamicmemory/kube-dynamic-memory/updater/nodestatus"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// statusWriter writes the node status in the background, so that a command is
// acknowledged without waiting for the API server. Only the newest status is
// kept, and two writes are at least interval apart: the changes made while a
// write is in flight, or within interval of the last one, end in one write (a
// burst of pods starting costs the API server one node write, not one per pod). A
// failed write is retried after a backoff, or sooner at the next change.
type statusWriter struct {
	node                   NodeStatus
	clock                  clock.Clock
	interval               time.Duration
	minBackoff, maxBackoff time.Duration
	// lastWrite is when the last successful write ended (zero: none yet; used by
	// run only).
	lastWrite time.Time
	// kick wakes the writer; it holds at most one wake-up.
	kick chan struct{}

	mu sync.Mutex
	// desired is the status to show (nil: none yet).
	desired *nodestatus.Status
	// written is the status last written successfully (nil: none yet).
	written *nodestatus.Status
}

func newStatusWriter(node NodeStatus, clk clock.Clock, interval, minBackoff, maxBackoff time.Duration) *statusWriter {
	return &statusWriter{node: node, clock: clk, interval: interval, minBackoff: minBackoff, maxBackoff: maxBackoff, kick: make(chan struct{}, 1)}
}

// set makes s the status to write, replacing any not written yet, and returns
// at once.
func (w *statusWriter) set(s nodestatus.Status) {
	w.mu.Lock()
	w.desired = &s
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default: // a wake-up is already pending; it will see s
	}
}

// run writes the desired status whenever it changes, until ctx ends.
func (w *statusWriter) run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	delay := w.minBackoff
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-retry:
		}
		retry = nil
		if wait := w.interval - w.clock.Since(w.lastWrite); !w.lastWrite.IsZero() && wait > 0 {
			select {
			case <-ctx.Done():
				return // stopping: Run writes the last status
			case <-w.clock.After(wait):
			}
		}
		if err := w.write(ctx); err != nil {
			if ctx.Err() != nil {
				return // stopping: Run writes the last status
			}
			logger.Error(err, "Updating the node status failed, retrying", "after", delay)
			retry = w.clock.After(delay)
			delay = min(2*delay, w.maxBackoff)
			continue
		}
		delay = w.minBackoff
		w.lastWrite = w.clock.Now()
	}
}

// write writes the desired status unless it is the one last written (heartbeats
// set the same status again and again). Only one write runs at a time: run's, or
// Run's last one after run has ended, so that the last status is not lost on a
// clean stop.
func (w *statusWriter) write(ctx context.Context) error {
	w.mu.Lock()
	desired, written := w.desired, w.written
	w.mu.Unlock()
	if desired == nil || (written != nil && *written == *desired) {
		return nil
	}
	if err := w.node.Update(ctx, *desired); err != nil {
		return err
	}
	w.mu.Lock()
	w.written = desired
	w.mu.Unlock()
	return nil
}
