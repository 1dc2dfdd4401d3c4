//! The passes crate's typed errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PassError {
    #[error(transparent)]
    Ir(#[from] tessera_ir::IrError),
    #[error("node `{node}` ({op}): cannot lower: {msg}")]
    Lower {
        node: String,
        op: String,
        msg: String,
    },
    #[error("schedule: {0}")]
    Schedule(String),
    #[error("after pass `{pass}`: {msg}")]
    Verify { pass: String, msg: String },
    #[error("graph optimizer: {0}")]
    Optimize(String),
}
