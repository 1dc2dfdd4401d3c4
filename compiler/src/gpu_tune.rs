//! GPU tuning in rounds: candidates compiled here, timed on a GPU machine, measurements
//! brought back into the same tuning database and cost model as CPU tuning.
//!
//! The compiler (LLVM + MLIR, 240 MB) does not travel to a GPU machine, and a build machine
//! has no GPU, so a GPU tuning run cannot measure candidates as it goes. It runs in rounds:
//!
//! 1. [`export_gpu_round`] (`tessera tune model.onnx --target cuda:sm_90 --export DIR`):
//!    the model's kernels become tasks (reference data from the interpreter, in
//!    `DIR/tasks/`), the database's GPU records of them are loaded and the cost model is
//!    trained on them, and the search proposes a round of candidates — each task's default
//!    first, then the model's favourites and an `epsilon` share of random ones
//!    ([`tessera_autotune::search::propose_round`]). Each candidate is compiled to its own
//!    PTX module with a one-step plan whose inputs and outputs are the kernel's
//!    (`DIR/candidates/`), listed with its schedule and features in `DIR/round.json`.
//! 2. `tessera-gpu-run tune DIR` on the GPU machine: each candidate, in a child process with
//!    a time limit, is run with its outputs poisoned, compared with the reference data, and
//!    only then timed; one [`Measurement`] per line in `DIR/measurements.jsonl`.
//! 3. [`import_gpu_round`] (`tessera tune model.onnx --target cuda:sm_90 --import DIR`):
//!    every measurement becomes a database record under the target `cuda/sm_NN` and the GPU
//!    compiler key; the next export trains the model on them. `--tuning-db` then applies the
//!    best GPU schedules when compiling for that target.

use crate::error::CompileError;
use crate::gpu::{GpuProgram, argument_alignment};
use crate::pipeline::Compiler;
use crate::tune::{ModelKind, Models, TaskOptions, compiler_key_for, model_tasks};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use tessera_autotune::db::{Record, TuningDb};
use tessera_autotune::gpu_features::GPU_FEATURE_VERSION;
use tessera_autotune::search::{Proposal, Strategy, TuneConfig, propose_round};
use tessera_autotune::task::Task;
use tessera_codegen::Target;
use tessera_codegen::ptx::compile_ptx_with;
use tessera_ir::Graph;
use tessera_ir::compare::compare;
use tessera_ir::loops::{BufRole, LoopProgram};
use tessera_ir::plan::{ExecPlan, Slot, Step, TensorSig};
use tessera_runtime::tuning::{
    MEASUREMENTS_FILE, Measurement, ROUND_FILE, ROUND_FORMAT, RoundCandidate, TaskData, TuneRound,
    candidate_tolerance,
};

/// Options of [`export_gpu_round`].
#[derive(Clone, Debug)]
pub struct GpuRoundOptions {
    /// The tuning database the round learns from; an export only appends the candidates
    /// the interpreter rejected (see `interpret_max_work`).
    pub db: PathBuf,
    /// The round's folder (created; must not hold a round already).
    pub dir: PathBuf,
    /// Candidates in the round, over all tasks (defaults included).
    pub trials: usize,
    /// Candidates per task and batch.
    pub batch: usize,
    pub model: ModelKind,
    pub seed: u64,
    /// Kernels doing less work than this are not tuned.
    pub min_work: u64,
    pub bindings: BTreeMap<String, usize>,
    /// A saved XGBoost model to start from (it is retrained on the database's records).
    pub model_file: Option<PathBuf>,
    /// Candidates whose kernel does at most this much work (`LoopProgram::work`) are run on
    /// the reference interpreter here first (which also finds shared-memory races); one
    /// that disagrees is recorded as wrong and left out of the round. Larger ones are only
    /// checked on the GPU machine, before they are timed.
    pub interpret_max_work: u64,
}

/// What an export wrote.
pub struct RoundReport {
    pub tasks: Vec<Task>,
    /// Candidates per task.
    pub per_task: Vec<usize>,
    /// Candidates the interpreter found wrong (recorded as such, left out of the round).
    pub rejected: usize,
    /// Bytes written under the round's folder (what travels to the GPU machine).
    pub bytes: u64,
}

