//! # tessera
//!
//! The tensor compiler's front door: the ONNX front end, the pipeline driver and the Rust API.
//!
//! - In: ONNX model bytes ([`onnx::import`]) or a [`Graph`] built through the API.
//! - Out: an [`Executable`] (JIT, this process) or an AOT artifact ([`aot`]: shared library,
//!   JSON manifest, C header); for a `Target::Cuda`, a PTX module with its plan ([`gpu`]).
//!
//! ```no_run
//! use tessera::{Compiler, Target};
//! # fn main() -> anyhow::Result<()> {
//! let graph = tessera::onnx::import(&std::fs::read("model.onnx")?)?;
//! let exe = Compiler::new(Target::host()).compile(&graph)?;
//! let outputs = exe.run(&[tessera::Tensor::scalar_f32(1.0)])?;
//! # Ok(()) }
//! ```
//!
//! Invariant: this is the only crate that knows all the others.

pub mod aot;
pub mod conformance;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzgen;
pub mod gpu;
pub mod gpu_tune;
pub mod npy;
pub mod onnx;
pub mod peak;
pub mod pipeline;
pub mod tune;

pub use error::CompileError;
pub use pipeline::{CompileConfig, Compiler, Executable, Stages};
pub use tessera_codegen::Target;
pub use tessera_ir::{DType, Graph, Tensor};

/// The compiler version recorded in artifacts and tuning records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
