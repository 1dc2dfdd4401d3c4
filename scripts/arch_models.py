"""Blocks of three architectures the bundled models do not cover, built from code (no model
hub), written the way their exporters write them:

    python scripts/arch_models.py OUT_DIR

- mobilenet_v2.onnx: three inverted residual blocks (1x1 expand, BatchNormalization, Clip
  0..6, 3x3 depthwise, 1x1 project, residual Add) at 32x56x56, global pool, classifier Gemm.
- gpt2.onnx: a GPT-2 block at S=128, D=256, 4 heads: layer norms written out (ReduceMean,
  Sub, Pow, Sqrt, Div), one QKV MatMul cut by Split, a causal mask added before Softmax,
  and the tanh GELU (`0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, with `Pow(x, 3)`).
- gpt2_step.onnx: one decoding step of a GPT-2-small-sized block (D=768, 12 heads, FFN 3072)
  with a key/value cache of 128 positions as inputs: the new token's keys and values are
  concatenated to the cache, one query attends over 129 keys; every projection is a
  matrix-vector product (one row).
- audio_unet.onnx: 1-D convolutions and a 1-D max pool over a 40x200 spectrogram, then
  ConvTranspose upsampling (2x2 stride 2 with bias and ReLU; 3x3 stride 2 with output
  padding) joined by a Concat.
- rnn.onnx: a bidirectional LSTM (biases, peepholes, initial states) feeding a GRU
  (`linear_before_reset=1`) and a reverse GRU, 20 steps, batch 2.
- efficientnet.onnx: two MBConv blocks at 40x28x28: SiLU (`x * Sigmoid(x)`), a 5x5
  depthwise convolution, squeeze-and-excite (GlobalAveragePool, two 1x1 convolutions,
  Sigmoid, a broadcast Mul).

Opset 13, fixed seed. `scripts/gen_test_data.py` writes onnxruntime's outputs for them
(tests/tests/models.rs); `scripts/bench_fusion.sh` and `scripts/bench_models.sh` time them.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, array):
        self.count += 1
        name = f"w{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, outputs=None, **attrs):
        self.count += 1
        outputs = outputs or [f"{op_type.lower()}_{self.count}"]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{op_type}_{self.count}", **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def model(self, name, in_shape, out_shape, more_inputs=()):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)]
            + [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in more_inputs],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tessera-arch-models")
        onnx.checker.check_model(model)
        return model


def normal(*shape, scale=None):
    fan_in = np.prod(shape[1:]) if len(shape) > 1 else 1
    return (rng.standard_normal(shape) * (scale or 1 / np.sqrt(fan_in))).astype(np.float32)


def positive(n):
    return rng.uniform(0.5, 1.5, n).astype(np.float32)


def batch_norm(g, x, c):
    return g.op("BatchNormalization", [x, g.const(positive(c)), g.const(normal(c, scale=0.1)),
                                       g.const(normal(c, scale=0.1)), g.const(positive(c))])


def conv(g, x, cin, cout, k, group=1, bias=False):
    inputs = [x, g.const(normal(cout, cin // group, k, k))]
    if bias:
        inputs.append(g.const(normal(cout, scale=0.1)))
    return g.op("Conv", inputs, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)


def mobilenet_v2():
    g, x, c = Graph(), "x", 32
    relu6 = lambda t: g.op("Clip", [t, g.const(np.float32(0)), g.const(np.float32(6))])
    for _ in range(3):
        y = relu6(batch_norm(g, conv(g, x, c, 6 * c, 1), 6 * c))
        y = relu6(batch_norm(g, conv(g, y, 6 * c, 6 * c, 3, group=6 * c), 6 * c))
        x = g.op("Add", [x, batch_norm(g, conv(g, y, 6 * c, c, 1), c)])
    y = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.op("Gemm", [y, g.const(normal(100, c)), g.const(normal(100, scale=0.1))], ["y"], transB=1)
    return g.model("mobilenet_v2_blocks", [1, c, 56, 56], [1, 100])


def layer_norm(g, x, d):
    mean = g.op("ReduceMean", [x], axes=[-1])
    centred = g.op("Sub", [x, mean])
    var = g.op("ReduceMean", [g.op("Pow", [centred, g.const(np.float32(2))])], axes=[-1])
    normed = g.op("Div", [centred, g.op("Sqrt", [g.op("Add", [var, g.const(np.float32(1e-5))])])])
    return g.op("Add", [g.op("Mul", [normed, g.const(positive(d))]), g.const(normal(d, scale=0.1))])


def linear(g, t, n_in, n_out):
    return g.op("Add", [g.op("MatMul", [t, g.const(normal(n_in, n_out))]), g.const(normal(n_out, scale=0.1))])


def gelu_ffn(g, x, d):
    """GPT-2's feed-forward half after its layer norm: 4d wide, the tanh GELU with `Pow(x, 3)`."""
    u = linear(g, layer_norm(g, x, d), d, 4 * d)
    cube = g.op("Pow", [u, g.const(np.float32(3))])
    inner = g.op("Mul", [g.op("Add", [u, g.op("Mul", [cube, g.const(np.float32(0.044715))])]), g.const(np.float32(np.sqrt(2 / np.pi)))])
    gelu = g.op("Mul", [g.op("Mul", [u, g.const(np.float32(0.5))]), g.op("Add", [g.op("Tanh", [inner]), g.const(np.float32(1))])])
    return linear(g, gelu, 4 * d, d)


