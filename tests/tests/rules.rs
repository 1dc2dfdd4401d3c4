//! Every optimizer rule (1) fires on a target graph and (2) is sound: the graph before and
//! after the rule (alone) compute the same outputs on random inputs — several seeds, through
//! the reference interpreter and through compiled code. A rule without an example here fails
//! `every_rule_has_an_example`, so new rules come with their tests.

use std::collections::BTreeMap;
use tessera_ir::Graph;
use tessera_ir::text::parse_graph;
use tessera_passes::egraph::{OptimizeConfig, optimize};
use tessera_tests::*;

/// A target graph per rule, in the graph text form (`{f}` stands for a float constant).
fn example(rule: &str) -> Option<String> {
    let unary = |outer: &str, inner: &str| {
        format!(
            "graph \"g\" opset 21 {{\n input x: f32[3,17]\n node \"a\" {inner}(x) -> (a: f32[3,17])\n node \"b\" {outer}(a) -> (y: f32[3,17])\n output y\n}}"
        )
    };
    let with_const = |op: &str, bytes: &str, const_first: bool| {
        let (l, r) = if const_first { ("k", "x") } else { ("x", "k") };
        format!(
            "graph \"g\" opset 21 {{\n input x: f32[3,17]\n init k: f32[] = hex\"{bytes}\"\n node \"a\" {op}({l}, {r}) -> (a: f32[3,17])\n node \"b\" Tanh(a) -> (y: f32[3,17])\n output y\n}}"
        )
    };
    const ZERO: &str = "00000000";
    const ONE: &str = "0000803f";
    const TWO: &str = "00000040";
    let s = match rule {
        "identity" => unary("Tanh", "Identity"),
        "neg-neg" => unary("Neg", "Neg"),
        "relu-relu" => unary("Relu", "Relu"),
        "abs-abs" => unary("Abs", "Abs"),
        "abs-neg" => unary("Abs", "Neg"),
        "relu-abs" => unary("Relu", "Abs"),
        "cast-noop" => unary("Tanh", "Cast[to=1]"),
        "add-zero" => with_const("Add", ZERO, false),
        "zero-add" => with_const("Add", ZERO, true),
        "sub-zero" => with_const("Sub", ZERO, false),
        "mul-one" => with_const("Mul", ONE, false),
        "one-mul" => with_const("Mul", ONE, true),
        "div-one" => with_const("Div", ONE, false),
        "pow-one" => with_const("Pow", ONE, false),
        "pow-two" => with_const("Pow", TWO, false),
        "pow-three" => with_const("Pow", "00004040", false),
        "transpose-transpose" => "graph \"g\" opset 21 {\n input x: f32[2,3,5]\n node \"a\" Transpose[perm=ints(1,2,0)](x) -> (a: f32[3,5,2])\n node \"b\" Transpose[perm=ints(2,1,0)](a) -> (y: f32[2,5,3])\n output y\n}".into(),
        // Attention's K^T: a 4-D permutation, and a batch axis broadcast from 1.
        "transpose-into-matmul" => k_transposed(16, 32),
        "transpose-noop" => "graph \"g\" opset 21 {\n input x: f32[2,3]\n node \"a\" Transpose[perm=ints(0,1)](x) -> (a: f32[2,3])\n node \"b\" Tanh(a) -> (y: f32[2,3])\n output y\n}".into(),
        "reshape-noop" => "graph \"g\" opset 21 {\n input x: f32[2,3,4]\n init s2: i64[3] = hex\"020000000000000003000000000000000400000000000000\"\n node \"b\" Reshape(x, s2) -> (b: f32[2,3,4])\n node \"c\" Tanh(b) -> (y: f32[2,3,4])\n output y\n}".into(),
        "view-chain-reshape" => "graph \"g\" opset 21 {\n input x: f32[2,3,4]\n init s1: i64[2] = hex\"06000000000000000400000000000000\"\n init s2: i64[3] = hex\"020000000000000003000000000000000400000000000000\"\n node \"a\" Reshape(x, s1) -> (a: f32[6,4])\n node \"b\" Reshape(a, s2) -> (b: f32[2,3,4])\n node \"c\" Tanh(b) -> (y: f32[2,3,4])\n output y\n}".into(),
        "flatten-noop" => "graph \"g\" opset 21 {\n input x: f32[6,4]\n node \"a\" Flatten[axis=1](x) -> (a: f32[6,4])\n node \"b\" Tanh(a) -> (y: f32[6,4])\n output y\n}".into(),
        "view-chain-flatten" => "graph \"g\" opset 21 {\n input x: f32[2,3,4]\n init ax: i64[1] = hex\"0000000000000000\"\n node \"a\" Unsqueeze(x, ax) -> (a: f32[1,2,3,4])\n node \"b\" Flatten[axis=2](a) -> (b: f32[2,12])\n node \"c\" Tanh(b) -> (y: f32[2,12])\n output y\n}".into(),
        "squeeze-noop" => "graph \"g\" opset 21 {\n input x: f32[2,3]\n init ax: i64[0] = hex\"\"\n node \"a\" Squeeze(x, ax) -> (a: f32[2,3])\n node \"c\" Tanh(a) -> (y: f32[2,3])\n output y\n}".into(),
        "view-chain-squeeze" => "graph \"g\" opset 21 {\n input x: f32[2,3]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"a\" Unsqueeze(x, ax) -> (a: f32[2,1,3])\n node \"b\" Squeeze(a, ax) -> (b: f32[2,3])\n node \"c\" Tanh(b) -> (y: f32[2,3])\n output y\n}".into(),
        "unsqueeze-noop" => "graph \"g\" opset 21 {\n input x: f32[2,3]\n init ax: i64[0] = hex\"\"\n node \"a\" Unsqueeze(x, ax) -> (a: f32[2,3])\n node \"c\" Tanh(a) -> (y: f32[2,3])\n output y\n}".into(),
        "view-chain-unsqueeze" => "graph \"g\" opset 21 {\n input x: f32[2,1,3]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"a\" Squeeze(x, ax) -> (a: f32[2,3])\n node \"b\" Unsqueeze(a, ax) -> (b: f32[2,1,3])\n node \"c\" Tanh(b) -> (y: f32[2,1,3])\n output y\n}".into(),
        "expand-noop" => "graph \"g\" opset 21 {\n input x: f32[2,3]\n init s: i64[2] = hex\"02000000000000000300000000000000\"\n node \"a\" Expand(x, s) -> (a: f32[2,3])\n node \"c\" Tanh(a) -> (y: f32[2,3])\n output y\n}".into(),
        r if r.starts_with("expand-into-") => {
            let rest = &r["expand-into-".len()..];
            let (op, side) = rest.split_once('-')?;
            let op = match op {
                "add" => "Add",
                "sub" => "Sub",
                "mul" => "Mul",
                "div" => "Div",
                "max" => "Max",
                "min" => "Min",
                _ => return None,
            };
            let (l, r) = if side == "lhs" { ("e", "z") } else { ("z", "e") };
            format!(
                "graph \"g\" opset 21 {{\n input x: f32[1,8]\n input z: f32[4,8]\n init s: i64[2] = hex\"04000000000000000800000000000000\"\n node \"a\" Expand(x, s) -> (e: f32[4,8])\n node \"b\" {op}({l}, {r}) -> (y: f32[4,8])\n output y\n}}"
            )
        }
        "conv-batchnorm" | "conv-bias-batchnorm" => {
            let bias = if rule == "conv-bias-batchnorm" { ", cb" } else { "" };
            format!(
                "graph \"g\" opset 21 {{\n input x: f32[1,2,5,5]\n init w: f32[3,2,1,1] = hex\"0000803f000000400000404000008040000080bf0000003f\"\n init cb: f32[3] = hex\"cdcccc3d0000803f000000c0\"\n init s: f32[3] = hex\"0000803f0000003f00000040\"\n init bb: f32[3] = hex\"00000000cdcccc3d000080bf\"\n init m: f32[3] = hex\"0000000000000000cdcccc3d\"\n init v: f32[3] = hex\"0000803f0000803f00000040\"\n node \"conv\" Conv[kernel_shape=ints(1,1)](x, w{bias}) -> (c: f32[1,3,5,5])\n node \"bn\" BatchNormalization(c, s, bb, m, v) -> (y: f32[1,3,5,5])\n output y\n}}"
            )
        }
        "conv-add-bias" | "conv-bias-add" => {
            let (l, r) = if rule == "conv-add-bias" { ("c", "k") } else { ("k", "c") };
            format!(
                "graph \"g\" opset 21 {{\n input x: f32[1,2,5,5]\n init w: f32[3,2,1,1] = hex\"0000803f000000400000404000008040000080bf0000003f\"\n init k: f32[3,1,1] = hex\"cdcccc3d0000803f000000c0\"\n node \"conv\" Conv[kernel_shape=ints(1,1)](x, w) -> (c: f32[1,3,5,5])\n node \"add\" Add({l}, {r}) -> (y: f32[1,3,5,5])\n output y\n}}"
            )
        }
        "softmax-written-out" => "graph \"g\" opset 21 {\n input x: f32[2,5,7]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"m\" ReduceMax(x, ax) -> (m: f32[2,1,7])\n node \"s\" Sub(x, m) -> (d: f32[2,5,7])\n node \"e\" Exp(d) -> (e: f32[2,5,7])\n node \"r\" ReduceSum(e, ax) -> (r: f32[2,1,7])\n node \"q\" Div(e, r) -> (y: f32[2,5,7])\n output y\n}".into(),
        "log-softmax-written-out" => "graph \"g\" opset 21 {\n input x: f32[2,5,7]\n init ax: i64[1] = hex\"ffffffffffffffff\"\n node \"m\" ReduceMax(x, ax) -> (m: f32[2,5,1])\n node \"s\" Sub(x, m) -> (d: f32[2,5,7])\n node \"e\" Exp(d) -> (e: f32[2,5,7])\n node \"r\" ReduceSum(e, ax) -> (r: f32[2,5,1])\n node \"l\" Log(r) -> (l: f32[2,5,1])\n node \"q\" Sub(d, l) -> (y: f32[2,5,7])\n output y\n}".into(),
        "layernorm-written-out" | "layernorm-written-out-rsqrt" => {
            // Over the two trailing axes; the rsqrt form multiplies by a Reciprocal.
            let (axes, norm) = if rule == "layernorm-written-out" {
                ("i64[2] = hex\"01000000000000000200000000000000\"", "node \"n\" Div(c, sd) -> (y: f32[2,3,8])")
            } else {
                ("i64[1] = hex\"ffffffffffffffff\"", "node \"i\" Reciprocal(sd) -> (rs: f32[2,3,1])\n node \"n\" Mul(c, rs) -> (y: f32[2,3,8])")
            };
            let kept = if rule == "layernorm-written-out" { "f32[2,1,1]" } else { "f32[2,3,1]" };
            format!(
                "graph \"g\" opset 21 {{\n input x: f32[2,3,8]\n init ax: {axes}\n init eps: f32[] = hex\"0000003f\"\n node \"mu\" ReduceMean(x, ax) -> (mu: {kept})\n node \"c\" Sub(x, mu) -> (c: f32[2,3,8])\n node \"sq\" Mul(c, c) -> (sq: f32[2,3,8])\n node \"v\" ReduceMean(sq, ax) -> (v: {kept})\n node \"a\" Add(v, eps) -> (ve: {kept})\n node \"sd\" Sqrt(ve) -> (sd: {kept})\n {norm}\n output y\n}}"
            )
        }
        "layernorm-scale" | "scale-layernorm" | "layernorm-bias" | "bias-layernorm" => {
            // A LayerNormalization with a unit scale (as `layernorm-written-out` makes it),
            // then a constant weight (per column, broadcast) or bias.
            let (op, scale) = if rule.contains("scale") {
                ("Mul", "0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f")
            } else {
                ("Add", "0000003f0000a0bf000000400000403f0000c03f000000bf0000803e00004040")
            };
            let (l, r) = if rule.starts_with("layernorm") { ("n", "k") } else { ("k", "n") };
            format!(
                "graph \"g\" opset 21 {{\n input x: f32[3,8]\n init one: f32[8] = hex\"{scale}\"\n init k: f32[1,8] = hex\"cdcccc3d0000803f000000c00000003f0000a0bf000000400000403f0000c03f\"\n node \"ln\" LayerNormalization[axis=1](x, one) -> (n: f32[3,8])\n node \"a\" {op}({l}, {r}) -> (y: f32[3,8])\n output y\n}}"
            )
        }
        "fuse-elementwise" => "graph \"g\" opset 21 {\n input x: f32[4,16]\n input b: f32[16]\n node \"a\" Mul(x, x) -> (a: f32[4,16])\n node \"c\" Add(a, b) -> (c: f32[4,16])\n node \"d\" Sigmoid(c) -> (y: f32[4,16])\n output y\n}".into(),
        _ => return None,
    };
    Some(s)
}

