//! The execution plan of a compiled model: which kernel runs, in what order, on which memory.
//!
//! It is data (serialised into an AOT artifact's JSON manifest) so that the JIT executor, the
//! AOT entry point generated into a shared library, and the runtime-only runner all execute
//! exactly the same steps.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};

/// Name, element type and shape of a model input or output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSig {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSig {
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>().max(1) * self.dtype.size()
    }
}

/// Where a kernel argument lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Slot {
    /// The model's i-th input tensor.
    Input { index: usize },
    /// The model's i-th output tensor.
    Output { index: usize },
    /// `offset` bytes into the constant weight blob.
    Weight { offset: usize },
    /// `offset` bytes into the workspace (below [`ExecPlan::constant_bytes`]: a value of a
    /// run-once step, kept between runs).
    Workspace { offset: usize },
}

/// One kernel call: `kernel(args, start, end)` over sub-ranges of `0..parallel_extent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub kernel: String,
    /// The graph node this kernel computes (for error messages and profiles).
    pub node: String,
    pub args: Vec<Slot>,
    pub parallel_extent: i64,
    /// Estimated scalar statement executions of one run (see `LoopProgram::work`); the
    /// executor runs small kernels on the calling thread rather than waking the pool.
    #[serde(default)]
    pub work: u64,
    /// The step reads only weights and values of other run-once steps (e.g. a
    /// `ConstantOfShape` too large to fold into the weights): an executor runs it once, when
    /// it is created, and keeps its result in the workspace's constant region.
    #[serde(default)]
    pub once: bool,
    /// Floating-point operations of one run when the kernel is a matrix product or
    /// convolution (`2·batch·m·n·k`), 0 otherwise: profiles report such kernels' GFLOP/s.
    #[serde(default)]
    pub product_flops: u64,
}

/// A GPU kernel of a PTX module and how to launch it (one per plan step, in step order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuKernel {
    /// The `.entry` name in the PTX module (the step's kernel name).
    pub name: String,
    pub launch: crate::loops::gpu::Launch,
    /// Number of pointer parameters: the step's arguments, in order.
    pub params: usize,
    /// The tensor maps its tensor copies read through (see [`crate::loops::tma`]): the
    /// runtime encodes them for the step's arguments into one array in device memory, whose
    /// address the kernel takes after the `params` buffers. Empty: no such parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensor_maps: Vec<GpuTensorMap>,
}

/// One tensor map of a GPU kernel: the geometry to encode, over its argument `param`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuTensorMap {
    /// Which of the kernel's arguments (in parameter order) holds the tensor.
    pub param: usize,
    pub map: crate::loops::tma::TensorMap,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecPlan {
    pub inputs: Vec<TensorSig>,
    pub outputs: Vec<TensorSig>,
    /// Bytes of the constant weight blob (weights are 64-byte aligned inside it).
    pub weight_bytes: usize,
    /// Bytes of scratch memory one run needs (intermediate tensors, reused by liveness),
    /// the constant region included.
    pub workspace_bytes: usize,
    /// The first `constant_bytes` of the workspace hold the values of run-once steps
    /// ([`Step::once`]); nothing else is placed there, so they survive between runs.
    #[serde(default)]
    pub constant_bytes: usize,
    pub steps: Vec<Step>,
}

/// Alignment of every weight and workspace buffer, in bytes (a cache line; enough for AVX-512).
pub const ALIGN: usize = 64;

pub fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// The C ABI of every compiled CPU kernel: `kernel(args, start, end)` where `args` holds one
/// pointer per loop-program buffer and `[start, end)` is a sub-range of the parallel loop.
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, start: i64, end: i64);
