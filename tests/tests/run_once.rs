//! Run-once steps: a constant subgraph too large to fold into the weights (here a 64 MB+
//! `ConstantOfShape` scaled by a weight, as exporters write big weights) is computed once, when
//! the executor is created, and kept in the workspace's constant region; every run (JIT with
//! poisoned outputs and workspace, and the loaded shared library) must still agree with the
//! reference interpreter, run after run.

use std::collections::BTreeMap;
use tessera::{CompileConfig, Compiler, Target};
use tessera_ir::{Attr, DType, Graph, Node, Rng, Tensor, ValueType};
use tessera_tests::*;

/// Columns of the constant: 4097 × 4097 f32 is just over the 64 MB fold limit.
const N: usize = 4097;

/// `y = x · (ConstantOfShape([N, N], 0.37) * s)` with a random row scale `s`.
fn graph() -> Graph {
    let mut g = Graph::new("run_once");
    let mut rng = Rng::new(7);
    let x = g.add_input("x", ValueType::new(DType::F32, &[3, N]));
    let shape = g.add_initializer(
        "shape",
        Tensor::from_i64(DType::I64, vec![2], &[N as i64, N as i64]),
    );
    let s = g.add_initializer("s", rng.tensor(DType::F32, vec![N]));
    let (c, w, y) = (g.value("c"), g.value("w"), g.value("y"));
    let fill = Tensor::from_f64(DType::F32, vec![1], &[0.37]);
    let node = |name: &str, op, attrs, inputs, outputs| Node {
        name: name.into(),
        op,
        attrs,
        inputs,
        outputs,
    };
    use tessera_ir::OpKind::*;
    g.add_node(node(
        "fill",
        ConstantOfShape,
        attrs(&[("value", Attr::Tensor(fill))]),
        vec![Some(shape)],
        vec![c],
    ));
    g.add_node(node(
        "scale",
        Mul,
        attrs(&[]),
        vec![Some(c), Some(s)],
        vec![w],
    ));
    g.add_node(node(
        "mm",
        MatMul,
        attrs(&[]),
        vec![Some(x), Some(w)],
        vec![y],
    ));
    g.outputs.push(y);
    g
}

#[test]
fn constant_subgraphs_too_large_to_fold_run_once() {
    let g = graph();
    let cfg = CompileConfig {
        poison: true,
        threads: 2,
        ..Default::default()
    };
    let compiler = Compiler::new(Target::host()).with_config(cfg);
    let exe = compiler.compile(&g).unwrap();
    let bound = exe.compiled_for(&BTreeMap::new()).unwrap();
    let plan = bound.plan();
    let once: Vec<_> = plan.steps.iter().filter(|s| s.once).collect();
    assert!(
        !once.is_empty() && once.len() < plan.steps.len(),
        "the constant's steps run once, the product every run: {:?}",
        plan.steps
    );
    assert!(plan.constant_bytes >= N * N * 4, "{}", plan.constant_bytes);
    assert!(
        plan.weight_bytes < N * N,
        "the constant is not folded into the weights ({} bytes)",
        plan.weight_bytes
    );

    let lib_dir = std::env::temp_dir().join(format!("tessera-once-{}", std::process::id()));
    std::fs::create_dir_all(&lib_dir).unwrap();
    let lib = lib_dir.join("once.so");
    tessera::aot::write_artifact(&compiler, &g, &BTreeMap::new(), &lib).unwrap();
    let loaded = tessera_runtime::artifact::load(
        &lib,
        &tessera_runtime::ExecConfig {
            threads: 2,
            poison: true,
        },
    )
    .unwrap();

    // Several runs on fresh inputs: the constant region must survive the poisoning of the
    // per-run workspace and the other steps' reuse of it.
    for seed in 1..=3 {
        let inputs = random_inputs(&g, seed);
        let want = tessera_ir::interp::run_graph(&g, &inputs).unwrap();
        let got = exe.run(&inputs).unwrap();
        compare(&got[0], &want[0], REDUCTION).unwrap_or_else(|e| panic!("JIT run {seed}: {e}"));
        let got = loaded.run(&inputs).unwrap();
        compare(&got[0], &want[0], REDUCTION)
            .unwrap_or_else(|e| panic!("shared library run {seed}: {e}"));
    }
    std::fs::remove_dir_all(&lib_dir).ok();
}