fn sm_of(compiler: &Compiler) -> Result<u32, CompileError> {
    match compiler.target {
        Target::Cuda { sm } => Ok(sm),
        ref t => Err(CompileError::Usage(format!(
            "GPU tuning rounds need a CUDA target (--target cuda:sm_90), not {}",
            t.describe()
        ))),
    }
}

/// Writes a round of GPU candidates for `graph` under `opts.dir` (see the module docs).
pub fn export_gpu_round(
    graph: &Graph,
    compiler: &Compiler,
    opts: &GpuRoundOptions,
) -> Result<RoundReport, CompileError> {
    let sm = sm_of(compiler)?;
    if opts.dir.join(ROUND_FILE).exists() {
        return Err(CompileError::Usage(format!(
            "{} already holds a round: export into a new folder",
            opts.dir.display()
        )));
    }
    let tasks = model_tasks(
        graph,
        compiler,
        &TaskOptions {
            bindings: &opts.bindings,
            seed: opts.seed,
            min_work: opts.min_work,
        },
        &opts.dir.join("tasks"),
    )?;
    let target = tessera_autotune::target_key(&compiler.target);
    let compiler_key = compiler_key_for(&compiler.target);
    let (mut db, _) = TuningDb::open(&opts.db)?;
    let own: Vec<&str> = tasks.iter().map(|t| t.workload.as_str()).collect();
    let prior = db.training_data(&target, &compiler_key, GPU_FEATURE_VERSION, &own);
    let cfg = TuneConfig {
        trials: opts.trials,
        batch: opts.batch,
        strategy: match opts.model {
            ModelKind::Random => Strategy::Random,
            _ => Strategy::Model,
        },
        seed: opts.seed,
        target_key: target.clone(),
        compiler: compiler_key.clone(),
        prior,
        ..Default::default()
    };
    let mut models = Models::new(opts.model, opts.model_file.as_deref())?;
    let proposals = propose_round(&tasks, &cfg, models.pick(), &mut db)?;
    let candidates_dir = opts.dir.join("candidates");
    std::fs::create_dir_all(&candidates_dir)?;
    let mut per_task = vec![0; tasks.len()];
    let mut candidates = Vec::new();
    let mut rejected = 0;
    // Each task's reference data, read once (for the candidates checked here).
    let mut data: HashMap<usize, TaskData> = HashMap::new();
    for p in &proposals {
        let task = &tasks[p.task];
        // Larger kernels are checked on the GPU machine only.
        if p.program.work() <= opts.interpret_max_work
            && let Some(detail) = disagreement(&p.program, read_once(&mut data, p.task, task)?)
        {
            rejected += 1;
            db.append(Record {
                workload: task.workload.clone(),
                target: target.clone(),
                compiler: compiler_key.clone(),
                feature_version: GPU_FEATURE_VERSION,
                schedule: serde_json::to_value(&p.schedule)
                    .map_err(|e| CompileError::Usage(e.to_string()))?,
                outcome: tessera_autotune::db::Outcome::Wrong {
                    detail: format!("reference interpreter: {detail}"),
                },
                features: Some(p.features.clone()),
            })?;
            continue;
        }
        let id = format!("c{:04}", candidates.len());
        let program = candidate_program(task, p, sm)?;
        program.write(&task.name, &candidates_dir.join(format!("{id}.ptx")))?;
        per_task[p.task] += 1;
        candidates.push(RoundCandidate {
            id: id.clone(),
            task: task.name.clone(),
            workload: task.workload.clone(),
            weight: task.weight,
            data: relative(&opts.dir, &task.data)?,
            artifact: format!("candidates/{id}.ptx"),
            schedule: serde_json::to_value(&p.schedule)
                .map_err(|e| CompileError::Usage(e.to_string()))?,
            features: p.features.clone(),
            default: p.schedule == task.default,
        });
    }
    let round = TuneRound {
        format: ROUND_FORMAT.into(),
        target,
        compiler: compiler_key,
        feature_version: GPU_FEATURE_VERSION,
        candidates,
    };
    std::fs::write(
        opts.dir.join(ROUND_FILE),
        serde_json::to_string_pretty(&round).expect("a round serialises"),
    )?;
    models.save()?;
    Ok(RoundReport {
        tasks,
        per_task,
        rejected,
        bytes: folder_bytes(&opts.dir),
    })
}

