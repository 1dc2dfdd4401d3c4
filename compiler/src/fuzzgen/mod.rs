//! Fuzzing the compiler: generators that turn fuzzer bytes into valid-by-construction inputs
//! (graphs, loop programs, pass sequences, schedules) and the differential oracle that checks
//! them against the reference interpreters. The cargo-fuzz targets in `fuzz/` are thin glue
//! over [`run_target`]; the tests replay saved cases and corpora through the same code.
//!
//! A [`Case`] is one fully determined test (generated input + options + the seed of its
//! random data); it prints as a ready-to-commit regression file ([`Case::to_text`]) and
//! parses back ([`Case::parse`]), so every [`Finding`] can be replayed as an ordinary test.
//!
//! Built with the `fuzzing` feature (it brings in `arbitrary`).

pub mod fence;
pub mod graph_gen;
pub mod loop_gen;
pub mod oracle;
pub mod pass_gen;

use crate::{CompileConfig, Compiler, Target};
use arbitrary::Unstructured;
use pass_gen::LoopPass;
use std::collections::BTreeMap;
use std::fmt;
use tessera_ir::loops::LoopProgram;
use tessera_ir::{Graph, Rng};
use tessera_passes::schedule::KernelSchedule;

/// The fuzz targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuzzTarget {
    /// Arbitrary bytes → the ONNX importer: a typed error or a graph that verifies.
    OnnxLoader,
    /// Random graph → optimise → lower → schedule → compile → run vs the graph interpreter.
    GraphPipeline,
    /// Random loop program + random pass sequence → verifier after each pass, interpreter
    /// before vs after, native code vs interpreter.
    LoopPasses,
    /// Random schedule knobs (the autotuner's space) on a random graph's kernel; also the
    /// kernel's GPU schedules (the default one, a random product tiling) on the interpreter.
    Schedule,
}

impl FuzzTarget {
    pub const ALL: [FuzzTarget; 4] = [
        FuzzTarget::OnnxLoader,
        FuzzTarget::GraphPipeline,
        FuzzTarget::LoopPasses,
        FuzzTarget::Schedule,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FuzzTarget::OnnxLoader => "onnx_loader",
            FuzzTarget::GraphPipeline => "graph_pipeline",
            FuzzTarget::LoopPasses => "loop_passes",
            FuzzTarget::Schedule => "schedule",
        }
    }

    pub fn from_name(s: &str) -> Option<FuzzTarget> {
        FuzzTarget::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Compiler options a graph case runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOptions {
    pub optimize: bool,
    pub tile_products: bool,
    pub threads: usize,
    /// Rewrite every eligible 3×3 convolution as a Winograd convolution, whatever its
    /// channel and tile counts (the default only rewrites large ones, which generated graphs
    /// rarely have).
    pub winograd: bool,
}

impl GraphOptions {
    /// The Winograd rewrite these options ask for.
    pub fn winograd_config(&self) -> tessera_passes::winograd::WinogradConfig {
        use tessera_passes::winograd::WinogradConfig;
        match self.winograd {
            true => WinogradConfig {
                min_channels: 1,
                min_tiles: 1,
                ..WinogradConfig::cpu()
            },
            false => WinogradConfig::off(),
        }
    }
}

/// One fully determined test case.
#[derive(Clone, Debug)]
pub enum Case {
    Onnx {
        bytes: Vec<u8>,
    },
    Graph {
        graph: Graph,
        options: GraphOptions,
        seed: u64,
    },
    Loops {
        program: LoopProgram,
        passes: Vec<LoopPass>,
        seed: u64,
    },
    Schedule {
        graph: Graph,
        /// Which of the graph's (unscheduled) kernels, in execution order.
        kernel: usize,
        schedule: KernelSchedule,
        seed: u64,
    },
}

/// What a passing case did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Checked and agreed.
    Passed,
    /// Not checkable (e.g. the importer refused the bytes with a typed error).
    Skipped(String),
}

/// A disagreement with the oracle (or an invalid program after a pass): what went wrong and
/// the case that shows it.
#[derive(Clone, Debug)]
pub struct Finding {
    pub what: String,
    pub case: Case,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tessera fuzz finding: {}", self.what)?;
        writeln!(
            f,
            "---- save as tests/fuzz/regressions/<name>.case to replay it as a test ----"
        )?;
        write!(f, "{}", self.case.to_text())
    }
}

