//! # tessera-runtime
//!
//! Running compiled models.
//!
//! - In: an [`tessera_ir::plan::ExecPlan`], one compiled function per step, and the weights —
//!   from the JIT, or from an AOT shared library plus its JSON manifest ([`artifact`]).
//! - Out: output tensors ([`Executor::run`]).
//!
//! Also here: the memory planner ([`memory::plan_memory`], buffer reuse by liveness), the CPU
//! thread pool ([`pool::ThreadPool`]) and the CUDA device probe ([`cuda`]).
//!
//! Invariants:
//! - No LLVM and no MLIR: this crate is what a deployment (or a GPU machine) carries.
//! - Starts and fails cleanly with no GPU: asking for CUDA without a driver is a typed error.

pub mod artifact;
pub mod cuda;
pub mod error;
pub mod executor;
pub mod memory;
pub mod pool;
pub mod tensor_map;
pub mod tuning;

pub use error::RuntimeError;
pub use executor::{ExecConfig, Executor};