/// `x · Transpose(k)` as attention's `Q·K^T` over 2 × 3 heads of width 16 (`k`'s batch axis
/// broadcast from 1): `s` query rows, `t` key rows.
fn k_transposed(s: usize, t: usize) -> String {
    format!(
        "graph \"g\" opset 21 {{\n input x: f32[2,3,{s},16]\n input k: f32[1,{t},3,16]\n node \"t\" Transpose[perm=ints(0,2,3,1)](k) -> (t: f32[1,3,16,{t}])\n node \"m\" MatMul(x, t) -> (y: f32[2,3,{s},{t}])\n output y\n}}"
    )
}

/// A transposed operand whose rows are columns of its source is read in place only where
/// the product packs it, or where one query row takes dot products along `k` (which `Kᵀ`
/// read in place is contiguous along); a small one keeps its copy (a plain nest would gather
/// it per row).
#[test]
fn transpose_into_matmul_only_where_the_read_pays() {
    let cfg = OptimizeConfig {
        only: Some(vec!["transpose-into-matmul".into()]),
        ..Default::default()
    };
    for (s, t, fires) in [
        (16, 32, true),
        (4, 32, false),
        (16, 8, false),
        (1, 512, true),
        (1, 32, false),
    ] {
        let g = prepared(&k_transposed(s, t), "transpose-into-matmul");
        let (_, report) = optimize(&g, &cfg).expect("optimizer");
        let fired = report.applied.iter().any(|(_, k)| *k > 0);
        assert_eq!(fired, fires, "{s} rows x {t} keys: {report:?}");
    }
}

