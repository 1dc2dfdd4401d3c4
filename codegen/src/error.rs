//! The code generator's typed errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CodegenError {
    #[error("kernel `{kernel}`: {msg}")]
    Unsupported { kernel: String, msg: String },
    #[error("MLIR rejected the generated module: {0}")]
    Mlir(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error("linking the shared library failed: {0}")]
    Link(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
