//! Builds the bundle the GPU machine runs (`scripts/gpu_check.sh`): for every bundled model
//! and a few kernels sized to fill a GPU, a GPU artifact for `sm_<SM>` and the graph it was
//! compiled from (text; the runner computes the reference with the interpreter there), with
//! random inputs as raw bytes — or, for large inputs, the seed that draws them — listed in
//! `bundle.json`. Large tensors do not travel: a call to the GPU machine carries ≤ 64 MiB.
//! The 4096³ half-precision products are checked on 16 rows (`check_rows`: the interpreter
//! would take minutes for all of them). ONNX files in `EXTRA_DIR` (the GPU-sized transformer
//! blocks of `scripts/gpu_models.py`) join the bundled models.
//!
//!     cargo run --release -p tessera-examples --example gpu_bundle -- OUT_DIR [SM [EXTRA_DIR]]
//!
//! The runtime-only `tessera-gpu-run` reads the bundle on the GPU machine.

use anyhow::{Context, Result};
use std::path::Path;
use tessera::{Compiler, Target};
use tessera_ir::loops::gpu::max_shared_bytes;
use tessera_ir::loops::mma::WGMMA_SM;
use tessera_ir::{Attr, Attrs, DType, Graph, Node, OpKind, Rng, Tensor, ValueType};
use tessera_passes::gpu_mma::{
    Consumers, GpuMmaTiling, HOPPER_SMS, MmaEngine, MmaEpilogue, MmaLayout, MmaStaging,
};
use tessera_passes::gpu_schedule::GpuScheduleConfig;

