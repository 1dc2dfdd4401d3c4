//! The `tessera` command line: compile, run, bench and inspect models.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera::{CompileConfig, Compiler, Target, Tensor};
use tessera_ir::{Graph, Rng};

mod cli_gpu;
mod cli_gpu_tune;
mod cli_plot;
mod cli_tune;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A tensor compiler: ONNX in, LLVM-compiled code out"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which 3×3 convolutions become Winograd convolutions (`--winograd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WinogradMode {
    /// F(2×2, 3×3) where it pays, on CPU targets (GPU targets keep direct convolutions).
    F2,
    /// F(4×4, 3×3) where it pays.
    F4,
    /// Every convolution direct.
    Off,
}

impl WinogradMode {
    /// The compiler's setting: `None` is the target's default.
    fn config(self) -> Option<tessera_passes::winograd::WinogradConfig> {
        use tessera_passes::winograd::WinogradConfig;
        match self {
            WinogradMode::F2 => None,
            WinogradMode::F4 => Some(WinogradConfig {
                tile: 4,
                ..WinogradConfig::cpu()
            }),
            WinogradMode::Off => Some(WinogradConfig::off()),
        }
    }
}

/// The tensor-core instruction of half-precision products on the GPU (`--gpu-mma`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GpuMma {
    /// `mma.sync` per warp (sm_80 and later).
    Warp,
    /// `wgmma.mma_async` per warpgroup of four warps (sm_90 only, as sm_90a PTX).
    Warpgroup,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The imported graph
    Graph,
    /// The specialised, constant-folded graph, before the optimizer
    Prepared,
    /// The graph after the e-graph optimizer (rewrites and fusion) and the Winograd rewrite: what is lowered
    Fused,
    /// Scheduled loop programs, one per kernel
    Loops,
    /// MLIR (scf/memref/arith/math/vector) before lowering to LLVM
    Mlir,
    /// Optimised LLVM IR (NVPTX IR for a CUDA target)
    Llvm,
    /// PTX (a CUDA target only)
    Ptx,
}

