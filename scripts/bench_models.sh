#!/usr/bin/env bash
# Whole models against onnxruntime, default schedules (no tuning): for each model and thread
# count, tessera's and onnxruntime's median of RUNS runs, one after the other in this script,
# and the ratio (onnxruntime time / tessera time: above 1 is faster). One JSON line each.
#
#   scripts/bench_models.sh [RUNS] [THREADS...]   (defaults: 20, 1 2; models: onnx light_*,
#                                                  the written-out BERT layer, ReLU and GELU,
#                                                  and scripts/arch_models.py's blocks)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-20}"
shift || true
THREADS=("$@")
[ ${#THREADS[@]} -eq 0 ] && THREADS=(1 2)
source scripts/bench_env.sh
LIGHT="$("$PY" -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light"))')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" scripts/bert_written_out.py "$tmp/bert_relu.onnx" relu
"$PY" scripts/bert_written_out.py "$tmp/bert_gelu.onnx" gelu
"$PY" scripts/arch_models.py "$tmp"
for m in "$LIGHT"/light_*.onnx "$tmp"/bert_relu.onnx "$tmp"/bert_gelu.onnx "$tmp"/{mobilenet_v2,gpt2,gpt2_step,efficientnet,audio_unet,rnn}.onnx; do
  for t in "${THREADS[@]}"; do
    ours="$("$BIN" bench "$m" --json --runs "$RUNS" --warmup 3 --threads "$t")"
    peer="$("$PY" scripts/bench_ort.py "$m" --threads "$t" --runs "$RUNS")"
    "$PY" - "$m" "$t" "$ours" "$peer" <<'PY'
import json, os, sys
m, t, ours, peer = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({
    "model": os.path.basename(m), "threads": t, "kernels": ours["kernels"],
    "tessera_ms": round(ours["median_ms"], 3), "onnxruntime_ms": round(peer["median_ms"], 3),
    "ratio": round(peer["median_ms"] / ours["median_ms"], 2),
}))
PY
  done
done
