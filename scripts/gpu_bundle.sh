#!/usr/bin/env bash
# Here (the build machine): builds what the GPU machine needs — the runtime-only runner
# (target/release/tessera-gpu-run, ~1 MB, no LLVM/MLIR) and gpu_bundle/ (PTX artifacts of the
# bundled models, of GPU-sized transformer blocks in f32 and f16 (scripts/gpu_models.py) and
# of GPU-sized kernels — f32 GEMM 1024³, f16/bf16 GEMM 4096³ on tensor cores, add, softmax,
# layer norm — their graphs, small inputs; ~35 MB, mostly the blocks' weights) — every PTX
# module checked by ptxas first.
#
#   scripts/gpu_bundle.sh [SM]        # default 90 (H100/H200)
#
# Then run scripts/gpu_check.sh on the GPU machine with gpu_bundle and the runner carried.
set -euo pipefail
cd "$(dirname "$0")/.."
SM="${1:-90}"
cargo build --release -q -p tessera-runtime --bin tessera-gpu-run
cargo build --release -q -p tessera-examples --example gpu_bundle
strip target/release/tessera-gpu-run 2>/dev/null || true
rm -rf gpu_bundle
EXTRA="$(mktemp -d)"
trap 'rm -rf "$EXTRA"' EXIT
.venv/bin/python scripts/gpu_models.py "$EXTRA" >&2
target/release/examples/gpu_bundle gpu_bundle "$SM" "$EXTRA"
echo "carry: gpu_bundle target/release/tessera-gpu-run" >&2
