//! The e-graph optimizer end to end: on every bundled model and on random graphs, the
//! optimised graph (interpreted, and compiled) agrees with the unoptimised one on random
//! inputs, and it never has more kernels.

use std::collections::BTreeMap;
use tessera_ir::text::print_graph;
use tessera_ir::{Attr, DType, Graph, OpKind, Rng, ValueType};
use tessera_passes::egraph::{OptimizeConfig, optimize};
use tessera_tests::*;

fn check(name: &str, g: &Graph, bindings: &BTreeMap<String, usize>, seed: u64) {
    let prepared = tessera_passes::fold::prepare(g, bindings)
        .unwrap_or_else(|e| panic!("{name}: prepare: {e}"));
    let (opt, report) = optimize(&prepared, &OptimizeConfig::default())
        .unwrap_or_else(|e| panic!("{name}: optimize: {e}"));
    assert!(
        report.kernels_after <= report.kernels_before,
        "{name}: {report:?}"
    );
    let inputs = random_inputs(&prepared, seed);
    let want = tessera_ir::interp::run_graph(&prepared, &inputs)
        .unwrap_or_else(|e| panic!("{name}: interpreter (unoptimised): {e}"));
    let got = tessera_ir::interp::run_graph(&opt, &inputs)
        .unwrap_or_else(|e| panic!("{name}: interpreter (optimised): {e}"));
    for (i, (a, w)) in got.iter().zip(&want).enumerate() {
        compare(a, w, MODEL).unwrap_or_else(|e| panic!("{name} output {i}: {e}"));
    }
    // Compiled with the optimizer on (the default) against the unoptimised interpreter.
    check_graph(name, &prepared, &inputs, MODEL);
}

/// The graph written as `text` and its optimised form, which must have `kernels` kernels.
fn optimised_to(name: &str, text: &str, kernels: usize) -> (Graph, Graph) {
    let g = tessera_ir::text::parse_graph(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new()).unwrap();
    let (opt, report) = optimize(&prepared, &OptimizeConfig::default()).unwrap();
    assert_eq!(
        report.kernels_after,
        kernels,
        "{name}: {report:?}\n{}",
        print_graph(&opt)
    );
    (g, opt)
}

#[test]
fn bundled_models_optimised_agree() {
    let dir = repo_root().join("examples/models");
    for m in [
        "mlp",
        "small_cnn",
        "transformer_block",
        "exported_style",
        "upsample",
    ] {
        let g = tessera::onnx::import_file(&dir.join(format!("{m}.onnx")))
            .unwrap_or_else(|e| panic!("{m}: {e}"));
        let bindings: BTreeMap<String, usize> = g.symbols().into_iter().map(|s| (s, 2)).collect();
        check(m, &g, &bindings, 5);
    }
}

/// How many MatMuls `g` computes, in kernels of their own and inside fused bodies.
fn products_in(g: &Graph) -> usize {
    g.nodes().filter(|(_, n)| n.op == OpKind::MatMul).count()
        + g.nodes()
            .filter_map(|(_, n)| match n.attrs.get("body") {
                Some(Attr::Graph(b)) => {
                    Some(b.0.nodes().filter(|(_, m)| m.op == OpKind::MatMul).count())
                }
                _ => None,
            })
            .sum::<usize>()
}

/// A value with several consumers is computed once: inlined into a body only if that body
/// holds every consumer (`tanh(a)·a` after a product and its bias: one kernel), never into
/// two bodies (with `σ(a)` a second output, the product and its bias stay a kernel of their
/// own).
#[test]
fn shared_values_are_not_recomputed() {
    let inside = "graph \"g\" opset 21 {\n input x: f32[2,5,7]\n input w: f32[7,9]\n input b: f32[9]\n node \"mm\" MatMul(x, w) -> (m: f32[2,5,9])\n node \"add\" Add(m, b) -> (a: f32[2,5,9])\n node \"t\" Tanh(a) -> (t: f32[2,5,9])\n node \"mul\" Mul(t, a) -> (y: f32[2,5,9])\n output y\n}";
    let outside = inside.replace(
        " output y\n}",
        " node \"s\" Sigmoid(a) -> (z: f32[2,5,9])\n output y\n output z\n}",
    );
    for (name, text, kernels) in [
        ("all consumers inside", inside.to_string(), 1),
        ("one outside", outside, 3),
    ] {
        let (g, opt) = optimised_to(name, &text, kernels);
        assert_eq!(products_in(&opt), 1, "{name}: the product is computed once");
        check(name, &g, &BTreeMap::new(), 4);
    }
}

