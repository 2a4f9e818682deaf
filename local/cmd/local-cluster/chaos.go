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

package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/local/chaos"
	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

func newChaosCommand(g *globalOptions) *cobra.Command {
	var (
		seed   uint64
		runs   int
		report string
	)
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Run the chaos suite: seeded runs that kill components, delete pods, drain nodes and edit pools while pods ask for memory",
		Long: `Start the local system and make --runs seeded runs on it (seeds --seed, --seed+1, ...).
Each run creates pods asking for more memory than the pools have, kills and restarts
the memory service, the scheduler, node agents and DRA plugins at random moments,
deletes pods, drains nodes and edits pools; then checks that no pool was
over-committed, no memory was taken from a bound pod or onlined twice, every pod runs
with its memory or is Pending with the numbers, and that everything comes back once
the pods are gone. Exits non-zero if a run failed; --report writes the outcome as
Markdown. Build the binaries first ('make chaos' does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, closeLog, err := logToFile(cmd.Context(), g, "chaos.log")
			if err != nil {
				return err
			}
			defer closeLog()
			out := cmd.OutOrStdout()
			res, err := chaos.Suite(ctx, chaos.Options{Dir: g.dir, Seed: seed, Runs: runs, Progress: system.NewProgress(out, clock.RealClock{})})
			if err != nil {
				return err
			}
			fmt.Fprintln(out, res.Summary())
			if report != "" {
				if err := writeReport(report, res, fmt.Sprintf("make chaos SEED=%d RUNS=%d", seed, runs)); err != nil {
					return err
				}
				fmt.Fprintf(out, "Report written to %s\n", report)
			}
			if failed := res.Failed(); len(failed) > 0 {
				return fmt.Errorf("%d of %d chaos runs failed (first failing seed %d)", len(failed), len(res.Runs), failed[0].Seed)
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the first run; run i uses seed+i")
	cmd.Flags().IntVar(&runs, "runs", 10, "number of runs")
	cmd.Flags().StringVar(&report, "report", "", "write the outcome as Markdown to this file (e.g. docs/reliability.md)")
	return cmd
}

func writeReport(file string, res chaos.Result, command string) error {
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := res.WriteReport(f, command); err != nil {
		_ = f.Close()
		return fmt.Errorf("write report %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", file, err)
	}
	return nil
}
