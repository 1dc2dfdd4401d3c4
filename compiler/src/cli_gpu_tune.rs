//! `tessera tune --target cuda:sm_NN --export DIR | --import DIR`: the build machine's half of
//! GPU tuning rounds (see `tessera::gpu_tune`); the GPU machine's half is `tessera-gpu-run
//! tune DIR`.

use crate::cli_tune::TuneArgs;
use anyhow::{Context, Result, bail};
use std::path::Path;
use tessera::Compiler;
use tessera::gpu_tune::{GpuRoundOptions, export_gpu_round, import_gpu_round, round_standings};
use tessera::tune::ModelKind;
use tessera_ir::Graph;

/// Writes a round of candidates into `dir`.
pub fn export(a: &TuneArgs, g: &Graph, c: &Compiler, dir: &Path, model: ModelKind) -> Result<()> {
    let opts = GpuRoundOptions {
        db: a.db.clone(),
        dir: dir.to_path_buf(),
        trials: a.trials,
        batch: a.batch,
        model,
        seed: a.seed,
        min_work: a.min_work,
        bindings: a.opts.bind.iter().cloned().collect(),
        model_file: a.save_cost_model.clone(),
        interpret_max_work: a.interpret_max_work,
    };
    let r = export_gpu_round(g, c, &opts)
        .with_context(|| format!("exporting a round into {}", dir.display()))?;
    for (t, n) in r.tasks.iter().zip(&r.per_task) {
        println!(
            "{}",
            serde_json::json!({"task": t.name, "workload": t.workload, "weight": t.weight, "candidates": n})
        );
    }
    let total: usize = r.per_task.iter().sum();
    if r.rejected > 0 {
        eprintln!(
            "warning: the reference interpreter rejected {} candidates (recorded as wrong)",
            r.rejected
        );
    }
    eprintln!(
        "wrote {total} candidates of {} tasks ({:.1} MB) to {}\n\
         next, on the GPU machine: tessera-gpu-run tune {}\n\
         then here: tessera tune {} --target {} --db {} --import {}",
        r.tasks.len(),
        r.bytes as f64 / 1e6,
        dir.display(),
        dir.display(),
        a.model.display(),
        a.opts.target.as_deref().unwrap_or("cuda:sm_90"),
        a.db.display(),
        dir.display()
    );
    Ok(())
}

/// Appends the measurements of the round in `dir` to the database and prints each task's
/// standing.
pub fn import(a: &TuneArgs, c: &Compiler, dir: &Path) -> Result<()> {
    let r = import_gpu_round(dir, &a.db, &c.target)
        .with_context(|| format!("importing the round in {}", dir.display()))?;
    if r.torn_bytes > 0 {
        eprintln!(
            "note: ignored a torn last line ({} bytes) of the measurements",
            r.torn_bytes
        );
    }
    if r.imported == 0 && r.duplicates == 0 {
        bail!("{}: no measurements", dir.display());
    }
    let standings = round_standings(dir, &a.db)?;
    for s in &standings {
        println!(
            "{}",
            serde_json::json!({
                "task": s.task,
                "workload": s.workload,
                "measured": s.measured,
                "rejected": s.rejected,
                "default_us": s.default_ns.map(|ns| ns as f64 / 1e3),
                "best_us": s.best_ns.map(|ns| ns as f64 / 1e3),
                "speedup": match (s.default_ns, s.best_ns) {
                    (Some(d), Some(b)) => Some(d as f64 / b.max(1) as f64),
                    _ => None,
                },
                "best": s.best,
            })
        );
    }
    // The tuned kernels' time in one run of the model, where every task has both times.
    let timed: Vec<_> = standings
        .iter()
        .filter_map(|s| Some((s.weight as f64, s.default_ns?, s.best_ns?)))
        .collect();
    if timed.len() == standings.len() && !timed.is_empty() {
        let total = |f: fn(&(f64, u64, u64)) -> u64| -> f64 {
            timed.iter().map(|t| t.0 * f(t) as f64 / 1e3).sum()
        };
        let (default_us, tuned_us) = (total(|t| t.1), total(|t| t.2));
        println!(
            "{}",
            serde_json::json!({
                "tuned_kernels_default_us": default_us,
                "tuned_kernels_best_us": tuned_us,
                "speedup": default_us / tuned_us.max(1e-9),
            })
        );
    }
    eprintln!(
        "imported {} measurements ({} correct), {} already in {}, {} candidates unmeasured",
        r.imported,
        r.correct,
        r.duplicates,
        a.db.display(),
        r.unmeasured
    );
    Ok(())
}