/// Random chains of elementwise ops, broadcasts, views and matrix products.
#[test]
fn random_graphs_optimised_agree() {
    use OpKind::*;
    for seed in 0..24u64 {
        let mut rng = Rng::new(seed * 7919 + 1);
        let mut g = Graph::new(format!("random{seed}"));
        let (m, n) = (1 + rng.below(6) as usize, 2 + rng.below(20) as usize);
        let x = g.add_input("x", ValueType::new(DType::F32, &[m, n]));
        let b = g.add_input("b", ValueType::new(DType::F32, &[n]));
        let mut vals = vec![x, b];
        for _ in 0..(3 + rng.below(8)) {
            let pick = |rng: &mut Rng, vals: &[tessera_ir::ValueId]| {
                vals[rng.below(vals.len() as u64) as usize]
            };
            let a = pick(&mut rng, &vals);
            let c = pick(&mut rng, &vals);
            let v = match rng.below(9) {
                0 => g.op(Add, &[a, c], Default::default()),
                1 => g.op(Mul, &[a, c], Default::default()),
                2 => g.op(Sub, &[a, c], Default::default()),
                3 => g.op(Relu, &[a], Default::default()),
                4 => g.op(Tanh, &[a], Default::default()),
                5 => g.op(Neg, &[a], Default::default()),
                6 => g.op(Sigmoid, &[a], Default::default()),
                7 => g.op(
                    LeakyRelu,
                    &[a],
                    [("alpha".to_string(), Attr::Float(0.2))].into(),
                ),
                _ => {
                    let one = g.add_initializer(
                        &format!("one{}", g.num_values()),
                        tessera_ir::Tensor::from_f64(DType::F32, vec![], &[1.0]),
                    );
                    g.op(Mul, &[a, one], Default::default())
                }
            };
            vals.push(v);
        }
        let last = *vals.last().unwrap();
        g.outputs.push(last);
        g.infer_types().unwrap();
        check(&format!("random graph {seed}"), &g, &BTreeMap::new(), seed);
    }
}

