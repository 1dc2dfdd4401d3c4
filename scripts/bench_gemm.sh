#!/usr/bin/env bash
# GEMM and convolution figures against the machine's peak and onnxruntime, same script, same
# machine, interleaved: fp32 MatMul 1024x1024x1024 and a 3x3 conv (1x64x56x56 -> 64), on one
# and two threads, tessera (default: tiled product schedule, the conv as Winograd F(2x2,3x3);
# and for comparison --no-tile, the direct conv and Winograd F(4x4,3x3)) vs onnxruntime.
# One JSON line per case; GFLOP/s and ratios included (a Winograd conv's GFLOP/s count the
# direct convolution's multiply-adds, so they can exceed the peak).
#
#   scripts/bench_gemm.sh [RUNS]     (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-30}"
source scripts/bench_env.sh
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$PY" - "$DIR" <<'PY'
import sys, numpy as np, onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
d = sys.argv[1]
def save(g, name):
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]); m.ir_version = 8
    onnx.save(m, f"{d}/{name}.onnx")
n = 1024
save(h.make_graph([h.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
     [h.make_tensor_value_info("a", T.FLOAT, [n, n]), h.make_tensor_value_info("b", T.FLOAT, [n, n])],
     [h.make_tensor_value_info("c", T.FLOAT, [n, n])]), "gemm1024")
rng = np.random.default_rng(0)
w = nh.from_array((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32), "w")
b = nh.from_array(rng.standard_normal(64).astype(np.float32), "b")
save(h.make_graph([h.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], "conv",
     [h.make_tensor_value_info("x", T.FLOAT, [1, 64, 56, 56])], [h.make_tensor_value_info("y", T.FLOAT, [1, 64, 56, 56])], [w, b]),
     "conv3x3_64")
PY
PEAK="$("$BIN" peak --json)"
for case in "gemm1024 2147483648" "conv3x3_64 231211008"; do
  set -- $case
  for t in 1 2; do
    tiled="$("$BIN" bench "$DIR/$1.onnx" --json --runs "$RUNS" --threads "$t")"
    ort="$("$PY" scripts/bench_ort.py "$DIR/$1.onnx" --threads "$t" --runs "$RUNS")"
    plain="$("$BIN" bench "$DIR/$1.onnx" --json --runs "$((RUNS < 5 ? RUNS : 5))" --threads "$t" --no-tile --winograd off)"
    # The convolution's other forms: direct (tiled product) and Winograd F(4x4, 3x3).
    direct="null"; f4="null"
    if [ "$1" = conv3x3_64 ]; then
      direct="$("$BIN" bench "$DIR/$1.onnx" --json --runs "$RUNS" --threads "$t" --winograd off)"
      f4="$("$BIN" bench "$DIR/$1.onnx" --json --runs "$RUNS" --threads "$t" --winograd f4)"
    fi
    "$PY" - "$1" "$2" "$t" "$PEAK" "$tiled" "$ort" "$plain" "$direct" "$f4" <<'PY'
import json, sys
name, flops, t = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
peak, tiled, ort, plain, direct, f4 = (json.loads(a) for a in sys.argv[4:10])
ms = lambda r: None if r is None else round(r["median_ms"], 3)
gf = lambda ms: flops / (ms * 1e-3) / 1e9
print(json.dumps({
    "case": name, "threads": t,
    "tessera_ms": round(tiled["median_ms"], 3), "tessera_gflops": round(gf(tiled["median_ms"]), 1),
    "onnxruntime_ms": round(ort["median_ms"], 3), "onnxruntime_gflops": round(gf(ort["median_ms"]), 1),
    "vs_onnxruntime": round(ort["median_ms"] / tiled["median_ms"], 3),
    "untiled_ms": round(plain["median_ms"], 3),
    "direct_ms": ms(direct), "winograd_f4_ms": ms(f4),
    "fma_peak_gflops_per_core": round(peak["gflops"], 1), "isa": peak["isa"],
    "fraction_of_peak": round(gf(tiled["median_ms"]) / (peak["gflops"] * t), 3),
}))
PY
  done
done
