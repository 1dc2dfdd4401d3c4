//! The tuning database: append-only JSON lines, one record per measurement.
//!
//! Each line is one [`Record`]: which workload (a stable hash of the kernel's untuned loop
//! program), on which target, by which compiler and feature-vector version, with which
//! schedule, and what happened (a time, or why there is none). Records are only ever
//! appended, one `write` of a whole line followed by `fsync`, so a run killed mid-write can
//! leave at most one torn last line; [`TuningDb::open`] cuts that line off (and says so in
//! its [`LoadReport`]). Any other unreadable line is an error naming the line and the field:
//! a database is never silently rewritten.

use crate::error::TuneError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_passes::schedule::{KernelSchedule, TunedSchedules};

pub use tessera_runtime::tuning::Outcome;

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Stable hash of the workload (see [`workload_key`]).
    pub workload: String,
    /// The target's CPU name and features.
    pub target: String,
    /// The compiler version that built the candidate.
    pub compiler: String,
    /// The version of the feature vector the cost model was trained on.
    pub feature_version: u32,
    /// The schedule's knob settings.
    pub schedule: serde_json::Value,
    pub outcome: Outcome,
    /// The candidate's feature vector (of `feature_version`), so that a cost model can learn
    /// from records of workloads it has never seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<f32>>,
}

/// What opening a database found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    pub records: usize,
    /// Bytes of a torn last line (a run killed mid-write) that were cut off.
    pub torn_bytes: usize,
}

/// An open tuning database.
pub struct TuningDb {
    path: PathBuf,
    records: Vec<Record>,
}

impl TuningDb {
    /// Opens (or creates) the database at `path` and reads every record.
    pub fn open(path: &Path) -> Result<(TuningDb, LoadReport), TuneError> {
        let io = |e: std::io::Error| TuneError::Db {
            path: path.display().to_string(),
            line: 0,
            msg: e.to_string(),
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        // Everything after the last newline is a torn write: cut it off.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let torn_bytes = bytes.len() - complete;
        let mut records = Vec::new();
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let rec: Record = serde_json::from_slice(line).map_err(|e| TuneError::Db {
                path: path.display().to_string(),
                line: i + 1,
                msg: e.to_string(),
            })?;
            records.push(rec);
        }
        if torn_bytes > 0 {
            let f = OpenOptions::new().write(true).open(path).map_err(io)?;
            f.set_len(complete as u64).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        let report = LoadReport {
            records: records.len(),
            torn_bytes,
        };
        Ok((
            TuningDb {
                path: path.to_path_buf(),
                records,
            },
            report,
        ))
    }

    /// Appends one record: one write of the whole line, then `fsync`.
    pub fn append(&mut self, rec: Record) -> Result<(), TuneError> {
        let io = |e: std::io::Error| TuneError::Db {
            path: self.path.display().to_string(),
            line: self.records.len() + 1,
            msg: e.to_string(),
        };
        let mut line = serde_json::to_vec(&rec).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(&line).map_err(io)?;
        f.sync_data().map_err(io)?;
        self.records.push(rec);
        Ok(())
    }

    /// The fastest correct record of every workload among the records `keep` accepts (the
    /// first of equal times).
    fn fastest(&self, keep: impl Fn(&Record) -> bool) -> HashMap<&str, (u64, &Record)> {
        let mut best: HashMap<&str, (u64, &Record)> = HashMap::new();
        for r in self.records.iter().filter(|r| keep(r)) {
            if let Outcome::Ok { median_ns } = r.outcome
                && best
                    .get(r.workload.as_str())
                    .is_none_or(|(t, _)| median_ns < *t)
            {
                best.insert(&r.workload, (median_ns, r));
            }
        }
        best
    }

    /// The fastest correct schedule of every workload measured on `target` by `compiler`:
    /// what `--tuning-db` applies. Records whose schedule this compiler cannot read are
    /// skipped.
    pub fn best_schedules(&self, target: &str, compiler: &str) -> TunedSchedules {
        self.fastest(|r| r.target == target && r.compiler == compiler)
            .into_iter()
            .filter_map(|(w, (_, r))| {
                let s: KernelSchedule = serde_json::from_value(r.schedule.clone()).ok()?;
                Some((w.to_string(), s))
            })
            .collect()
    }

    /// Training data from every record of `target`, `compiler` and `feature_version` that
    /// carries features, except `skip`'s workloads: (features, normalised throughput =
    /// the workload's best time / this time; 0 for rejected candidates).
    pub fn training_data(
        &self,
        target: &str,
        compiler: &str,
        feature_version: u32,
        skip: &[&str],
    ) -> (Vec<Vec<f32>>, Vec<f32>) {
        let usable = |r: &Record| {
            r.target == target
                && r.compiler == compiler
                && r.feature_version == feature_version
                && r.features.is_some()
                && !skip.contains(&r.workload.as_str())
        };
        let best = self.fastest(usable);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for r in self.records.iter().filter(|r| usable(r)) {
            let (Some(f), Some((b, _))) = (&r.features, best.get(r.workload.as_str())) else {
                continue;
            };
            xs.push(f.clone());
            ys.push(match r.outcome {
                Outcome::Ok { median_ns } => *b as f32 / median_ns.max(1) as f32,
                _ => 0.0,
            });
        }
        (xs, ys)
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The fastest correct measurement of `workload` on `target` by `compiler`.
    pub fn best(&self, workload: &str, target: &str, compiler: &str) -> Option<&Record> {
        self.fastest(|r| r.workload == workload && r.target == target && r.compiler == compiler)
            .remove(workload)
            .map(|(_, r)| r)
    }
}

pub use tessera_passes::schedule::workload_key;