/// Products with elementwise epilogues, and reductions of elementwise maps, become one kernel
/// (the anchor's lowering applies the epilogue; the reduction computes its data in registers),
/// and agree with the unfused graph: batched MatMul with a broadcast bias, Gemm
/// with C, and both Conv forms (short channel reductions accumulate in registers, long ones
/// in memory rows).
#[test]
fn product_epilogues_fuse_and_agree() {
    let cases = [
        (
            "matmul batched + bias + tanh + scale",
            "graph \"g\" opset 21 {\n input x: f32[2,5,7]\n input w: f32[7,9]\n input b: f32[9]\n init h: f32[] = hex\"0000003f\"\n node \"mm\" MatMul(x, w) -> (m: f32[2,5,9])\n node \"add\" Add(m, b) -> (a: f32[2,5,9])\n node \"t\" Tanh(a) -> (t: f32[2,5,9])\n node \"scale\" Mul(t, h) -> (y: f32[2,5,9])\n output y\n}",
        ),
        (
            "gemm + relu",
            "graph \"g\" opset 21 {\n input x: f32[6,8]\n input w: f32[8,10]\n input c: f32[10]\n node \"gemm\" Gemm[alpha=0.5](x, w, c) -> (g: f32[6,10])\n node \"r\" Relu(g) -> (y: f32[6,10])\n output y\n}",
        ),
        (
            "short conv + channel scale + relu",
            "graph \"g\" opset 21 {\n input x: f32[1,3,9,9]\n input w: f32[4,3,3,3]\n input s: f32[4,1,1]\n node \"conv\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w) -> (c: f32[1,4,9,9])\n node \"mul\" Mul(c, s) -> (m: f32[1,4,9,9])\n node \"r\" Relu(m) -> (y: f32[1,4,9,9])\n output y\n}",
        ),
        (
            "long conv + residual add + relu",
            "graph \"g\" opset 21 {\n input x: f32[1,40,6,6]\n input w: f32[5,40,3,3]\n input z: f32[1,5,6,6]\n node \"conv\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w) -> (c: f32[1,5,6,6])\n node \"add\" Add(c, z) -> (a: f32[1,5,6,6])\n node \"r\" Relu(a) -> (y: f32[1,5,6,6])\n output y\n}",
        ),
        (
            "sum of squares (map then reduce)",
            "graph \"g\" opset 21 {\n input x: f32[4,33]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"sq\" Mul(x, x) -> (s: f32[4,33])\n node \"r\" ReduceSum[keepdims=0](s, ax) -> (y: f32[4])\n output y\n}",
        ),
        (
            "variance about a given mean",
            "graph \"g\" opset 21 {\n input x: f32[3,5,7]\n input m: f32[3,1,7]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"d\" Sub(x, m) -> (d: f32[3,5,7])\n node \"sq\" Mul(d, d) -> (s: f32[3,5,7])\n node \"r\" ReduceMean(s, ax) -> (y: f32[3,1,7])\n output y\n}",
        ),
        (
            "root mean square (map, reduce, map)",
            "graph \"g\" opset 21 {\n input x: f32[6,40]\n init ax: i64[1] = hex\"0100000000000000\"\n init eps: f32[] = hex\"bd378635\"\n node \"sq\" Mul(x, x) -> (s: f32[6,40])\n node \"r\" ReduceMean(s, ax) -> (m: f32[6,1])\n node \"e\" Add(m, eps) -> (a: f32[6,1])\n node \"q\" Sqrt(a) -> (y: f32[6,1])\n output y\n}",
        ),
        (
            "reduction without keepdims, then a broadcast divisor",
            "graph \"g\" opset 21 {\n input x: f32[4,9,3]\n input z: f32[3]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"r\" ReduceSum[keepdims=0](x, ax) -> (s: f32[4,3])\n node \"d\" Div(s, z) -> (y: f32[4,3])\n output y\n}",
        ),
        (
            "map, reduce to a lower rank, map",
            "graph \"g\" opset 21 {\n input x: f32[4,9]\n input z: f32[4]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"sq\" Mul(x, x) -> (s: f32[4,9])\n node \"r\" ReduceMean[keepdims=0](s, ax) -> (m: f32[4])\n node \"d\" Mul(m, z) -> (y: f32[4])\n output y\n}",
        ),
        (
            "matmul + bias + erf GELU (the biased product read twice, both reads in the kernel)",
            "graph \"g\" opset 21 {\n input x: f32[4,6]\n input w: f32[6,8]\n input b: f32[8]\n init r2: f32[] = hex\"f304b53f\"\n init one: f32[] = hex\"0000803f\"\n init half: f32[] = hex\"0000003f\"\n node \"mm\" MatMul(x, w) -> (m: f32[4,8])\n node \"add\" Add(m, b) -> (a: f32[4,8])\n node \"div\" Div(a, r2) -> (d: f32[4,8])\n node \"erf\" Erf(d) -> (e: f32[4,8])\n node \"p1\" Add(e, one) -> (p: f32[4,8])\n node \"mul\" Mul(a, p) -> (q: f32[4,8])\n node \"h\" Mul(q, half) -> (y: f32[4,8])\n output y\n}",
        ),
        (
            "conv + swish (the conv read twice, both reads in the kernel)",
            "graph \"g\" opset 21 {\n input x: f32[1,3,7,7]\n input w: f32[4,3,3,3]\n node \"conv\" Conv[kernel_shape=ints(3,3)](x, w) -> (c: f32[1,4,5,5])\n node \"s\" Sigmoid(c) -> (s: f32[1,4,5,5])\n node \"m\" Mul(c, s) -> (y: f32[1,4,5,5])\n output y\n}",
        ),
    ];
    for (name, text) in cases {
        let (g, opt) = optimised_to(name, text, 1);
        let fused = opt.nodes().find(|(_, n)| n.op == OpKind::Fused);
        assert!(fused.is_some(), "{name}: no fused kernel");
        check(name, &g, &BTreeMap::new(), 21);
    }
}