def gpt2():
    g, x = Graph(), "x"
    seq, d, heads = 128, 256, 4
    dh = d // heads
    qkv = linear(g, layer_norm(g, x, d), d, 3 * d)
    q, k, v = g.op("Split", [qkv], ["q", "k", "v"], axis=-1)
    split_heads = g.const(np.array([1, seq, heads, dh], np.int64))
    per_head = lambda t, perm: g.op("Transpose", [g.op("Reshape", [t, split_heads])], perm=perm)
    scores = g.op("MatMul", [per_head(q, [0, 2, 1, 3]), per_head(k, [0, 2, 3, 1])])
    scores = g.op("Div", [scores, g.const(np.float32(np.sqrt(dh)))])
    scores = g.op("Add", [scores, g.const(np.triu(np.full((seq, seq), -1e4, np.float32), 1))])
    attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), per_head(v, [0, 2, 1, 3])])
    attn = g.op("Reshape", [g.op("Transpose", [attn], perm=[0, 2, 1, 3]), g.const(np.array([1, seq, d], np.int64))])
    x = g.op("Add", [x, linear(g, attn, d, d)])
    g.op("Add", [x, gelu_ffn(g, x, d)], ["y"])
    return g.model("gpt2_block", [1, seq, d], [1, seq, d])


def gpt2_step():
    g, x = Graph(), "x"
    past, d, heads = 128, 768, 12
    dh = d // heads
    qkv = linear(g, layer_norm(g, x, d), d, 3 * d)
    q, k, v = g.op("Split", [qkv], ["q", "k", "v"], axis=-1)
    one_head_row = g.const(np.array([1, 1, heads, dh], np.int64))
    per_head = lambda t: g.op("Transpose", [g.op("Reshape", [t, one_head_row])], perm=[0, 2, 1, 3])
    keys = g.op("Concat", ["past_k", per_head(k)], axis=2)
    values = g.op("Concat", ["past_v", per_head(v)], axis=2)
    scores = g.op("MatMul", [per_head(q), g.op("Transpose", [keys], perm=[0, 1, 3, 2])])
    scores = g.op("Div", [scores, g.const(np.float32(np.sqrt(dh)))])
    attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), values])
    attn = g.op("Reshape", [g.op("Transpose", [attn], perm=[0, 2, 1, 3]), g.const(np.array([1, 1, d], np.int64))])
    x = g.op("Add", [x, linear(g, attn, d, d)])
    g.op("Add", [x, gelu_ffn(g, x, d)], ["y"])
    cache = [1, heads, past, dh]
    return g.model("gpt2_step", [1, 1, d], [1, 1, d], [("past_k", cache), ("past_v", cache)])


def efficientnet():
    g, x, c = Graph(), "x", 40
    silu = lambda t: g.op("Mul", [t, g.op("Sigmoid", [t])])
    for _ in range(2):
        y = silu(batch_norm(g, conv(g, x, c, 6 * c, 1), 6 * c))
        y = silu(batch_norm(g, conv(g, y, 6 * c, 6 * c, 5, group=6 * c), 6 * c))
        se = silu(conv(g, g.op("GlobalAveragePool", [y]), 6 * c, 10, 1, bias=True))
        se = g.op("Sigmoid", [conv(g, se, 10, 6 * c, 1, bias=True)])
        x = g.op("Add", [x, batch_norm(g, conv(g, g.op("Mul", [y, se]), 6 * c, c, 1), c)])
    g.op("Identity", [x], ["y"])
    return g.model("efficientnet_blocks", [1, c, 28, 28], [1, c, 28, 28])


