"""GPU-sized models for the GPU bundle (scripts/gpu_bundle.sh): the bundled transformer block
(examples/models/make_models.py) at width 384 with 6 heads, a 1536-wide MLP and 512 tokens,
in f32 and in f16 (every float initializer and the input/output converted; the f16 model's
products run on tensor cores on sm_80+). scripts/gpu_baselines.py times the same block in
PyTorch eager.

    python scripts/gpu_models.py OUT_DIR
"""
import os
import sys

import onnx
from onnx import TensorProto, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "models"))
import make_models  # noqa: E402

# Shapes shared with gpu_baselines.py's PyTorch block.
# (Width 384: the graphs travel as text with their weights, ~35 MB of the 64 MiB a call to
# the GPU machine carries.)
SEQ, D, HEADS, FF = 512, 384, 6, 1536


def to_f16(path_in, path_out):
    m = onnx.load(path_in)
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(t).astype("float16")
            g.initializer[i].CopyFrom(numpy_helper.from_array(a, t.name))
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    m.graph.name = m.graph.name + "_f16"
    onnx.checker.check_model(m)
    onnx.save(m, path_out)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    f32 = os.path.join(out, "transformer_gpu_f32.onnx")
    make_models.transformer_block(f32, seq=SEQ, d=D, heads=HEADS, ff=FF)
    to_f16(f32, os.path.join(out, "transformer_gpu_f16.onnx"))
    print(f"wrote transformer_gpu_f32.onnx, transformer_gpu_f16.onnx to {out}")


if __name__ == "__main__":
    main()
