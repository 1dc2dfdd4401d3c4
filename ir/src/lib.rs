//! # tessera-ir
//!
//! The intermediate representations of tessera and their meaning.
//!
//! - In: nothing (this crate is the vocabulary everyone else speaks).
//! - Out: the **graph IR** ([`Graph`]: ops on tensors, petgraph storage, one symbolic batch
//!   dimension), the **loop IR** ([`loops::LoopProgram`]: buffers, loop nests with annotations,
//!   index expressions, loads/stores, reductions), their text forms and verifiers, and the
//!   **reference interpreters** for both ([`interp`], [`loops::interp`]).
//!
//! Invariants:
//! - This crate depends on nothing heavy: no LLVM, no MLIR, no CUDA.
//! - The interpreters define the meaning of every op and every loop construct; every pass
//!   and backend is tested against them.

pub mod col2im;
pub mod compare;
pub mod detect;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod loops;
pub mod op;
pub mod plan;
pub mod planted;
pub mod resize;
pub mod signal;
pub mod tensor;
pub mod text;
pub mod winograd;

pub use dtype::DType;
pub use error::{IrError, Result};
pub use graph::{Dim, Graph, Node, ValueId, ValueType};
pub use op::{Attr, Attrs, AttrsExt, OpKind};
pub use petgraph::stable_graph::NodeIndex;
pub use tensor::{Rng, Tensor};
