//! The runtime's typed errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("input {index} (`{name}`): expected {expected}, got {got}")]
    BadInput {
        index: usize,
        name: String,
        expected: String,
        got: String,
    },
    #[error("expected {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("artifact `{path}`: {msg}")]
    Artifact { path: String, msg: String },
    #[error("this CPU lacks features the artifact was compiled for: {0}")]
    CpuMismatch(String),
    #[error("CUDA is not available: {0}")]
    NoCuda(String),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("tuning data `{path}`: {msg}")]
    TaskData { path: String, msg: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