def audio_unet():
    """1-D convolutions over a spectrogram (Whisper's front end: two kernel-3 convs with
    the erf GELU, the second strided), a 1-D max pool, then a 2-D decoder stage: 2x2 stride-2
    ConvTranspose upsampling with its bias, a 3x3 ConvTranspose (stride 2, output padding)
    and a skip Concat."""
    g = Graph()
    gelu = lambda t: g.op("Mul", [g.op("Mul", [t, g.op("Add", [g.op("Erf", [g.op("Div", [t, g.const(np.float32(np.sqrt(2)))])]), g.const(np.float32(1))])]), g.const(np.float32(0.5))])
    conv1d = lambda t, cin, cout, stride: g.op("Conv", [t, g.const(normal(cout, cin, 3)), g.const(normal(cout, scale=0.1))],
                                               kernel_shape=[3], pads=[1, 1], strides=[stride])
    y = gelu(conv1d(gelu(conv1d("x", 40, 64, 1)), 64, 64, 2))              # [1, 64, 100]
    y = g.op("MaxPool", [y], kernel_shape=[3], strides=[2], pads=[1, 1])     # [1, 64, 50]
    img = g.op("Reshape", [y, g.const(np.array([1, 16, 20, 10], np.int64))])
    up = g.op("Relu", [g.op("ConvTranspose", [img, g.const(normal(16, 8, 2, 2)), g.const(normal(8, scale=0.1))],
                            kernel_shape=[2, 2], strides=[2, 2])])                         # [1, 8, 40, 20]
    up3 = g.op("ConvTranspose", [img, g.const(normal(16, 8, 3, 3))], kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1], output_padding=[1, 1])                                    # [1, 8, 40, 20]
    g.op("Concat", [up, up3], ["y"], axis=1)
    return g.model("audio_unet_blocks", [1, 40, 200], [1, 16, 40, 20])


def rnn():
    """A bidirectional LSTM (biases, peepholes, initial states, all three outputs used) feeding
    a GRU with PyTorch's `linear_before_reset=1`, then a reverse GRU without biases, over 20
    steps of a batch of 2."""
    g = Graph()
    steps, batch, width, h1, h2 = 20, 2, 32, 48, 40
    y, yh, yc = g.op("LSTM", ["x", g.const(normal(2, 4 * h1, width)), g.const(normal(2, 4 * h1, h1)),
                             g.const(normal(2, 8 * h1, scale=0.1)), "", g.const(normal(2, batch, h1, scale=0.5)),
                             g.const(normal(2, batch, h1, scale=0.5)), g.const(normal(2, 3 * h1, scale=0.1))],
                     outputs=["lstm_y", "lstm_h", "lstm_c"], hidden_size=h1, direction="bidirectional")
    seq = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]), g.const(np.array([steps, batch, 2 * h1], np.int64))])
    states = g.op("Add", [yh, yc])                                                    # [2, batch, h1]
    seq = g.op("Add", [seq, g.op("Reshape", [g.op("Transpose", [states], perm=[1, 0, 2]),
                                             g.const(np.array([1, batch, 2 * h1], np.int64))])])
    gy, _ = g.op("GRU", [seq, g.const(normal(1, 3 * h2, 2 * h1)), g.const(normal(1, 3 * h2, h2)),
                         g.const(normal(1, 6 * h2, scale=0.1))], outputs=["gru_y", "gru_h"], hidden_size=h2,
                 linear_before_reset=1)
    gy = g.op("Reshape", [gy, g.const(np.array([steps, batch, h2], np.int64))])
    g.op("GRU", [gy, g.const(normal(1, 3 * h2, h2)), g.const(normal(1, 3 * h2, h2))], ["y"], hidden_size=h2,
         direction="reverse")
    return g.model("rnn_blocks", [steps, batch, width], [steps, 1, batch, h2])


# Built in this order from one seeded generator: a new model goes last, so that the others
# keep their weights.
MODELS = {"mobilenet_v2": mobilenet_v2, "gpt2": gpt2, "efficientnet": efficientnet, "gpt2_step": gpt2_step,
          "audio_unet": audio_unet, "rnn": rnn}

if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, build in MODELS.items():
        onnx.save(build(), os.path.join(out, f"{name}.onnx"))
