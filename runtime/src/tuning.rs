//! The files a tuning run exchanges with whatever measures its candidates: a kernel's
//! reference data ([`TaskData`]), the tolerance a candidate must meet
//! ([`candidate_tolerance`]), what a measurement found ([`Outcome`]), and — for GPU tuning,
//! whose candidates are compiled on the build machine and timed on a GPU machine that has
//! only this runtime — a round of candidates ([`TuneRound`], written by `tessera tune
//! --export`) and the measurements of it ([`Measurement`], written by `tessera-gpu-run
//! tune`, read by `tessera tune --import`).
//!
//! Here, not in the autotuner, because the GPU machine's runner must read and write them
//! without LLVM.

use crate::error::RuntimeError;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tessera_ir::compare::Tolerance;
use tessera_ir::{DType, Tensor};

/// What one measurement found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Agreed with the reference interpreter; the median of the timed runs.
    Ok { median_ns: u64 },
    /// Ran, but its outputs differ from the reference's.
    Wrong { detail: String },
    /// Did not build, or the measuring process died.
    Failed { detail: String },
    /// Did not finish within the limit.
    TimedOut { limit_ms: u64 },
}

/// A kernel's reference data: its input buffers' contents and the outputs the reference
/// interpreter computed from them, in parameter order.
#[derive(Clone, Debug)]
pub struct TaskData {
    pub inputs: Vec<Tensor>,
    pub expected: Vec<Tensor>,
    /// Per input: a constant of the model (a weight), evicted from the caches before each
    /// timed run. In a model each layer's weights are read once per inference, from memory
    /// (ResNet-50's are 100 MB), while its activations were just written by the kernel
    /// before; timed hot, a schedule that reads its weights more often looks as fast as one
    /// that reads them once. Tuned that way, ResNet-50's schedules won 1.0–1.27× per kernel
    /// yet the tuned model ran 4% slower than the default one.
    pub cold: Vec<bool>,
}

#[derive(Serialize, Deserialize)]
struct TensorHeader {
    dtype: String,
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct DataHeader {
    inputs: Vec<TensorHeader>,
    expected: Vec<TensorHeader>,
    #[serde(default)]
    cold: Vec<bool>,
}

impl TaskData {
    /// Writes the data: one JSON header line, then the tensors' bytes back to back.
    pub fn write(&self, path: &Path) -> Result<(), RuntimeError> {
        let head = |ts: &[Tensor]| {
            ts.iter()
                .map(|t| TensorHeader {
                    dtype: t.dtype().name().into(),
                    len: t.len(),
                })
                .collect()
        };
        let header = DataHeader {
            inputs: head(&self.inputs),
            expected: head(&self.expected),
            cold: self.cold.clone(),
        };
        let mut bytes = serde_json::to_vec(&header).map_err(|e| data_err(path, e))?;
        bytes.push(b'\n');
        for t in self.inputs.iter().chain(&self.expected) {
            bytes.extend_from_slice(t.bytes());
        }
        std::fs::write(path, bytes).map_err(|e| data_err(path, e))
    }

    /// Reads data written by [`TaskData::write`].
    pub fn read(path: &Path) -> Result<TaskData, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| data_err(path, e))?;
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| data_err(path, "no header line"))?;
        let header: DataHeader =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| data_err(path, e))?;
        let mut at = nl + 1;
        let mut take = |h: &TensorHeader| -> Result<Tensor, RuntimeError> {
            let dtype = DType::parse(&h.dtype)
                .ok_or_else(|| data_err(path, format!("dtype `{}`", h.dtype)))?;
            let n = h.len * dtype.size();
            let chunk = bytes
                .get(at..at + n)
                .ok_or_else(|| data_err(path, "truncated"))?;
            at += n;
            Tensor::from_bytes(dtype, vec![h.len], chunk.to_vec()).map_err(|e| data_err(path, e))
        };
        let inputs = header
            .inputs
            .iter()
            .map(&mut take)
            .collect::<Result<_, _>>()?;
        let expected = header
            .expected
            .iter()
            .map(&mut take)
            .collect::<Result<_, _>>()?;
        Ok(TaskData {
            inputs,
            expected,
            cold: header.cold,
        })
    }
}

