//! The compiler's typed errors (the CLI wraps them with anyhow; library users match on them).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CompileError {
    #[error(transparent)]
    Ir(#[from] tessera_ir::IrError),
    #[error(transparent)]
    Pass(#[from] tessera_passes::PassError),
    #[error(transparent)]
    Codegen(#[from] tessera_codegen::CodegenError),
    #[error(transparent)]
    Runtime(#[from] tessera_runtime::RuntimeError),
    #[error(transparent)]
    Tune(#[from] tessera_autotune::TuneError),
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}
