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

package system

import (
	"fmt"
	"io"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Progress prints what the demo is doing: one line per step, with the time since the
// start, and short status lines while waiting. A nil *Progress prints nothing.
type Progress struct {
	out   io.Writer
	clock clock.PassiveClock
	start time.Time

	mu   sync.Mutex
	open bool // a step line waits for its end
}

// NewProgress prints to out, timing from now.
func NewProgress(out io.Writer, clk clock.PassiveClock) *Progress {
	return &Progress{out: out, clock: clk, start: clk.Now()}
}

// Step is a step in progress.
type Step struct {
	p     *Progress
	start time.Time
}

// Step starts a step: "[  1.2s] Starting the memory service ... ".
func (p *Progress) Step(format string, args ...any) *Step {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	fmt.Fprintf(p.out, "%s %s ... ", p.stamp(), fmt.Sprintf(format, args...))
	p.open = true
	return &Step{p: p, start: p.clock.Now()}
}

// Done ends the step: "done in 0.8s", followed by an optional note.
func (s *Step) Done(note ...any) {
	if s == nil {
		return
	}
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		fmt.Fprintf(p.out, "%s   ", p.stamp())
	}
	fmt.Fprintf(p.out, "done in %s", roundDuration(p.clock.Since(s.start)))
	if len(note) > 0 {
		if format, ok := note[0].(string); ok {
			fmt.Fprintf(p.out, " (%s)", fmt.Sprintf(format, note[1:]...))
		}
	}
	fmt.Fprintln(p.out)
	p.open = false
}

// Printf prints a line of its own.
func (p *Progress) Printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	fmt.Fprintf(p.out, "%s %s\n", p.stamp(), fmt.Sprintf(format, args...))
}

// Writer is where the progress goes, for output of its own (tables).
func (p *Progress) Writer() io.Writer {
	if p == nil {
		return io.Discard
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	return p.out
}

// Elapsed is the time since the progress started.
func (p *Progress) Elapsed() time.Duration {
	if p == nil {
		return 0
	}
	return p.clock.Since(p.start)
}

func (p *Progress) endLine() {
	if p.open {
		fmt.Fprintln(p.out)
		p.open = false
	}
}

func (p *Progress) stamp() string {
	return fmt.Sprintf("[%6.1fs]", p.clock.Since(p.start).Seconds())
}

func roundDuration(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
