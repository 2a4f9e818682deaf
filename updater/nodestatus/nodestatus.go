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

// Package nodestatus shows the node agent's view on the Node object: the pool memory
// online on the node as the extended resource dynamicmemory.io/online-memory (in
// status.capacity and status.allocatable, bytes), and whether the agent holds a
// session with the memory service as the condition DynamicMemoryAgentReady. Both are
// for people and monitoring: the scheduler plugin learns agent health from the
// memory service, and pods get pool memory through DRA claims, not this resource.
package nodestatus

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

const (
	// ResourceName is the extended resource holding the bytes online from pools.
	ResourceName corev1.ResourceName = "dynamicmemory.io/online-memory"
	// ConditionAgentReady is True while the agent holds a memory service session.
	ConditionAgentReady corev1.NodeConditionType = "DynamicMemoryAgentReady"
)

// Status is what the agent shows on its node.
type Status struct {
	// OnlineBytes is the pool memory online on the node.
	OnlineBytes int64
	// Ready tells whether the agent holds a session with the memory service.
	Ready bool
	// Reason is a CamelCase word for the condition (SessionEstablished, SessionLost).
	Reason string
	// Message explains the condition to a person.
	Message string
}

// Updater patches the node's status.
type Updater struct {
	client kubernetes.Interface
	node   string
	clock  clock.Clock

	mu         sync.Mutex
	last       *Status
	transition metav1.Time
}

// New returns an updater for the named node.
func New(client kubernetes.Interface, node string, clk clock.Clock) *Updater {
	return &Updater{client: client, node: node, clock: clk}
}

// Update patches the node if the status differs from the last one written. The
// patch is a strategic merge patch (what PatchStatus sends): conditions merge by
// type, and the kubelet's resources stay as they are.
func (u *Updater) Update(ctx context.Context, s Status) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last != nil && *u.last == s {
		return nil
	}
	status := corev1.ConditionFalse
	if s.Ready {
		status = corev1.ConditionTrue
	}
	now := metav1.NewTime(u.clock.Now())
	cond := corev1.NodeCondition{
		Type:              ConditionAgentReady,
		Status:            status,
		Reason:            s.Reason,
		Message:           s.Message,
		LastHeartbeatTime: now,
	}
	switch {
	case u.last == nil:
		// First write since the agent started: keep the node's transition time if
		// the condition's status does not change.
		node, err := u.client.CoreV1().Nodes().Get(ctx, u.node, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get node %s: %w", u.node, err)
		}
		cond.LastTransitionTime = now
		for _, c := range node.Status.Conditions {
			if c.Type == ConditionAgentReady && c.Status == status {
				cond.LastTransitionTime = c.LastTransitionTime
			}
		}
	case u.last.Ready != s.Ready:
		cond.LastTransitionTime = now
	default:
		cond.LastTransitionTime = u.transition
	}
	quantity := strconv.FormatInt(s.OnlineBytes, 10)
	patch := map[string]any{
		"status": map[string]any{
			"capacity":    map[string]string{string(ResourceName): quantity},
			"allocatable": map[string]string{string(ResourceName): quantity},
			"conditions":  []corev1.NodeCondition{cond},
		},
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encode node status patch: %w", err)
	}
	if _, err := u.client.CoreV1().Nodes().PatchStatus(ctx, u.node, data); err != nil {
		return fmt.Errorf("patch status of node %s: %w", u.node, err)
	}
	u.last = &s
	u.transition = cond.LastTransitionTime
	return nil
}
