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

package provision

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

// Conditions writes the conditions of a claim's DynamicMemoryClaim that release
// flights own.
type Conditions interface {
	// ReleaseBlocked sets ReleaseBlocked=True (reason MemoryBusy) with the message.
	ReleaseBlocked(ctx context.Context, r ledger.Reservation, message string) error
	// ReleaseUnblocked sets ReleaseBlocked=False (reason MemoryOfflined) on a record
	// that has the condition.
	ReleaseUnblocked(ctx context.Context, r ledger.Reservation) error
}

// blockage is the state of one release flight whose node agent answers that it
// cannot offline the memory (session.ErrMemoryBusy): from the first such answer until
// the memory goes offline, the claim shows it in its ReleaseBlocked condition, an
// event and the ReleasesBlocked gauge, and the agent is asked again only every
// BusyRetryInterval, so a block that cannot go offline is not churned.
type blockage struct {
	m       *Manager
	r       ledger.Reservation
	blocked bool
}

// busy marks the claim after the agent's busy answer err and returns the error the
// release step reports, which says what an operator can do.
func (b *blockage) busy(ctx context.Context, err error) error {
	msg := fmt.Sprintf("memory of this claim cannot be taken back from node %s: %v. It stays online and whole; the node agent is asked again every %s. "+
		"To free it, find and stop the process or driver pinning its pages (the node's kernel log says \"page dumped because: unmovable page\"), or drain node %s; the release then completes on its own",
		b.r.Node, err, b.m.cfg.BusyRetryInterval, b.r.Node)
	if !b.blocked {
		b.blocked = true
		if b.m.cfg.Metrics != nil {
			b.m.cfg.Metrics.ReleasesBlocked.WithLabelValues(b.r.Pool, b.r.Node).Inc()
		}
	}
	if b.m.cfg.Conditions != nil {
		if cerr := b.m.cfg.Conditions.ReleaseBlocked(ctx, b.r, msg); cerr != nil {
			klog.FromContext(ctx).Error(cerr, "Marking the claim's release blocked")
		}
	}
	b.event(corev1.EventTypeWarning, v1alpha1.ReasonMemoryBusy, msg)
	return &blockedError{msg: msg, err: err}
}

// blockedError is a busy answer told as the claim's message: what happened and what
// to do. It wraps the agent's answer.
type blockedError struct {
	msg string
	err error
}

func (e *blockedError) Error() string { return e.msg }
func (e *blockedError) Unwrap() error { return e.err }

// offlined ends the blockage once the memory went offline.
func (b *blockage) offlined(ctx context.Context) {
	if !b.blocked {
		return
	}
	b.end()
	if b.m.cfg.Conditions != nil {
		if err := b.m.cfg.Conditions.ReleaseUnblocked(ctx, b.r); err != nil {
			klog.FromContext(ctx).Error(err, "Marking the claim's release unblocked")
		}
	}
	b.event(corev1.EventTypeNormal, v1alpha1.ReasonMemoryOfflined, fmt.Sprintf("memory offlined on node %s after being busy; the release goes on", b.r.Node))
}

// end takes the claim off the gauge: its memory went offline, or the flight ended (a
// flight resumed after a restart marks it again at the agent's next busy answer).
func (b *blockage) end() {
	if !b.blocked {
		return
	}
	b.blocked = false
	if b.m.cfg.Metrics != nil {
		b.m.cfg.Metrics.ReleasesBlocked.WithLabelValues(b.r.Pool, b.r.Node).Dec()
	}
}

func (b *blockage) event(eventType, reason, msg string) {
	if b.m.cfg.Events == nil {
		return
	}
	ref := &corev1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryClaim", Namespace: b.r.Claim.Namespace, Name: b.r.Claim.Name}
	b.m.cfg.Events.Event(ref, eventType, reason, msg)
}
