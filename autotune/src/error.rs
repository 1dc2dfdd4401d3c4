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
    /// A point outside a schedule space, or a schedule that cannot be built.
    #[error("schedule space: {0}")]
    Space(String),
    /// The cost model failed to train, predict, save or load.
    #[error("cost model: {0}")]
    Model(String),
    /// The measurer could not be set up (a measurement's own failure is an `Outcome`).
    #[error("measurer: {0}")]
    Measure(String),
    /// A model's kernels could not be made into tuning tasks.
    #[error("tuning task: {0}")]
    Task(String),
    /// Reference data or a GPU round's files could not be read or written.
    #[error(transparent)]
    Data(#[from] tessera_runtime::RuntimeError),
}
