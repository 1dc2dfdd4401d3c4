//! # tessera-autotune
//!
//! Schedule search for each kernel (the autotuner issue, in progress). Built so far: the
//! tuning database ([`db`]: append-only JSON lines, crash-safe, keyed by workload hash,
//! target, compiler and feature version). The search space of matrix products is
//! `tessera_passes::product::ProductTiling` (validated knobs).
//!
//! - In: a lowered [`tessera_ir::loops::LoopProgram`] and a target.
//! - Out: the best schedule found, recorded in a tuning database.
//!
//! Planned parts: the search space as data (split factors, loop order, parallel loop,
//! vector width, unroll, packing, compute-at); a versioned, documented feature vector per
//! candidate; a batched `CostModel` trait with an XGBoost implementation (xgboost-rs, already
//! a dependency so that its C++ build is exercised from day one) and an analytic fallback;
//! evolutionary search guided by the model; a measurer that validates every candidate against
//! the reference interpreter before timing it, isolated from crashes and hangs; and an
//! append-only JSON-lines tuning database keyed by workload hash, target and compiler version.
//!
//! Invariant (to keep): this crate knows `ir`, `passes`, `codegen` and the runtime's
//! measurement hooks, never the ONNX front end.

pub mod db;
pub mod error;

pub use error::TuneError;

#[doc(hidden)]
pub use xgboost_rs as xgboost;
