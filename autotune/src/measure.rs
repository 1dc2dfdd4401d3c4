//! The measurer: validates a candidate against the reference, then times it — in a child
//! process, so that a candidate that crashes or hangs cannot take the tuner with it.
//!
//! The parent ([`Measurer`]) keeps one worker process (`tessera tune-worker`, which calls
//! [`serve`]) and sends it one job per line on stdin: the scheduled kernel's text, the
//! target, and the path of the task's reference data ([`TaskData`]: the kernel's inputs
//! and the outputs the reference interpreter computed from them). The worker parses and
//! verifies the program, JIT-compiles it, runs it once on the inputs with its outputs
//! poisoned, compares every output with the reference ([`candidate_tolerance`]), and only
//! then times it (one warm-up run, then the median of repeated runs, each after evicting the
//! kernel's constant inputs from the caches — see [`TaskData::cold`]) and replies one JSON
//! line: an [`Outcome`]. If the worker dies, the candidate is `Failed` with its exit status
//! and last stderr lines; if it does not answer within the time limit it is killed and the
//! candidate is `TimedOut`. Either way a fresh worker serves the next job.

use crate::db::Outcome;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_codegen::Target;
use tessera_ir::Tensor;
use tessera_ir::compare::compare;
use tessera_ir::loops::{BufRole, LoopProgram};
pub use tessera_runtime::tuning::{TaskData, candidate_tolerance};

/// How candidates are timed, part of a tuning record's compiler key: the median of
/// repeated runs, each after evicting the kernel's constant inputs ([`TaskData::cold`]).
pub const METHOD: &str = "cold weights";

/// A deliberately broken candidate, for testing that the tuner survives one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plant {
    /// The measuring process dies of a segmentation fault while running the candidate.
    Crash,
    /// The candidate never finishes.
    Hang,
    /// The candidate's first output element is off by one.
    Wrong,
}

/// One measurement request, sent to the worker as a JSON line.
#[derive(Serialize, Deserialize)]
struct Job {
    program: String,
    data: PathBuf,
    cpu: String,
    features: String,
    threads: usize,
    min_runs: usize,
    min_time_us: u64,
    plant: Option<Plant>,
}

/// How to start a worker process (e.g. the `tessera` binary with `tune-worker`).
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Options of the measurer.
#[derive(Clone, Debug)]
pub struct MeasureConfig {
    pub worker: WorkerCommand,
    pub target: Target,
    /// Threads the candidate runs on (as in deployment).
    pub threads: usize,
    /// A candidate's whole measurement (compile, check, timing) must finish within this.
    pub timeout: Duration,
    /// Timed runs: at least this many, and at least `min_time` of them in total.
    pub min_runs: usize,
    pub min_time: Duration,
}

/// The parent side: sends jobs to a worker process and survives its death.
pub struct Measurer {
    config: MeasureConfig,
    worker: Option<Worker>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

/// The last stderr bytes of a worker kept for a failure report.
const STDERR_TAIL: usize = 2000;

impl Measurer {
    pub fn new(config: MeasureConfig) -> Measurer {
        Measurer {
            config,
            worker: None,
        }
    }

    pub fn config(&self) -> &MeasureConfig {
        &self.config
    }

    fn spawn(&self) -> Result<Worker, String> {
        let w = &self.config.worker;
        let mut child = Command::new(&w.program)
            .args(&w.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", w.program.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut err_pipe = child.stderr.take().ok_or("no stderr")?;
        let (tx, replies) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let tail = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                if t.len() > STDERR_TAIL {
                    let cut = t.len() - STDERR_TAIL;
                    let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(0);
                    t.drain(..cut);
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            replies,
            stderr,
        })
    }

