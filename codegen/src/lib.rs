//! # tessera-codegen
//!
//! Machine code from loop programs.
//!
//! - In: scheduled [`tessera_ir::loops::LoopProgram`]s.
//! - Through: MLIR text (scf / memref / arith / math / vector dialects, [`mlir`]) parsed and
//!   verified by melior, lowered to the LLVM dialect by an MLIR pass pipeline, translated
//!   straight into an inkwell LLVM context ([`llvm`]), optimised at O3 for a [`Target`].
//! - Out: JIT function pointers ([`jit::JitModule`]) or an object file / shared library for
//!   ahead-of-time use ([`aot`]); for a [`Target::Cuda`], a PTX module ([`ptx`]) through
//!   LLVM's NVPTX back end with CUDA's libdevice linked in.
//!
//! Invariants:
//! - Every kernel has one C ABI: `void kernel(void **args, int64_t start, int64_t end)`;
//!   `args` holds one pointer per buffer of the loop program, in order, and `[start, end)` is
//!   the sub-range of the parallel loop to run (`0..1` when the program has none).
//! - One LLVM in the process: MLIR translates into inkwell's context, never a second LLVM.
//! - This crate knows `tessera-ir` only, not the graph optimizer.

pub mod aot;
pub mod error;
pub mod jit;
pub mod llvm;
pub mod mlir;
pub mod ptx;
pub mod target;

pub use error::CodegenError;
pub use target::Target;

pub use tessera_ir::plan::KernelFn;