/// The optimised graph, its node names included (they name the kernels in profiles, tuning
/// tables and filetests), is the same on every run: nothing depends on hash order.
#[test]
fn optimisation_is_deterministic() {
    // A softmax between a Flatten and a Reshape that undo each other: the three nodes' values
    // become one class, whose kernel must get the same one of their names every time.
    let softmax = "graph \"g\" opset 21 {\n input x: f32[1,37]\n init s: i64[2] = hex\"01000000000000002500000000000000\"\n node \"flat\" Flatten[axis=1](x) -> (f: f32[1,37])\n node \"sm\" Softmax[axis=-1](f) -> (p: f32[1,37])\n node \"back\" Reshape(p, s) -> (y: f32[1,37])\n output y\n}";
    let dir = repo_root().join("examples/models");
    for m in [
        "softmax",
        "transformer_block",
        "exported_style",
        "small_cnn",
    ] {
        let g = match m {
            "softmax" => tessera_ir::text::parse_graph(softmax).unwrap(),
            _ => tessera::onnx::import_file(&dir.join(format!("{m}.onnx"))).unwrap(),
        };
        let bindings: BTreeMap<String, usize> = g.symbols().into_iter().map(|s| (s, 2)).collect();
        let prepared = tessera_passes::fold::prepare(&g, &bindings).unwrap();
        let texts: Vec<String> = (0..8)
            .map(|_| {
                let (opt, _) = optimize(&prepared, &OptimizeConfig::default()).unwrap();
                tessera_ir::text::print_graph(&opt)
            })
            .collect();
        assert!(
            texts.iter().all(|t| *t == texts[0]),
            "{m}: the optimised graph differs between runs:\n{}\n---\n{}",
            texts[0],
            texts.iter().find(|t| **t != texts[0]).unwrap()
        );
    }
}

/// Counts the top-level nodes of `g` running `op` (not those inside fused bodies).
fn kernels_of(g: &Graph, op: OpKind) -> usize {
    g.nodes().filter(|(_, n)| n.op == op).count()
}

/// Slices and one-index Gathers with constant parameters, and Transposes, are read through
/// by the fused kernels that consume them (views), never copied: an LSTM-like step — this step’s row of
/// the input projection (a Gather) plus `h·W` as a product epilogue, its four gates sliced
/// from the sum — is two kernels; a reduction reads a reversed strided slice in place; a
/// chain of views (a Slice of a Gather) is followed to the input; a residual add reads the
/// other branch transposed.
#[test]
fn views_are_read_in_place() {
    let cases = [
        (
            "lstm-like step: a Gather in an epilogue, four gate Slices in one cell update",
            "graph \"g\" opset 21 {\n input x: f32[3,2,32]\n input h: f32[2,8]\n input w: f32[8,32]\n input c: f32[2,8]\n init t: i64[] = hex\"0100000000000000\"\n init a1: i64[1] = hex\"0100000000000000\"\n init s0: i64[1] = hex\"0000000000000000\"\n init s8: i64[1] = hex\"0800000000000000\"\n init s16: i64[1] = hex\"1000000000000000\"\n init s24: i64[1] = hex\"1800000000000000\"\n init s32: i64[1] = hex\"2000000000000000\"\n node \"row\" Gather[axis=0](x, t) -> (xt: f32[2,32])\n node \"mm\" MatMul(h, w) -> (m: f32[2,32])\n node \"pre\" Add(xt, m) -> (p: f32[2,32])\n node \"si\" Slice(p, s0, s8, a1) -> (i: f32[2,8])\n node \"so\" Slice(p, s8, s16, a1) -> (o: f32[2,8])\n node \"sf\" Slice(p, s16, s24, a1) -> (f: f32[2,8])\n node \"sg\" Slice(p, s24, s32, a1) -> (gg: f32[2,8])\n node \"ig\" Sigmoid(i) -> (ig: f32[2,8])\n node \"og\" Sigmoid(o) -> (og: f32[2,8])\n node \"fg\" Sigmoid(f) -> (fg: f32[2,8])\n node \"gt\" Tanh(gg) -> (gt: f32[2,8])\n node \"kept\" Mul(fg, c) -> (kept: f32[2,8])\n node \"new\" Mul(ig, gt) -> (new: f32[2,8])\n node \"cn\" Add(kept, new) -> (cn: f32[2,8])\n node \"tc\" Tanh(cn) -> (tc: f32[2,8])\n node \"hn\" Mul(og, tc) -> (y: f32[2,8])\n output y\n}",
            2,
        ),
        (
            "reduction of a reversed slice with step 2",
            "graph \"g\" opset 21 {\n input x: f32[5,21]\n init a1: i64[1] = hex\"0100000000000000\"\n init st: i64[1] = hex\"feffffffffffffff\"\n init from: i64[1] = hex\"ffffffffffffffff\"\n init to: i64[1] = hex\"0000000000000080\"\n node \"s\" Slice(x, from, to, a1, st) -> (v: f32[5,11])\n node \"sq\" Mul(v, v) -> (q: f32[5,11])\n node \"r\" ReduceSum[keepdims=0](q, a1) -> (y: f32[5])\n output y\n}",
            1,
        ),
        (
            "a residual add of a transposed tensor (ConvNeXt's NHWC branch back to NCHW)",
            "graph \"g\" opset 21 {\n input x: f32[1,4,3,5]\n input t: f32[1,3,5,4]\n node \"back\" Transpose[perm=ints(0,3,1,2)](t) -> (b: f32[1,4,3,5])\n node \"add\" Add(x, b) -> (y: f32[1,4,3,5])\n output y\n}",
            1,
        ),
        (
            "a slice of a gather, broadcast against a full operand",
            "graph \"g\" opset 21 {\n input x: f32[4,6,10]\n input z: f32[3,6,4]\n init t: i64[1] = hex\"feffffffffffffff\"\n init a2: i64[1] = hex\"0200000000000000\"\n init s3: i64[1] = hex\"0300000000000000\"\n init s7: i64[1] = hex\"0700000000000000\"\n node \"row\" Gather[axis=0](x, t) -> (r: f32[1,6,10])\n node \"s\" Slice(r, s3, s7, a2) -> (v: f32[1,6,4])\n node \"e\" Exp(v) -> (e: f32[1,6,4])\n node \"add\" Add(e, z) -> (y: f32[3,6,4])\n output y\n}",
            1,
        ),
    ];
    for (name, text, kernels) in cases {
        let (g, opt) = optimised_to(name, text, kernels);
        for op in [OpKind::Slice, OpKind::Gather] {
            assert_eq!(
                kernels_of(&opt, op),
                0,
                "{name}: a {op} kernel is left\n{}",
                print_graph(&opt)
            );
        }
        check(name, &g, &BTreeMap::new(), 31);
    }
}

