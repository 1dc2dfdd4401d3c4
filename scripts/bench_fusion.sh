#!/usr/bin/env bash
# The optimizer's figures per model: kernels and estimated bytes moved before/after, e-graph
# time, and compiled latency with and without it (median of RUNS runs, same process order,
# alternating so machine noise hits both). One JSON line per model.
#
#   scripts/bench_fusion.sh [RUNS]     (default 30; models: bundled, scripts/arch_models.py's, onnx light_*)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-30}"
source scripts/bench_env.sh
LIGHT="$("$VENV/bin/python" -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light"))')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" scripts/arch_models.py "$tmp"
for m in examples/models/*.onnx "$tmp"/*.onnx "$LIGHT"/light_*.onnx; do
  fused="$("$BIN" bench "$m" --json --runs "$RUNS" --warmup 3)"
  plain="$("$BIN" bench "$m" --json --runs "$RUNS" --warmup 3 --no-fuse)"
  "$VENV/bin/python" - "$m" "$fused" "$plain" <<'PY'
import json, os, sys
m, f, p = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
o = f["optimizer"] or {}
print(json.dumps({
    "model": os.path.basename(m),
    "kernels_before": p["kernels"], "kernels_after": f["kernels"],
    "kernel_reduction": round(1 - f["kernels"] / p["kernels"], 3),
    "bytes_before": o.get("bytes_before"), "bytes_after": o.get("bytes_after"),
    "median_ms_unfused": round(p["median_ms"], 4), "median_ms_fused": round(f["median_ms"], 4),
    "speedup": round(p["median_ms"] / f["median_ms"], 3),
    "optimize_ms": round(o.get("optimize_ms", 0), 2), "stop_reason": o.get("stop_reason"),
}))
PY
done
