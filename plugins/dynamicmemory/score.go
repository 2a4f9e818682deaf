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

package dynamicmemory

import (
	"context"

	v1 "k8s.io/api/core/v1"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/helper"
)

var _ fwk.PreScorePlugin = (*DynamicMemory)(nil)

// PreScore skips Score for pods PreFilter skipped (no dynamic memory claims): the
// framework skips Filter after a PreFilter Skip, but not Score.
func (pl *DynamicMemory) PreScore(_ context.Context, cs fwk.CycleState, _ *v1.Pod, _ []fwk.NodeInfo) *fwk.Status {
	if s := lookupState(cs); s == nil || len(s.demands) == 0 {
		return fwk.NewStatus(fwk.Skip)
	}
	return nil
}

// Score ranks a node by the pools its memory would come from: with MostAllocated
// the fuller the pool after the placement, the higher; with LeastAllocated the
// emptier; the locality weight mixes in the pools' latencyClass.
func (pl *DynamicMemory) Score(_ context.Context, cs fwk.CycleState, _ *v1.Pod, nodeInfo fwk.NodeInfo) (int64, *fwk.Status) {
	s, err := getState(cs)
	if err != nil {
		return 0, fwk.AsStatus(err)
	}
	placements, status := s.view.fitNode(nodeInfo.Node().Name, s.demands, pl.scorer)
	if status != nil {
		// Filter admitted the node with the same view; nothing fits only if the
		// pod has no new demand left to place.
		return 0, nil
	}
	var sum, n int64
	for i, p := range placements {
		if !s.demands[i].allocated {
			sum += p.score
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	return sum / n, nil
}

// ScoreExtensions returns the plugin itself: it normalizes its scores.
func (pl *DynamicMemory) ScoreExtensions() fwk.ScoreExtensions { return pl }

// NormalizeScore scales the scores so that the best node gets MaxNodeScore.
func (pl *DynamicMemory) NormalizeScore(_ context.Context, _ fwk.CycleState, _ *v1.Pod, scores fwk.NodeScoreList) *fwk.Status {
	return helper.DefaultNormalizeScore(fwk.MaxNodeScore, false, scores)
}
