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

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
)

// CreateNodes creates kwok nodes with the given memory capacity (and the cluster's CPU
// count) and waits until they are Ready. Existing nodes of those names are left as
// they are.
func (c *Cluster) CreateNodes(ctx context.Context, names []string, memory string) error {
	if len(names) == 0 {
		return nil
	}
	if !c.state.Kwok {
		return errors.New("create nodes: the cluster runs without kwok, nothing would make the nodes Ready")
	}
	mem, err := resource.ParseQuantity(memory)
	if err != nil {
		return fmt.Errorf("create nodes: memory %q: %w", memory, err)
	}
	cpu, err := resource.ParseQuantity(c.state.NodeCPU)
	if err != nil {
		return fmt.Errorf("create nodes: cpu %q: %w", c.state.NodeCPU, err)
	}
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    cpu,
		corev1.ResourceMemory: mem,
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	for _, name := range names {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{KwokNodeAnnotation: "fake"},
				Labels: map[string]string{
					corev1.LabelHostname:   name,
					corev1.LabelOSStable:   "linux",
					corev1.LabelArchStable: "amd64",
					"type":                 "kwok",
				},
			},
			Status: corev1.NodeStatus{
				Capacity:    resources.DeepCopy(),
				Allocatable: resources.DeepCopy(),
			},
		}
		if _, err := c.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", name, err)
		}
	}
	c.mu.Lock()
	for _, name := range names {
		if !slices.Contains(c.state.Nodes, name) {
			c.state.Nodes = append(c.state.Nodes, name)
		}
	}
	err = c.saveState()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.waitNodesReady(ctx, names)
}

func (c *Cluster) waitNodesReady(ctx context.Context, names []string) error {
	logger := klog.FromContext(ctx)
	var notReady []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
		if p := c.Process(Kwok); p != nil && !p.Running() {
			return false, fmt.Errorf("kwok exited while nodes were starting; see %s:\n%s", p.LogFile, p.LogTail(30))
		}
		notReady = notReady[:0]
		for _, name := range names {
			node, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil || !NodeReady(node) {
				notReady = append(notReady, name)
			}
		}
		return len(notReady) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("nodes not Ready: %v: %w", notReady, err)
	}
	logger.V(2).Info("Nodes ready", "nodes", names)
	return nil
}

// NodeReady tells whether the node's Ready condition is True.
func NodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
