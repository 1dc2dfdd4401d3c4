//! `tessera tune`: progress bars, the summary table, the tuning curve (PNG), the before/after
//! latency of the whole model, and `--compare` (model-guided vs random search).

use crate::{CommonOpts, compiler, load_graph, random_inputs};
use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tessera::Compiler;
use tessera::tune::{ModelKind, TuneOptions, TuneReport, tune_model, tuned_compiler};
use tessera_autotune::db::Outcome;
use tessera_autotune::measure::{Plant, WorkerCommand};
use tessera_autotune::search::Event;
use tessera_passes::schedule::KernelSchedule;

#[derive(clap::Args)]
pub struct TuneArgs {
    pub(crate) model: PathBuf,
    /// Measurements to make (over all kernels, defaults included).
    #[arg(long, default_value_t = 200)]
    pub(crate) trials: usize,
    /// The tuning database (JSON lines; created if missing, resumed if present).
    #[arg(long)]
    pub(crate) db: PathBuf,
    /// Stop after this many seconds, whatever is left of the trials.
    #[arg(long)]
    budget_secs: Option<f64>,
    /// The cost model steering the search: xgboost, analytic, or random (no model).
    #[arg(long, default_value = "xgboost")]
    cost_model: String,
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// The tuning curve (PNG); default: the database's path with `.png`.
    #[arg(long)]
    curve: Option<PathBuf>,
    /// Limit of one candidate's measurement (compile, check, timing), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Kernels doing less work than this are not tuned.
    #[arg(long, default_value_t = 4096)]
    pub(crate) min_work: u64,
    /// Save the trained XGBoost model here (and start from it when it exists).
    #[arg(long)]
    pub(crate) save_cost_model: Option<PathBuf>,
    /// Runs of the whole model timed before and after tuning (0: skip).
    #[arg(long, default_value_t = 20)]
    bench_runs: usize,
    /// Tune each task with the cost model and with random search (fresh databases) and
    /// print how many trials each needed to come within 5% of the best found (JSON).
    #[arg(long)]
    compare: bool,
    /// With `--compare`: random search's trial budget (default: `--trials`). A larger one
    /// tests a claim like "the model needs N trials, random search more than 3N".
    #[arg(long, requires = "compare")]
    random_trials: Option<usize>,
    /// Another tuning database the cost model learns from (records of other workloads).
    #[arg(long)]
    train_db: Option<PathBuf>,
    /// Print the summary as one JSON line.
    #[arg(long)]
    json: bool,
    /// Test hook: replace trial N (0-based) by a planted broken candidate, `N:crash`,
    /// `N:hang` or `N:wrong` (repeatable).
    #[arg(long = "plant", hide = true, value_parser = parse_plant)]
    plants: Vec<(usize, Plant)>,
    /// GPU targets: write a round of candidates (compiled, with reference data) into this
    /// folder for `tessera-gpu-run tune DIR` on a GPU machine, instead of measuring here.
    #[arg(long, conflicts_with_all = ["import", "compare"])]
    export: Option<PathBuf>,
    /// GPU targets: append the measurements of the round in this folder
    /// (`measurements.jsonl`, written by `tessera-gpu-run tune`) to the database.
    #[arg(long, conflicts_with = "compare")]
    import: Option<PathBuf>,
    /// With `--export`: candidates of kernels doing at most this much work are checked on
    /// the reference interpreter here too (larger ones only on the GPU machine).
    #[arg(long, default_value_t = 1 << 22)]
    pub(crate) interpret_max_work: u64,
    /// Candidates per task in each batch of the search.
    #[arg(long, default_value_t = 8)]
    pub(crate) batch: usize,
    #[command(flatten)]
    pub(crate) opts: CommonOpts,
}

fn parse_plant(s: &str) -> Result<(usize, Plant), String> {
    let (n, kind) = s.split_once(':').ok_or("expected N:KIND")?;
    let n = n.parse().map_err(|_| format!("bad trial number `{n}`"))?;
    let p = match kind {
        "crash" => Plant::Crash,
        "hang" => Plant::Hang,
        "wrong" => Plant::Wrong,
        _ => return Err(format!("unknown plant `{kind}`")),
    };
    Ok((n, p))
}

