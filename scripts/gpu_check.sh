#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (CUDA driver, PyTorch; no Rust needed): runs every case of
# gpu_bundle/ (written by scripts/gpu_bundle.sh) on the GPU with the runtime-only runner —
# outputs poisoned, compared with the graph interpreter (the 4096³ f16/bf16 GEMMs on 16 rows),
# then timed — and the same workloads through PyTorch (cuBLAS fp16/bf16/fp32, eager
# softmax/layernorm/add, the GPU-sized transformer block eager in f32 and f16) and a
# device-to-device copy, in the same run. Prints JSON lines, then a table (ratios: tessera
# time / PyTorch time; achieved bandwidth / copy bandwidth; GEMM TFLOP/s as a share of
# cuBLAS).
#
#   scripts/gpu_check.sh [BUNDLE] [RUNNER]
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${1:-gpu_bundle}"
RUNNER="${2:-target/release/tessera-gpu-run}"
OUTDIR="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$RUNNER" "$BUNDLE" 50 | tee "$OUTDIR/tessera_gpu.jsonl"
status=${PIPESTATUS[0]}
python3 scripts/gpu_baselines.py "$OUTDIR/tessera_gpu.jsonl" | tee "$OUTDIR/baselines.txt"
exit "$status"
