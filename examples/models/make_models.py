"""Builds the small ONNX models bundled with tessera, from code (no model hub).

    python examples/models/make_models.py OUT_DIR

writes mlp.onnx, small_cnn.onnx, transformer_block.onnx and exported_style.onnx (opset 17,
fixed seeds) with a symbolic batch dimension. The same script runs in the test set-up, so the committed
copies can always be regenerated.
"""
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
rng = np.random.default_rng(2026)


def w(name, *shape, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1] if len(shape) > 1 else 1)
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tessera-make-models")
    onnx.checker.check_model(model)
    onnx.save(model, path)


def mlp(path):
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], transB=1),
        helper.make_node("Tanh", ["h2"], ["a2"]),
        helper.make_node("MatMul", ["a2", "w3"], ["h3"]),
        helper.make_node("Softmax", ["h3"], ["y"], axis=-1),
    ]
    g = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w("w1", 64, 128), w("b1", 128), w("w2", 96, 128), w("b2", 96), w("w3", 96, 10)],
    )
    save(g, path)


def small_cnn(path):
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=2),
        helper.make_node("Sigmoid", ["c2"], ["s2"]),
        helper.make_node("Mul", ["c2", "s2"], ["silu"]),
        helper.make_node("AveragePool", ["silu"], ["p2"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    inits = [
        w("c1w", 16, 3, 3, 3, scale=0.2), w("c1b", 16, scale=0.1),
        numpy_helper.from_array((rng.uniform(0.5, 1.5, 16)).astype(np.float32), "bn_s"),
        w("bn_b", 16, scale=0.1), w("bn_m", 16, scale=0.1),
        numpy_helper.from_array((rng.uniform(0.5, 1.5, 16)).astype(np.float32), "bn_v"),
        w("c2w", 32, 8, 3, 3, scale=0.15), w("fw", 10, 32), w("fb", 10, scale=0.1),
    ]
    g = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    save(g, path)


def transformer_block(path, seq=16, d=64, heads=4, ff=128):
    dh = d // heads
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln1_s", "ln1_b"], ["ln1"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["ln1", "wq"], ["q"]),
        helper.make_node("MatMul", ["ln1", "wk"], ["k"]),
        helper.make_node("MatMul", ["ln1", "wv"], ["v"]),
        helper.make_node("Reshape", ["q", "heads_shape"], ["q4"]),
        helper.make_node("Reshape", ["k", "heads_shape"], ["k4"]),
        helper.make_node("Reshape", ["v", "heads_shape"], ["v4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kt"], ["scores"]),
        helper.make_node("Div", ["scores", "sqrt_dh"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "vh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "model_shape"], ["ctx2"]),
        helper.make_node("MatMul", ["ctx2", "wo"], ["proj"]),
        helper.make_node("Add", ["x", "proj"], ["res1"]),
        helper.make_node("LayerNormalization", ["res1", "ln2_s", "ln2_b"], ["ln2"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["ln2", "w1"], ["f1"]),
        helper.make_node("Add", ["f1", "b1"], ["f1b"]),
        # GELU written out with Erf, as exporters before opset 20 do.
        helper.make_node("Div", ["f1b", "sqrt2"], ["g0"]),
        helper.make_node("Erf", ["g0"], ["g1"]),
        helper.make_node("Add", ["g1", "one"], ["g2"]),
        helper.make_node("Mul", ["f1b", "g2"], ["g3"]),
        helper.make_node("Mul", ["g3", "half"], ["gelu"]),
        helper.make_node("MatMul", ["gelu", "w2"], ["f2"]),
        helper.make_node("Add", ["f2", "b2"], ["f2b"]),
        helper.make_node("Add", ["res1", "f2b"], ["y"]),
    ]
    scalar = lambda n, v: numpy_helper.from_array(np.array(v, dtype=np.float32), n)
    inits = [
        numpy_helper.from_array(np.ones(d, np.float32) + 0.1 * rng.standard_normal(d).astype(np.float32), "ln1_s"), w("ln1_b", d, scale=0.1),
        numpy_helper.from_array(np.ones(d, np.float32) + 0.1 * rng.standard_normal(d).astype(np.float32), "ln2_s"), w("ln2_b", d, scale=0.1),
        w("wq", d, d), w("wk", d, d), w("wv", d, d), w("wo", d, d),
        w("w1", d, ff), w("b1", ff, scale=0.1), w("w2", ff, d), w("b2", d, scale=0.1),
        const("heads_shape", [0, 0, heads, dh]), const("model_shape", [0, 0, d]),
        scalar("sqrt_dh", np.sqrt(dh)), scalar("sqrt2", np.sqrt(2.0)), scalar("one", 1.0), scalar("half", 0.5),
    ]
    g = helper.make_graph(
        nodes, "transformer_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", seq, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", seq, d])],
        inits,
    )
    save(g, path)


def exported_style(path, seq=8, d=32, heads=4):
    """What torch.onnx.export writes for a dynamic batch: shape arithmetic on Shape(x),
    a fused QKV projection split three ways, Range-generated positions, a decomposed
    LayerNorm (ReduceMean / Pow / Sqrt) and a masked softmax with Where."""
    dh = d // heads
    i64 = lambda n, v: numpy_helper.from_array(np.array(v, dtype=np.int64), n)
    f32 = lambda n, v: numpy_helper.from_array(np.array(v, dtype=np.float32), n)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Gather", ["shape", "one_i"], ["seqlen"], axis=0),
        helper.make_node("Range", ["zero", "seqlen", "one_i"], ["pos"]),
        helper.make_node("Gather", ["pos_table", "pos"], ["pos_emb"], axis=0),
        helper.make_node("Add", ["x", "pos_emb"], ["h"]),
        # Decomposed LayerNorm, as older exporters write it.
        helper.make_node("ReduceMean", ["h"], ["mu"], axes=[-1], keepdims=1),
        helper.make_node("Sub", ["h", "mu"], ["hc"]),
        helper.make_node("Pow", ["hc", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["hc", "std"], ["ln"]),
        helper.make_node("MatMul", ["ln", "wqkv"], ["qkv"]),
        helper.make_node("Split", ["qkv", "split_sizes"], ["q", "k", "v"], axis=-1),
        helper.make_node("Unsqueeze", ["batch", "zero_axes"], ["b1"]),
        helper.make_node("Unsqueeze", ["seqlen", "zero_axes"], ["s1"]),
        helper.make_node("Concat", ["b1", "s1", "heads_dh"], ["hshape"], axis=0),
        helper.make_node("Reshape", ["q", "hshape"], ["q4"]),
        helper.make_node("Reshape", ["k", "hshape"], ["k4"]),
        helper.make_node("Reshape", ["v", "hshape"], ["v4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        # Causal mask: positions j > i get -inf before the softmax.
        helper.make_node("Unsqueeze", ["pos", "one_axes"], ["pos_col"]),
        helper.make_node("Greater", ["pos", "pos_col"], ["future"]),
        helper.make_node("Where", ["future", "neg_inf", "scaled"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "vh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["b1", "s1", "model_dim"], ["mshape"], axis=0),
        helper.make_node("Reshape", ["ctx_t", "mshape"], ["ctx2"]),
        helper.make_node("MatMul", ["ctx2", "wo"], ["proj"]),
        helper.make_node("Add", ["h", "proj"], ["y"]),
    ]
    inits = [
        i64("zero", 0), i64("one_i", 1), i64("zero_axes", [0]), i64("one_axes", [1]),
        i64("split_sizes", [d, d, d]), i64("heads_dh", [heads, dh]), i64("model_dim", [d]),
        w("pos_table", 64, d, scale=0.1), f32("two", 2.0), f32("eps", 1e-5), w("wqkv", d, 3 * d), w("wo", d, d),
        f32("scale", 1.0 / np.sqrt(dh)), f32("neg_inf", -np.inf),
    ]
    g = helper.make_graph(
        nodes, "exported_style",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", seq, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", seq, d])],
        inits,
    )
    save(g, path)


def upsample(path):
    """A decoder-style block: Resize in nearest and linear modes with several coordinate
    transformations and a strided ConvTranspose, between convolutions (as in U-Net / FPN
    heads)."""
    f32 = lambda n, v: numpy_helper.from_array(np.array(v, dtype=np.float32), n)
    nodes = [
        helper.make_node("Conv", ["x", "c1w"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c1", "", "s2"], ["up1"], mode="nearest"),
        helper.make_node("Relu", ["up1"], ["r1"]),
        helper.make_node("Resize", ["r1", "", "", "sz"], ["up2"], mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("Resize", ["up2", "", "s2"], ["up3"], mode="linear", coordinate_transformation_mode="align_corners"),
        helper.make_node("Resize", ["up3", "", "s_half"], ["down"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("ConvTranspose", ["down", "tw", "tb"], ["t"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 0]),
        helper.make_node("Conv", ["t", "c2w"], ["y"], strides=[2, 2]),
    ]
    inits = [
        w("c1w", 4, 3, 3, 3, scale=0.3), w("c2w", 2, 4, 1, 1, scale=0.5),
        w("tw", 4, 4, 3, 3, scale=0.3), w("tb", 4, scale=0.1),
        f32("s2", [1, 1, 2, 2]), f32("s_half", [1, 1, 0.5, 0.5]),
        numpy_helper.from_array(np.array([1, 4, 13, 11], dtype=np.int64), "sz"),
    ]
    g = helper.make_graph(
        nodes, "upsample",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 13, 11])],
        inits,
    )
    save(g, path)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    mlp(f"{out}/mlp.onnx")
    small_cnn(f"{out}/small_cnn.onnx")
    transformer_block(f"{out}/transformer_block.onnx")
    exported_style(f"{out}/exported_style.onnx")
    upsample(f"{out}/upsample.onnx")
    print(f"wrote mlp.onnx, small_cnn.onnx, transformer_block.onnx, exported_style.onnx, upsample.onnx to {out}")
