//! The tuning driver: a model in, its kernels tuned into a tuning database.
//!
//! Lowers the model once without schedules, makes its kernels tuning tasks (reference data
//! from the interpreter on random inputs), and runs the autotuner's search over them with
//! the chosen cost model, measuring in a worker process. [`tuned_compiler`] is the other
//! half: a compiler that applies a database's best schedules (`--tuning-db`).

use crate::error::CompileError;
use crate::pipeline::{CompileConfig, Compiler};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_autotune::db::TuningDb;
use tessera_autotune::measure::{MeasureConfig, Measurer, WorkerCommand};
use tessera_autotune::model::{AnalyticModel, CostModel, XgbConfig, XgbModel};
use tessera_autotune::search::{self, Event, Strategy, TaskState, TuneConfig};
use tessera_autotune::task::{Task, TaskConfig, extract_tasks};
use tessera_ir::{Graph, Rng, Tensor};

/// Which cost model steers the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// XGBoost trained online (the analytic model until it has data).
    Xgboost,
    /// The analytic model only.
    Analytic,
    /// No model: uniformly random schedules.
    Random,
}

/// Options of [`tune_model`].
#[derive(Clone, Debug)]
pub struct TuneOptions {
    pub db: PathBuf,
    pub trials: usize,
    pub budget: Option<Duration>,
    pub model: ModelKind,
    pub seed: u64,
    /// Kernels doing less work than this are not tuned.
    pub min_work: u64,
    /// How to start a measuring process (the `tessera` binary's `tune-worker`).
    pub worker: WorkerCommand,
    /// Limit of one candidate's measurement.
    pub timeout: Duration,
    /// Where the trained XGBoost model is saved (and loaded from, when it exists).
    pub model_file: Option<PathBuf>,
    /// Sizes of symbolic dimensions (unbound ones are 1).
    pub bindings: BTreeMap<String, usize>,
    /// Measure each task's default schedule first (off when comparing search strategies).
    pub measure_default: bool,
    /// Another tuning database whose records (of other workloads) the cost model also learns
    /// from; the tuning database's own records of other workloads always count.
    pub prior_db: Option<PathBuf>,
    /// Test hook: trials replaced by planted broken candidates.
    pub plants: Vec<(usize, tessera_autotune::measure::Plant)>,
}

/// What a tuning run did.
pub struct TuneReport {
    pub tasks: Vec<Task>,
    pub states: Vec<TaskState>,
    /// Records the database held before this run, and bytes of a torn last line cut off.
    pub resumed_records: usize,
    pub torn_bytes: usize,
    pub seconds: f64,
}

/// The compiler version recorded in tuning records, with the measurer's method
/// ([`tessera_autotune::measure::METHOD`]): records timed another way are not compared
/// with these, nor applied.
pub fn compiler_key() -> String {
    format!(
        "tessera {} ({})",
        crate::VERSION,
        tessera_autotune::measure::METHOD
    )
}

/// How GPU candidates are timed (`tessera-gpu-run tune`), part of their records' compiler
/// key: the median of repeated launches on inputs already on the device.
pub const GPU_METHOD: &str = "gpu: median of launches";

/// The compiler key of records measured for `target`: [`compiler_key`] for a CPU, with
/// [`GPU_METHOD`] for a GPU.
pub fn compiler_key_for(target: &tessera_codegen::Target) -> String {
    match target {
        tessera_codegen::Target::Cuda { .. } => {
            format!("tessera {} ({GPU_METHOD})", crate::VERSION)
        }
        _ => compiler_key(),
    }
}