/// Turns fuzzer bytes into a case for `target`; `None` when the bytes make no valid input.
pub fn generate(target: FuzzTarget, data: &[u8]) -> Option<Case> {
    let extended = extend(data);
    let mut u = Unstructured::new(&extended);
    match target {
        FuzzTarget::OnnxLoader => Some(Case::Onnx {
            bytes: data.to_vec(),
        }),
        FuzzTarget::GraphPipeline => {
            let seed = u.arbitrary::<u64>().ok()?;
            let mut options = GraphOptions {
                optimize: u.ratio(3, 4).ok()?,
                tile_products: u.ratio(1, 2).ok()?,
                threads: u.int_in_range(1..=2).ok()?,
                winograd: false,
            };
            let graph = graph_gen::arbitrary_graph(&mut u).ok()?;
            // Drawn after the graph, so that older corpus entries keep their graphs.
            options.winograd = u.ratio(1, 2).unwrap_or(false);
            Some(Case::Graph {
                graph,
                options,
                seed,
            })
        }
        FuzzTarget::LoopPasses => {
            let seed = u.arbitrary::<u64>().ok()?;
            let program = loop_gen::arbitrary_program(&mut u).ok()?;
            // Passes are chosen on the program as the previous ones leave it.
            let mut cur = program.clone();
            let mut passes = Vec::new();
            for _ in 0..u.int_in_range(1..=pass_gen::MAX_PASSES).ok()? {
                let Ok(Some(p)) = pass_gen::arbitrary_pass(&mut u, &cur) else {
                    break;
                };
                if pass_gen::apply(&mut cur, &p).is_err() {
                    // Keep it: the oracle reports the invalid program.
                    passes.push(p);
                    break;
                }
                passes.push(p);
            }
            Some(Case::Loops {
                program,
                passes,
                seed,
            })
        }
        FuzzTarget::Schedule => {
            let seed = u.arbitrary::<u64>().ok()?;
            let mut graph = graph_gen::arbitrary_graph(&mut u).ok()?;
            // A quarter of the cases compute their matrix products in half precision.
            let half = match u.int_in_range(0..=7u8).ok()? {
                0 => Some(tessera_ir::DType::F16),
                1 => Some(tessera_ir::DType::BF16),
                _ => None,
            };
            if let Some(h) = half.and_then(|d| graph_gen::with_half_products(&graph, d)) {
                graph = h;
            }
            let kernels = unscheduled_kernels(&graph, &Target::host()).ok()?;
            let kernel = u.choose_index(kernels.len()).ok()?;
            let space =
                tessera_autotune::space::Space::for_kernel(&kernels[kernel], vector_bytes());
            let point: Vec<usize> = space
                .knobs
                .iter()
                .map(|k| u.choose_index(k.values.len()).unwrap_or(0))
                .collect();
            let schedule = space.decode(&point).ok()?;
            Some(Case::Schedule {
                graph,
                kernel,
                schedule,
                seed,
            })
        }
    }
}

/// The target whose lowering shape the GPU schedules are checked on.
const GPU_SM: u32 = 90;
const GPU_TARGET: Target = Target::Cuda { sm: GPU_SM };