fn data_err(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::TaskData {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// How close a candidate's output must be to the reference interpreter's. The interpreter
/// rounds each op once from `f64`; a compiled kernel sums in `f32` in its own order (tiles,
/// vector lanes, FMAs, a GPU's tree of partial sums), so a sum of many terms may differ by a
/// few ulps of its largest terms: the absolute part scales with the largest reference value.
/// Half-precision outputs may also round the other way: a few units of their precision
/// (f16 ≈ 1e-3, bf16 ≈ 8e-3) relative. A wrong schedule (a dropped tail, a misplaced tile)
/// is off by whole terms, far outside this.
pub fn candidate_tolerance(expected: &Tensor) -> Tolerance {
    let scale = (0..expected.len())
        .map(|i| expected.get_f64(i).abs())
        .filter(|x| x.is_finite())
        .fold(1.0f64, f64::max);
    let rtol = tessera_ir::compare::compiled_rtol(expected.dtype());
    Tolerance::Close {
        rtol,
        atol: rtol / 10.0 * scale,
    }
}

/// The format tag of a [`TuneRound`] file.
pub const ROUND_FORMAT: &str = "tessera-gpu-tune-round/1";
/// The round file's name in a round folder.
pub const ROUND_FILE: &str = "round.json";
/// The measurements' file name in a round folder.
pub const MEASUREMENTS_FILE: &str = "measurements.jsonl";

/// A round of GPU tuning candidates: what `tessera tune --export` writes for the GPU
/// machine to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneRound {
    /// [`ROUND_FORMAT`].
    pub format: String,
    /// The database keys the measurements will be recorded under.
    pub target: String,
    pub compiler: String,
    pub feature_version: u32,
    pub candidates: Vec<RoundCandidate>,
}

/// One candidate of a round: one kernel with one schedule, compiled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundCandidate {
    /// Unique within the round (and the stem of its files).
    pub id: String,
    /// The kernel's node (for reports).
    pub task: String,
    pub workload: String,
    /// How many kernels of the model compute this workload.
    #[serde(default = "one")]
    pub weight: usize,
    /// The task's reference data ([`TaskData`]), relative to the round folder.
    pub data: String,
    /// The candidate's GPU artifact (PTX; its manifest beside it, a plan of one step whose
    /// inputs and outputs are the kernel's), relative to the round folder.
    pub artifact: String,
    /// The schedule's knobs, as the database records them.
    pub schedule: serde_json::Value,
    /// The compiler's default schedule of the task (the baseline of its speed-up).
    #[serde(default)]
    pub default: bool,
    pub features: Vec<f32>,
}

fn one() -> usize {
    1
}

/// One line of the measurements file: a candidate's id and what measuring it found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub id: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl TuneRound {
    /// Reads `dir`'s round file, checking its format.
    pub fn read(dir: &Path) -> Result<TuneRound, RuntimeError> {
        let path = dir.join(ROUND_FILE);
        let err = |msg: String| RuntimeError::TaskData {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let round: TuneRound = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if round.format != ROUND_FORMAT {
            return Err(err(format!(
                "format `{}`, this runtime reads `{ROUND_FORMAT}`",
                round.format
            )));
        }
        Ok(round)
    }

    /// Checks candidate `c`'s files in `dir` without a GPU: its artifact reads, and its
    /// plan's inputs and outputs are the reference data's tensors (a round before it
    /// travels).
    pub fn check(&self, dir: &Path, c: &RoundCandidate) -> Result<(), RuntimeError> {
        let a = crate::artifact::read_gpu_artifact(&dir.join(&c.artifact))?;
        let data = TaskData::read(&dir.join(&c.data))?;
        let plan = &a.manifest.plan;
        let fits = |sigs: &[tessera_ir::plan::TensorSig], ts: &[Tensor]| {
            sigs.len() == ts.len()
                && sigs
                    .iter()
                    .zip(ts)
                    .all(|(s, t)| s.dtype == t.dtype() && s.shape == t.shape())
        };
        if !fits(&plan.inputs, &data.inputs) || !fits(&plan.outputs, &data.expected) {
            return Err(RuntimeError::TaskData {
                path: c.data.clone(),
                msg: format!(
                    "candidate `{}`: its kernel's parameters are not these",
                    c.id
                ),
            });
        }
        Ok(())
    }
}
