#!/usr/bin/env bash
# The GPU path in one command, for a lent GPU machine with only this repository on it:
#
#   benchmarks/gpu_check.sh [--quick] [--dry-run] [OUT_DIR]      (or GPU_CHECK_OUT=OUT_DIR)
#
# installs (make install system-deps: with a GPU, the gpu extra), checks which provider the
# sessions and the server really use, runs the V2 conformance tests (tritonclient,
# perf_analyzer), measures in-process onnxruntime (batch 1-256, with and without I/O binding),
# the server with perf_analyzer (concurrency 1-64) and the candidate batcher settings, and writes
# OUT_DIR/gpu_check.{json,md,log}. Every step has its own timeout and all of them fit in
# GPU_CHECK_BUDGET_S (480 s); a failed step is recorded and the next one runs; the report is
# written after every measuring step, so a cut-short run still leaves one. --quick: short
# cells, for a rehearsal on a small CPU machine. --dry-run: checks every step's command
# resolves, measures nothing. Exit status 0 only when every step passed.
set -u -o pipefail
cd "$(dirname "$0")/.."

quick=0 dry=0 out=${GPU_CHECK_OUT:-}
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done
out=${out:-reports/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out" || exit 2
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
((dry)) && trap 'rm -rf "$work"' EXIT
budget=${GPU_CHECK_BUDGET_S:-480}
started=$SECONDS
# Seconds per measured cell: in-process, server, candidate settings.
if ((quick)); then mode=quick in_s=0.3 perf_s=0.5 cand_s=0.5; else mode=full in_s=1 perf_s=2 cand_s=1.5; fi
printf '{"mode": "%s", "cell_seconds": {"in_process": %s, "server": %s, "candidates": %s}, "budget_s": %s}\n' \
  "$mode" "$in_s" "$perf_s" "$cand_s" "$budget" >"$work/run.json"
exec > >(tee -a "$out/gpu_check.log") 2>&1
echo "gpu_check.sh: $mode mode, budget ${budget} s, results in $out, work folder $work"

py=.venv/bin/python
failed=0
# step NAME TIMEOUT_S COMMAND...: runs it under timeout (less if the budget has less left,
# keeping 20 s for the report), records its exit status and time in steps.jsonl.
step() {
  local name=$1 limit=$2 left rc begin
  shift 2
  left=$((budget - (SECONDS - started) - 20))
  ((limit > left)) && limit=$left
  echo
  echo "== $name (timeout ${limit} s): $*"
  if ((dry)); then
    resolve "$name" "$@"
    return
  fi
  begin=$SECONDS
  if ((limit < 5)); then
    echo "skipped: the budget is spent"
    rc=125
  else
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
  fi
  ((rc == 0)) || failed=1
  local timed_out=false
  ((rc == 124 || rc == 137)) && timed_out=true
  local command=$*
  printf '{"step": "%s", "rc": %d, "seconds": %d, "timeout_s": %d, "timed_out": %s, "command": "%s"}\n' \
    "$name" "$rc" "$((SECONDS - begin))" "$limit" "$timed_out" "${command//\"/\\\"}" >>"$work/steps.jsonl"
  echo "-- $name: exit $rc after $((SECONDS - begin)) s"
}

# --dry-run: the program exists, and a Python step's own --dry-run passes (models, perf_analyzer).
resolve() {
  local name=$1
  shift
  if ! command -v "$1" >/dev/null; then
    echo "$name: $1 not found"; failed=1; return
  fi
  if [[ $1 == "$py" && $2 == benchmarks/gpu_check.py ]]; then
    "$@" --dry-run || failed=1
  elif [[ $1 == "$py" && $2 == -m ]]; then
    "$py" -c "import $3" && echo "$name: $py -m $3" || failed=1
    for path in "${@:4}"; do
      [[ $path != *.py || -f $path ]] || { echo "$name: no $path"; failed=1; }
    done
  elif [[ $1 == make ]]; then
    "$@" >/dev/null && echo "$name: $* resolves" || failed=1
  else
    echo "$name: $(command -v "$1")"
  fi
}

report() {
  ((dry)) && return
  timeout 60 "$py" benchmarks/gpu_check.py report --work "$work" --out "$out" >/dev/null \
    || echo "report: failed (exit $?)"
}

# pip waits out its timeouts and retries on every package where no index answers: ask once.
step index 30 python3 -m pip index versions onnxruntime-gpu --retries 0 --timeout 10
install_s=${GPU_CHECK_INSTALL_S:-120}
if ((dry)); then
  step install "$install_s" make -n install system-deps
elif [[ $(tail -n 1 "$work/steps.jsonl") == *'"rc": 0,'* ]]; then
  step install "$install_s" make install system-deps
else
  step install "$install_s" sh -c 'echo "no package index answered: not installing" >&2; exit 125'
fi
step providers 40 "$py" benchmarks/gpu_check.py providers --work "$work"
step conformance 90 "$py" -m pytest -q -p no:cacheprovider --junitxml "$work/conformance.xml" \
  tests/integration/test_v2_tritonclient.py tests/integration/test_perf_analyzer.py
report
step in-process 50 "$py" benchmarks/gpu_check.py in-process --work "$work" --seconds "$in_s"
report
step server 55 "$py" benchmarks/gpu_check.py server --work "$work" --seconds "$perf_s"
report
step candidates 105 "$py" benchmarks/gpu_check.py candidates --work "$work" --seconds "$cand_s"

if ((dry)); then
  echo; echo "dry run: $( ((failed)) && echo 'some step would not start' || echo 'every step resolves')"
  exit "$failed"
fi
echo
timeout 60 "$py" benchmarks/gpu_check.py report --work "$work" --out "$out" || failed=1
echo "gpu_check.sh: $( ((failed)) && echo 'some steps failed (see the Steps table)' || echo 'every step passed') in $((SECONDS - started)) s"
exit "$failed"