/// Why `prog` (a scheduled candidate) does not reproduce the reference data at `data` on
/// the interpreter, outputs poisoned first; `None` when it does.
fn disagreement(prog: &LoopProgram, data: &TaskData) -> Option<String> {
    let got = match tessera_ir::loops::interp::run_outputs(prog, &data.inputs) {
        Ok(got) => got,
        Err(e) => return Some(e.to_string()),
    };
    got.iter()
        .zip(&data.expected)
        .enumerate()
        .find_map(|(n, (g, want))| {
            let e = compare(g, want, candidate_tolerance(want)).err()?;
            Some(format!("output {n}: {e}"))
        })
}

/// Task `i`'s reference data, read from its file the first time.
fn read_once<'a>(
    read: &'a mut HashMap<usize, TaskData>,
    i: usize,
    task: &Task,
) -> Result<&'a TaskData, CompileError> {
    Ok(match read.entry(i) {
        Entry::Occupied(d) => d.into_mut(),
        Entry::Vacant(slot) => slot.insert(TaskData::read(&task.data)?),
    })
}

/// `path` relative to `dir` (it lies under it).
fn relative(dir: &Path, path: &Path) -> Result<String, CompileError> {
    path.strip_prefix(dir)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|_| {
            CompileError::Usage(format!("{} is not under {}", path.display(), dir.display()))
        })
}

fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// One candidate as a GPU program: its PTX module (one kernel) and a plan of one step whose
/// inputs and outputs are the kernel's parameters, in order — so the task's reference data
/// are its inputs and expected outputs as they are.
fn candidate_program(task: &Task, p: &Proposal, sm: u32) -> Result<GpuProgram, CompileError> {
    let plan = single_kernel_plan(&p.program, &task.name);
    let module = compile_ptx_with(&[&p.program], sm, &argument_alignment(&plan))?;
    Ok(GpuProgram {
        module,
        plan,
        weights: Vec::new(),
    })
}

/// A plan that runs `prog` alone: its input parameters are the plan's inputs, its output
/// parameters the plan's outputs.
pub fn single_kernel_plan(prog: &LoopProgram, node: &str) -> ExecPlan {
    let (mut inputs, mut outputs, mut args) = (Vec::new(), Vec::new(), Vec::new());
    for b in prog.params() {
        let sig = TensorSig {
            name: b.name.clone(),
            dtype: b.dtype,
            shape: vec![b.len],
        };
        if b.role == BufRole::Input {
            args.push(Slot::Input {
                index: inputs.len(),
            });
            inputs.push(sig);
        } else {
            args.push(Slot::Output {
                index: outputs.len(),
            });
            outputs.push(sig);
        }
    }
    ExecPlan {
        inputs,
        outputs,
        weight_bytes: 0,
        workspace_bytes: 0,
        constant_bytes: 0,
        steps: vec![Step {
            kernel: prog.name.clone(),
            node: node.into(),
            args,
            parallel_extent: 1,
            work: prog.work(),
            once: false,
            product_flops: 0,
        }],
    }
}

/// One task's standing in the database after an import.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TaskStanding {
    pub task: String,
    pub workload: String,
    /// How many kernels of the model compute this workload.
    pub weight: usize,
    /// Records of the task (this target and compiler).
    pub measured: usize,
    /// Of them: wrong, failed or timed out.
    pub rejected: usize,
    pub default_ns: Option<u64>,
    pub best_ns: Option<u64>,
    pub best: Option<serde_json::Value>,
}

