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
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// dataItems is scheduler_perf's JSON results file (the format perf-dash reads).
type dataItems struct {
	Version   string     `json:"version"`
	DataItems []dataItem `json:"dataItems"`
}

type dataItem struct {
	Data   map[string]float64 `json:"data"`
	Unit   string             `json:"unit"`
	Labels map[string]string  `json:"labels"`
}

func readDataItems(file string) ([]dataItem, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var items dataItems
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, fmt.Errorf("decode %s: %w", file, err)
	}
	return items.DataItems, nil
}

// benchResult is one line of `go test -bench` output: a benchmark's iterations and
// its metrics by unit (ns/op, ops/s, p99-µs, ...), with the command that ran it.
type benchResult struct {
	Name    string
	Command string
	N       int64
	Metrics map[string]float64
	// Units in the order the line reports them.
	Units []string
}

// gomaxprocsSuffix is the -N go test appends to benchmark names when GOMAXPROCS > 1.
var gomaxprocsSuffix = regexp.MustCompile(`-\d+$`)

// Lines hack/bench.sh writes into a suite's results: the command before its output,
// and the failure of a command after it.
const (
	commandPrefix = "# command: "
	failedPrefix  = "# failed: "
)

// suite is the results of the commands of one suite (one results file).
type suite struct {
	results []benchResult
	// commands in the order they ran, and why those that failed did.
	commands []string
	failed   map[string]string
}

// parseBench reads `go test -bench` output. Lines that are not benchmark results are
// skipped, except "# command: ..." lines, which name the command of the results that
// follow, and "# failed: ..." lines, which say the command before failed. Repeated
// results of one benchmark (-count) are merged: each metric is the median of the runs.
func parseBench(r io.Reader) (suite, error) {
	st := suite{failed: map[string]string{}}
	var order []string
	runs := map[string][]benchResult{}
	command, pending := "", ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if c, ok := strings.CutPrefix(line, commandPrefix); ok {
			command = strings.TrimSpace(c)
			st.commands = append(st.commands, command)
			continue
		}
		if f, ok := strings.CutPrefix(line, failedPrefix); ok {
			st.failed[command] = strings.TrimSpace(f)
			continue
		}
		res, ok, err := parseBenchLine(line)
		if err != nil {
			return st, err
		}
		if !ok {
			// A benchmark that logs splits its line: the name, the log lines, then
			// the figures on a line of their own.
			if name, isName := benchName(line); isName {
				pending = name
				continue
			}
			if pending == "" || !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
				continue
			}
			if res, ok, err = parseBenchLine(pending + line); err != nil || !ok {
				continue
			}
		}
		pending = ""
		res.Command = command
		if _, seen := runs[res.Name]; !seen {
			order = append(order, res.Name)
		}
		runs[res.Name] = append(runs[res.Name], res)
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("read benchmark output: %w", err)
	}
	for _, name := range order {
		st.results = append(st.results, mergeRuns(runs[name]))
	}
	return st, nil
}

// parseBenchLine parses "BenchmarkX/sub-2  10  123 ns/op  4.5 ops/s". ok is false
// for lines that are not results.
func parseBenchLine(line string) (res benchResult, ok bool, err error) {
	fields := strings.Fields(line)
	if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 {
		return res, false, nil
	}
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return res, false, nil
	}
	res = benchResult{Name: gomaxprocsSuffix.ReplaceAllString(fields[0], ""), N: n, Metrics: map[string]float64{}}
	for i := 2; i < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return res, false, fmt.Errorf("benchmark %s: metric %q has value %q, not a number", fields[0], fields[i+1], fields[i])
		}
		unit := fields[i+1]
		if _, dup := res.Metrics[unit]; !dup {
			res.Units = append(res.Units, unit)
		}
		res.Metrics[unit] = v
	}
	return res, true, nil
}

// benchName returns the benchmark name a line starts with, when the rest of the
// line is not figures (a log line written while the benchmark ran).
func benchName(line string) (string, bool) {
	fields := strings.Fields(line)
	if len(fields) == 0 || !strings.HasPrefix(fields[0], "Benchmark") || !strings.Contains(line, "\t") {
		return "", false
	}
	return fields[0] + "\t", true
}

// mergeRuns merges repeated results of one benchmark into their medians.
func mergeRuns(runs []benchResult) benchResult {
	out := runs[0]
	if len(runs) == 1 {
		return out
	}
	out.Metrics = map[string]float64{}
	for _, unit := range out.Units {
		var vs []float64
		for _, r := range runs {
			if v, ok := r.Metrics[unit]; ok {
				vs = append(vs, v)
			}
		}
		out.Metrics[unit] = median(vs)
	}
	return out
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// readBench parses a suite's results file; a missing file is no results.
func readBench(file string) (suite, error) {
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return suite{}, nil
	}
	if err != nil {
		return suite{}, err
	}
	defer func() { _ = f.Close() }()
	st, err := parseBench(f)
	if err != nil {
		return st, fmt.Errorf("%s: %w", file, err)
	}
	return st, nil
}

// machine is what hack/bench.sh recorded about the machine and the run: "key: value"
// lines, in order.
type machine struct {
	keys   []string
	values map[string]string
}

func readMachine(file string) (machine, error) {
	m := machine{values: map[string]string{}}
	data, err := os.ReadFile(file)
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, dup := m.values[k]; !dup {
			m.keys = append(m.keys, k)
		}
		m.values[k] = v
	}
	return m, nil
}
