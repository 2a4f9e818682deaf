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

// Command benchreport turns the raw results of `make bench` (hack/bench.sh writes
// them into docs/benchmarks/) into docs/benchmarks.md: the machine, every figure with
// the command that produced it, ratios to the baseline measured in the same run, and
// the targets of the benchmarks issue marked met or missed.
//
//	go run ./hack/benchreport -dir docs/benchmarks -o docs/benchmarks.md
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

// Raw files in the results directory.
const (
	machineFile          = "machine.txt"
	schedulerPerfJSON    = "scheduler_perf.json"
	schedulerPerfOutput  = "scheduler_perf.txt"
	memserviceOutput     = "memservice.txt"
	endToEndOutput       = "e2e.txt"
	notesFile            = "notes.md"
	defaultResultsDir    = "docs/benchmarks"
	defaultMarkdownFile  = "docs/benchmarks.md"
	resultsDirInMarkdown = "benchmarks/" // the results directory, relative to the markdown
)

func main() {
	dir := flag.String("dir", defaultResultsDir, "directory of the raw results written by hack/bench.sh")
	out := flag.String("o", defaultMarkdownFile, "markdown file to write (- for standard output)")
	flag.Parse()
	if err := run(*dir, *out); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
		os.Exit(1)
	}
}

func run(dir, out string) error {
	r, err := load(dir)
	if err != nil {
		return err
	}
	md := r.markdown()
	if out == "-" {
		_, err := os.Stdout.WriteString(md)
		return err
	}
	if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	return nil
}

// load reads the results directory. Only the machine file is required: a section
// whose results are missing says so.
func load(dir string) (*report, error) {
	m, err := readMachine(filepath.Join(dir, machineFile))
	if err != nil {
		return nil, fmt.Errorf("read the machine description (hack/bench.sh writes it): %w", err)
	}
	r := &report{machine: m}
	jsonFile := filepath.Join(dir, schedulerPerfJSON)
	if _, err := os.Stat(jsonFile); err == nil {
		if r.schedulerItems, err = readDataItems(jsonFile); err != nil {
			return nil, err
		}
	}
	if r.schedulerRun, err = readBench(filepath.Join(dir, schedulerPerfOutput)); err != nil {
		return nil, err
	}
	if r.memservice, err = readBench(filepath.Join(dir, memserviceOutput)); err != nil {
		return nil, err
	}
	if r.endToEnd, err = readBench(filepath.Join(dir, endToEndOutput)); err != nil {
		return nil, err
	}
	// Findings written by hand (profiles, causes of missed targets) are shown as they are.
	notes, err := os.ReadFile(filepath.Join(dir, notesFile))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read the findings: %w", err)
	}
	r.notes = string(notes)
	return r, nil
}