    /// Validates and times `program` (a scheduled kernel) on the task data at `data`.
    pub fn measure(&mut self, program: &LoopProgram, data: &Path, plant: Option<Plant>) -> Outcome {
        let Target::Cpu { cpu, features } = &self.config.target else {
            return Outcome::Failed {
                detail: "the measurer times CPU kernels only; GPU tuning is not built yet".into(),
            };
        };
        let job = Job {
            program: program.to_string(),
            data: data.to_path_buf(),
            cpu: cpu.clone(),
            features: features.clone(),
            threads: self.config.threads,
            min_runs: self.config.min_runs,
            min_time_us: self.config.min_time.as_micros() as u64,
            plant,
        };
        let mut line = match serde_json::to_string(&job) {
            Ok(l) => l,
            Err(e) => {
                return Outcome::Failed {
                    detail: e.to_string(),
                };
            }
        };
        line.push('\n');
        if self.worker.is_none() {
            match self.spawn() {
                Ok(w) => self.worker = Some(w),
                Err(detail) => return Outcome::Failed { detail },
            }
        }
        let Some(w) = self.worker.as_mut() else {
            return Outcome::Failed {
                detail: "no worker".into(),
            };
        };
        if let Err(e) = w
            .stdin
            .write_all(line.as_bytes())
            .and_then(|_| w.stdin.flush())
        {
            return self.died(format!("sending the job: {e}"));
        }
        let deadline = Instant::now() + self.config.timeout;
        match w
            .replies
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(reply) => serde_json::from_str(&reply).unwrap_or_else(|e| Outcome::Failed {
                detail: format!("unreadable reply `{reply}`: {e}"),
            }),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Outcome::TimedOut {
                    limit_ms: self.config.timeout.as_millis() as u64,
                }
            }
            Err(RecvTimeoutError::Disconnected) => self.died(String::new()),
        }
    }

    /// The worker went away mid-job: reap it and describe how it ended.
    fn died(&mut self, context: String) -> Outcome {
        let Some(mut w) = self.worker.take() else {
            return Outcome::Failed { detail: context };
        };
        let _ = w.child.kill();
        let status = w
            .child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        // Give the stderr reader a moment to drain what the dying process wrote.
        std::thread::sleep(Duration::from_millis(20));
        let tail = w
            .stderr
            .lock()
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        let tail = tail.lines().last().unwrap_or("");
        Outcome::Failed {
            detail: format!("the measuring process died ({status}) {context} {tail}")
                .trim()
                .to_string(),
        }
    }

    fn kill(&mut self) {
        if let Some(mut w) = self.worker.take() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

impl Drop for Measurer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The worker side: answers jobs read line by line from `input` until it closes.
pub fn serve(input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    let mut cache: Option<(PathBuf, TaskData)> = None;
    let mut pools: Option<(usize, tessera_runtime::pool::ThreadPool)> = None;
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let outcome = match serde_json::from_str::<Job>(&line) {
            Ok(job) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_job(&job, &mut cache, &mut pools)
            }))
            .unwrap_or_else(|_| Outcome::Failed {
                detail: "the measurement panicked".into(),
            }),
            Err(e) => Outcome::Failed {
                detail: format!("bad job: {e}"),
            },
        };
        let reply = serde_json::to_string(&outcome).map_err(std::io::Error::other)?;
        writeln!(output, "{reply}")?;
        output.flush()?;
    }
    Ok(())
}

