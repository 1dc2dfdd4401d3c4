//! The runtime-only GPU runner (no LLVM, no MLIR: small enough to carry to a GPU machine).
//!
//!     tessera-gpu-run BUNDLE_DIR [RUNS | --no-gpu] [--case-limit-s S] [--budget-s S]
//!     tessera-gpu-run tune ROUND_DIR [RUNS] [--timeout-s S] [--out FILE] [--no-gpu]
//!
//! The second form measures a round of GPU tuning candidates (see [`tune`]).
//!
//! `BUNDLE_DIR/bundle.json` lists cases written by `cargo run -p tessera-examples --example
//! gpu_bundle`: a GPU artifact (manifest + PTX + weights), the graph it was compiled from,
//! and raw input bytes (or a seed to draw f32 inputs from). The reference is the graph
//! interpreter, run here on the CPU. Each case is loaded, run with outputs and workspace
//! poisoned, compared element by element with the reference, then timed (inputs on the
//! device; launches + synchronise; median of RUNS after a warm-up). A case too big for the
//! interpreter (a 4096³ product) names `check_rows`: the interpreter then runs the graph on
//! that many rows of the first input, spread over it, and those rows of the output are
//! compared. Each case runs in a child process (`tessera-gpu-run case-one BUNDLE_DIR NAME
//! RUNS`, killed after `--case-limit-s`, [`CASE_LIMIT`] by default): a kernel that faults
//! poisons its process's CUDA context, and one that hangs (a pipeline's mbarrier never
//! completing) never returns — neither may take the cases after it along. Under
//! `--budget-s`, the cases left once that much time has passed are reported as skipped
//! rather than run, so that a lent GPU's short call still gets to the baselines after the
//! runner (hangs cost a case limit each). One JSON line per case;
//! exit status 1 if any case fails or errors. `--no-gpu` only reads each case and computes
//! its reference (to check a bundle before it travels).

mod child;
mod tune;

/// The longest one case may take by default (its reference on the interpreter included:
/// at most ~3 s per case on one core; loading, checking and timing a kernel: well under a
/// second). A case that runs over has hung.
const CASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How a bundle run is limited.
#[derive(Debug, PartialEq)]
struct RunArgs {
    dir: PathBuf,
    runs: usize,
    no_gpu: bool,
    case_limit: std::time::Duration,
    /// Once this much time has passed, the cases left are skipped.
    budget: Option<std::time::Duration>,
}

impl RunArgs {
    const USAGE: &str =
        "usage: tessera-gpu-run BUNDLE_DIR [RUNS | --no-gpu] [--case-limit-s S] [--budget-s S]";

    fn parse(mut args: impl Iterator<Item = String>) -> Result<RunArgs, String> {
        let dir = args.next().ok_or(Self::USAGE)?.into();
        let mut r = RunArgs {
            dir,
            runs: 50,
            no_gpu: false,
            case_limit: CASE_LIMIT,
            budget: None,
        };
        while let Some(a) = args.next() {
            let mut seconds = |flag: &str| child::limit_arg(flag, args.next());
            match a.as_str() {
                "--no-gpu" => r.no_gpu = true,
                "--case-limit-s" => r.case_limit = seconds("--case-limit-s")?,
                "--budget-s" => r.budget = Some(seconds("--budget-s")?),
                runs => {
                    r.runs =
                        runs.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                            format!("`{runs}`: not a number of runs. {}", Self::USAGE)
                        })?
                }
            }
        }
        Ok(r)
    }
}

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_ir::Tensor;
use tessera_runtime::cuda::GpuConfig;

#[derive(Deserialize)]
struct Case {
    name: String,
    artifact: String,
    graph: String,
    inputs: Option<Vec<String>>,
    seed: u64,
    rtol: f64,
    atol: f64,
    /// Bytes the model must move at least (each input, weight and output once).
    bytes: u64,
    flops: u64,
    /// Rows of the first input (and of the output) the reference is computed for; all when
    /// absent. Only for graphs whose output rows each depend on one row of the first input.
    #[serde(default)]
    check_rows: Option<usize>,
}

/// The reference: the interpreter's outputs, for the listed rows only when `rows` is set.
struct Reference {
    outputs: Vec<Tensor>,
    rows: Option<Vec<usize>>,
    seconds: f64,
}

/// Rows `rows` of `t` (row-major, rows along the first axis).
fn gather_rows(t: &Tensor, rows: &[usize]) -> Result<Tensor, String> {
    let shape = t.shape();
    let Some(&n) = shape.first() else {
        return Err("a scalar has no rows".into());
    };
    let row_bytes = t.bytes().len() / n.max(1);
    let mut bytes = Vec::with_capacity(rows.len() * row_bytes);
    for &r in rows {
        bytes.extend_from_slice(&t.bytes()[r * row_bytes..(r + 1) * row_bytes]);
    }
    let mut sub = shape.to_vec();
    sub[0] = rows.len();
    Tensor::from_bytes(t.dtype(), sub, bytes).map_err(|e| e.to_string())
}

