//! `tessera-gpu-run tune ROUND_DIR [RUNS] [--timeout-s S] [--out FILE] [--no-gpu]`: measures
//! a round of GPU tuning candidates (written by `tessera tune --target cuda:sm_NN --export`).
//!
//! Each candidate is measured in a child process (`tessera-gpu-run tune-one ROUND_DIR ID
//! RUNS`) with a time limit: a candidate that faults leaves the CUDA context unusable, and
//! one that hangs must be killable — neither may stop the round. The child loads the
//! candidate's PTX, runs it once on the task's reference inputs with its outputs poisoned,
//! compares every output with the reference ([`candidate_tolerance`]), and only then times
//! it: launches batched so that one sample takes about a millisecond (a small kernel's time
//! is not its launch overhead), the median of RUNS samples. One [`Measurement`] per line is
//! appended (and flushed) to `ROUND_DIR/measurements.jsonl` (or `--out`); candidates already
//! measured there are skipped, so a killed round resumes. `--no-gpu` only checks that every
//! candidate's files are there and fit together (before the round travels).

use crate::child::ChildError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tessera_runtime::cuda::GpuConfig;
use tessera_runtime::tuning::{
    MEASUREMENTS_FILE, Measurement, Outcome, RoundCandidate, TaskData, TuneRound,
    candidate_tolerance,
};

/// Options of a round's measurement.
#[derive(Debug)]
pub struct TuneArgs {
    pub dir: PathBuf,
    pub runs: usize,
    pub timeout: Duration,
    pub out: Option<PathBuf>,
    pub no_gpu: bool,
}

impl TuneArgs {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<TuneArgs, String> {
        let mut t = TuneArgs {
            dir: args.next().ok_or("usage: tessera-gpu-run tune ROUND_DIR [RUNS] [--timeout-s S] [--out FILE] [--no-gpu]")?.into(),
            runs: 20,
            timeout: Duration::from_secs(60),
            out: None,
            no_gpu: false,
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--no-gpu" => t.no_gpu = true,
                "--timeout-s" => t.timeout = crate::child::limit_arg("--timeout-s", args.next())?,
                "--out" => t.out = Some(args.next().ok_or("--out needs a file")?.into()),
                runs => {
                    t.runs = runs
                        .parse()
                        .map_err(|_| format!("unknown argument `{runs}`"))?
                }
            }
        }
        Ok(t)
    }
}

/// Runs the round: every candidate not measured yet, each in a child process.
pub fn run(t: &TuneArgs) -> Result<bool, String> {
    let round = TuneRound::read(&t.dir).map_err(|e| e.to_string())?;
    if t.no_gpu {
        let mut ok = true;
        for c in &round.candidates {
            if let Err(e) = round.check(&t.dir, c) {
                ok = false;
                println!(
                    "{}",
                    serde_json::json!({"id": c.id, "error": e.to_string()})
                );
            }
        }
        println!(
            "{}",
            serde_json::json!({"candidates": round.candidates.len(), "ok": ok})
        );
        return Ok(ok);
    }
    tessera_runtime::cuda::probe().map_err(|e| e.to_string())?;
    let out = t
        .out
        .clone()
        .unwrap_or_else(|| t.dir.join(MEASUREMENTS_FILE));
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    let (mut file, done) = resume(&out).map_err(io)?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    for c in round.candidates.iter().filter(|c| !done.contains(&c.id)) {
        let outcome = in_child(&me, t, c);
        let m = Measurement {
            id: c.id.clone(),
            outcome,
        };
        let line = serde_json::to_string(&m).expect("a measurement serialises");
        println!(
            "{}",
            serde_json::json!({"id": c.id, "task": c.task, "schedule": c.schedule, "outcome": m.outcome})
        );
        file.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io)?;
    }
    Ok(true)
}

/// The measurements file at `out` opened for appending, and the candidates it already has.
/// A run killed mid-write leaves a torn last line: it is cut off (its candidate is measured
/// again), or the next line would continue it.
fn resume(out: &Path) -> std::io::Result<(std::fs::File, Vec<String>)> {
    let earlier = match std::fs::read_to_string(out) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let whole = earlier.rfind('\n').map_or(0, |i| i + 1);
    let done = earlier[..whole]
        .lines()
        .filter_map(|l| serde_json::from_str::<Measurement>(l).ok())
        .map(|m| m.id)
        .collect();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)?;
    if whole < earlier.len() {
        file.set_len(whole as u64)?;
    }
    Ok((file, done))
}

/// Measures `c` in a child process with the round's time limit.
fn in_child(me: &Path, t: &TuneArgs, c: &RoundCandidate) -> Outcome {
    let dir = t.dir.to_string_lossy();
    let runs = t.runs.to_string();
    let args = ["tune-one", &dir, &c.id, &runs];
    let parse = |line: &str| serde_json::from_str::<Outcome>(line).ok();
    match crate::child::run(me, &args, t.timeout, parse) {
        Ok(outcome) => outcome,
        Err(ChildError::TimedOut) => Outcome::TimedOut {
            limit_ms: t.timeout.as_millis() as u64,
        },
        Err(ChildError::Failed(detail)) => Outcome::Failed { detail },
    }
}