fn model_kind(s: &str) -> Result<ModelKind> {
    Ok(match s {
        "xgboost" => ModelKind::Xgboost,
        "analytic" => ModelKind::Analytic,
        "random" => ModelKind::Random,
        _ => bail!("unknown cost model `{s}` (xgboost, analytic or random)"),
    })
}

fn options(a: &TuneArgs, db: PathBuf, model: ModelKind) -> Result<TuneOptions> {
    Ok(TuneOptions {
        db,
        trials: a.trials,
        budget: a.budget_secs.map(Duration::from_secs_f64),
        model,
        seed: a.seed,
        min_work: a.min_work,
        worker: WorkerCommand {
            program: std::env::current_exe().context("locating the tessera binary")?,
            args: vec!["tune-worker".into()],
        },
        timeout: Duration::from_millis(a.timeout_ms),
        model_file: a.save_cost_model.clone(),
        bindings: a.opts.bind.iter().cloned().collect(),
        plants: a.plants.clone(),
        measure_default: !a.compare,
        prior_db: a.train_db.clone(),
    })
}

pub fn run(a: TuneArgs) -> Result<()> {
    let g = load_graph(&a.model)?;
    // Tune against the default schedules, whatever `--tuning-db` says.
    let mut c = compiler(&a.opts)?;
    c.config.tuned = None;
    match (&a.export, &a.import, c.target.is_gpu()) {
        (Some(dir), _, true) => {
            return crate::cli_gpu_tune::export(&a, &g, &c, dir, model_kind(&a.cost_model)?);
        }
        (_, Some(dir), true) => return crate::cli_gpu_tune::import(&a, &c, dir),
        (None, None, true) => bail!(
            "a GPU target is tuned in rounds: --export DIR writes candidates, `tessera-gpu-run \
             tune DIR` measures them on the GPU machine, --import DIR records the measurements"
        ),
        (Some(_), _, false) | (_, Some(_), false) => {
            bail!("--export and --import are for GPU targets (--target cuda:sm_NN)")
        }
        (None, None, false) => {}
    }
    if a.compare {
        return compare(&a, &g, &c);
    }
    let opts = options(&a, a.db.clone(), model_kind(&a.cost_model)?)?;
    let report = tune_with_bars(&g, &c, &opts)?;
    if report.torn_bytes > 0 {
        eprintln!(
            "note: cut a torn last line ({} bytes) off {}",
            report.torn_bytes,
            a.db.display()
        );
    }
    let curve = a
        .curve
        .clone()
        .unwrap_or_else(|| a.db.with_extension("png"));
    crate::cli_plot::tuning_curve(&report, &curve)
        .with_context(|| format!("writing {}", curve.display()))?;
    let latency = if a.bench_runs > 0 {
        Some(model_latency(&g, &c, &a.db, a.bench_runs)?)
    } else {
        None
    };
    print_summary(&a, &report, latency, &curve)
}

/// Runs the tuner with an overall progress bar and one for the task being measured.
fn tune_with_bars(g: &tessera::Graph, c: &Compiler, opts: &TuneOptions) -> Result<TuneReport> {
    let bars = MultiProgress::new();
    let style = |t: &str| ProgressStyle::with_template(t).unwrap_or(ProgressStyle::default_bar());
    let overall = bars.add(ProgressBar::new(opts.trials as u64));
    overall.set_style(style(
        "{prefix:>8} [{bar:30}] {pos}/{len} trials {elapsed_precise} (eta {eta}) {msg}",
    ));
    overall.set_prefix("overall");
    let task_bar = bars.add(ProgressBar::new(0));
    task_bar.set_style(style("{prefix:>8} {pos} trials: {msg}"));
    task_bar.set_prefix("task");
    let mut counts: Vec<u64> = Vec::new();
    let report = tune_model(g, c, opts, &mut |tasks, e| match e {
        Event::Measured {
            task,
            outcome,
            best_ns,
            ..
        } => {
            counts.resize(tasks.len(), 0);
            counts[task] += 1;
            let t = &tasks[task];
            task_bar.set_position(counts[task]);
            let last = match outcome {
                Outcome::Ok { median_ns } => format!("{:.3} ms", *median_ns as f64 / 1e6),
                Outcome::Wrong { .. } => "wrong".into(),
                Outcome::Failed { .. } => "failed".into(),
                Outcome::TimedOut { .. } => "timed out".into(),
            };
            task_bar.set_message(format!(
                "{} (x{}) last {last}, best {}",
                t.name,
                t.weight,
                best_ns.map_or("-".into(), |ns| format!("{:.3} ms", ns as f64 / 1e6))
            ));
            overall.inc(1);
        }
    })?;
    overall.finish_and_clear();
    task_bar.finish_and_clear();
    Ok(report)
}