fn read_tensor(
    dir: &Path,
    file: &str,
    sig: &tessera_ir::plan::TensorSig,
) -> Result<Tensor, String> {
    let bytes = std::fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
    Tensor::from_bytes(sig.dtype, sig.shape.clone(), bytes).map_err(|e| format!("{file}: {e}"))
}

/// Largest |got − want| / (atol + rtol·|want|); ≤ 1 passes. NaN in `got` never passes.
fn worst(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> f64 {
    got.to_f64_vec()
        .iter()
        .zip(want.to_f64_vec())
        .map(|(&g, w)| {
            if g.is_nan() != w.is_nan() {
                f64::INFINITY
            } else if g == w || (g.is_nan() && w.is_nan()) {
                0.0
            } else {
                (g - w).abs() / (atol + rtol * w.abs())
            }
        })
        .fold(0.0, f64::max)
}

/// The case's inputs and the interpreter's outputs for them (see [`Reference`]).
fn prepare(
    dir: &Path,
    c: &Case,
    plan: &tessera_ir::plan::ExecPlan,
) -> Result<(Vec<Tensor>, Reference), String> {
    let inputs = match &c.inputs {
        Some(files) => files
            .iter()
            .zip(&plan.inputs)
            .map(|(f, s)| read_tensor(dir, f, s))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let mut rng = tessera_ir::Rng::new(c.seed);
            plan.inputs
                .iter()
                .map(|s| rng.tensor(s.dtype, s.shape.clone()))
                .collect()
        }
    };
    let text =
        std::fs::read_to_string(dir.join(&c.graph)).map_err(|e| format!("{}: {e}", c.graph))?;
    let mut graph =
        tessera_ir::text::parse_graph(&text).map_err(|e| format!("{}: {e}", c.graph))?;
    let t0 = Instant::now();
    let (rows, reference) = match c.check_rows {
        None => (
            None,
            tessera_ir::interp::run_graph(&graph, &inputs)
                .map_err(|e| format!("reference: {e}"))?,
        ),
        Some(count) => {
            // Evenly spread, the first and the last row among them.
            let n = inputs
                .first()
                .and_then(|t| t.shape().first().copied())
                .unwrap_or(0);
            let count = count.clamp(1, n.max(1));
            let rows: Vec<usize> = (0..count)
                .map(|i| {
                    if count == 1 {
                        0
                    } else {
                        i * (n - 1) / (count - 1)
                    }
                })
                .collect();
            let mut sub = inputs.clone();
            sub[0] = gather_rows(&inputs[0], &rows)?;
            let first = graph.inputs[0];
            graph.set_ty(
                first,
                tessera_ir::ValueType::new(sub[0].dtype(), sub[0].shape()),
            );
            graph
                .infer_types()
                .map_err(|e| format!("{}: {e}", c.graph))?;
            let outputs = tessera_ir::interp::run_graph(&graph, &sub)
                .map_err(|e| format!("reference: {e}"))?;
            (Some(rows), outputs)
        }
    };
    let reference = Reference {
        outputs: reference,
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((inputs, reference))
}

/// The cases of the bundle in `dir`.
fn read_cases(dir: &Path) -> Result<Vec<Case>, String> {
    let path = dir.join("bundle.json");
    std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn run_case(dir: &Path, c: &Case, runs: usize) -> Result<serde_json::Value, String> {
    let mut exe =
        tessera_runtime::artifact::load_gpu(&dir.join(&c.artifact), GpuConfig { poison: true })
            .map_err(|e| e.to_string())?;
    let plan = exe.plan().clone();
    let (inputs, reference) = prepare(dir, c, &plan)?;
    let reference_s = reference.seconds;
    let mut got = exe.run(&inputs).map_err(|e| e.to_string())?;
    if let Some(rows) = &reference.rows {
        got = got
            .iter()
            .map(|t| gather_rows(t, rows))
            .collect::<Result<_, _>>()?;
    }
    let err = got
        .iter()
        .zip(&reference.outputs)
        .map(|(g, w)| worst(g, w, c.rtol, c.atol))
        .fold(0.0, f64::max);
    exe.upload(&inputs).map_err(|e| e.to_string())?;
    let times = exe.time_runs(3, runs).map_err(|e| e.to_string())?;
    let ms = times[times.len() / 2];
    Ok(serde_json::json!({
        "case": c.name,
        "device": exe.device().name,
        "pass": err <= 1.0,
        "worst_error_over_tolerance": err,
        "kernels": plan.steps.len(),
        "reference_s": reference_s,
        "median_ms": ms,
        "gbytes_per_s": c.bytes as f64 / (ms * 1e-3) / 1e9,
        "gflops": c.flops as f64 / (ms * 1e-3) / 1e9,
    }))
}

fn main() -> std::process::ExitCode {
    let args = std::env::args().skip(1);
    match std::env::args().nth(1).as_deref() {
        Some("tune") => {
            let result = tune::TuneArgs::parse(args.skip(1)).and_then(|t| tune::run(&t));
            return match result {
                Ok(true) => std::process::ExitCode::SUCCESS,
                Ok(false) => std::process::ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some("case-one") => {
            let a: Vec<String> = args.skip(1).collect();
            let [dir, name, runs] = a.as_slice() else {
                eprintln!("usage: tessera-gpu-run case-one BUNDLE_DIR NAME RUNS");
                return std::process::ExitCode::FAILURE;
            };
            let dir = Path::new(dir);
            let line = read_cases(dir).and_then(|cases| {
                let c = cases
                    .iter()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| format!("no case `{name}`"))?;
                run_case(dir, c, runs.parse().unwrap_or(50))
            });
            let line = line
                .unwrap_or_else(|e| serde_json::json!({ "case": name, "pass": false, "error": e }));
            println!("{line}");
            return std::process::ExitCode::SUCCESS;
        }
        Some("tune-one") => {
            let a: Vec<String> = args.skip(1).collect();
            let [dir, id, runs] = a.as_slice() else {
                eprintln!("usage: tessera-gpu-run tune-one ROUND_DIR ID RUNS");
                return std::process::ExitCode::FAILURE;
            };
            let outcome = tune::one(Path::new(dir), id, runs.parse().unwrap_or(20));
            println!(
                "{}",
                serde_json::to_string(&outcome).expect("an outcome serialises")
            );
            return std::process::ExitCode::SUCCESS;
        }
        _ => {}
    }
    let run_args = match RunArgs::parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (dir, runs, no_gpu) = (run_args.dir.clone(), run_args.runs, run_args.no_gpu);
    let cases = match read_cases(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if no_gpu {
        let mut ok = true;
        for c in &cases {
            let checked = tessera_runtime::artifact::read_gpu_artifact(&dir.join(&c.artifact))
                .map_err(|e| e.to_string())
                .and_then(|a| prepare(&dir, c, &a.manifest.plan));
            ok &= checked.is_ok();
            let line = match checked {
                Ok((_, r)) => serde_json::json!({
                    "case": c.name,
                    "outputs": r.outputs.len(),
                    "rows_checked": r.rows.map(|r| r.len()),
                    "reference_s": r.seconds,
                }),
                Err(e) => serde_json::json!({ "case": c.name, "error": e }),
            };
            println!("{line}");
        }
        return if ok {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        };
    }
    if let Err(e) = tessera_runtime::cuda::probe() {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let me = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    let (dir_arg, runs_arg) = (dir.to_string_lossy(), runs.to_string());
    let (start, limit) = (Instant::now(), run_args.case_limit);
    for c in &cases {
        if let Some(budget) = run_args.budget
            && start.elapsed() >= budget
        {
            ok = false;
            let skipped = format!("skipped: the run's budget of {budget:?} is spent");
            println!(
                "{}",
                serde_json::json!({ "case": c.name, "pass": false, "error": skipped })
            );
            continue;
        }
        let args = ["case-one", &dir_arg, &c.name, &runs_arg];
        let parse = |l: &str| serde_json::from_str::<serde_json::Value>(l).ok();
        let line = child::run(&me, &args, limit, parse).unwrap_or_else(|e| {
            let error = match e {
                child::ChildError::TimedOut => format!("killed after {limit:?} (hung?)"),
                child::ChildError::Failed(detail) => detail,
            };
            serde_json::json!({ "case": c.name, "pass": false, "error": error })
        });
        ok &= line["pass"] == true;
        println!("{line}");
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_rows_takes_whole_rows() {
        let t = Tensor::from_f64(
            tessera_ir::DType::F16,
            vec![3, 2],
            &[1., 2., 3., 4., 5., 6.],
        );
        let g = gather_rows(&t, &[0, 2]).unwrap();
        assert_eq!(g.shape(), &[2, 2]);
        assert_eq!(g.to_f64_vec(), vec![1., 2., 5., 6.]);
    }

    #[test]
    fn run_args_read_limits_and_refuse_nonsense() {
        let parse = |s: &str| RunArgs::parse(s.split_whitespace().map(String::from));
        let r = parse("b 20 --case-limit-s 45 --budget-s 300").unwrap();
        assert_eq!((r.runs, r.no_gpu), (20, false));
        assert_eq!(r.case_limit, std::time::Duration::from_secs(45));
        assert_eq!(r.budget, Some(std::time::Duration::from_secs(300)));
        let r = parse("b --no-gpu").unwrap();
        assert!(r.no_gpu && r.budget.is_none() && r.case_limit == CASE_LIMIT);
        for bad in [
            "",
            "b --budget-s",
            "b --case-limit-s -1",
            "b --budget-s nan",
            "b fifty",
            "b 0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