/// Tunes the kernels of `graph` compiled by `compiler`, appending measurements to the
/// database.
pub fn tune_model(
    graph: &Graph,
    compiler: &Compiler,
    opts: &TuneOptions,
    progress: &mut dyn FnMut(&[Task], Event),
) -> Result<TuneReport, CompileError> {
    let start = Instant::now();
    // One folder per run (runs may share a process), removed when the run ends however it
    // ends; a killed run's folder is removed by the next run.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = std::env::temp_dir();
    remove_stale_tune_dirs(&temp);
    let dir = RemovedOnDrop(temp.join(format!("{TUNE_DIR_PREFIX}{}-{run}", std::process::id())));
    let tasks = model_tasks(
        graph,
        compiler,
        &TaskOptions {
            bindings: &opts.bindings,
            seed: opts.seed,
            min_work: opts.min_work,
        },
        &dir.0,
    )?;
    let (mut db, load) = TuningDb::open(&opts.db)?;
    let mut measurer = Measurer::new(MeasureConfig {
        worker: opts.worker.clone(),
        target: compiler.target.clone(),
        threads: compiler.config.threads,
        timeout: opts.timeout,
        min_runs: 5,
        min_time: Duration::from_millis(20),
    });
    let cfg = TuneConfig {
        trials: opts.trials,
        strategy: if opts.model == ModelKind::Random {
            Strategy::Random
        } else {
            Strategy::Model
        },
        seed: opts.seed,
        deadline: opts.budget.map(|b| start + b),
        threads: compiler.config.threads,
        target_key: tessera_autotune::target_key(&compiler.target),
        compiler: compiler_key(),
        plants: opts.plants.clone(),
        measure_default: opts.measure_default,
        ..Default::default()
    };
    let target_key = tessera_autotune::target_key(&compiler.target);
    let own: Vec<&str> = tasks.iter().map(|t| t.workload.as_str()).collect();
    let fv = tessera_autotune::features::FEATURE_VERSION;
    let mut prior = db.training_data(&target_key, &compiler_key(), fv, &own);
    if let Some(p) = &opts.prior_db {
        let (other, _) = TuningDb::open(p)?;
        let (x, y) = other.training_data(&target_key, &compiler_key(), fv, &own);
        prior.0.extend(x);
        prior.1.extend(y);
    }
    let cfg = TuneConfig { prior, ..cfg };
    let mut models = Models::new(opts.model, opts.model_file.as_deref())?;
    let result = search::tune(
        &tasks,
        &cfg,
        models.pick(),
        &mut measurer,
        &mut db,
        &mut |e| progress(&tasks, e),
    );
    drop(dir);
    let states = result?;
    models.save()?;
    Ok(TuneReport {
        tasks,
        states,
        resumed_records: load.records,
        torn_bytes: load.torn_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The cost model a run uses: XGBoost (started from a saved model when there is one, saved
/// again after the run) or the analytic one.
pub(crate) struct Models<'a> {
    kind: ModelKind,
    file: Option<&'a Path>,
    xgb: XgbModel,
    analytic: AnalyticModel,
}

impl<'a> Models<'a> {
    pub fn new(kind: ModelKind, file: Option<&'a Path>) -> Result<Models<'a>, CompileError> {
        let xgb = match file {
            Some(p) if p.exists() => XgbModel::load(p, XgbConfig::default())?,
            _ => XgbModel::new(XgbConfig::default()),
        };
        Ok(Models {
            kind,
            file,
            xgb,
            analytic: AnalyticModel,
        })
    }

    pub fn pick(&mut self) -> &mut dyn CostModel {
        match self.kind {
            ModelKind::Xgboost => &mut self.xgb,
            _ => &mut self.analytic,
        }
    }

    /// Saves a trained XGBoost model to its file (when one was named).
    pub fn save(&self) -> Result<(), CompileError> {
        if let (ModelKind::Xgboost, Some(p)) = (self.kind, self.file)
            && self.xgb.trained()
        {
            self.xgb.save(p)?;
        }
        Ok(())
    }
}

/// What [`model_tasks`] needs beside the model and the compiler.
pub(crate) struct TaskOptions<'a> {
    /// Sizes of symbolic dimensions (unbound ones are 1).
    pub bindings: &'a BTreeMap<String, usize>,
    /// Seed of the random model inputs the reference data is computed from.
    pub seed: u64,
    /// Kernels doing less work than this are not tuned.
    pub min_work: u64,
}

/// The tuning tasks of `graph` for `compiler`'s target (GPU schedule spaces for a CUDA
/// target): the model lowered once without schedules, its kernels' reference data computed
/// by the interpreter on random inputs and written under `dir`.
pub(crate) fn model_tasks(
    graph: &Graph,
    compiler: &Compiler,
    opts: &TaskOptions,
    dir: &Path,
) -> Result<Vec<Task>, CompileError> {
    let bindings = crate::pipeline::bind_symbols(graph, opts.bindings);
    let unscheduled = Compiler {
        target: compiler.target.clone(),
        config: CompileConfig {
            schedule: false,
            tuned: None,
            ..compiler.config.clone()
        },
    };
    let stages = unscheduled.stages(graph, &bindings)?;
    let mut rng = Rng::new(opts.seed);
    let inputs: Vec<Tensor> = stages
        .optimized
        .inputs
        .iter()
        .map(|&v| {
            let ty = stages.optimized.ty_of(v)?;
            Ok(rng.tensor(ty.dtype, ty.static_shape().unwrap_or_default()))
        })
        .collect::<Result<_, CompileError>>()?;
    let task_cfg = TaskConfig {
        min_work: opts.min_work,
        schedule: compiler.schedule_config(),
        gpu_sm: match compiler.target {
            tessera_codegen::Target::Cuda { sm } => Some(sm),
            _ => None,
        },
    };
    Ok(extract_tasks(
        &stages.optimized,
        &stages.kernels,
        &inputs,
        &task_cfg,
        dir,
    )?)
}

/// `compiler` with the best schedules of the database at `db` for its target and version.
/// Returns the compiler and how many workloads the database has schedules for.
pub fn tuned_compiler(compiler: Compiler, db: &Path) -> Result<(Compiler, usize), CompileError> {
    let (db, _) = TuningDb::open(db)?;
    let best = db.best_schedules(
        &tessera_autotune::target_key(&compiler.target),
        &compiler_key_for(&compiler.target),
    );
    let n = best.len();
    let mut c = compiler;
    c.config.tuned = Some(Arc::new(best));
    Ok((c, n))
}

/// Tuning runs keep their reference data in `<temp>/tessera-tune-<pid>-<run>`.
const TUNE_DIR_PREFIX: &str = "tessera-tune-";

/// A folder removed (with its contents) when dropped.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the reference-data folders under `temp` of tuning runs whose process is gone (a
/// killed `tessera tune`: its folder outlives it). A process is known to be gone when
/// `/proc/<pid>` is missing while `/proc/self` exists; elsewhere nothing is removed. Returns
/// how many folders were removed.
pub fn remove_stale_tune_dirs(temp: &Path) -> usize {
    let proc_fs = Path::new("/proc");
    if !proc_fs.join("self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(temp) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TUNE_DIR_PREFIX)) else {
            continue;
        };
        let Some((pid, run)) = rest.split_once('-') else {
            continue;
        };
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if numeric(pid)
            && numeric(run)
            && !proc_fs.join(pid).exists()
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}
