//! Builds the bundle the GPU machine runs (`scripts/gpu_check.sh`): for every bundled model
//! and a few kernels sized to fill a GPU, a GPU artifact for `sm_<SM>` and the graph it was
//! compiled from (text; the runner computes the reference with the interpreter there), with
//! random inputs as raw bytes — or, for large inputs, the seed that draws them — listed in
//! `bundle.json`. Large tensors do not travel: a call to the GPU machine carries ≤ 64 MiB.
//!
//!     cargo run --release -p tessera-examples --example gpu_bundle -- OUT_DIR [SM]
//!
//! The runtime-only `tessera-gpu-run` reads the bundle on the GPU machine.

use anyhow::{Context, Result};
use std::path::Path;
use tessera::{Compiler, Target};
use tessera_ir::{Attr, Attrs, DType, Graph, Node, OpKind, Rng, Tensor, ValueType};

/// A one-node graph `op(inputs…, constants…) -> y`.
fn one_op(name: &str, op: OpKind, attrs: Attrs, inputs: &[&[usize]], consts: Vec<Tensor>) -> Graph {
    let mut g = Graph::new(name);
    let mut ins = Vec::new();
    for (i, shape) in inputs.iter().enumerate() {
        ins.push(Some(
            g.add_input(&format!("x{i}"), ValueType::new(DType::F32, shape)),
        ));
    }
    for (i, t) in consts.into_iter().enumerate() {
        ins.push(Some(g.add_initializer(&format!("c{i}"), t)));
    }
    let y = g.value("y");
    g.add_node(Node {
        name: "n0".into(),
        op,
        attrs,
        inputs: ins,
        outputs: vec![y],
    });
    g.outputs.push(y);
    g
}

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    rng.tensor(DType::F32, shape.to_vec())
}

/// The microbenchmarks: (graph, flops, tolerance rtol/atol).
fn kernels() -> Vec<(Graph, u64, f64, f64)> {
    let mut rng = Rng::new(11);
    let axis = |a: i64| Attrs::from([("axis".to_string(), Attr::Int(a))]);
    let (m, n, k) = (1024usize, 1024, 1024);
    vec![
        (
            one_op(
                "gemm_f32_1024",
                OpKind::MatMul,
                Attrs::new(),
                &[&[m, k], &[k, n]],
                vec![],
            ),
            2 * (m * n * k) as u64,
            1e-4,
            1e-4,
        ),
        (
            one_op(
                "add_f32_16M",
                OpKind::Add,
                Attrs::new(),
                &[&[4096, 4096], &[4096, 4096]],
                vec![],
            ),
            (4096 * 4096) as u64,
            0.0,
            0.0,
        ),
        (
            one_op(
                "softmax_4096x1024",
                OpKind::Softmax,
                axis(-1),
                &[&[4096, 1024]],
                vec![],
            ),
            5 * 4096 * 1024,
            1e-5,
            1e-6,
        ),
        (
            one_op(
                "layernorm_4096x1024",
                OpKind::LayerNormalization,
                axis(-1),
                &[&[4096, 1024]],
                vec![random(&mut rng, &[1024]), random(&mut rng, &[1024])],
            ),
            8 * 4096 * 1024,
            1e-4,
            1e-5,
        ),
    ]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().context("usage: gpu_bundle OUT_DIR [SM]")?);
    let sm: u32 = args.next().map_or(Ok(90), |s| s.parse())?;
    std::fs::create_dir_all(&out)?;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut cases: Vec<(Graph, u64, f64, f64)> = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&models)?
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    for p in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
    {
        let mut g = tessera::onnx::import_file(p)?;
        g.name = p.file_stem().unwrap().to_string_lossy().into_owned();
        cases.push((g, 0, 1e-3, 1e-4));
    }
    cases.extend(kernels());
    let mut listing = Vec::new();
    for (i, (g, flops, rtol, atol)) in cases.into_iter().enumerate() {
        let name = g.name.clone();
        let dir = out.join(&name);
        std::fs::create_dir_all(&dir)?;
        let c = Compiler::new(Target::Cuda { sm });
        let b = tessera::pipeline::bind_symbols(&g, &Default::default());
        let (stages, program) = c.compile_gpu(&g, &b).with_context(|| name.clone())?;
        tessera_codegen::ptx::check_with_ptxas(&program.module.text, sm)?;
        program.write(&name, &dir.join("model.ptx"))?;
        let seed = 100 + i as u64;
        let inputs = tessera::fuzzgen::graph_inputs(&stages.prepared, seed);
        let graph_file = format!("{name}/graph.txt");
        std::fs::write(
            out.join(&graph_file),
            tessera_ir::text::print_graph(&stages.prepared),
        )?;
        let outputs: usize = program.plan.outputs.iter().map(|s| s.bytes()).sum();
        let files = |prefix: &str, ts: &[Tensor]| -> Result<Vec<String>> {
            ts.iter()
                .enumerate()
                .map(|(j, t)| {
                    let f = format!("{name}/{prefix}_{j}.bin");
                    std::fs::write(out.join(&f), t.bytes())?;
                    Ok(f)
                })
                .collect()
        };
        let input_bytes: usize = inputs.iter().map(|t| t.bytes().len()).sum();
        // Small inputs travel as files (they may hold indices that must be in range); large
        // ones are f32 data the runner draws from the seed.
        let input_files = if input_bytes <= 1 << 20 {
            Some(files("input", &inputs)?)
        } else {
            None
        };
        let bytes = (input_bytes + outputs + program.weights.len()) as u64;
        eprintln!(
            "{name}: {} kernels ({} single-thread), {bytes} bytes",
            program.plan.steps.len(),
            program.single_thread_kernels().len()
        );
        listing.push(serde_json::json!({
            "name": name,
            "artifact": format!("{name}/model.json"),
            "graph": graph_file,
            "inputs": input_files,
            "seed": seed,
            "rtol": rtol,
            "atol": atol,
            "bytes": bytes,
            "flops": flops,
        }));
    }
    std::fs::write(
        out.join("bundle.json"),
        serde_json::to_string_pretty(&listing)?,
    )?;
    eprintln!("wrote {} cases to {}", listing.len(), out.display());
    Ok(())
}
