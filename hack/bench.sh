#!/usr/bin/env bash
# Copyright The kube-dynamic-memory Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# Runs the benchmarks and regenerates docs/benchmarks.md (make bench).
#
# For each suite, docs/benchmarks/<suite>.txt gets every command ("# command: ...")
# followed by its result lines (benchmark results, pass/fail); the whole output, logs
# included, goes to .run/bench/<suite>.log. hack/benchreport then turns the results
# into the markdown.
#
# Environment:
#   BENCH_ONLY     space-separated suites to run: scheduler memservice e2e (default: all).
#                  Suites not run keep their results from an earlier run; the report
#                  is regenerated from whatever is there.
#   SCHED_COUNT    how many times scheduler_perf runs each workload (-count, default 1);
#                  the report shows the median.
#   SCHED_FILTER   scheduler_perf label filter (default: performance).
#   SCHED_FLAGS    extra flags for the scheduler_perf benchmark (e.g. -perf-cpuprofile;
#                  profiles land in .run/bench/scheduler_perf/).
#   PROGRESS_EVERY seconds between two progress lines of a running benchmark (default 30).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ROOT}/docs/benchmarks"
LOGS="${ROOT}/.run/bench"
GO="${GO:-go}"
BENCH_ONLY="${BENCH_ONLY:-scheduler memservice e2e}"
SCHED_COUNT="${SCHED_COUNT:-1}"
SCHED_FILTER="${SCHED_FILTER:-performance}"
SCHED_FLAGS="${SCHED_FLAGS:-}"
PROGRESS_EVERY="${PROGRESS_EVERY:-30}"

cd "${ROOT}"
export PATH="${ROOT}/bin:${PATH}"
if ! command -v etcd >/dev/null; then
  echo "bench: etcd is not on PATH: run 'make cluster-bins' (it builds bin/etcd)" >&2
  exit 1
fi
mkdir -p "${OUT}" "${LOGS}"

wants() { [[ " ${BENCH_ONLY} " == *" $1 "* ]]; }

# start NAME FILE: empties the results and log of suite NAME (results in FILE.txt),
# and notes when it started.
declare -A started=()
# The revision measured: read before the suites write their results into the tree,
# which would make it look modified.
revision="$(git describe --tags --always --dirty 2>/dev/null || echo unknown)"
start() {
  started[$1]="$(date -u '+%Y-%m-%d %H:%M UTC'), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
  rm -f "${OUT}/$2.txt" "${LOGS}/$2.log"
}

