//! GPU binding of loops: loops that run one iteration per thread block (`block(x)`) or per
//! thread of a block (`thread(x)`), the launch geometry that follows from them, and the
//! structural rules under which the binding means the same as the serial loops the
//! interpreter runs.
//!
//! A loop program either binds no loop (one GPU thread runs the whole body) or has this shape:
//!
//! ```text
//! for by in 0..64 block(y) {          // 0–3 perfectly nested block loops at the top
//!   for bx in 0..128 block(x) {
//!     for t in 0..256 thread(x) { … }  // the innermost block body holds only thread loops;
//!     for u in 0..64 thread(x) { … }   // siblings run one after another, a barrier between
//!     for kt in 0..32 {                // a *uniform* loop: every thread runs all of it
//!       for t in 0..256 thread(x) { … }  // (stage a tile into shared memory)
//!       for t in 0..256 thread(x) { … }  // (use it); a barrier ends each iteration
//!     }
//!   }
//! }
//! ```
//!
//! Threads of a block talk through `shared` buffers (one per block) and keep per-thread state
//! in `local` buffers (one per thread, e.g. accumulators that live across a uniform loop): see
//! [`super::BufRole`]. A write to shared memory is visible to the other threads from the next
//! thread loop on (after the barrier), never within the same one: the interpreter reports a
//! shared element touched by two threads between two barriers, one of them writing, as a race.
//!
//! **Architecture invariant:** in a program with bound loops every store sits inside a thread
//! loop; thread loops sit only directly in block or thread loops or in uniform loops (serial
//! or unrolled, constant extent) directly in those — never under a guard or a reduction — so
//! that every thread of a block reaches each barrier; an axis is bound at most once per nest.
//! Iterations of bound loops must not depend on one another except through shared memory
//! across barriers — the schedule that binds them checks that — so running them serially,
//! thread loop after thread loop, as the interpreter and the CPU backend do, computes the same
//! result as running them all at once on a GPU.

use super::{BufRole, LoopKind, LoopProgram, MAX_STATIC_SHARED_BYTES, Stmt};
use crate::error::{IrError, Result};

/// A GPU grid / block axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpuAxis {
    X,
    Y,
    Z,
}

impl GpuAxis {
    pub const ALL: [GpuAxis; 3] = [GpuAxis::X, GpuAxis::Y, GpuAxis::Z];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        ["x", "y", "z"][self.index()]
    }

    pub fn from_name(s: &str) -> Option<GpuAxis> {
        GpuAxis::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// Most threads in one block (every NVIDIA GPU since sm_20).
pub const MAX_THREADS_PER_BLOCK: u64 = 1024;
/// Most threads along each block axis.
pub const MAX_BLOCK_DIM: [u64; 3] = [1024, 1024, 64];
/// Most blocks along each grid axis.
pub const MAX_GRID_DIM: [u64; 3] = [(1 << 31) - 1, 65535, 65535];

/// How a kernel is launched: blocks per grid axis, threads per block axis, and the bytes of
/// dynamic shared memory each block gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Nonzero where the kernel's shared buffers exceed the static limit: they all live in
    /// this much dynamic shared memory, laid out by [`shared_layout`].
    #[serde(default)]
    pub dynamic_shared: u32,
}

impl Launch {
    /// One block of one thread: a program with no bound loop.
    pub const SINGLE: Launch = Launch {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        dynamic_shared: 0,
    };

    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&b| b as u64).product()
    }

    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&g| g as u64).product()
    }
}

fn err(prog: &LoopProgram, msg: String) -> IrError {
    IrError::Verify(format!("kernel `{}`: {msg}", prog.name))
}

/// True when any loop of `body` is bound to a block or thread index.
pub fn binds_gpu(body: &[Stmt]) -> bool {
    any_loop(body, &|k| k.is_gpu())
}

/// True when some loop anywhere in `body` has a kind `pred` accepts.
fn any_loop(body: &[Stmt], pred: &dyn Fn(LoopKind) -> bool) -> bool {
    super::any_stmt(body, &|s| matches!(s, Stmt::For(l) if pred(l.kind)))
}

/// Checks the structure described in the module docs and returns the launch geometry:
/// [`Launch::SINGLE`] for a program that binds no loop.
pub fn launch(prog: &LoopProgram) -> Result<Launch> {
    if !binds_gpu(&prog.body) {
        return Ok(Launch::SINGLE);
    }
    let mut grid = [1u64; 3];
    let mut block = [1u64; 3];
    let mut body = prog.body.as_slice();
    let mut grid_axes = Vec::new();
    while let [Stmt::For(l)] = body
        && let LoopKind::Block(a) = l.kind
    {
        if grid_axes.contains(&a) {
            return Err(err(prog, format!("block axis {} bound twice", a.name())));
        }
        if l.extent as u64 > MAX_GRID_DIM[a.index()] {
            return Err(err(
                prog,
                format!(
                    "block loop `{}`: {} blocks along {}",
                    l.var,
                    l.extent,
                    a.name()
                ),
            ));
        }
        grid_axes.push(a);
        grid[a.index()] = l.extent as u64;
        body = &l.body;
    }
    block_level(prog, body, &mut block)?;
    let threads: u64 = block.iter().product();
    if threads > MAX_THREADS_PER_BLOCK {
        return Err(err(
            prog,
            format!("{threads} threads per block (at most {MAX_THREADS_PER_BLOCK})"),
        ));
    }
    let to_u32 = |v: [u64; 3]| v.map(|x| x as u32);
    let (_, shared) = shared_layout(prog);
    Ok(Launch {
        grid: to_u32(grid),
        block: to_u32(block),
        dynamic_shared: match shared > MAX_STATIC_SHARED_BYTES {
            true => shared as u32,
            false => 0,
        },
    })
}

