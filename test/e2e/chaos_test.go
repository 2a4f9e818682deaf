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

package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/local/chaos"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

// chaosRuns is how many seeds of the chaos suite `make test` runs (seeds 1 to
// chaosRuns, the first runs of `make chaos`).
const chaosRuns = 3

// TestChaos runs the first seeds of the chaos suite on the whole system: components
// killed and restarted, pods deleted, nodes drained and pools edited while pods ask
// for more memory than the pools have; every run's invariants must hold.
func TestChaos(t *testing.T) {
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), 30*time.Minute)
	defer cancel()
	dir := os.Getenv("E2E_RUN_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	res, err := chaos.Suite(ctx, chaos.Options{Dir: dir, Seed: 1, Runs: chaosRuns, Progress: system.NewProgress(&testWriter{t: t}, clock.RealClock{})})
	require.NoError(t, err, "run the chaos suite")
	require.Len(t, res.Runs, chaosRuns)
	t.Log(res.Summary())
	for _, run := range res.Runs {
		assert.Empty(t, run.Failures, "chaos run with seed %d (run it again with: make chaos SEED=%d RUNS=1)", run.Seed, run.Seed)
		assert.Positive(t, run.Pods, "seed %d created pods", run.Seed)
		assert.NotEmpty(t, run.Faults, "seed %d injected faults", run.Seed)
		assert.Positive(t, run.Checks[chaos.CheckJournal], "seed %d checked the hosts' journals", run.Seed)
	}
}