/// A one-node graph `op(inputs…, constants…) -> y` over `dtype` inputs.
fn one_op(
    name: &str,
    op: OpKind,
    attrs: Attrs,
    (dtype, inputs): (DType, &[&[usize]]),
    consts: Vec<Tensor>,
) -> Graph {
    let mut g = Graph::new(name);
    let mut ins = Vec::new();
    for (i, shape) in inputs.iter().enumerate() {
        ins.push(Some(
            g.add_input(&format!("x{i}"), ValueType::new(dtype, shape)),
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

/// One case of the bundle: a graph, its floating-point work, the tolerance of its check
/// and, for products too big for the interpreter, the rows checked.
struct Case {
    graph: Graph,
    flops: u64,
    rtol: f64,
    atol: f64,
    check_rows: Option<usize>,
    /// The tensor-core instruction of its products' default tiling.
    mma_engine: MmaEngine,
    /// A fixed tiling of its products instead of the default (the sweep).
    mma_tiling: Option<GpuMmaTiling>,
}

impl Case {
    fn new(graph: Graph, flops: u64, rtol: f64, atol: f64) -> Case {
        Case {
            graph,
            flops,
            rtol,
            atol,
            check_rows: None,
            mma_engine: MmaEngine::Warp,
            mma_tiling: None,
        }
    }
}

/// The microbenchmarks (on `sm_<sm>`).
fn kernels(sm: u32) -> Vec<Case> {
    let mut rng = Rng::new(11);
    let axis = |a: i64| Attrs::from([("axis".to_string(), Attr::Int(a))]);
    let matmul = |name: &str, dtype: DType, n: usize| {
        let g = one_op(
            name,
            OpKind::MatMul,
            Attrs::new(),
            (dtype, &[&[n, n], &[n, n]]),
            vec![],
        );
        (g, 2 * (n * n * n) as u64)
    };
    let (gemm, flops) = matmul("gemm_f32_1024", DType::F32, 1024);
    let mut cases = vec![Case::new(gemm, flops, 1e-4, 1e-4)];
    // Tensor cores: f32 sums of 4096 products rounded once to the element type (a unit in
    // the last place relative; the absolute part covers sums near zero).
    for (name, dtype, rtol, atol) in [
        ("gemm_f16_4096", DType::F16, 2e-3, 2e-2),
        ("gemm_bf16_4096", DType::BF16, 1e-2, 1e-1),
    ] {
        let (graph, flops) = matmul(name, dtype, 4096);
        cases.push(Case {
            check_rows: Some(16),
            ..Case::new(graph, flops, rtol, atol)
        });
        // Hopper: the same product on warpgroup steps (`wgmma`), timed beside it.
        if sm == WGMMA_SM {
            let (graph, flops) = matmul(&format!("{name}_wgmma"), dtype, 4096);
            cases.push(Case {
                check_rows: Some(16),
                mma_engine: MmaEngine::Warpgroup,
                ..Case::new(graph, flops, rtol, atol)
            });
        }
    }
    // The sweep: the f16 product on other tilings — deeper pipelines (`cp.async` tiles in
    // flight: stages − 1 on warps, stages − 2 on warpgroups), wider tiles — each checked and
    // timed against cuBLAS in the same run, so that one run on the GPU says which to make the
    // default.
    for tiling in sweep(sm) {
        let name = format!(
            "gemm_f16_4096_{}_{}x{}x{}_w{}x{}_s{}{}{}{}{}",
            match tiling.engine {
                MmaEngine::Warp => "mma",
                MmaEngine::Warpgroup => "wgmma",
            },
            tiling.bm,
            tiling.bn,
            tiling.bk,
            tiling.warps_m,
            tiling.warps_n,
            tiling.staging.buffers(),
            match tiling.layout {
                MmaLayout::Plain => "",
                MmaLayout::Swizzled => "_sw",
            },
            match tiling.staging {
                MmaStaging::Tma { .. } => "_tma".to_string(),
                MmaStaging::WarpSpecialized {
                    persistent_blocks: 0,
                    ..
                } => "_ws".to_string(),
                MmaStaging::WarpSpecialized {
                    persistent_blocks,
                    consumers,
                    ..
                } => format!(
                    "_ws_p{persistent_blocks}{}",
                    match consumers {
                        Consumers::Cooperative => "",
                        Consumers::PingPong => "_pp",
                    }
                ),
                _ => String::new(),
            },
            match tiling.group_rows {
                1 => String::new(),
                g => format!("_g{g}"),
            },
            match tiling.epilogue {
                MmaEpilogue::Direct => "",
                MmaEpilogue::TensorStore => "_ts",
                MmaEpilogue::TensorStoreSubTiles => "_ts2",
            }
        );
        let (graph, flops) = matmul(&name, DType::F16, 4096);
        cases.push(Case {
            check_rows: Some(16),
            mma_tiling: Some(tiling),
            ..Case::new(graph, flops, 2e-3, 2e-2)
        });
    }
    cases.extend([
        Case::new(
            one_op(
                "add_f32_16M",
                OpKind::Add,
                Attrs::new(),
                (DType::F32, &[&[4096, 4096], &[4096, 4096]]),
                vec![],
            ),
            (4096 * 4096) as u64,
            0.0,
            0.0,
        ),
        Case::new(
            one_op(
                "softmax_4096x1024",
                OpKind::Softmax,
                axis(-1),
                (DType::F32, &[&[4096, 1024]]),
                vec![],
            ),
            5 * 4096 * 1024,
            1e-5,
            1e-6,
        ),
        Case::new(
            one_op(
                "layernorm_4096x1024",
                OpKind::LayerNormalization,
                axis(-1),
                (DType::F32, &[&[4096, 1024]]),
                vec![random(&mut rng, &[1024]), random(&mut rng, &[1024])],
            ),
            8 * 4096 * 1024,
            1e-4,
            1e-5,
        ),
    ]);
    cases
}

/// The tilings of the sweep on `sm_<sm>` (beside the defaults): `(bm, bn, bk)`, warps (or
/// warpgroups) along the rows and the columns, how tiles are staged (`cp.async` pipelines,
/// `_tma`: the tensor memory accelerator, `_ws`: TMA in a warp-specialised pipeline, `_ws_pP`:
/// the same on a persistent grid of `P` blocks, `_ws_pP_pp` with ping-pong consumers) and how
/// many buffers deep, the staged tiles' layout
/// (`_sw`: 128-byte swizzled); warpgroups only on sm_90, and only what fits the GPU's shared
/// memory (the compiler validates the rest).
fn sweep(sm: u32) -> Vec<GpuMmaTiling> {
    /// Engine, `(bm, bn, bk)`, warps (warpgroups), staging, layout.
    type SweepTiling = (MmaEngine, [i64; 3], [i64; 2], MmaStaging, MmaLayout);
    use MmaEngine::{Warp, Warpgroup};
    use MmaLayout::{Plain, Swizzled};
    let copies = |stages| MmaStaging::AsyncCopy { stages };
    let tma = |stages| MmaStaging::Tma { stages };
    let specialized = |stages| MmaStaging::WarpSpecialized {
        stages,
        persistent_blocks: 0,
        consumers: Consumers::Cooperative,
    };
    let persistent_with = |stages, consumers| MmaStaging::WarpSpecialized {
        stages,
        persistent_blocks: HOPPER_SMS,
        consumers,
    };
    let persistent = |stages| persistent_with(stages, Consumers::Cooperative);
    let ping_pong = |stages| persistent_with(stages, Consumers::PingPong);
    let tilings: [SweepTiling; 30] = [
        (Warp, [128, 128, 32], [2, 4], copies(3), Plain),
        (Warp, [128, 128, 32], [2, 4], copies(4), Plain),
        (Warp, [128, 128, 64], [2, 4], copies(3), Plain),
        (Warp, [128, 256, 32], [4, 4], copies(3), Plain),
        (Warp, [128, 256, 32], [2, 4], copies(4), Plain),
        (Warp, [128, 256, 64], [2, 4], copies(3), Plain),
        (Warpgroup, [128, 128, 64], [2, 1], copies(4), Plain),
        (Warpgroup, [128, 128, 32], [2, 1], copies(6), Plain),
        (Warpgroup, [128, 128, 32], [2, 1], copies(8), Plain),
        (Warpgroup, [128, 256, 64], [2, 1], copies(4), Plain),
        (Warpgroup, [256, 128, 64], [4, 1], copies(4), Plain),
        (Warpgroup, [128, 256, 32], [2, 1], copies(6), Plain),
        (Warpgroup, [256, 128, 32], [4, 1], copies(6), Plain),
        // The 128-byte swizzle (the layout TMA writes) beside the core matrices.
        (Warpgroup, [128, 128, 64], [2, 1], copies(3), Swizzled),
        (Warpgroup, [128, 128, 64], [2, 1], copies(4), Swizzled),
        (Warpgroup, [128, 128, 64], [2, 1], copies(6), Swizzled),
        (Warpgroup, [128, 256, 64], [2, 1], copies(4), Swizzled),
        (Warpgroup, [256, 128, 64], [4, 1], copies(4), Swizzled),
        // The same tiles staged by TMA.
        (Warpgroup, [128, 128, 64], [2, 1], tma(3), Swizzled),
        (Warpgroup, [128, 128, 64], [2, 1], tma(4), Swizzled),
        (Warpgroup, [128, 128, 64], [2, 1], tma(6), Swizzled),
        (Warpgroup, [128, 256, 64], [2, 1], tma(4), Swizzled),
        // Warp-specialised: a producer warpgroup's TMA copies, no barrier per k step.
        (Warpgroup, [128, 128, 64], [2, 1], specialized(4), Swizzled),
        (Warpgroup, [128, 128, 64], [2, 1], specialized(6), Swizzled),
        (Warpgroup, [128, 256, 64], [2, 1], specialized(4), Swizzled),
        // The same on a persistent grid (a block per multiprocessor, looping over tiles).
        (Warpgroup, [128, 128, 64], [2, 1], persistent(6), Swizzled),
        (Warpgroup, [128, 256, 64], [2, 1], persistent(4), Swizzled),
        // Ping-pong: two one-warpgroup teams taking the tiles in turns, one storing while
        // the other multiplies.
        (Warpgroup, [128, 128, 64], [1, 1], ping_pong(4), Swizzled),
        (Warpgroup, [128, 128, 64], [1, 1], ping_pong(6), Swizzled),
        (Warpgroup, [64, 256, 64], [1, 1], ping_pong(4), Swizzled),
    ];
    let tilings: Vec<GpuMmaTiling> = tilings
        .into_iter()
        .map(
            |(engine, [bm, bn, bk], [warps_m, warps_n], staging, layout)| GpuMmaTiling {
                bm,
                bn,
                bk,
                warps_m,
                warps_n,
                staging,
                engine,
                layout,
                group_rows: 1,
                epilogue: Default::default(),
            },
        )
        .collect();
    // The persistent grids again with their tiles in groups of 8 rows (L2 reuse).
    let grouped: Vec<GpuMmaTiling> = tilings
        .iter()
        .filter(|t| {
            matches!(t.staging, MmaStaging::WarpSpecialized { persistent_blocks, .. }
                if persistent_blocks > 0)
        })
        .map(|&t| GpuMmaTiling { group_rows: 8, ..t })
        .collect();
    // Those again storing their tiles by TMA through shared memory (where it fits beside the
    // buffers), and the wide cooperative tile storing through two sub-tiles per warpgroup,
    // which leave room for its four buffers.
    let wide = grouped
        .iter()
        .find(|t| t.bn == 256 && t.warps_m == 2)
        .map(|&t| GpuMmaTiling {
            epilogue: MmaEpilogue::TensorStoreSubTiles,
            ..t
        });
    let stored_by_tma: Vec<GpuMmaTiling> = grouped
        .iter()
        .map(|&t| GpuMmaTiling {
            epilogue: MmaEpilogue::TensorStore,
            ..t
        })
        .chain(wide)
        .collect();
    tilings
        .into_iter()
        .chain(grouped)
        .chain(stored_by_tma)
        .filter(|t| {
            (t.engine == Warp || sm == WGMMA_SM)
                && t.shared_bytes(DType::F16) <= max_shared_bytes(sm)
        })
        .collect()
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: gpu_bundle OUT_DIR [SM [EXTRA_DIR]]";
    let out = std::path::PathBuf::from(args.next().context(usage)?);
    let sm: u32 = args.next().map_or(Ok(90), |s| s.parse())?;
    let extra = args.next().map(std::path::PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut cases: Vec<Case> = Vec::new();
    let mut paths = Vec::new();
    for dir in std::iter::once(models).chain(extra) {
        let mut found: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| dir.display().to_string())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        found.sort();
        paths.extend(found);
    }
    for p in &paths {
        let mut g = tessera::onnx::import_file(p)?;
        g.name = p.file_stem().unwrap().to_string_lossy().into_owned();
        // Half-precision models round every operation's result: a few units of f16.
        let half = g
            .inputs
            .first()
            .and_then(|&v| g.ty(v))
            .is_some_and(|t| matches!(t.dtype, DType::F16 | DType::BF16));
        let (rtol, atol) = if half { (1e-2, 1e-2) } else { (1e-3, 1e-4) };
        cases.push(Case::new(g, 0, rtol, atol));
    }
    cases.extend(kernels(sm));
    let mut listing = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let Case {
            graph: g,
            flops,
            rtol,
            atol,
            check_rows,
            mma_engine,
            mma_tiling,
        } = case;
        let name = g.name.clone();
        let dir = out.join(&name);
        std::fs::create_dir_all(&dir)?;
        let mut c = Compiler::new(Target::Cuda { sm });
        c.config.gpu_schedule = Some(GpuScheduleConfig {
            mma_engine,
            mma_tiling,
            ..GpuScheduleConfig::for_sm(sm)
        });
        let b = tessera::pipeline::bind_symbols(&g, &Default::default());
        let (stages, program) = c.compile_gpu(&g, &b).with_context(|| name.clone())?;
        // Accepted by ptxas; what it says of registers, spills and serialised warpgroup
        // steps travels in the listing (the figures a GPU run's timings are read beside).
        let ptxas = tessera_codegen::ptx::ptxas_report(&program.module.text, sm)?;
        if ptxas.spill_bytes() > 0
            || ptxas.serialises_warpgroup_steps()
            || ptxas.ignores_setmaxnreg()
        {
            eprintln!(
                "warning: {name}: ptxas spills, serialises or ignores setmaxnreg:\n{}",
                ptxas.text
            );
        }
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
            "check_rows": check_rows,
            "ptxas": {
                "max_registers": ptxas.max_registers(),
                "spill_bytes": ptxas.spill_bytes(),
                "serialises_warpgroup_steps": ptxas.serialises_warpgroup_steps(),
                "ignores_setmaxnreg": ptxas.ignores_setmaxnreg(),
            },
        }));
    }
    std::fs::write(
        out.join("bundle.json"),
        serde_json::to_string_pretty(&listing)?,
    )?;
    eprintln!("wrote {} cases to {}", listing.len(), out.display());
    Ok(())
}
