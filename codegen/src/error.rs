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
    #[error("target {0}")]
    Target(String),
    #[error(
        "kernel math needs CUDA's libdevice, not found ({0}); install nvidia-cuda-nvcc-cu12 \
         (scripts/setup.sh does) or set TESSERA_LIBDEVICE to libdevice.10.bc"
    )]
    NoLibdevice(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