/// The most shared memory one block may have on `sm_<sm>` (static and dynamic together):
/// what the code generator allows a kernel for that GPU, and the tuner's tiles on it.
pub fn max_shared_bytes(sm: u32) -> usize {
    match sm {
        90.. => 227 * 1024,
        80 | 87 => 163 * 1024,
        86 | 89 => 99 * 1024,
        70 | 72 => 96 * 1024,
        75 => 64 * 1024,
        _ => MAX_STATIC_SHARED_BYTES,
    }
}

/// Where each shared buffer of `prog` starts in the block's shared memory (in declaration
/// order, each aligned to [`shared_alignment`]) and the bytes they take together. Beyond
/// [`MAX_STATIC_SHARED_BYTES`] the code generator places them so in dynamic shared memory.
///
/// **Architecture invariant:** one function decides the dynamic layout, for the launch
/// ([`launch`]) and the code generator alike.
pub fn shared_layout(prog: &LoopProgram) -> (Vec<(String, usize)>, usize) {
    let mut end = 0usize;
    let offsets = prog
        .buffers
        .iter()
        .filter(|b| b.role == BufRole::Shared)
        .map(|b| {
            let at = end.next_multiple_of(shared_alignment(b.len * b.dtype.size()));
            end = at + b.len * b.dtype.size();
            (b.name.clone(), at)
        })
        .collect();
    (offsets, end.next_multiple_of(16))
}

/// The alignment in bytes of a shared buffer of `bytes`: 1024 from 1 KB on — the period of
/// the 128-byte swizzle, whose tiles ([`MmaOperand::swizzle`](super::mma::MmaOperand)) are
/// laid out from a 1024-byte-aligned start — else 16 (a vector's).
pub fn shared_alignment(bytes: usize) -> usize {
    match bytes >= SWIZZLE_ALIGNMENT {
        true => SWIZZLE_ALIGNMENT,
        false => 16,
    }
}

/// The largest alignment [`shared_alignment`] gives: the 128-byte swizzle's period in bytes
/// (8 rows of 128), which the dynamic shared memory's start must have too.
pub const SWIZZLE_ALIGNMENT: usize = 1024;

/// The statements every thread of a block runs together: thread loops, and uniform loops
/// holding more of the same.
fn block_level(prog: &LoopProgram, body: &[Stmt], block: &mut [u64; 3]) -> Result<()> {
    for s in body {
        match s {
            Stmt::For(l) if matches!(l.kind, LoopKind::Thread(_)) => {
                thread_nest(prog, l, &mut Vec::new(), block)?
            }
            Stmt::For(l) if is_uniform(l.kind) => block_level(prog, &l.body, block)?,
            _ => {
                return Err(err(
                    prog,
                    "in a GPU kernel every statement of the innermost block loop must be a \
                     thread loop or a serial loop of thread loops"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// Loops that may hold thread loops: run by every thread of the block alike.
pub fn is_uniform(kind: LoopKind) -> bool {
    matches!(kind, LoopKind::Serial | LoopKind::Unroll(_))
}

/// A perfect nest of thread loops starting at `l`; nothing bound below it.
fn thread_nest(
    prog: &LoopProgram,
    l: &super::Loop,
    axes: &mut Vec<GpuAxis>,
    block: &mut [u64; 3],
) -> Result<()> {
    let LoopKind::Thread(a) = l.kind else {
        unreachable!("called on thread loops")
    };
    if axes.contains(&a) {
        return Err(err(prog, format!("thread axis {} bound twice", a.name())));
    }
    if l.extent as u64 > MAX_BLOCK_DIM[a.index()] {
        return Err(err(
            prog,
            format!(
                "thread loop `{}`: {} threads along {}",
                l.var,
                l.extent,
                a.name()
            ),
        ));
    }
    axes.push(a);
    block[a.index()] = block[a.index()].max(l.extent as u64);
    match l.body.as_slice() {
        [Stmt::For(inner)] if matches!(inner.kind, LoopKind::Thread(_)) => {
            thread_nest(prog, inner, axes, block)
        }
        body if binds_gpu(body) => Err(err(
            prog,
            format!(
                "thread loop `{}` holds a bound loop that is not its only statement",
                l.var
            ),
        )),
        body if any_loop(body, &|k| k == LoopKind::Parallel) => Err(err(
            prog,
            format!("thread loop `{}` holds a parallel loop", l.var),
        )),
        _ => Ok(()),
    }
}