# wait_for PID SECONDS: true once PID has exited, false if it still runs after SECONDS.
wait_for() {
  local i
  for ((i = 0; i < $2; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 1
  done
  ! kill -0 "$1" 2>/dev/null
}

# run SUITE CMD...: runs CMD; its result lines go to the suite's results after a
# "# command: CMD" line (shown relative to the repository root), its whole output to
# the suite's log. A failing command is recorded ("# failed: ...") and makes the
# script fail at the end, after the other suites ran and the report was written.
failed=()
run() {
  local suite="$1"
  shift
  local shown="$*"
  shown="${shown//${ROOT}\//}"
  local results="${OUT}/${suite}.txt" log="${LOGS}/${suite}.log" out
  out="$(mktemp)"
  echo "bench: ${shown} (full output: .run/bench/${suite}.log)" >&2
  local rc=0 pid begin=${SECONDS}
  "$@" >"${out}" 2>&1 &
  pid=$!
  # Live progress: every PROGRESS_EVERY seconds, the elapsed time and the benchmark
  # the output last named (scheduler_perf and the e2e benchmarks log for minutes).
  while ! wait_for "${pid}" "${PROGRESS_EVERY}"; do
    echo "bench: ${suite}: $((SECONDS - begin))s, at $(grep -oE 'Benchmark[A-Za-z0-9_/=.-]+' "${out}" | tail -n1 || true)" >&2
  done
  wait "${pid}" || rc=$?
  { echo "# command: ${shown}"; cat "${out}"; } >>"${log}"
  echo "# command: ${shown}" >>"${results}"
  grep -E '^(goos|goarch|pkg|cpu|Benchmark|--- FAIL|PASS|FAIL|ok |[[:space:]]+[0-9]+[[:space:]]+[0-9.]+ )' "${out}" |
    sed -E 's/^(Benchmark[^[:space:]]+[[:space:]]+)[IWEF][0-9]{4} .*/\1/' | tee -a "${results}" || true
  rm -f "${out}"
  if ((rc != 0)); then
    echo "# failed: exit status ${rc}" >>"${results}"
    echo "bench: failed (exit status ${rc}): ${shown}" >&2
    failed+=("${shown}")
  fi
  return "${rc}"
}

# machine.txt: what the figures were measured on, and when each suite last ran
# ("Run of <suite>: ..." lines; those of suites not run now are kept).
previous_runs=""
if [[ -f "${OUT}/machine.txt" ]]; then
  previous_runs="$(grep '^Run of ' "${OUT}/machine.txt" || true)"
fi

if wants scheduler; then
  start scheduler scheduler_perf
  rm -f "${OUT}/scheduler_perf.json"
  # scheduler_perf names its files after the time; a fresh directory holds this run's.
  items="${LOGS}/scheduler_perf"
  rm -rf "${items}"
  mkdir -p "${items}"
  # shellcheck disable=SC2086 # SCHED_FLAGS is a list of flags
  if run scheduler_perf "${GO}" test ./test/perf/schedulerperf/ -run '^$' \
    -bench BenchmarkPerfScheduling -benchtime=1x -count "${SCHED_COUNT}" -timeout 120m \
    -perf-scheduling-label-filter="${SCHED_FILTER}" -data-items-dir="${items}" ${SCHED_FLAGS}; then
    json=("${items}"/BenchmarkPerfScheduling_benchmark_*.json)
    cp "${json[0]}" "${OUT}/scheduler_perf.json"
  fi
fi

if wants memservice; then
  start memservice memservice
  run memservice "${GO}" test ./memservice/server/ -run '^$' -bench '^BenchmarkGRPC(Reserve|AddRemoveCycle)$' -benchtime=2s -timeout 30m || true
  # The paced benchmarks run 10 s per rate: at 2,000/s a 2 s run's p99 is its 40th
  # slowest call of 4,000, one garbage collection or scheduler hiccup.
  run memservice "${GO}" test ./memservice/server/ -run '^$' -bench 'BenchmarkGRPCReservePaced' -benchtime=10s -timeout 30m || true
  run memservice "${GO}" test ./memservice/ledger/ -run '^$' -bench 'BenchmarkReserveRelease' -cpu 1 -benchtime=2s -timeout 10m || true
fi

if wants e2e; then
  start e2e e2e
  # Every benchmark package under test/perf but scheduler_perf: the end-to-end ones,
  # which start the local cluster themselves.
  for pkg in $("${GO}" list ./test/perf/... | grep -v /schedulerperf); do
    run e2e "${GO}" test "${pkg}" -run '^$' -bench . -benchtime=1x -timeout 30m || true
  done
fi

{
  echo "CPUs: $(nproc)"
  echo "CPU model: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "Memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "Kernel: $(uname -sr)"
  echo "Go: $("${GO}" env GOVERSION)"
  echo "Kubernetes: k8s.io/kubernetes $("${GO}" list -m -f '{{.Version}}' k8s.io/kubernetes)"
  echo "Revision: ${revision}"
  for s in scheduler memservice e2e; do
    if wants "${s}"; then
      echo "Run of ${s}: ${started[${s}]}"
    else
      grep "^Run of ${s}: " <<<"${previous_runs}" || true
    fi
  done
} >"${OUT}/machine.txt"
"${GO}" run ./hack/benchreport -dir "${OUT}" -o "${ROOT}/docs/benchmarks.md"
echo "bench: wrote docs/benchmarks.md" >&2
if ((${#failed[@]} > 0)); then
  printf 'bench: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
