#!/usr/bin/env bash
# Here (the build machine): builds what the GPU machine needs — the runtime-only runner
# (target/release/tessera-gpu-run, ~1 MB, no LLVM/MLIR) and gpu_bundle/ (PTX artifacts of the
# bundled models, of GPU-sized transformer blocks in f32 and f16 (scripts/gpu_models.py) and
# of GPU-sized kernels — f32 GEMM 1024³, f16/bf16 GEMM 4096³ on tensor cores, add, softmax,
# layer norm — their graphs, small inputs; ~35 MB, mostly the blocks' weights) — every PTX
# module checked by ptxas first — and gpu_bundle/tune_round/, a GPU tuning round of the f16
# block's kernels (`tessera tune --export`: candidates compiled to PTX with reference data;
# TRIALS candidates, default 96) for `tessera-gpu-run tune` to measure.
#
#   scripts/gpu_bundle.sh [SM] [TRIALS]   # default 90 (H100/H200), 96
#
# Then run scripts/gpu_check.sh on the GPU machine with gpu_bundle and the runner carried.
set -euo pipefail
cd "$(dirname "$0")/.."
SM="${1:-90}"
TRIALS="${2:-96}"
cargo build --release -q -p tessera-runtime --bin tessera-gpu-run
cargo build --release -q -p tessera
cargo build --release -q -p tessera-examples --example gpu_bundle
strip target/release/tessera-gpu-run 2>/dev/null || true
rm -rf gpu_bundle
EXTRA="$(mktemp -d)"
trap 'rm -rf "$EXTRA"' EXIT
.venv/bin/python scripts/gpu_models.py "$EXTRA" >&2
target/release/examples/gpu_bundle gpu_bundle "$SM" "$EXTRA"
# The round learns from what earlier rounds measured (tuning/gpu_sm$SM.jsonl, when there).
mkdir -p tuning
cp "$EXTRA/transformer_gpu_f16.onnx" tuning/
target/release/tessera tune tuning/transformer_gpu_f16.onnx --target "cuda:sm_$SM" \
    --db "tuning/gpu_sm$SM.jsonl" --export gpu_bundle/tune_round --trials "$TRIALS" >&2
target/release/tessera-gpu-run tune gpu_bundle/tune_round --no-gpu >&2
# A device call carries at most 64 MiB.
BYTES=$(( $(du -sb gpu_bundle | cut -f1) + $(stat -c %s target/release/tessera-gpu-run) ))
echo "carry: gpu_bundle target/release/tessera-gpu-run ($((BYTES / 1048576)) MiB)" >&2
if [ "$BYTES" -gt $((64 * 1048576)) ]; then
    echo "error: over the 64 MiB a device call carries: export fewer tasks (--min-work) or trials" >&2
    exit 1
fi
echo "after the GPU run: cp OUT/measurements.jsonl gpu_bundle/tune_round/ && target/release/tessera tune tuning/transformer_gpu_f16.onnx --target cuda:sm_$SM --db tuning/gpu_sm$SM.jsonl --import gpu_bundle/tune_round" >&2
