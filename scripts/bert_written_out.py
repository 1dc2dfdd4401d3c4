"""A BERT-style encoder layer as exporters before opset 17 write it: both layer norms
written out (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add). S=128, D=256,
4 heads, FFN 1024, fixed seed. The optimizer's composite rules turn each norm back into
one LayerNormalization kernel. The FFN's activation is ReLU, or with `gelu` GELU written out
as PyTorch exports it (x · 0.5 · (1 + erf(x / √2))).

    .venv/bin/python scripts/bert_written_out.py OUT.onnx [relu|gelu]
"""
import sys

import numpy as np
import onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
rng = np.random.default_rng(0)
S, D, H, F = 128, 256, 4, 1024
dh = D // H
inits = []
def c(name, arr): inits.append(nh.from_array(np.asarray(arr), name)); return name
def w(name, *s): return c(name, (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32))
c("ax", np.array([-1], np.int64)); c("two", np.float32(2.0)); c("eps", np.float32(1e-12))
c("scale", np.float32(1 / np.sqrt(dh)))
c("hs", np.array([1, S, H, dh], np.int64)); c("ms", np.array([1, S, D], np.int64))
nodes = []
def n(op, ins, out, **kw): nodes.append(h.make_node(op, ins, [out], **kw)); return out
def ln(x, p):
    mu = n("ReduceMean", [x], p + "mu", axes=[-1], keepdims=1)
    cc = n("Sub", [x, mu], p + "c")
    sq = n("Pow", [cc, "two"], p + "sq")
    var = n("ReduceMean", [sq], p + "var", axes=[-1], keepdims=1)
    ve = n("Add", [var, "eps"], p + "ve")
    sd = n("Sqrt", [ve], p + "sd")
    no = n("Div", [cc, sd], p + "no")
    g = c(p + "g", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32))
    b = c(p + "b", (0.1 * rng.standard_normal(D)).astype(np.float32))
    return n("Add", [n("Mul", [no, g], p + "sc"), b], p + "out")
x = "x"
def proj(x, p, i, o):
    return n("Add", [n("MatMul", [x, w(p + "w", i, o)], p + "mm"), c(p + "bias", (0.1 * rng.standard_normal(o)).astype(np.float32))], p + "o")
heads = lambda t, p, perm: n("Transpose", [n("Reshape", [t, "hs"], p + "r")], p + "t", perm=perm)
q = heads(proj(x, "q", D, D), "qh", [0, 2, 1, 3]); k = heads(proj(x, "k", D, D), "kh", [0, 2, 3, 1]); v = heads(proj(x, "v", D, D), "vh", [0, 2, 1, 3])
s = n("Mul", [n("MatMul", [q, k], "qk"), "scale"], "s")
a = n("Softmax", [s], "a", axis=-1)
o = n("Reshape", [n("Transpose", [n("MatMul", [a, v], "av")], "avt", perm=[0, 2, 1, 3]), "ms"], "att")
h1 = ln(n("Add", [proj(o, "o", D, D), x], "res1"), "ln1")
def gelu(t):
    c("sqrt2", np.float32(np.sqrt(2.0))); c("one", np.float32(1.0)); c("half", np.float32(0.5))
    e = n("Add", [n("Erf", [n("Div", [t, "sqrt2"], "gd")], "ge"), "one"], "g1")
    return n("Mul", [n("Mul", [t, e], "gm"), "half"], "act")
act = sys.argv[2] if len(sys.argv) > 2 else "relu"
f1 = proj(h1, "f1", D, F)
f = proj(gelu(f1) if act == "gelu" else n("Relu", [f1], "act"), "f2", F, D)
y = ln(n("Add", [f, h1], "res2"), "ln2")
nodes.append(h.make_node("Identity", [y], ["y"]))
g = h.make_graph(nodes, "bert_written_out", [h.make_tensor_value_info("x", T.FLOAT, [1, S, D])], [h.make_tensor_value_info("y", T.FLOAT, [1, S, D])], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)]); m.ir_version = 8
onnx.checker.check_model(m); onnx.save(m, sys.argv[1])