#[derive(clap::Args, Clone)]
pub(crate) struct CommonOpts {
    /// Bind a symbolic dimension, e.g. `--bind N=8` (repeatable).
    #[arg(long = "bind", value_parser = parse_binding)]
    bind: Vec<(String, usize)>,
    /// Target CPU for code generation (default: this machine's CPU).
    #[arg(long)]
    cpu: Option<String>,
    /// What to generate code for: `cpu` (this machine), `cpu:<llvm cpu>`, or an NVIDIA GPU,
    /// `cuda:sm_80` / `cuda:sm_90` (PTX).
    #[arg(long, conflicts_with = "cpu")]
    target: Option<String>,
    /// Threads for parallel loops (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Turn off the default schedule (parallel + vectorize).
    #[arg(long)]
    no_schedule: bool,
    /// Turn off the e-graph optimizer (algebraic rewrites and fusion).
    #[arg(long)]
    no_fuse: bool,
    /// Keep matrix products and convolutions as plain loop nests (no packed, register-tiled
    /// product schedule), for comparison.
    #[arg(long)]
    no_tile: bool,
    /// 3×3 stride-1 convolutions as Winograd convolutions: `f2` (F(2×2, 3×3), the default
    /// on CPUs: 2.25× fewer multiplications, rounding like the direct convolution's), `f4`
    /// (F(4×4, 3×3): 4× fewer, about 4× the rounding error), or `off` (direct).
    #[arg(long, value_enum, default_value_t = WinogradMode::F2)]
    winograd: WinogradMode,
    /// Tensor-core instruction for half-precision products on a CUDA target: `warp`
    /// (`mma.sync`, the default) or `warpgroup` (`wgmma`, `cuda:sm_90` only).
    #[arg(long, value_enum, default_value_t = GpuMma::Warp)]
    gpu_mma: GpuMma,
    /// Apply the best schedules of this tuning database (written by `tessera tune`).
    #[arg(long, value_name = "DB")]
    tuning_db: Option<PathBuf>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Compile an ONNX model to a shared library (+ .json manifest + .h header), or print a stage.
    Compile {
        model: PathBuf,
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        /// Write Graphviz pictures of the graph before and after the optimizer.
        #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"])]
        dot: Option<Vec<PathBuf>>,
        #[command(flatten)]
        opts: CommonOpts,
    },
    /// Run a model (.onnx, JIT-compiled, or a compiled .so) on .npy inputs.
    Run {
        model: PathBuf,
        /// One .npy file per model input, in order; random inputs when omitted.
        #[arg(long = "input")]
        inputs: Vec<PathBuf>,
        /// Where to write each output as .npy, in order.
        #[arg(long = "output")]
        outputs: Vec<PathBuf>,
        /// Compare the outputs with the reference interpreter (.onnx only).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        opts: CommonOpts,
    },
    /// Time a model: compile once, warm up, print the median of repeated runs.
    Bench {
        model: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
        /// Also print each kernel's median time, slowest first.
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        opts: CommonOpts,
    },
    /// Tune a model's kernels: evolutionary schedule search steered by a cost model,
    /// every candidate checked against the reference interpreter; results go to a database.
    Tune(cli_tune::TuneArgs),
    /// Serve measurement jobs on stdin (started by `tessera tune`; not for direct use).
    #[command(hide = true)]
    TuneWorker,
    /// Measure this machine's single-core f32 FMA peak (the yardstick of GEMM efficiency).
    Peak {
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Run the ONNX backend node-test suite and print (or write) the conformance report.
    Conformance {
        /// The suite's folder (written by scripts/gen_node_suite.py).
        #[arg(long, default_value = "tests/data/generated/node")]
        dir: PathBuf,
        /// Backends to run: cpu, interpreter or all.
        #[arg(long, default_value = "all")]
        backend: String,
        /// Only tests whose name contains this string.
        #[arg(long)]
        filter: Option<String>,
        /// Write the Markdown report here (default: print the totals and failures).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Tests run side by side (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
}

fn parse_binding(s: &str) -> Result<(String, usize), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAME=SIZE")?;
    Ok((
        k.to_string(),
        v.parse().map_err(|_| format!("bad size `{v}`"))?,
    ))
}

pub(crate) fn compiler(opts: &CommonOpts) -> Result<Compiler> {
    let target = match (&opts.target, &opts.cpu) {
        (Some(t), _) => Target::parse(t)?,
        (None, Some(c)) => Target::cpu(c),
        (None, None) => Target::host(),
    };
    let mut cfg = CompileConfig {
        schedule: !opts.no_schedule,
        optimize: !opts.no_fuse,
        tile_products: !opts.no_tile,
        winograd: opts.winograd.config(),
        bindings: opts.bind.iter().cloned().collect(),
        ..Default::default()
    };
    if let Some(t) = opts.threads {
        cfg.threads = t.max(1);
    }
    if opts.gpu_mma == GpuMma::Warpgroup {
        use tessera_ir::loops::mma::WGMMA_SM;
        use tessera_passes::gpu_mma::MmaEngine;
        use tessera_passes::gpu_schedule::GpuScheduleConfig;
        match target {
            Target::Cuda { sm } if sm == WGMMA_SM => {
                cfg.gpu_schedule = Some(GpuScheduleConfig {
                    mma_engine: MmaEngine::Warpgroup,
                    ..GpuScheduleConfig::for_sm(sm)
                });
            }
            _ => bail!("--gpu-mma warpgroup needs --target cuda:sm_{WGMMA_SM}"),
        }
    }
    let c = Compiler::new(target).with_config(cfg);
    Ok(match &opts.tuning_db {
        Some(db) => {
            tessera::tune::tuned_compiler(c, db)
                .with_context(|| format!("reading {}", db.display()))?
                .0
        }
        None => c,
    })
}

pub(crate) fn load_graph(path: &Path) -> Result<Graph> {
    tessera::onnx::import_file(path).with_context(|| format!("importing {}", path.display()))
}

/// Bindings for AOT and display: given ones, then every remaining symbol bound to 1.
fn full_bindings(g: &Graph, opts: &CommonOpts) -> BTreeMap<String, usize> {
    tessera::pipeline::bind_symbols(g, &opts.bind.iter().cloned().collect())
}

pub(crate) fn random_inputs(sigs: &[tessera_ir::plan::TensorSig]) -> Vec<Tensor> {
    let mut rng = Rng::new(42);
    sigs.iter()
        .map(|s| rng.tensor(s.dtype, s.shape.clone()))
        .collect()
}

fn read_inputs(paths: &[PathBuf]) -> Result<Vec<Tensor>> {
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            tessera::npy::read(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .collect()
}

fn summary(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
    format!(
        "{}{:?} [{}{}]",
        t.dtype(),
        t.shape(),
        head.join(", "),
        if v.len() > 8 { ", …" } else { "" }
    )
}

/// Runs a JIT-compiled .onnx or a loaded .so; returns the outputs and the latency of the run.
fn run_model(
    model: &Path,
    inputs: Vec<Tensor>,
    opts: &CommonOpts,
) -> Result<(Vec<Tensor>, Vec<Tensor>, f64)> {
    if model.extension().is_some_and(|e| e == "json" || e == "ptx") {
        return cli_gpu::run_artifact(model, inputs);
    }
    if model.extension().is_some_and(|e| e == "so") {
        let cfg = tessera_runtime::ExecConfig {
            threads: opts
                .threads
                .unwrap_or_else(tessera_runtime::pool::ThreadPool::default_threads),
            poison: false,
        };
        let exe = tessera_runtime::artifact::load(model, &cfg)?;
        let inputs = if inputs.is_empty() {
            random_inputs(&exe.plan().inputs)
        } else {
            inputs
        };
        let t = Instant::now();
        let out = exe.run(&inputs)?;
        return Ok((inputs, out, t.elapsed().as_secs_f64() * 1e3));
    }
    let g = load_graph(model)?;
    let c = compiler(opts)?;
    let exe = c.compile(&g)?;
    let inputs = if inputs.is_empty() {
        let b = full_bindings(&g, opts);
        let prepared = tessera_passes::fold::prepare(&g, &b)?;
        let sigs: Vec<_> = prepared
            .inputs
            .iter()
            .map(|&v| {
                let ty = prepared.ty_of(v).expect("typed");
                tessera_ir::plan::TensorSig {
                    name: prepared.name_of(v).into(),
                    dtype: ty.dtype,
                    shape: ty.static_shape().unwrap_or_default(),
                }
            })
            .collect();
        random_inputs(&sigs)
    } else {
        inputs
    };
    exe.run(&inputs)?; // compiles for this binding and warms up
    let t = Instant::now();
    let out = exe.run(&inputs)?;
    Ok((inputs, out, t.elapsed().as_secs_f64() * 1e3))
}

/// Writes to stdout, reporting failure (e.g. a closed pipe) as an error instead of panicking
/// the way `println!` does.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?
    }};
}

fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that went away (`tessera ... | head`) is not an error worth reporting.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Compile {
            model,
            output,
            emit,
            dot,
            opts,
        } => {
            let g = load_graph(&model)?;
            let c = compiler(&opts)?;
            let b = full_bindings(&g, &opts);
            if let Some(paths) = &dot {
                let st = c.stages(&g, &b)?;
                for (path, graph) in paths.iter().zip([&st.prepared, &st.optimized]) {
                    std::fs::write(path, tessera_ir::text::to_dot(graph))
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                if let Some(r) = &st.report {
                    eprintln!("{}", report_line(r));
                }
            }
            let print_cfg = tessera_ir::text::PrintConfig {
                max_data_bytes: 256,
            };
            match emit {
                Some(Emit::Graph) => {
                    out_raw!("{}", tessera_ir::text::print_graph_with(&g, &print_cfg))
                }
                Some(stage) => {
                    let st = c.stages(&g, &b)?;
                    let progs: Vec<_> = st.kernels.iter().map(|k| &k.program).collect();
                    match stage {
                        Emit::Prepared => out_raw!(
                            "{}",
                            tessera_ir::text::print_graph_with(&st.prepared, &print_cfg)
                        ),
                        Emit::Fused => {
                            if let Some(r) = &st.report {
                                out!("# {}", report_line(r));
                            }
                            out_raw!(
                                "{}",
                                tessera_ir::text::print_graph_with(&st.optimized, &print_cfg)
                            )
                        }
                        Emit::Loops => {
                            for node in &st.views.elided {
                                out!(
                                    "# {node}: no copy kernel, its value is a view (tessera_passes::views)"
                                );
                            }
                            for p in &progs {
                                out!("{p}");
                            }
                        }
                        Emit::Mlir => out_raw!(
                            "{}",
                            tessera_codegen::mlir::emit_module(&progs, &c.target.emit_config())?
                        ),
                        Emit::Llvm if c.target.is_gpu() => {
                            out_raw!("{}", cli_gpu::nvptx_llvm_text(&st, &c.target)?)
                        }
                        Emit::Llvm => {
                            out_raw!("{}", tessera_codegen::aot::llvm_text(&progs, &c.target)?)
                        }
                        Emit::Ptx => out_raw!("{}", cli_gpu::ptx_text(&st, &c.target)?),
                        Emit::Graph => unreachable!(),
                    }
                }
                None => {}
            }
            if let Some(out) = output.as_ref().filter(|_| c.target.is_gpu()) {
                cli_gpu::write(&c, &g, &b, out)?;
            } else if let Some(out) = output {
                let m = tessera::aot::write_artifact(&c, &g, &b, &out)?;
                eprintln!(
                    "wrote {} ({} kernels, {} weight bytes, {} workspace bytes), {}, {}",
                    out.display(),
                    m.plan.steps.len(),
                    m.plan.weight_bytes,
                    m.plan.workspace_bytes,
                    tessera_runtime::artifact::manifest_path(&out).display(),
                    out.with_extension("h").display()
                );
            } else if emit.is_none() && dot.is_none() {
                bail!("nothing to do: give -o OUTPUT.so and/or --emit STAGE");
            }
        }
        Cmd::Run {
            model,
            inputs,
            outputs,
            check,
            opts,
        } => {
            let given = read_inputs(&inputs)?;
            let (inputs, outs, ms) = run_model(&model, given, &opts)?;
            for (i, t) in outs.iter().enumerate() {
                out!("output {i}: {}", summary(t));
            }
            out!("latency: {ms:.3} ms");
            if outs.len() < outputs.len() {
                bail!(
                    "{} --output paths for {} outputs",
                    outputs.len(),
                    outs.len()
                );
            }
            for (p, t) in outputs.iter().zip(&outs) {
                std::fs::write(p, tessera::npy::write(t).map_err(anyhow::Error::msg)?)?;
            }
            if check {
                if model
                    .extension()
                    .is_some_and(|e| e == "so" || e == "json" || e == "ptx")
                {
                    bail!("--check needs the .onnx model");
                }
                let g = load_graph(&model)?;
                let reference = tessera_ir::interp::run_graph(&g, &inputs)?;
                for (i, (a, r)) in outs.iter().zip(&reference).enumerate() {
                    let err = max_rel_err(a, r);
                    out!("output {i}: max relative error vs interpreter {err:.3e}");
                    if err > tessera_ir::compare::compiled_rtol(r.dtype()) {
                        bail!("output {i} differs from the reference interpreter");
                    }
                }
            }
        }
        Cmd::Bench {
            model,
            runs,
            warmup,
            json,
            profile,
            opts,
        } => {
            let g = load_graph(&model)?;
            let c = compiler(&opts)?;
            let b = full_bindings(&g, &opts);
            if c.target.is_gpu() {
                let line = cli_gpu::bench(&c, &g, &b, &model, runs, warmup)?;
                out!("{line}");
                return Ok(());
            }
            let t0 = Instant::now();
            let exe = c.compile(&g)?;
            let compiled = exe.compiled_for(&b)?;
            let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
            // What the optimizer did (its graphs, not timed above).
            let st = c.stages(&g, &b)?;
            let optimizer = st.report.as_ref().map(|r| {
                serde_json::json!({
                    "kernels_before": r.kernels_before,
                    "kernels_after": r.kernels_after,
                    "bytes_before": tessera_passes::egraph::cost::graph_bytes(&st.prepared),
                    "bytes_after": tessera_passes::egraph::cost::graph_bytes(&st.optimized),
                    "optimize_ms": r.elapsed.as_secs_f64() * 1e3,
                    "egraph_nodes": r.egraph_nodes,
                    "stop_reason": r.stop_reason,
                })
            });
            let inputs = random_inputs(&compiled.plan().inputs);
            for _ in 0..warmup {
                compiled.run(&inputs)?;
            }
            let mut times: Vec<f64> = (0..runs.max(1))
                .map(|_| {
                    let t = Instant::now();
                    compiled
                        .run(&inputs)
                        .map(|_| t.elapsed().as_secs_f64() * 1e3)
                })
                .collect::<Result<_, _>>()?;
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            if profile {
                print_profile(&compiled, &inputs, runs.max(1))?;
            }
            let line = serde_json::json!({
                "model": model.display().to_string(),
                "target": c.target.describe(),
                "threads": compiled.threads(),
                "kernels": compiled.plan().steps.len(),
                "runs": times.len(),
                "compile_ms": compile_ms,
                "median_ms": median,
                "min_ms": times[0],
                "max_ms": times[times.len() - 1],
                "bytes_moved": tessera_passes::egraph::cost::graph_bytes(&st.optimized),
                "tuned_kernels": st.tuned_kernels,
                "optimizer": optimizer,
            });
            if json {
                out!("{line}");
            } else {
                out!(
                    "{}: median {median:.3} ms over {} runs ({} threads)",
                    model.display(),
                    times.len(),
                    compiled.threads()
                );
            }
        }
        Cmd::Tune(args) => cli_tune::run(args)?,
        Cmd::TuneWorker => {
            let stdin = std::io::stdin();
            tessera_autotune::measure::serve(stdin.lock(), std::io::stdout().lock())?;
        }
        Cmd::Peak { json } => {
            let p = tessera::peak::fma_peak_f32();
            if json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                println!(
                    "single-core f32 FMA peak: {:.1} GFLOP/s ({})",
                    p.gflops, p.isa
                );
            }
        }
        Cmd::Conformance {
            dir,
            backend,
            filter,
            report,
            jobs,
        } => {
            use tessera::conformance::{self, Backend, ConformanceConfig, Outcome};
            let backends =
                match backend.as_str() {
                    "all" => Backend::ALL.to_vec(),
                    b => vec![Backend::parse(b).with_context(|| {
                        format!("unknown backend `{b}` (cpu, interpreter or all)")
                    })?],
                };
            let mut cfg = ConformanceConfig {
                backends: backends.clone(),
                filter,
                ..Default::default()
            };
            if let Some(j) = jobs {
                cfg.jobs = j.max(1);
            }
            let results = conformance::run_suite(&dir, &cfg)
                .with_context(|| format!("reading the node suite in {}", dir.display()))?;
            if results.is_empty() {
                bail!(
                    "no tests in {} (generate them with scripts/gen_node_suite.py)",
                    dir.display()
                );
            }
            match report {
                Some(path) => {
                    let text = conformance::report(&results, &backends, "the onnx node suite");
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                None => {
                    for r in &results {
                        for (b, o) in &r.outcomes {
                            if let Outcome::Fail(why) = o {
                                out!("FAIL {} [{}] {}: {why}", r.name, r.op, b.name());
                            }
                        }
                    }
                }
            }
            for b in backends {
                let (p, n) = conformance::report::totals(&results, b);
                out!(
                    "{}: {p}/{n} in-scope passed ({:.1}%)",
                    b.name(),
                    100.0 * p as f64 / n.max(1) as f64
                );
            }
        }
    }
    Ok(())
}