/// Each task of the round in `dir`: its measurements in the database at `db` so far.
pub fn round_standings(dir: &Path, db: &Path) -> Result<Vec<TaskStanding>, CompileError> {
    let round = TuneRound::read(dir)?;
    let (db, _) = TuningDb::open(db)?;
    let mut out: Vec<TaskStanding> = Vec::new();
    for c in &round.candidates {
        if out.iter().any(|s| s.workload == c.workload) {
            continue;
        }
        let recs: Vec<&Record> = db
            .records()
            .iter()
            .filter(|r| {
                r.workload == c.workload && r.target == round.target && r.compiler == round.compiler
            })
            .collect();
        let ns = |r: &Record| match r.outcome {
            tessera_autotune::db::Outcome::Ok { median_ns } => Some(median_ns),
            _ => None,
        };
        let default = round
            .candidates
            .iter()
            .find(|d| d.workload == c.workload && d.default)
            .map(|d| &d.schedule);
        let best = recs
            .iter()
            .filter_map(|r| Some((ns(r)?, *r)))
            .min_by_key(|(t, _)| *t);
        out.push(TaskStanding {
            task: c.task.clone(),
            workload: c.workload.clone(),
            weight: c.weight,
            measured: recs.len(),
            rejected: recs.iter().filter(|r| ns(r).is_none()).count(),
            default_ns: recs
                .iter()
                .filter(|r| Some(&r.schedule) == default)
                .find_map(|r| ns(r)),
            best_ns: best.map(|(t, _)| t),
            best: best.map(|(_, r)| r.schedule.clone()),
        });
    }
    Ok(out)
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Records appended to the database.
    pub imported: usize,
    /// Measurements already in the database (the round imported before): skipped.
    pub duplicates: usize,
    /// Candidates of the round without a measurement.
    pub unmeasured: usize,
    /// Of the imported: correct and timed.
    pub correct: usize,
    /// Bytes of a torn last line of the measurements (a killed runner) that were ignored.
    pub torn_bytes: usize,
}

/// Appends the measurements of the round in `dir` to the database at `db` (see the module
/// docs). The round must come from this compiler version for `target`; a malformed line of
/// the measurements, or one naming a candidate the round does not have, is an error naming
/// the line, and nothing is imported.
pub fn import_gpu_round(
    dir: &Path,
    db: &Path,
    target: &Target,
) -> Result<ImportReport, CompileError> {
    let round = TuneRound::read(dir)?;
    let (want_target, want_compiler) = (
        tessera_autotune::target_key(target),
        compiler_key_for(target),
    );
    if round.target != want_target || round.compiler != want_compiler {
        return Err(CompileError::Usage(format!(
            "{}: the round is for `{}` by `{}`, this compiler records `{want_target}` by \
             `{want_compiler}`",
            dir.join(ROUND_FILE).display(),
            round.target,
            round.compiler
        )));
    }
    let path = dir.join(MEASUREMENTS_FILE);
    let (measurements, torn_bytes) = read_measurements(&path)?;
    let bad = |line: usize, msg: String| {
        CompileError::Usage(format!("{}, line {line}: {msg}", path.display()))
    };
    let mut records = Vec::new();
    let mut measured = HashSet::new();
    for (line, m) in &measurements {
        let c = round
            .candidates
            .iter()
            .find(|c| c.id == m.id)
            .ok_or_else(|| bad(*line, format!("candidate `{}` is not in the round", m.id)))?;
        if !measured.insert(m.id.as_str()) {
            return Err(bad(*line, format!("candidate `{}` measured twice", m.id)));
        }
        records.push(Record {
            workload: c.workload.clone(),
            target: round.target.clone(),
            compiler: round.compiler.clone(),
            feature_version: round.feature_version,
            schedule: c.schedule.clone(),
            outcome: m.outcome.clone(),
            features: Some(c.features.clone()),
        });
    }
    let (mut db, _) = TuningDb::open(db)?;
    let mut report = ImportReport {
        unmeasured: round.candidates.len() - measured.len(),
        torn_bytes,
        ..Default::default()
    };
    for r in records {
        if db.records().contains(&r) {
            report.duplicates += 1;
            continue;
        }
        report.correct += matches!(r.outcome, tessera_autotune::db::Outcome::Ok { .. }) as usize;
        db.append(r)?;
        report.imported += 1;
    }
    Ok(report)
}

/// The measurements in `path`, each with its 1-based line, and the bytes of a torn last line
/// (one without its newline that does not parse: a runner killed mid-write).
fn read_measurements(path: &Path) -> Result<(Vec<(usize, Measurement)>, usize), CompileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CompileError::Usage(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Measurement>(line) {
            Ok(m) => out.push((i + 1, m)),
            Err(_) if i + 1 == lines.len() && !line.ends_with('\n') => {
                return Ok((out, line.len()));
            }
            Err(e) => {
                return Err(CompileError::Usage(format!(
                    "{}, line {}: {e}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok((out, 0))
}
