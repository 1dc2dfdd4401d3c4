//! The e-graph optimizer end to end: on every bundled model and on random graphs, the
//! optimised graph (interpreted, and compiled) agrees with the unoptimised one on random
//! inputs, and it never has more kernels.

use std::collections::BTreeMap;
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

/// A value with two consumers is not inlined into both (that would compute it twice): the
/// product and its bias stay one kernel, the consumers another.
#[test]
fn shared_values_are_not_recomputed() {
    let text = "graph \"g\" opset 21 {\n input x: f32[2,5,7]\n input w: f32[7,9]\n input b: f32[9]\n node \"mm\" MatMul(x, w) -> (m: f32[2,5,9])\n node \"add\" Add(m, b) -> (a: f32[2,5,9])\n node \"t\" Tanh(a) -> (t: f32[2,5,9])\n node \"mul\" Mul(t, a) -> (y: f32[2,5,9])\n output y\n}";
    let g = tessera_ir::text::parse_graph(text).unwrap();
    let prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new()).unwrap();
    let (opt, report) = optimize(&prepared, &OptimizeConfig::default()).unwrap();
    assert_eq!(report.kernels_after, 2, "{report:?}");
    assert_eq!(
        opt.nodes().filter(|(_, n)| n.op == OpKind::MatMul).count()
            + opt
                .nodes()
                .filter(|(_, n)| n.op == OpKind::Fused)
                .filter_map(|(_, n)| match n.attrs.get("body") {
                    Some(Attr::Graph(b)) =>
                        Some(b.0.nodes().filter(|(_, m)| m.op == OpKind::MatMul).count()),
                    _ => None,
                })
                .sum::<usize>(),
        1,
        "the product is computed once"
    );
    check("shared", &g, &BTreeMap::new(), 4);
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
            "conv + swish (the conv read twice, both reads in the kernel)",
            "graph \"g\" opset 21 {\n input x: f32[1,3,7,7]\n input w: f32[4,3,3,3]\n node \"conv\" Conv[kernel_shape=ints(3,3)](x, w) -> (c: f32[1,4,5,5])\n node \"s\" Sigmoid(c) -> (s: f32[1,4,5,5])\n node \"m\" Mul(c, s) -> (y: f32[1,4,5,5])\n output y\n}",
        ),
    ];
    for (name, text) in cases {
        let g = tessera_ir::text::parse_graph(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new()).unwrap();
        let (opt, report) = optimize(&prepared, &OptimizeConfig::default()).unwrap();
        assert_eq!(
            report.kernels_after, 1,
            "{name}: not one kernel: {report:?}"
        );
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