fn run_job(
    job: &Job,
    cache: &mut Option<(PathBuf, TaskData)>,
    pools: &mut Option<(usize, tessera_runtime::pool::ThreadPool)>,
) -> Outcome {
    let failed = |detail: String| Outcome::Failed { detail };
    let prog = match tessera_ir::loops::parse::parse_program(&job.program)
        .and_then(|p| tessera_ir::loops::verify::verify(&p).map(|_| p))
    {
        Ok(p) => p,
        Err(e) => return failed(format!("invalid program: {e}")),
    };
    let target = Target::Cpu {
        cpu: job.cpu.clone(),
        features: job.features.clone(),
    };
    let jit = match tessera_codegen::jit::JitModule::compile(&[&prog], &target) {
        Ok(j) => j,
        Err(e) => return failed(format!("does not compile: {e}")),
    };
    let Some(kernel) = jit.function(&prog.name) else {
        return failed(format!("kernel `{}` missing after compilation", prog.name));
    };
    if cache.as_ref().is_none_or(|(p, _)| *p != job.data) {
        match TaskData::read(&job.data) {
            Ok(d) => *cache = Some((job.data.clone(), d)),
            Err(e) => return failed(e.to_string()),
        }
    }
    let Some((_, data)) = cache.as_ref() else {
        return failed("no task data".into());
    };
    let mut bufs = Vec::new();
    let (mut ins, mut outs) = (data.inputs.iter(), 0usize);
    for b in prog.params() {
        let t = match b.role {
            BufRole::Input => ins.next().cloned(),
            _ => {
                outs += 1;
                Some(Tensor::poisoned(b.dtype, vec![b.len]))
            }
        };
        match t {
            Some(t) if t.dtype() == b.dtype && t.len() == b.len => bufs.push(t),
            _ => return failed(format!("buffer `{}` does not match the task data", b.name)),
        }
    }
    if outs != data.expected.len() {
        return failed("the outputs do not match the task data".into());
    }
    if pools.as_ref().is_none_or(|(n, _)| *n != job.threads) {
        *pools = Some((
            job.threads,
            tessera_runtime::pool::ThreadPool::new(job.threads),
        ));
    }
    let Some((_, pool)) = pools.as_ref() else {
        return failed("no thread pool".into());
    };
    let args: Vec<*mut u8> = bufs
        .iter_mut()
        .map(|t| t.bytes_mut().as_mut_ptr())
        .collect();
    // The constant inputs, by parameter position, to evict before each timed run.
    let cold: Vec<usize> = prog
        .params()
        .enumerate()
        .filter(|(_, b)| b.role == BufRole::Input)
        .map(|(i, _)| i)
        .zip(data.cold.iter().chain(std::iter::repeat(&false)))
        .filter_map(|(i, &c)| c.then_some(i))
        .collect();
    let (extent, work) = (prog.parallel_extent(), prog.work());
    let run_once = || {
        // SAFETY: `args` holds one pointer per parameter of `prog`, each to a buffer of the
        // declared dtype and length (checked above) that outlives every run.
        unsafe { tessera_runtime::executor::launch(pool, kernel, &args, extent, work) }
    };
    match job.plant {
        Some(Plant::Crash) => {
            // SAFETY: none — this is the planted crash the isolation test asks for: a write
            // through a null pointer, which kills this (worker) process with SIGSEGV.
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) }
        }
        Some(Plant::Hang) => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        _ => {}
    }
    run_once();
    if job.plant == Some(Plant::Wrong)
        && let Some((t, _)) = bufs
            .iter_mut()
            .zip(prog.params())
            .find(|(_, b)| b.role != BufRole::Input)
    {
        // Flip a high bit of the first element in place (`args` points into this buffer).
        let top = t.dtype().size().saturating_sub(1);
        if let Some(byte) = t.bytes_mut().get_mut(top) {
            *byte ^= 0x40;
        }
    }
    let got = bufs
        .iter()
        .zip(prog.params())
        .filter(|(_, b)| b.role != BufRole::Input);
    for ((t, b), want) in got.zip(&data.expected) {
        if let Err(e) = compare(t, want, candidate_tolerance(want)) {
            return Outcome::Wrong {
                detail: format!("output `{}`: {e}", b.name),
            };
        }
    }
    // Timing: one warm-up run, then at least `min_runs` runs and `min_time` of them in
    // total, each after evicting the constant inputs (not timed).
    run_once();
    let min_time = Duration::from_micros(job.min_time_us);
    let mut times = Vec::new();
    let mut timed = Duration::ZERO;
    while times.len() < job.min_runs.max(1) || (timed < min_time && times.len() < 10_000) {
        for &i in &cold {
            evict_from_caches(bufs[i].bytes());
        }
        let t = Instant::now();
        run_once();
        let took = t.elapsed();
        timed += took;
        times.push(took.as_nanos() as u64);
    }
    times.sort_unstable();
    Outcome::Ok {
        median_ns: times[times.len() / 2],
    }
}

/// Writes `bytes`' cache lines back and drops them from every cache level, so that the next
/// run reads them from memory (on x86-64; elsewhere a no-op: the buffers stay warm).
fn evict_from_caches(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_clflush, _mm_mfence};
        for line in bytes.chunks(64) {
            // SAFETY: `clflush` takes any address; this one points into `bytes` (SSE2, which
            // every x86-64 CPU has).
            unsafe { _mm_clflush(line.as_ptr()) };
        }
        // SAFETY: a fence has no operands (SSE2); the flushes complete before timing starts.
        unsafe { _mm_mfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
