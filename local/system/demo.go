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
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

// Timeouts of the demo's waits.
const (
	runTimeout     = 3 * time.Minute
	pendingTimeout = time.Minute
	returnTimeout  = 2 * time.Minute
)

// DemoOptions configure RunDemo.
type DemoOptions struct {
	// Dir is the run directory.
	Dir string
	// Keep leaves the cluster and the components running when the demo ends.
	Keep bool
	// Scheduler places the pods (Options.Scheduler).
	Scheduler string
	// RealNodes adds nodes run by a real kubelet and containerd (Options.RealNodes).
	RealNodes int
	// Out receives the progress and the end state.
	Out io.Writer
}

// RunDemo is `local-cluster demo`: it starts the system, runs DefaultScenario with
// progress on o.Out, prints the end state with the kubectl plugin, deletes the pods,
// shows the memory coming back, and stops everything unless o.Keep.
func RunDemo(ctx context.Context, o DemoOptions) (err error) {
	p := NewProgress(o.Out, clock.RealClock{})
	sys, err := Start(ctx, Options{
		Dir: o.Dir, Detach: o.Keep, Progress: p, Scheduler: o.Scheduler, RealNodes: o.RealNodes,
		Pools: DefaultPools(nodeNames(4, o.RealNodes), 100*time.Millisecond),
	})
	if err != nil {
		return err
	}
	defer func() {
		if o.Keep {
			// Kept on failure too: the cluster is there to look into.
			printKeep(p.Writer(), sys)
			return
		}
		step := p.Step("Stopping every process")
		if stopErr := sys.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
			return
		}
		step.Done()
		if err != nil {
			fmt.Fprintf(p.Writer(), "Logs of every component are in %s\n", filepath.Join(sys.Cluster.Dir(), "logs"))
		}
	}()

	sc := DefaultScenario("demo")
	mon := sys.StartMonitor(ctx)
	step := p.Step("Creating %d pods in namespace %s asking for %s of dynamic memory (%s to %s each; the pools have %s)",
		len(sc.Fitting), sc.Namespace, formatBytes(Total(sc.Fitting)), sc.Fitting[len(sc.Fitting)-1].Memory.String(), sc.Fitting[0].Memory.String(), poolsTotal(sys))
	if err := sys.CreateWorkloads(ctx, sc.Namespace, sc.Fitting, nil); err != nil {
		return err
	}
	step.Done()
	start := time.Now()
	if err := sys.WaitRunning(ctx, sc.Namespace, Names(sc.Fitting), runTimeout); err != nil {
		return err
	}
	p.Printf("All %d pods Running with their memory online, %s after creation", len(sc.Fitting), roundDuration(time.Since(start)))

	step = p.Step("Creating pod %s asking for %s: more than a node may hold of %s, more than %s has left", sc.Oversize.Name, sc.Oversize.Memory.String(), PoolA, PoolB)
	if err := sys.CreateWorkloads(ctx, sc.Namespace, []Workload{sc.Oversize}, nil); err != nil {
		return err
	}
	reason, err := sys.WaitUnschedulable(ctx, sc.Namespace, sc.Oversize.Name, pendingTimeout)
	if err != nil {
		return err
	}
	step.Done()
	p.Printf("%s stays Pending: %s", sc.Oversize.Name, reason)

	w := p.Writer()
	sys.kubectl(ctx, w, "get", "pools")
	sys.kubectl(ctx, w, "get", "claims", "-A")
	sys.kubectl(ctx, w, "why", sc.Oversize.Name, "-n", sc.Namespace)

	all := append(Names(sc.Fitting), sc.Oversize.Name)
	step = p.Step("Deleting the %d pods", len(all))
	if err := sys.DeleteWorkloads(ctx, sc.Namespace, all); err != nil {
		return err
	}
	step.Done()
	start = time.Now()
	if err := sys.WaitMemoryReturned(ctx, returnTimeout); err != nil {
		return err
	}
	p.Printf("Every pool is full again and no DynamicMemoryClaim is left, %s after deletion", roundDuration(time.Since(start)))
	sys.kubectl(ctx, p.Writer(), "get", "pools")

	violations, snapshots, scans := mon.Stop()
	if len(violations) > 0 {
		return fmt.Errorf("pools were over-committed during the demo:\n  %s", strings.Join(violations, "\n  "))
	}
	p.Printf("No over-commit in %d pool snapshots and %d claim scans. Demo finished in %s.", snapshots, scans, roundDuration(p.Elapsed()))
	return nil
}

func poolsTotal(s *System) string {
	var total int64
	for _, p := range s.Pools {
		total += p.Spec.Capacity.Value()
	}
	return formatBytes(total)
}

// kubectl runs `kubectl dynamic-memory args...` (bin/kubectl-dynamic_memory) against
// the cluster and prints the command and its output.
func (s *System) kubectl(ctx context.Context, w io.Writer, args ...string) {
	fmt.Fprintf(w, "\n$ kubectl dynamic-memory %s\n", strings.Join(args, " "))
	bin := filepath.Join(s.Cluster.BinDir(), "kubectl-dynamic_memory")
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", s.Cluster.Kubeconfig())...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	_, _ = w.Write(out.Bytes())
	if err != nil {
		fmt.Fprintf(w, "(%s failed: %v)\n", bin, err)
	}
	fmt.Fprintln(w)
}

func printKeep(w io.Writer, s *System) {
	fmt.Fprintf(w, `
The cluster and every component keep running (--keep).

  kubeconfig: %s
  logs:       %s/
  processes:  %d (etcd, kube-apiserver, kube-controller-manager, kwok, memservice,
              kube-scheduler, a node agent and a DRA plugin per node)

  export KUBECONFIG=%s
  export PATH=%s:$PATH
  kubectl dynamic-memory get pools

Stop everything with 'make cluster-down RUN_DIR=%s' (or 'bin/local-cluster down --dir %s').
`, s.Cluster.Kubeconfig(), filepath.Join(s.Cluster.Dir(), "logs"), len(s.Cluster.Processes()),
		s.Cluster.Kubeconfig(), s.Cluster.BinDir(), s.Cluster.Dir(), s.Cluster.Dir())
}