/// The same kernel's GPU schedules on the interpreter (which also reports shared-memory
/// races) against the unscheduled kernel's results `want`: the default GPU schedule, for a
/// matrix product a tiling drawn from the case's seed, and a point of the kernel's GPU tuning
/// space drawn from the seed (any kind: bound loops, a block per row, tiles) — what the
/// autotuner may propose (so the case text determines them all).
fn check_gpu_schedules(
    k: &tessera_passes::lower::Kernel,
    seed: u64,
    inputs: &[tessera_ir::Tensor],
    want: &[tessera_ir::Tensor],
) -> Result<(), String> {
    use tessera_ir::DType;
    use tessera_passes::gpu_mma::{Consumers, GpuMmaTiling, MmaEpilogue, MmaStaging, tile_mma};
    use tessera_passes::gpu_product::{GpuProductTiling, tile_gpu};
    use tessera_passes::gpu_schedule::{GpuScheduleConfig, schedule_gpu};
    let mut variants = Vec::new();
    let mut gpu = k.program.clone();
    match schedule_gpu(&mut gpu, k.product.as_ref(), &GpuScheduleConfig::default()) {
        Ok(_) => variants.push(("default GPU schedule".to_string(), gpu)),
        Err(e) => return Err(format!("the default GPU schedule fails: {e}")),
    }
    if let Some(spec) = &k.product {
        let t = GpuProductTiling::sample(spec, &mut Rng::new(seed));
        let tiled = tile_gpu(&k.program, spec, &t)
            .map_err(|e| format!("the GPU product tiling {t:?} fails: {e}"))?;
        variants.push((format!("GPU product tiling {t:?}"), tiled));
        // Half precision: the tensor-core schedule, whatever the product's size.
        if matches!(spec.dtype, DType::F16 | DType::BF16) {
            let t = GpuMmaTiling::sample(spec, &mut Rng::new(seed));
            let tiled = tile_mma(&k.program, spec, &t)
                .map_err(|e| format!("the tensor-core tiling {t:?} fails: {e}"))?;
            variants.push((format!("tensor-core tiling {t:?}"), tiled));
            // Warpgroup tiles 128-byte swizzled wherever the product is wide and deep enough
            // (steps of 64 columns, 64-deep `k` tiles), which a sampled tiling seldom is —
            // staged by async copies, TMA or a warp-specialised TMA pipeline by turns (async
            // copies where the operands' rows are not 16-byte aligned), on a grid of a block
            // per tile or of a few blocks looping over the tiles, their consumers cooperating
            // on each tile or taking turns; warp-specialised, storing directly or by TMA (whole
            // tiles or sub-tiles).
            let mut swizzled = GpuMmaTiling::swizzled_warpgroup_for(spec);
            let persistent_blocks = 1 + (seed / 5 % 3) as i64;
            swizzled.staging = match seed % 5 {
                0 => swizzled.staging,
                1 => MmaStaging::Tma { stages: 3 },
                2 => MmaStaging::WarpSpecialized {
                    stages: 4,
                    persistent_blocks: 0,
                    consumers: Consumers::Cooperative,
                },
                3 => MmaStaging::WarpSpecialized {
                    stages: 3,
                    persistent_blocks,
                    consumers: Consumers::Cooperative,
                },
                _ => MmaStaging::WarpSpecialized {
                    stages: 3,
                    persistent_blocks,
                    consumers: Consumers::PingPong,
                },
            };
            if matches!(swizzled.staging, MmaStaging::WarpSpecialized { .. }) {
                swizzled.epilogue = [
                    MmaEpilogue::Direct,
                    MmaEpilogue::TensorStore,
                    MmaEpilogue::TensorStoreSubTiles,
                ][(seed / 15 % 3) as usize];
            }
            if swizzled.validate(spec).is_ok() && swizzled.fits(spec) {
                let tiled = tile_mma(&k.program, spec, &swizzled)
                    .map_err(|e| format!("the tensor-core tiling {swizzled:?} fails: {e}"))?;
                variants.push((format!("tensor-core tiling {swizzled:?}"), tiled));
            }
        }
    }
    let space = tessera_autotune::space::Space::for_gpu_kernel(k, GPU_SM)
        .map_err(|e| format!("the GPU tuning space: {e}"))?;
    let (_, schedule) = space
        .sample(&mut Rng::new(seed ^ 0x9e37_79b9))
        .map_err(|e| format!("the GPU tuning space: {e}"))?;
    let mut tuned = k.clone();
    tessera_passes::schedule::apply_schedule(&mut tuned, &schedule)
        .map_err(|e| format!("the GPU tuning candidate {schedule:?} fails: {e}"))?;
    variants.push((format!("GPU tuning candidate {schedule:?}"), tuned.program));
    for (what, p) in variants {
        tessera_ir::loops::verify::verify(&p)
            .map_err(|e| format!("{what}: does not verify: {e}"))?;
        let got = oracle::interpret(&p, inputs).map_err(|e| format!("{what}: {e}"))?;
        oracle::agree(&what, &got, want, oracle::native_tolerance)?;
    }
    Ok(())
}

/// How many bytes the generators get: the input, then (when it is shorter) a stream from a
/// PRNG seeded by a hash of the input.
pub const GENERATOR_BYTES: usize = 1024;

