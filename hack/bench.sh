#!/usr/bin/env bash
# Runs the benchmarks and regenerates docs/benchmarks.md (make bench).
#
# Raw output goes to docs/benchmarks/ (one file per suite, each command written before
# its output as "# command: ..."), then hack/benchreport turns it into the markdown.
#
# Environment:
#   BENCH_ONLY     space-separated suites to run: scheduler memservice e2e (default: all).
#                  Suites not run keep their raw files from an earlier run; the report
#                  is regenerated from whatever is there.
#   SCHED_COUNT    how many times scheduler_perf runs each workload (-count, default 1);
#                  the report shows the median.
#   SCHED_FILTER   scheduler_perf label filter (default: performance).
#   SCHED_FLAGS    extra flags for the scheduler_perf benchmark (e.g. -perf-cpuprofile).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ROOT}/docs/benchmarks"
GO="${GO:-go}"
BENCH_ONLY="${BENCH_ONLY:-scheduler memservice e2e}"
SCHED_COUNT="${SCHED_COUNT:-1}"
SCHED_FILTER="${SCHED_FILTER:-performance}"
SCHED_FLAGS="${SCHED_FLAGS:-}"

cd "${ROOT}"
export PATH="${ROOT}/bin:${PATH}"
if ! command -v etcd >/dev/null; then
  echo "bench: etcd is not on PATH: run 'make cluster-bins' (it builds bin/etcd)" >&2
  exit 1
fi
mkdir -p "${OUT}"

wants() { [[ " ${BENCH_ONLY} " == *" $1 "* ]]; }

# run FILE CMD...: writes "# command: CMD" and the command's output into FILE, and
# shows the output. Commands are shown relative to the repository root.
run() {
  local file="$1"
  shift
  local shown="$*"
  shown="${shown//${ROOT}\//}"
  echo "# command: ${shown}" >>"${file}"
  echo "bench: ${shown}" >&2
  "$@" 2>&1 | tee -a "${file}"
}

if wants scheduler || wants memservice || wants e2e; then
  {
    echo "CPUs: $(nproc)"
    echo "CPU model: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    echo "Memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "Kernel: $(uname -sr)"
    echo "Go: $(${GO} env GOVERSION)"
    echo "Kubernetes: k8s.io/kubernetes $(${GO} list -m -f '{{.Version}}' k8s.io/kubernetes)"
    echo "Revision: $(git describe --tags --always --dirty 2>/dev/null || echo unknown)"
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"${OUT}/machine.txt"
fi

if wants scheduler; then
  # scheduler_perf names its files after the time; a fresh directory holds this run's.
  items="${ROOT}/.run/bench/scheduler_perf"
  rm -rf "${items}"
  mkdir -p "${items}"
  rm -f "${OUT}/scheduler_perf.txt" "${OUT}/scheduler_perf.json"
  # shellcheck disable=SC2086 # SCHED_FLAGS is a list of flags
  run "${OUT}/scheduler_perf.txt" ${GO} test ./test/perf/schedulerperf/ -run '^$' \
    -bench BenchmarkPerfScheduling -benchtime=1x -count "${SCHED_COUNT}" -timeout 120m \
    -perf-scheduling-label-filter="${SCHED_FILTER}" -data-items-dir="${items}" ${SCHED_FLAGS}
  json=("${items}"/BenchmarkPerfScheduling_benchmark_*.json)
  cp "${json[0]}" "${OUT}/scheduler_perf.json"
  # Profiles written with -perf-cpuprofile and friends stay beside the results.
  for f in "${items}"/*.pprof "${items}"/*.dat; do
    [[ -e "${f}" ]] && cp "${f}" "${OUT}/"
  done
fi

if wants memservice; then
  rm -f "${OUT}/memservice.txt"
  run "${OUT}/memservice.txt" "${GO}" test ./memservice/server/ -run '^$' -bench 'BenchmarkGRPC' -benchtime=2s -timeout 30m
  run "${OUT}/memservice.txt" "${GO}" test ./memservice/ledger/ -run '^$' -bench 'BenchmarkReserveRelease' -cpu 1 -benchtime=2s -timeout 10m
fi

if wants e2e; then
  rm -f "${OUT}/e2e.txt"
  # Every benchmark package under test/perf but scheduler_perf: the end-to-end ones,
  # which start the local cluster themselves.
  for pkg in $(${GO} list ./test/perf/... | grep -v /schedulerperf); do
    run "${OUT}/e2e.txt" "${GO}" test "${pkg}" -run '^$' -bench . -benchtime=1x -timeout 30m
  done
fi

${GO} run ./hack/benchreport -dir "${OUT}" -o "${ROOT}/docs/benchmarks.md"
echo "bench: wrote docs/benchmarks.md" >&2
