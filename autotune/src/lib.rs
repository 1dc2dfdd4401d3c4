//! # tessera-autotune
//!
//! Schedule search for each kernel of a model, steered by a learned cost model.
//!
//! - In: a model's lowered, unscheduled kernels ([`task::extract_tasks`] makes them tasks,
//!   with reference data from the interpreter) and a target.
//! - Out: measurements in a tuning database ([`db`]); the compiler applies the best schedule
//!   per workload (`--tuning-db`).
//!
//! The parts, one per module: the search space as data ([`space`]: knobs and values; points
//! decode to validated `KernelSchedule`s), a versioned, documented feature vector
//! ([`features`]), the batched [`model::CostModel`] trait with an XGBoost model and an
//! analytic fallback ([`model`]), the evolutionary search ([`search`]), the measurer that
//! checks every candidate against the reference interpreter's outputs before timing it, in
//! a child process with a time limit ([`measure`]), and the append-only, crash-safe tuning
//! database ([`db`]).
//!
//! Invariant: this crate knows `ir`, `passes`, `codegen` and the runtime's thread pool,
//! never the ONNX front end or the compiler driver.

pub mod db;
pub mod error;
pub mod features;
pub mod gpu_features;
pub mod gpu_space;
pub mod measure;
pub mod model;
pub mod search;
pub mod space;
pub mod task;

pub use error::TuneError;

/// The key of a target in the tuning database: the CPU name and a hash of its features.
pub fn target_key(target: &tessera_codegen::Target) -> String {
    match target {
        tessera_codegen::Target::Cpu { cpu, features } => format!(
            "{cpu}/{:08x}",
            tessera_passes::schedule::fnv1a(features.as_bytes()) as u32
        ),
        tessera_codegen::Target::Cuda { sm } => format!("cuda/sm_{sm}"),
    }
}