/// The fuzzer's bytes, extended to [`GENERATOR_BYTES`] by a PRNG seeded with their hash.
///
/// Why: `arbitrary` answers every choice made after the bytes run out with its minimum, so
/// a short input — which is what a coverage-guided fuzzer mostly makes — would only ever
/// build tiny graphs of the first op kind. Extended, every input builds a full-sized case: the
/// fuzzer's mutations steer the leading choices directly, and any change of the input
/// reshuffles the rest.
fn extend(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < GENERATOR_BYTES {
        let mut rng = Rng::new(tessera_passes::schedule::fnv1a(data));
        while out.len() < GENERATOR_BYTES {
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
    }
    out
}

fn vector_bytes() -> usize {
    Target::host().vector_bytes()
}

/// Generates the case for `target` from `data` and checks it: what a fuzz target does.
pub fn run_target(target: FuzzTarget, data: &[u8]) -> Result<Verdict, Box<Finding>> {
    match generate(target, data) {
        Some(case) => check(&case),
        None => Ok(Verdict::Skipped("the bytes make no valid input".into())),
    }
}

/// A graph's kernels, lowered in the shape that suits `target` (after the optimizer, symbols
/// bound to 1) but not scheduled; legalised for the CPU on every target.
pub fn unscheduled_kernels(
    graph: &Graph,
    target: &Target,
) -> Result<Vec<tessera_passes::lower::Kernel>, crate::CompileError> {
    // The CPU's weight layouts on every target, and no Winograd rewrite (a GPU's default):
    // the CPU's and a GPU's kernels of one graph then take the same buffers, and one set of
    // inputs checks both.
    let cfg = CompileConfig {
        schedule: false,
        legalize: Some(tessera_passes::legalize::LegalizeConfig::cpu()),
        winograd: Some(tessera_passes::winograd::WinogradConfig::off()),
        ..Default::default()
    };
    let bindings = crate::pipeline::bind_symbols(graph, &BTreeMap::new());
    Ok(Compiler::new(target.clone())
        .with_config(cfg)
        .stages(graph, &bindings)?
        .kernels)
}

/// Checks one case against the oracle.
pub fn check(case: &Case) -> Result<Verdict, Box<Finding>> {
    let found = |what: String| {
        Box::new(Finding {
            what,
            case: case.clone(),
        })
    };
    // Native code runs on fenced buffers (`oracle::run_native`): touching a guard page kills
    // the process, after this report.
    let _armed = fence::Armed::new(
        found("native code touched a guard page (it read or wrote outside a buffer)".into())
            .to_string(),
    );
    match case {
        Case::Onnx { bytes } => match crate::onnx::import(bytes) {
            Err(e) => Ok(Verdict::Skipped(format!("refused: {e}"))),
            Ok(g) => match g.verify() {
                Ok(()) => Ok(Verdict::Passed),
                Err(e) => Err(found(format!("imported graph fails the verifier: {e}"))),
            },
        },
        Case::Graph {
            graph,
            options,
            seed,
        } => {
            let inputs = graph_inputs(graph, *seed);
            let want = match tessera_ir::interp::run_graph(graph, &inputs) {
                Ok(w) => w,
                Err(e) => return Ok(Verdict::Skipped(format!("interpreter: {e}"))),
            };
            let cfg = CompileConfig {
                optimize: options.optimize,
                tile_products: options.tile_products,
                threads: options.threads,
                winograd: Some(options.winograd_config()),
                poison: true,
                ..Default::default()
            };
            let compiler = Compiler::new(Target::host()).with_config(cfg);
            // The scheduled kernels on the loop interpreter first: a pass that breaks an
            // index shows up here as a bounds error, before native code could corrupt memory.
            let stages = compiler
                .stages(graph, &BTreeMap::new())
                .map_err(|e| found(format!("a valid graph does not lower: {e}")))?;
            let got = crate::pipeline::interpret_kernels(&stages, &inputs)
                .map_err(|e| found(format!("loop interpreter on the scheduled kernels: {e}")))?;
            oracle::agree(
                "scheduled kernels on the loop interpreter vs graph interpreter",
                &got,
                &want,
                oracle::graph_tolerance,
            )
            .map_err(found)?;
            let exe = compiler
                .compile(graph)
                .map_err(|e| found(format!("a valid graph does not compile: {e}")))?;
            let got = exe
                .run(&inputs)
                .map_err(|e| found(format!("the compiled graph fails to run: {e}")))?;
            oracle::agree(
                "compiled vs interpreter",
                &got,
                &want,
                oracle::graph_tolerance,
            )
            .map_err(found)?;
            Ok(Verdict::Passed)
        }
        Case::Loops {
            program,
            passes,
            seed,
        } => {
            tessera_ir::loops::verify::verify(program)
                .map_err(|e| found(format!("the generated program does not verify: {e}")))?;
            let inputs = oracle::program_inputs(program, *seed);
            let want = oracle::interpret(program, &inputs)
                .map_err(|e| found(format!("interpreter on the original program: {e}")))?;
            let mut cur = program.clone();
            for p in passes {
                pass_gen::apply(&mut cur, p).map_err(found)?;
                let got = oracle::interpret(&cur, &inputs).map_err(|e| {
                    found(format!("interpreter after `{}`: {e}", pass_gen::print(p)))
                })?;
                oracle::agree(
                    &format!("interpreter after `{}`", pass_gen::print(p)),
                    &got,
                    &want,
                    |_| oracle::PASS_EXACT,
                )
                .map_err(found)?;
            }
            let got = oracle::run_native(&cur, &inputs).map_err(found)?;
            oracle::agree(
                "native code after all passes",
                &got,
                &want,
                oracle::native_tolerance,
            )
            .map_err(found)?;
            Ok(Verdict::Passed)
        }
        Case::Schedule {
            graph,
            kernel,
            schedule,
            seed,
        } => {
            let kernels = unscheduled_kernels(graph, &Target::host())
                .map_err(|e| found(format!("a valid graph does not lower: {e}")))?;
            let Some(k) = kernels.get(*kernel) else {
                return Ok(Verdict::Skipped(format!("no kernel {kernel}")));
            };
            let inputs = oracle::program_inputs(&k.program, *seed);
            let want = oracle::interpret(&k.program, &inputs)
                .map_err(|e| found(format!("interpreter on the unscheduled kernel: {e}")))?;
            let mut scheduled = k.clone();
            if let Err(e) = tessera_passes::schedule::apply_schedule(&mut scheduled, schedule) {
                return Ok(Verdict::Skipped(format!("schedule refused: {e}")));
            }
            tessera_ir::loops::verify::verify(&scheduled.program)
                .map_err(|e| found(format!("the scheduled kernel does not verify: {e}")))?;
            let got = oracle::interpret(&scheduled.program, &inputs)
                .map_err(|e| found(format!("interpreter on the scheduled kernel: {e}")))?;
            oracle::agree(
                "scheduled kernel on the interpreter",
                &got,
                &want,
                oracle::native_tolerance,
            )
            .map_err(found)?;
            let got = oracle::run_native(&scheduled.program, &inputs).map_err(found)?;
            oracle::agree(
                "scheduled kernel as native code",
                &got,
                &want,
                oracle::native_tolerance,
            )
            .map_err(found)?;
            // The GPU schedules work on the kernel as lowered for a GPU (windows' rows one
            // loop): the same buffers, so the same inputs and results.
            let gpu_kernels = unscheduled_kernels(graph, &GPU_TARGET)
                .map_err(|e| found(format!("a valid graph does not lower for a GPU: {e}")))?;
            let Some(gk) = gpu_kernels.get(*kernel) else {
                return Err(found(format!("no kernel {kernel} when lowered for a GPU")));
            };
            let got = oracle::interpret(&gk.program, &inputs)
                .map_err(|e| found(format!("interpreter on the GPU-shaped kernel: {e}")))?;
            oracle::agree(
                "unscheduled kernel lowered for a GPU",
                &got,
                &want,
                oracle::native_tolerance,
            )
            .map_err(found)?;
            check_gpu_schedules(gk, *seed, &inputs, &want).map_err(found)?;
            Ok(Verdict::Passed)
        }
    }
}

/// Random inputs for a graph (from `seed`; never zero).
pub fn graph_inputs(g: &Graph, seed: u64) -> Vec<tessera_ir::Tensor> {
    let mut rng = Rng::new(seed);
    g.inputs
        .iter()
        .map(|&v| {
            let ty = g.ty(v);
            let dtype = ty.map_or(tessera_ir::DType::F32, |t| t.dtype);
            let shape = ty.and_then(|t| t.static_shape()).unwrap_or_default();
            rng.tensor(dtype, shape)
        })
        .collect()
}

mod text;
