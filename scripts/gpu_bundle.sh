#!/usr/bin/env bash
# Here (the build machine): builds what the GPU machine needs — the runtime-only runner
# (target/release/tessera-gpu-run, ~1 MB, no LLVM/MLIR) and gpu_bundle/ (PTX artifacts of the
# bundled models and of GPU-sized kernels, their graphs, small inputs; ~1 MB) — every PTX
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
target/release/examples/gpu_bundle gpu_bundle "$SM"
echo "carry: gpu_bundle target/release/tessera-gpu-run" >&2