/// One line summing up an optimizer run.
fn report_line(r: &tessera_passes::egraph::OptimizeReport) -> String {
    format!(
        "optimizer: {} -> {} kernels, cost {:.3e} -> {:.3e}, {} iterations, {} e-nodes, stopped: {}, {:.1} ms",
        r.kernels_before,
        r.kernels_after,
        r.cost_before,
        r.cost_after,
        r.iterations,
        r.egraph_nodes,
        r.stop_reason,
        r.elapsed.as_secs_f64() * 1e3
    )
}

fn max_rel_err(a: &Tensor, r: &Tensor) -> f64 {
    a.to_f64_vec()
        .iter()
        .zip(r.to_f64_vec())
        .map(|(x, y)| {
            if x.is_nan() != y.is_nan() {
                f64::INFINITY
            } else if x.is_nan() {
                0.0
            } else {
                (x - y).abs() / (1.0 + y.abs())
            }
        })
        .fold(0.0, f64::max)
}

/// Per-kernel median times over `runs` profiled runs, slowest first.
fn print_profile(exe: &tessera_runtime::Executor, inputs: &[Tensor], runs: usize) -> Result<()> {
    let steps = &exe.plan().steps;
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    for _ in 0..runs {
        let (_, t) = exe.run_profiled(inputs)?;
        for (i, d) in t.iter().enumerate() {
            per[i].push(d.as_secs_f64() * 1e3);
        }
    }
    let mut rows: Vec<(f64, &tessera_ir::plan::Step)> = per
        .iter_mut()
        .zip(steps)
        .map(|(v, s)| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], s)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ms, step) in rows {
        let when = if step.once { ", run once at load" } else { "" };
        // Matrix products and convolutions: their rate, to compare with `tessera peak`.
        let rate = match step.product_flops {
            0 => String::new(),
            f => format!("{:>7.1} GFLOP/s", f as f64 / (ms * 1e-3) / 1e9),
        };
        out!(
            "{ms:>10.4} ms{rate:>16}  {}  ({}{when})",
            step.kernel,
            step.node
        );
    }
    Ok(())
}
