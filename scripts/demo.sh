#!/usr/bin/env bash
# The main job on the bundled example: set up, build, compile a small ONNX model ahead of time,
# run it (printing outputs and latency), check it against the reference interpreter, and time
# it against onnxruntime on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${TESSERA_VENV:-$(pwd)/.venv}"
MODEL="${1:-examples/models/small_cnn.onnx}"
THREADS="${THREADS:-$(nproc)}"

echo "== building tessera"
cargo build -q -p tessera --bin tessera
BIN="${CARGO_TARGET_DIR:-target}/debug/tessera"
mkdir -p build
name=$(basename "$MODEL" .onnx)

echo "== tessera compile $MODEL -o build/$name.so"
"$BIN" compile "$MODEL" -o "build/$name.so"

echo "== tessera run build/$name.so (AOT library, runtime-only loader)"
"$BIN" run "build/$name.so" --output "build/${name}_out.npy" --threads "$THREADS"

echo "== tessera run $MODEL --check (JIT, compared with the reference interpreter)"
"$BIN" run "$MODEL" --check --threads "$THREADS"

echo "== latency: tessera (JIT) vs onnxruntime, $THREADS threads, same machine"
ours=$("$BIN" bench "$MODEL" --threads "$THREADS" --runs 200 --json)
peer=$("$VENV/bin/python" scripts/bench_ort.py "$MODEL" --threads "$THREADS" --runs 200)
echo "$ours"
echo "$peer"
"$VENV/bin/python" - "$ours" "$peer" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"tessera / onnxruntime median latency: {a['median_ms']:.3f} ms / {b['median_ms']:.3f} ms = {a['median_ms'] / b['median_ms']:.2f}x")
PY