/// Median latency of the whole model with default schedules and with the database's. One
/// executable at a time: an idle executor's thread pool would compete with the timed one.
fn model_latency(
    g: &tessera::Graph,
    c: &Compiler,
    db: &Path,
    runs: usize,
) -> Result<(f64, f64, usize)> {
    let (tuned, _) = tuned_compiler(c.clone(), db)?;
    let b = tessera::pipeline::bind_symbols(g, &c.config.bindings);
    let tuned_kernels = tuned.stages(g, &b)?.tuned_kernels;
    let time = |compiler: &Compiler| -> Result<f64> {
        let exe = compiler.compile(g)?;
        let e = exe.compiled_for(&b)?;
        let inputs = random_inputs(&e.plan().inputs);
        for _ in 0..3 {
            e.run(&inputs)?;
        }
        let mut t = Vec::new();
        for _ in 0..runs {
            let s = Instant::now();
            e.run(&inputs)?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(&mut t))
    };
    let default_ms = time(c)?;
    let tuned_ms = time(&tuned)?;
    Ok((default_ms, tuned_ms, tuned_kernels))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A schedule in a few words.
pub fn describe(s: &KernelSchedule) -> String {
    match s {
        KernelSchedule::Product(t) => format!(
            "tile {}x{} kc{} rows{}{}",
            t.mr,
            t.nr,
            t.kc,
            t.row_block,
            if t.pack_b { " packed" } else { "" }
        ),
        KernelSchedule::Loops(l) => format!(
            "loops par>={} vec{}B unroll{}",
            l.parallel_min_extent, l.vector_bytes, l.unroll
        ),
        KernelSchedule::Gpu(g) => describe_gpu(g),
    }
}

/// A GPU schedule in a few words.
pub fn describe_gpu(s: &tessera_passes::gpu_schedule::GpuKernelSchedule) -> String {
    use tessera_passes::gpu_schedule::GpuKernelSchedule as G;
    match s {
        G::Bound {
            threads_per_block,
            vector_runs,
        } => format!(
            "bound {threads_per_block} threads{}",
            if *vector_runs { " runs" } else { "" }
        ),
        G::Rows {
            threads,
            vector_runs,
        } => format!(
            "rows {threads} threads{}",
            if *vector_runs { ", 16-byte runs" } else { "" }
        ),
        G::Tiled { tiling: t } => {
            format!(
                "tiles {}x{}x{} per thread {}x{}",
                t.bm, t.bn, t.bk, t.tm, t.tn
            )
        }
        G::TensorCores { tiling: t } => format!(
            "mma {}x{}x{} warps {}x{}",
            t.bm, t.bn, t.bk, t.warps_m, t.warps_n
        ),
    }
}

fn print_summary(
    a: &TuneArgs,
    r: &TuneReport,
    latency: Option<(f64, f64, usize)>,
    curve: &Path,
) -> Result<()> {
    let mut rows = Vec::new();
    for (t, st) in r.tasks.iter().zip(&r.states) {
        let best = st.best();
        rows.push(serde_json::json!({
            "task": t.name,
            "workload": t.workload,
            "weight": t.weight,
            "default_ms": st.default_ns.map(|ns| ns as f64 / 1e6),
            "best_ms": best.map(|(_, ns)| ns as f64 / 1e6),
            "speedup": match (st.default_ns, best) {
                (Some(d), Some((_, b))) => Some(d as f64 / b as f64),
                _ => None,
            },
            "trials": st.new_trials(),
            "rejected": st.rejected(),
            "best_schedule": best.map(|(s, _)| describe(s)),
        }));
    }
    let trials: usize = r.states.iter().map(|s| s.new_trials()).sum();
    let summary = serde_json::json!({
        "model": a.model.display().to_string(),
        "db": a.db.display().to_string(),
        "cost_model": a.cost_model,
        "tasks": r.tasks.len(),
        "trials": trials,
        "resumed_records": r.resumed_records,
        "seconds": r.seconds,
        "default_ms": latency.map(|l| l.0),
        "tuned_ms": latency.map(|l| l.1),
        "model_speedup": latency.map(|l| l.0 / l.1),
        "tuned_kernels": latency.map(|l| l.2),
        "curve": curve.display().to_string(),
        "per_task": rows,
    });
    if a.json {
        println!("{summary}");
        return Ok(());
    }
    println!(
        "{:<28} {:>4} {:>10} {:>10} {:>7} {:>6} {:>4}  best schedule",
        "task", "x", "default ms", "best ms", "speedup", "trials", "bad"
    );
    for (t, st) in r.tasks.iter().zip(&r.states) {
        let best = st.best();
        let ms = |ns: Option<u64>| ns.map_or("-".into(), |n| format!("{:.4}", n as f64 / 1e6));
        let sp = match (st.default_ns, best) {
            (Some(d), Some((_, b))) => format!("{:.2}x", d as f64 / b as f64),
            _ => "-".into(),
        };
        println!(
            "{:<28} {:>4} {:>10} {:>10} {:>7} {:>6} {:>4}  {}",
            truncate(&t.name, 28),
            t.weight,
            ms(st.default_ns),
            ms(best.map(|(_, ns)| ns)),
            sp,
            st.new_trials(),
            st.rejected(),
            best.map_or("-".into(), |(s, _)| describe(s))
        );
    }
    println!(
        "{} tasks, {trials} trials in {:.1} s ({} records resumed); curve: {}",
        r.tasks.len(),
        r.seconds,
        r.resumed_records,
        curve.display()
    );
    if let Some((d, t, n)) = latency {
        println!(
            "whole model: default {d:.3} ms, tuned {t:.3} ms ({:.2}x; {n} kernels tuned)",
            d / t
        );
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let head: String = s.chars().take(n - 1).collect();
        format!("{head}…")
    }
}

/// The first trial (1-based) whose best time is within 5% of `target`.
fn trials_to_95(curve: &[u64], target: u64) -> Option<usize> {
    curve
        .iter()
        .position(|&ns| ns != u64::MAX && ns as f64 * 0.95 <= target as f64)
        .map(|i| i + 1)
}

/// Tunes with the cost model and with random search, each from a fresh database, and
/// prints per task how many trials each needed to come within 5% of the best either found.
fn compare(a: &TuneArgs, g: &tessera::Graph, c: &Compiler) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tessera-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    for kind in [model_kind(&a.cost_model)?, ModelKind::Random] {
        let db = dir.join(format!("{kind:?}.jsonl"));
        let _ = std::fs::remove_file(&db);
        let mut opts = options(a, db, kind)?;
        if kind == ModelKind::Random {
            opts.trials = a.random_trials.unwrap_or(a.trials);
        }
        runs.push((kind, tune_with_bars(g, c, &opts)?));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (model, random) = (&runs[0].1, &runs[1].1);
    let mut rows = Vec::new();
    for (i, t) in model.tasks.iter().enumerate() {
        let (m, r) = (&model.states[i], &random.states[i]);
        let best = [m.best(), r.best()]
            .into_iter()
            .flatten()
            .map(|(_, ns)| ns)
            .min();
        let Some(best) = best else { continue };
        let tm = trials_to_95(&m.curve, best);
        let tr = trials_to_95(&r.curve, best);
        rows.push(serde_json::json!({
            "task": t.name,
            "workload": t.workload,
            "best_ms": best as f64 / 1e6,
            "model_best_ms": m.best().map(|(_, ns)| ns as f64 / 1e6),
            "random_best_ms": r.best().map(|(_, ns)| ns as f64 / 1e6),
            "model_trials": m.new_trials(),
            "random_trials": r.new_trials(),
            "model_trials_to_95": tm,
            "random_trials_to_95": tr,
            "ratio": match (tm, tr) {
                (Some(m), Some(r)) => Some(r as f64 / m as f64),
                _ => None,
            },
        }));
    }
    println!(
        "{}",
        serde_json::json!({
            "model": a.model.display().to_string(),
            "cost_model": a.cost_model,
            "trials": a.trials,
            "random_trials": a.random_trials.unwrap_or(a.trials),
            "seed": a.seed,
            "per_task": rows,
        })
    );
    Ok(())
}
