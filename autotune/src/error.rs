//! Errors of the autotuner.

/// Everything the autotuner can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// The tuning database could not be read or written; `line` is 1-based (0: the file).
    #[error("tuning database {path}, line {line}: {msg}")]
    Db {
        path: String,
        line: usize,
        msg: String,
    },
}
