#!/usr/bin/env bash
# Coverage-guided fuzzing vs the same generator fed uniformly random bytes: for each target,
# a libFuzzer run of SECONDS from an empty corpus, then as many uniformly random inputs
# (lengths 1..1024, like -max_len) run once through the same instrumented binary
# (-runs=0: execute the inputs, no mutation, no feedback). Prints edges reached by each as JSON.
#
#   scripts/fuzz_coverage.sh [SECONDS=60] [TARGETS="onnx_loader graph_pipeline loop_passes schedule"]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
targets="${2:-onnx_loader graph_pipeline loop_passes schedule}"
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
    python3 - "$work/$t/random" "${execs:-0}" <<'PY'
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
    s3=$(date +%s.%N)
    python3 - "$t" "$work/$t" "$s0" "$s1" "$s2" "$s3" "${execs:-0}" <<'PY'
import json, re, sys
t, w, s0, s1, s2, s3, execs = sys.argv[1:]
def cov(path, pat):
    m = re.findall(pat, open(path, errors="replace").read())
    return int(m[-1]) if m else None
print(json.dumps({
    "target": t,
    "execs_each": int(execs),
    "guided": {"cov_edges": cov(f"{w}/guided.log", r"cov: (\d+)"),
               "features": cov(f"{w}/guided.log", r"ft: (\d+)"),
               "seconds": round(float(s1) - float(s0), 1)},
    "random_bytes": {"cov_edges": cov(f"{w}/random.log", r"cov: (\d+)"),
                     "features": cov(f"{w}/random.log", r"ft: (\d+)"),
                     "seconds": round(float(s3) - float(s2), 1)},
}))
PY
done