/// A slice of a value the fused kernel computes itself (its product anchor) cannot be read at
/// other coordinates: the product's output is materialised and both reads take it from memory.
#[test]
fn views_of_computed_values_read_memory() {
    let text = "graph \"g\" opset 21 {\n input a: f32[6,5]\n input b: f32[5,8]\n init a0: i64[1] = hex\"0000000000000000\"\n init st: i64[1] = hex\"ffffffffffffffff\"\n init from: i64[1] = hex\"ffffffffffffffff\"\n init to: i64[1] = hex\"0000000000000080\"\n node \"mm\" MatMul(a, b) -> (m: f32[6,8])\n node \"rev\" Slice(m, from, to, a0, st) -> (r: f32[6,8])\n node \"add\" Add(m, r) -> (y: f32[6,8])\n output y\n}";
    let g = tessera_ir::text::parse_graph(text).unwrap();
    let prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new()).unwrap();
    let (opt, _) = optimize(&prepared, &OptimizeConfig::default()).unwrap();
    assert_eq!(kernels_of(&opt, OpKind::MatMul), 1, "{}", print_graph(&opt));
    check("view of a product", &g, &BTreeMap::new(), 8);
}

/// Extraction stays exact along long recurrences: the LSTM → GRU → GRU block (60 steps in
/// a row, each reading its state in several kernels) makes egg's tree cost grow
/// exponentially along the chain; summed in `f64`, a launch saved late in the chain was lost
/// in rounding and the later GRU steps kept their Sigmoid and Tanh as kernels of their own.
/// Every step's gates and update must come out fused, every gate Slice and step Gather
/// read in place.
#[test]
fn recurrences_fuse_every_step() {
    let path = generated_dir().join("models/arch_rnn/model.onnx");
    let g = tessera::onnx::import_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new()).unwrap();
    // Saturation takes ~0.7 s of the default 0.8 s budget; on a busy machine the time
    // limit would stop it early, and this test is about extraction.
    let cfg = OptimizeConfig {
        time_limit: std::time::Duration::from_secs(20),
        ..Default::default()
    };
    let (opt, report) = optimize(&prepared, &cfg).unwrap();
    assert_eq!(report.stop_reason, "saturated");
    for op in [OpKind::Sigmoid, OpKind::Tanh, OpKind::Slice, OpKind::Gather] {
        assert_eq!(kernels_of(&opt, op), 0, "{op} kernels left: {report:?}");
    }
}
