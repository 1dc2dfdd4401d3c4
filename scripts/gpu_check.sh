#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (CUDA driver, PyTorch; no Rust needed): runs every case of
# gpu_bundle/ (written by scripts/gpu_bundle.sh) on the GPU with the runtime-only runner —
# each in its own process, so that a faulting kernel takes no other case with it —
# outputs poisoned, compared with the graph interpreter (the 4096³ f16/bf16 GEMMs on 16 rows),
# then timed — and the same workloads through PyTorch (cuBLAS fp16/bf16/fp32, eager
# softmax/layernorm/add, the GPU-sized transformer block eager in f32 and f16) and a
# device-to-device copy, in the same run. Prints JSON lines, then a table (ratios: tessera
# time / PyTorch time; achieved bandwidth / copy bandwidth; GEMM TFLOP/s as a share of
# cuBLAS). Then measures the tuning round in BUNDLE/tune_round (when there) — each candidate
# checked against its reference data, then timed, in a child process — into
# OUT/measurements.jsonl, for `tessera tune --import` on the build machine.
# A case that hangs is killed after 60 s; once TESSERA_RUN_BUDGET_S (330) seconds have
# passed the cases left are skipped, so that one device call (600 s at most) still reaches
# the PyTorch baselines and the tuning round.
#
#   scripts/gpu_check.sh [BUNDLE] [RUNNER]
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${1:-gpu_bundle}"
RUNNER="${2:-target/release/tessera-gpu-run}"
OUTDIR="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$RUNNER" "$BUNDLE" 50 --case-limit-s 60 --budget-s "${TESSERA_RUN_BUDGET_S:-330}" | tee "$OUTDIR/tessera_gpu.jsonl"
status=${PIPESTATUS[0]}
python3 scripts/gpu_baselines.py "$OUTDIR/tessera_gpu.jsonl" | tee "$OUTDIR/baselines.txt"
if [ -f "$BUNDLE/tune_round/round.json" ]; then
    "$RUNNER" tune "$BUNDLE/tune_round" 20 --out "$OUTDIR/measurements.jsonl" > "$OUTDIR/tune_round.jsonl" || status=1
    echo "tuning round: $(grep -c '"status":"ok"' "$OUTDIR/measurements.jsonl") of $(wc -l < "$OUTDIR/measurements.jsonl") candidates correct and timed"
fi
exit "$status"