fn prepared(text: &str, rule: &str) -> Graph {
    let g = parse_graph(text).unwrap_or_else(|e| panic!("{rule}: example does not parse: {e}"));
    tessera_passes::fold::prepare(&g, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{rule}: example does not prepare: {e}"))
}

#[test]
fn every_rule_has_an_example() {
    let missing: Vec<String> = tessera_passes::rules::names()
        .into_iter()
        .filter(|(_, n)| example(n).is_none())
        .map(|(t, n)| format!("{n} ({t:?})"))
        .collect();
    assert!(missing.is_empty(), "rules without an example: {missing:?}");
}

#[test]
fn every_rule_fires_and_is_sound() {
    for (_, rule) in tessera_passes::rules::names() {
        let Some(text) = example(&rule) else { continue };
        let before = prepared(&text, &rule);
        let cfg = OptimizeConfig {
            only: Some(vec![rule.clone()]),
            ..Default::default()
        };
        let (after, report) =
            optimize(&before, &cfg).unwrap_or_else(|e| panic!("{rule}: optimizer: {e}"));
        let fired = report.applied.iter().any(|(n, k)| n == &rule && *k > 0);
        assert!(fired, "{rule} did not fire on its example: {report:?}");
        assert!(
            report.cost_after <= report.cost_before,
            "{rule}: extraction made the example costlier ({} -> {})",
            report.cost_before,
            report.cost_after
        );
        for seed in 1..=5 {
            let xs = random_inputs(&before, seed);
            let want = tessera_ir::interp::run_graph(&before, &xs)
                .unwrap_or_else(|e| panic!("{rule}: interpreting the example: {e}"));
            let got = tessera_ir::interp::run_graph(&after, &xs)
                .unwrap_or_else(|e| panic!("{rule}: interpreting the rewrite: {e}"));
            for (g, w) in got.iter().zip(&want) {
                compare(g, w, REDUCTION)
                    .unwrap_or_else(|e| panic!("{rule} is unsound (seed {seed}): {e}"));
            }
        }
        // And compiled: the optimised pipeline against the interpreter.
        check_graph(
            &format!("rule {rule}"),
            &before,
            &random_inputs(&before, 9),
            REDUCTION,
        );
    }
}

/// The optimizer's limits are reported, not raised: a tiny node limit still gives a valid
/// graph and a stop reason.
#[test]
fn limits_are_a_stop_reason() {
    let text = example("fuse-elementwise").expect("example");
    let g = prepared(&text, "limits");
    let cfg = OptimizeConfig {
        node_limit: 8,
        ..Default::default()
    };
    let (after, report) = optimize(&g, &cfg).expect("a node limit is not an error");
    assert!(report.stop_reason.contains("node limit"), "{report:?}");
    let xs = random_inputs(&g, 3);
    let want = tessera_ir::interp::run_graph(&g, &xs).unwrap();
    let got = tessera_ir::interp::run_graph(&after, &xs).unwrap();
    compare(&got[0], &want[0], REDUCTION).unwrap();
}
