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

// Package chaos is the chaos suite: seeded, reproducible runs on the local system
// (local/system) that create pods of random sizes across the pools, more than fit,
// and meanwhile kill and restart components (SIGKILL and SIGTERM), edit pools (edits
// that are allowed and edits that must be refused), delete pods and drain nodes. Each
// run then checks that the promise held:
//
//   - no pool was ever over-committed, pool-wide or in a node's host window (the
//     memory service's snapshots, the DynamicMemoryClaims, and the hosts' journals);
//   - no block was offlined while the pod of its claim was bound, none was onlined
//     while online already, none was offlined for another claim (the journals the
//     simulated hosts keep of every block they online and offline);
//   - once the faults stop, every pod runs with its memory online on its node, or is
//     Pending with a reason that names the pools and the numbers;
//   - once the pods are gone, every pool is full again, no DynamicMemoryClaim is left,
//     every agent checkpoint is empty, every node shows no pool memory online, and no
//     block is online on any host.
//
// A seed decides everything random in a run, so a failing seed can be run again
// (`make chaos SEED=n RUNS=1`); what the machine's timing decides is not repeatable.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

// Options configure a suite.
type Options struct {
	// Dir is the run directory of the local system. Required.
	Dir string
	// Seed is the first run's seed; run i uses Seed+i.
	Seed uint64
	// Runs is the number of runs (default 1).
	Runs int
	// Progress receives one line per step (nil: none).
	Progress *system.Progress
}

// Suite starts the local system, makes the runs on it and stops it. After a failed
// run the system is started afresh, so that one failure does not fail the runs
// after it. The error is for a suite that could not run (the system did not start);
// failed runs are in the result.
func Suite(ctx context.Context, o Options) (Result, error) {
	if o.Dir == "" {
		return Result{}, errors.New("chaos options: Dir is required (the run directory)")
	}
	if o.Runs <= 0 {
		o.Runs = 1
	}
	res := Result{Seed: o.Seed, Started: time.Now()}
	var sys *system.System
	defer func() {
		if sys != nil {
			if err := sys.Stop(); err != nil {
				klog.FromContext(ctx).Error(err, "Stopping the system")
			}
		}
	}()
	for i := range o.Runs {
		if ctx.Err() != nil {
			return res, context.Cause(ctx)
		}
		if sys == nil {
			var err error
			if sys, err = start(ctx, filepath.Join(o.Dir, fmt.Sprintf("system-%d", i)), o.Progress); err != nil {
				return res, err
			}
		}
		r := newRun(sys, o.Seed+uint64(i), o.Progress).execute(ctx)
		res.Runs = append(res.Runs, r)
		if len(r.Failures) > 0 {
			file := filepath.Join(sys.Cluster.Dir(), "failures.txt")
			if err := os.WriteFile(file, []byte(strings.Join(r.Failures, "\n")+"\n"), 0o644); err != nil {
				return res, fmt.Errorf("write the failures of seed %d: %w", r.Seed, err)
			}
			o.Progress.Printf("  run %d (seed %d) FAILED; failures and logs kept in %s", i+1, r.Seed, sys.Cluster.Dir())
			if err := sys.Stop(); err != nil {
				return res, fmt.Errorf("stop the system after a failed run: %w", err)
			}
			sys = nil
		}
	}
	res.Duration = time.Since(res.Started)
	return res, nil
}

// nodes is the number of kwok nodes the suite runs on.
const nodes = 4

func start(ctx context.Context, dir string, p *system.Progress) (*system.System, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clean %s: %w", dir, err)
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = cluster.NodeName(cluster.DefaultNodePrefix, i)
	}
	return system.Start(ctx, system.Options{
		Dir:      dir,
		Nodes:    nodes,
		Pools:    system.DefaultPools(names, 100*time.Millisecond),
		Progress: p,
		// The runs kill components on purpose; their logs are what a failed seed
		// is debugged with.
		Verbosity: 3,
	})
}

// newRng is a run's source of randomness.
func newRng(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x6368616f73)) // "chaos"
}

// poolLimits are the pools' capacity and host window, in blocks of blockSize.
func poolLimits(pools []v1alpha1.DynamicMemoryPool, blockSize int64) map[string]limits {
	out := map[string]limits{}
	for _, p := range pools {
		out[p.Name] = limits{capacity: int(p.Spec.Capacity.Value() / blockSize), window: int(p.Spec.HostWindow.Value() / blockSize)}
	}
	return out
}
