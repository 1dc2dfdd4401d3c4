//! # tessera-passes
//!
//! Graph → graph, graph → loop program, and loop program → loop program passes.
//!
//! - In: a [`tessera_ir::Graph`] (from the front end or the Rust API).
//! - Out: simplified graphs ([`fold`]), one [`tessera_ir::loops::LoopProgram`] per kernel
//!   ([`lower`]), and scheduled loop programs ([`schedule`]: split, reorder, fuse, tile,
//!   parallel, vectorize, unroll, and the default CPU schedule).
//!
//! Invariants:
//! - This crate knows only `tessera-ir`: a pass never calls code generation.
//! - Every pass preserves meaning as defined by the reference interpreters; the verifier runs
//!   after every pass in debug builds and tests ([`verify_after`]).

mod derived;
pub mod egraph;
pub mod error;
pub mod fold;
pub mod gpu_mma;
pub mod gpu_product;
pub mod gpu_reduce;
mod gpu_runs;
pub mod gpu_schedule;
mod gpu_siblings;
pub mod legalize;
pub mod lower;
pub mod product;
pub mod rules;
pub mod schedule;
pub mod views;
pub mod winograd;

pub use error::PassError;

use tessera_ir::loops::LoopProgram;

/// Runs the loop-IR verifier after a pass in debug builds (always in tests), naming the pass.
pub fn verify_after(pass: &str, prog: &LoopProgram) -> Result<(), PassError> {
    if cfg!(debug_assertions) {
        tessera_ir::loops::verify::verify(prog).map_err(|e| PassError::Verify {
            pass: pass.to_string(),
            msg: e.to_string(),
        })?;
    }
    Ok(())
}