/// The child's side: measures candidate `id` of the round in `dir`, prints its outcome.
pub fn one(dir: &Path, id: &str, runs: usize) -> Outcome {
    let round = match TuneRound::read(dir) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Failed {
                detail: e.to_string(),
            };
        }
    };
    let Some(c) = round.candidates.iter().find(|c| c.id == id) else {
        return Outcome::Failed {
            detail: format!("no candidate `{id}`"),
        };
    };
    measure(dir, c, runs).unwrap_or_else(|detail| Outcome::Failed { detail })
}

/// One kernel launch batch takes about this long when timed (launch overhead amortised).
const SAMPLE: Duration = Duration::from_millis(1);

fn measure(dir: &Path, c: &RoundCandidate, runs: usize) -> Result<Outcome, String> {
    let data = TaskData::read(&dir.join(&c.data)).map_err(|e| e.to_string())?;
    let mut exe =
        tessera_runtime::artifact::load_gpu(&dir.join(&c.artifact), GpuConfig { poison: true })
            .map_err(|e| e.to_string())?;
    let got = exe.run(&data.inputs).map_err(|e| e.to_string())?;
    for (n, (g, want)) in got.iter().zip(&data.expected).enumerate() {
        if let Err(e) = tessera_ir::compare::compare(g, want, candidate_tolerance(want)) {
            return Ok(Outcome::Wrong {
                detail: format!("output {n}: {e}"),
            });
        }
    }
    exe.upload(&data.inputs).map_err(|e| e.to_string())?;
    // How many launches one sample takes.
    let once = exe.time_runs(2, 3).map_err(|e| e.to_string())?[1];
    let per_sample = ((SAMPLE.as_secs_f64() * 1e3 / once.max(1e-4)) as usize).clamp(1, 1000);
    let mut samples = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        for _ in 0..per_sample {
            exe.launch_all().map_err(|e| e.to_string())?;
        }
        exe.synchronize().map_err(|e| e.to_string())?;
        samples.push(start.elapsed().as_secs_f64() / per_sample as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(Outcome::Ok {
        median_ns: (samples[samples.len() / 2] * 1e9).round() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<TuneArgs, String> {
        TuneArgs::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn arguments_parse_and_refuse_unknown_ones() {
        let t = args("round 7 --timeout-s 2.5 --out m.jsonl").unwrap();
        assert_eq!(t.dir, PathBuf::from("round"));
        assert_eq!((t.runs, t.timeout), (7, Duration::from_millis(2500)));
        assert_eq!(t.out, Some(PathBuf::from("m.jsonl")));
        assert!(!t.no_gpu);
        assert!(args("round --no-gpu").unwrap().no_gpu);
        assert!(args("").is_err());
        assert!(args("round --timeout-s").is_err());
        // (A negative or NaN limit used to reach `Duration::from_secs_f64`: a panic.)
        assert!(args("round --timeout-s -1").is_err());
        assert!(args("round --timeout-s nan").is_err());
        assert!(args("round fast").unwrap_err().contains("`fast`"));
    }

    #[test]
    fn a_resumed_round_cuts_a_torn_last_line() {
        let out = std::env::temp_dir().join(format!("tessera-resume-{}.jsonl", std::process::id()));
        let whole = "{\"id\":\"c0000\",\"status\":\"ok\",\"median_ns\":5}\n";
        // Torn right before its newline: it parses, yet it is not a whole line.
        let torn = "{\"id\":\"c0001\",\"status\":\"ok\",\"median_ns\":7}";
        std::fs::write(&out, format!("{whole}{torn}")).unwrap();
        let (mut file, done) = resume(&out).unwrap();
        assert_eq!(done, vec!["c0000".to_string()]);
        file.write_all(b"next\n").unwrap();
        drop(file);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("{whole}next\n")
        );
        let _ = std::fs::remove_file(&out);
        let (_, none) = resume(&out).unwrap();
        assert!(none.is_empty());
        let _ = std::fs::remove_file(&out);
    }

    /// Without a usable GPU (or with a bad round) a candidate's measurement is a typed
    /// `Failed` outcome naming why, never a panic.
    #[test]
    fn a_candidate_that_cannot_run_is_failed_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("tessera-gpu-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let missing = one(&dir, "c0000", 3);
        assert!(
            matches!(&missing, Outcome::Failed { detail } if detail.contains("round.json")),
            "{missing:?}"
        );
        let round = TuneRound {
            format: tessera_runtime::tuning::ROUND_FORMAT.into(),
            target: "cuda/sm_90".into(),
            compiler: "test".into(),
            feature_version: 1,
            candidates: vec![RoundCandidate {
                id: "c0000".into(),
                task: "k".into(),
                workload: "w".into(),
                weight: 1,
                data: "absent.data".into(),
                artifact: "absent.ptx".into(),
                schedule: serde_json::json!({}),
                default: true,
                features: vec![],
            }],
        };
        std::fs::write(
            dir.join(tessera_runtime::tuning::ROUND_FILE),
            serde_json::to_string(&round).unwrap(),
        )
        .unwrap();
        let unknown = one(&dir, "c0001", 3);
        assert!(matches!(&unknown, Outcome::Failed { detail } if detail.contains("c0001")));
        let absent = one(&dir, "c0000", 3);
        assert!(
            matches!(&absent, Outcome::Failed { detail } if detail.contains("absent.data")),
            "{absent:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
