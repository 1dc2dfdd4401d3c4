#!/usr/bin/env bash
# Runs one fuzz target for a time budget and prints what it did as JSON: executions, execs/s,
# coverage (edges), features, corpus size and findings (crash files, each holding the bytes;
# the panic message printed above holds the case as a ready-to-commit regression file).
#
#   scripts/fuzz.sh TARGET [SECONDS=60] [-- extra libFuzzer flags]
#   targets: onnx_loader graph_pipeline loop_passes schedule
#
# The corpus grows in fuzz/corpus/TARGET (minimise it with `cargo fuzz cmin`); findings land in
# fuzz/artifacts/TARGET. Needs cargo-fuzz (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET [SECONDS] [-- libFuzzer flags]}"
secs="${2:-60}"
shift $(( $# >= 2 ? 2 : 1 ))
[ "${1:-}" = "--" ] && shift
bin=$(bash scripts/fuzz_build.sh)/"$target"
corpus="${TESSERA_FUZZ_CORPUS:-fuzz/corpus/$target}"
artifacts="fuzz/artifacts/$target"
mkdir -p "$corpus" "$artifacts"
log=$(mktemp)
start=$(date +%s.%N)
set +e
"$bin" "$corpus" -max_total_time="$secs" -max_len=1024 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$@" 2>"$log"
rc=$?
set -e
end=$(date +%s.%N)
grep -E "tessera fuzz finding|panicked|ERROR" "$log" | head -5 >&2 || true
python3 - "$log" "$target" "$secs" "$rc" "$start" "$end" "$artifacts" <<'PY'
import json, re, sys, os
log, target, secs, rc, start, end, artifacts = sys.argv[1:]
text = open(log, errors="replace").read()
def last(pat, cast=int):
    m = re.findall(pat, text)
    return cast(m[-1]) if m else None
found = [l for l in text.splitlines() if l.startswith("tessera fuzz finding")]
arts = sorted(os.path.join(artifacts, f) for f in os.listdir(artifacts))
print(json.dumps({
    "target": target,
    "budget_s": float(secs),
    "wall_s": round(float(end) - float(start), 1),
    "execs": last(r"stat::number_of_executed_units:\s+(\d+)"),
    "execs_per_s": last(r"exec/s: (\d+)"),
    "cov_edges": last(r"cov: (\d+)"),
    "features": last(r"ft: (\d+)"),
    "corpus": last(r"corp: (\d+)"),
    "findings": found,
    "artifacts": arts,
    "exit": int(rc),
}, indent=1))
PY
rm -f "$log"
exit "$rc"
