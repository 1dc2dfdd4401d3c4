#!/usr/bin/env bash
# Coverage-guided fuzzing vs the same generator fed uniformly random bytes: for each target,
# a libFuzzer run of SECONDS from an empty corpus; then N uniformly random inputs (lengths
# 1..1024, like -max_len) run once through the same instrumented binary (-runs=0: execute
# the inputs, no mutation, no feedback), N = the guided run's executions capped at
# MAX_RANDOM (default 20000: fast targets run millions). Compared at equal executions: the
# guided run's edges after its first N executions (from its log) vs the random inputs' edges.
# Prints JSON, one line per target.
#
#   scripts/fuzz_coverage.sh [SECONDS=60] [TARGETS="onnx_loader graph_pipeline loop_passes schedule"]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
targets="${2:-onnx_loader graph_pipeline loop_passes schedule}"
max_random="${MAX_RANDOM:-20000}"
dir=$(bash scripts/fuzz_build.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in $targets; do
    mkdir -p "$work/$t/guided" "$work/$t/random"
    s0=$(date +%s.%N)
    "$dir/$t" "$work/$t/guided" -max_total_time="$secs" -max_len=1024 -seed=1 \
        -print_final_stats=1 -artifact_prefix="$work/$t/" >"$work/$t/guided.log" 2>&1 || true
    s1=$(date +%s.%N)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/guided.log" | tail -1)
    n=$(( ${execs:-0} < max_random ? ${execs:-0} : max_random ))
    python3 - "$work/$t/random" "$n" <<'PY'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
for i in range(n):
    with open(os.path.join(d, f"r{i:07d}"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1, 1024)))
PY
    s2=$(date +%s.%N)
    "$dir/$t" "$work/$t/random" -runs=0 -max_len=1024 -artifact_prefix="$work/$t/" \
        >"$work/$t/random.log" 2>&1 || true
    rm -rf "$work/$t/random" "$work/$t/guided"
    s3=$(date +%s.%N)
    python3 - "$t" "$work/$t" "$s0" "$s1" "$s2" "$s3" "${execs:-0}" "$n" <<'PY'
import json, re, sys
t, w, s0, s1, s2, s3, execs, n = sys.argv[1:]
n = int(n)
def cov(path, pat):
    m = re.findall(pat, open(path, errors="replace").read())
    return int(m[-1]) if m else None
# The guided run's coverage after its first n executions: its last progress line at #k <= n.
at_n = None
for k, c in re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+)", open(f"{w}/guided.log", errors="replace").read(), re.M):
    if int(k) <= n:
        at_n = int(c)
print(json.dumps({
    "target": t,
    "guided_execs": int(execs),
    "compared_at_execs": n,
    "guided": {"cov_edges_at_compared_execs": at_n,
               "cov_edges_final": cov(f"{w}/guided.log", r"cov: (\d+)"),
               "seconds": round(float(s1) - float(s0), 1)},
    "random_bytes": {"cov_edges": cov(f"{w}/random.log", r"cov: (\d+)"),
                     "seconds": round(float(s3) - float(s2), 1)},
}))
PY
done
