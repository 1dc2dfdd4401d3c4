//! The tensor memory accelerator (TMA, sm_90): bulk copies of whole tiles ("boxes") of a
//! global tensor into shared memory, issued by one thread and completed on an *mbarrier* —
//! how Hopper kernels (CUTLASS's, DeepGEMM's) stage the operands of their tensor cores
//! without spending the block's threads or registers on it.
//!
//! Two kinds of statement, both only in thread loops:
//!
//! - `mbarrier_init bar[i] count(n)`, `mbarrier_expect_tx bar[i] bytes(b)`,
//!   `mbarrier_arrive bar[i]`, `mbarrier_wait bar[i] parity(p)` ([`Mbarrier`]): an mbarrier
//!   is an element of a shared `i64` buffer that only these statements and tensor copies
//!   name. It counts *phases* (0, 1, 2, …). A phase completes when `n` arrivals have come
//!   (each `expect_tx` and each `arrive` is one, by its thread) and as many bytes as they
//!   announced have landed; the next phase then begins. A wait with parity `p` returns once the current phase's parity differs from `p`:
//!   the phase of parity `p` before it has completed (on a fresh barrier, waiting with parity
//!   1 returns at once — PTX's `try_wait.parity`).
//! - `tensor_copy(f16, sw128) dst[d] = src[origin; extents; strides; box dims] at(coords)
//!   mbar(bar[i])` ([`TensorCopy`]): the box of `dims` elements (innermost first) at
//!   `coords` of the tensor that starts at element `origin` of input `src` — `extents`
//!   elements along each dimension, `strides` elements between the steps of dimensions 1, 2
//!   (dimension 0 is contiguous) — lands row after row from `dst[d]` on, zeros where the box
//!   leaves the tensor (also before it: coordinates may be negative); with `sw128` under the
//!   128-byte swizzle ([`swizzle_128`]: rows of 64 two-byte elements), the layout a
//!   [swizzled](super::mma::MmaOperand::swizzle) warpgroup `mma` reads. Its bytes count
//!   towards the current phase of `bar[i]`.
//!
//! **What it means.** A tensor copy's elements are in flight until the phase it counted
//! towards has completed *and* the thread touching them has waited for that completion: the
//! interpreter reports any other access as an error (a thread that never waits on the phase
//! of its data, or waits on the wrong parity). A thread loop with waits runs its threads by
//! turns in the interpreter (`interp::coop`): a thread that waits for a phase not yet
//! complete hands the turn on; when no thread can go on, that is the hang it would be on the
//! GPU. So producers and consumers may stand anywhere in the loop — a warp-specialised
//! pipeline's consumers release buffers with `mbarrier_arrive bar[i]` (one arrival, no
//! bytes), which its producer waits for before overwriting them; a tensor copy overwriting
//! what another thread read without such a release (or a barrier) in between is a race. An
//! mbarrier must be initialised in an earlier thread loop than the one that first uses it
//! (by another thread), by one thread only, and every phase begun must be complete when its
//! block ends. The per-thread expansion ([`TensorCopy::expand`]: a nest of guarded stores,
//! done at once) is what the CPU backend runs; there the mbarrier statements do nothing,
//! and kernels whose threads release buffers to others ([`hands_over`]) are refused: it runs
//! a thread loop's threads one after another. The CUDA backend issues one
//! `cp.async.bulk.tensor` through a tensor map the runtime encodes for the kernel
//! ([`tensor_maps`]: `cuTensorMapEncodeTiled`) and `mbarrier.*` instructions.
//!
//! **Architecture invariant:** a tensor copy reads an input of its dtype into a shared buffer
//! (1024-byte aligned with `sw128`, else 128), its tensor's start and strides 16-byte
//! aligned, its box at most 256 along each side and its rows whole 16-byte units (exactly
//! 128 bytes with `sw128`). The verifier checks these; the interpreter checks the phases.

use super::mma::swizzle_128;
use super::{BinOp, CmpOp, IExpr, Loop, LoopKind, Stmt, VExpr, any_stmt, each_stmt};
use crate::dtype::DType;

/// The dtype of the buffers that hold mbarriers (one 8-byte object each).
pub const MBARRIER_DTYPE: DType = DType::I64;
/// The longest side of a box (PTX's bound).
pub const MAX_BOX_SIDE: i64 = 256;
/// Tensor ranks a copy may have (rows of a matrix, and a batch of them).
pub const RANKS: std::ops::RangeInclusive<usize> = 2..=3;
/// The alignment in bytes of a tensor's start and strides in global memory.
pub const GLOBAL_ALIGNMENT: i64 = 16;
/// The alignment in bytes of an unswizzled box in shared memory (with the swizzle: its
/// period, [`super::gpu::SWIZZLE_ALIGNMENT`]).
pub const SHARED_ALIGNMENT: i64 = 128;
/// The most bytes one phase may expect (the transaction count's 20 bits).
pub const MAX_EXPECT_BYTES: i64 = (1 << 20) - 1;
/// The most arrivals a phase may wait for.
pub const MAX_ARRIVALS: i64 = 1024;
/// Bytes of one encoded tensor map (`CUtensorMap`).
pub const TENSOR_MAP_BYTES: usize = 128;

/// What an mbarrier statement does.
#[derive(Clone, Debug, PartialEq)]
pub enum MbarrierOp {
    /// Starts phase 0, waiting for `count` arrivals.
    Init { count: i64 },
    /// One arrival that also announces `bytes` more bytes to land in the current phase.
    ExpectTx { bytes: i64 },
    /// One arrival, announcing nothing: how a consumer tells a producer that it is done
    /// with a buffer (a warp-specialised pipeline's "empty" barriers).
    Arrive,
    /// Waits until the current phase's parity differs from `parity` (0 or 1).
    Wait { parity: IExpr },
}

/// `mbarrier_<op> buf[at] …`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mbarrier {
    pub buf: String,
    pub at: IExpr,
    pub op: MbarrierOp,
}

impl Mbarrier {
    /// The statement with `f` applied to each of its index expressions.
    pub fn map_iexprs(&self, f: &dyn Fn(&IExpr) -> IExpr) -> Mbarrier {
        Mbarrier {
            buf: self.buf.clone(),
            at: f(&self.at),
            op: match &self.op {
                MbarrierOp::Wait { parity } => MbarrierOp::Wait { parity: f(parity) },
                op => op.clone(),
            },
        }
    }

    /// The keyword of the text form.
    pub fn keyword(&self) -> &'static str {
        match self.op {
            MbarrierOp::Init { .. } => "mbarrier_init",
            MbarrierOp::ExpectTx { .. } => "mbarrier_expect_tx",
            MbarrierOp::Arrive => "mbarrier_arrive",
            MbarrierOp::Wait { .. } => "mbarrier_wait",
        }
    }
}

/// Whether `body` holds a plain arrival (`mbarrier_arrive`): a thread releasing something to
/// another that waits — the handshake of a warp-specialised pipeline, whose threads cannot
/// run one after another (see `interp::coop`).
pub fn hands_over(body: &[Stmt]) -> bool {
    any_stmt(
        body,
        &|s| matches!(s, Stmt::Mbarrier(m) if m.op == MbarrierOp::Arrive),
    )
}

/// A tensor in global memory as a tensor map describes it, and the box a copy moves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TensorMap {
    /// The input buffer holding the tensor.
    pub src: String,
    pub dtype: DType,
    /// The tensor's first element in `src`.
    pub origin: i64,
    /// Elements along each dimension, innermost (contiguous) first.
    pub extents: Vec<i64>,
    /// Elements between consecutive indices of dimensions 1, 2, … (one fewer than
    /// `extents`).
    pub strides: Vec<i64>,
    /// The box's sides, innermost first.
    pub box_dims: Vec<i64>,
    /// Whether the box lands under the 128-byte swizzle.
    pub swizzle: bool,
}

impl TensorMap {
    /// Bytes one box holds (what a copy adds to its phase).
    pub fn box_bytes(&self) -> i64 {
        self.box_dims.iter().product::<i64>() * self.dtype.size() as i64
    }
}

/// `dst[dst_at..] = box at coords of map`, counted on `barrier[barrier_at]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorCopy {
    pub map: TensorMap,
    /// A shared buffer and where the box's first element lands.
    pub dst: String,
    pub dst_at: IExpr,
    /// The box's first element in the tensor, innermost first (may lie outside it).
    pub coords: Vec<IExpr>,
    pub barrier: String,
    pub barrier_at: IExpr,
}

/// The expansion's loop variable along box dimension `d`.
fn box_var(d: usize) -> String {
    format!("tma_box{d}")
}

/// One element of a box, as its expansion's serial nest walks it.
pub(crate) struct BoxElement {
    /// Its number in the box, row-major.
    pub flat: IExpr,
    /// Its index in the tensor's buffer.
    pub global: IExpr,
    /// Whether it lies inside the tensor.
    pub inside: VExpr,
}

impl TensorMap {
    /// The box at `coords` as a serial nest (variables `tma_box0`, …) around `body(element)`.
    pub(crate) fn walk_box(
        &self,
        coords: &[IExpr],
        body: impl FnOnce(BoxElement) -> Stmt,
    ) -> Vec<Stmt> {
        let (mut flat, mut global, mut inside) = (IExpr::c(0), IExpr::c(self.origin), None);
        for d in (0..self.box_dims.len()).rev() {
            let e = IExpr::var(&box_var(d));
            flat = flat.times(self.box_dims[d]).plus(e.clone());
            let coord = coords[d].clone().plus(e);
            let stride = match d {
                0 => 1,
                d => self.strides[d - 1],
            };
            global = global.plus(coord.clone().times(stride));
            let within = VExpr::bin(
                BinOp::And,
                VExpr::ICmp(CmpOp::Ge, coord.clone(), IExpr::c(0)),
                VExpr::ICmp(CmpOp::Lt, coord, IExpr::c(self.extents[d])),
            );
            inside = Some(match inside {
                None => within,
                Some(c) => VExpr::bin(BinOp::And, c, within),
            });
        }
        let inside = inside.expect("a tensor map has a box");
        let mut nest = vec![body(BoxElement {
            flat,
            global,
            inside,
        })];
        for d in 0..self.box_dims.len() {
            nest = vec![Stmt::For(Loop {
                var: box_var(d),
                extent: self.box_dims[d],
                kind: LoopKind::Serial,
                body: nest,
            })];
        }
        nest
    }

    /// Where box element `flat` (row-major in the box) lies in shared memory when the box
    /// starts at `at` there: under the swizzle with `sw128`.
    pub fn shared_place(&self, at: &IExpr, flat: IExpr) -> IExpr {
        let at = at.clone().plus(flat);
        match self.swizzle {
            true => swizzle_128(at),
            false => at,
        }
    }
}

impl TensorCopy {
    /// Where box element `flat` (row-major in the box) lands in `dst`.
    pub fn place(&self, flat: IExpr) -> IExpr {
        self.map.shared_place(&self.dst_at, flat)
    }

    /// The copy as ordinary loop IR: a serial nest over the box storing each element, or a
    /// zero where it lies outside the tensor (the load evaluated only inside).
    pub fn expand(&self) -> Vec<Stmt> {
        let m = &self.map;
        m.walk_box(&self.coords, |e| Stmt::Store {
            buf: self.dst.clone(),
            index: self.place(e.flat),
            value: VExpr::select(
                e.inside,
                VExpr::load(&m.src, e.global),
                VExpr::lit(0.0, m.dtype),
            ),
        })
    }

    /// The statement with `f` applied to each of its index expressions.
    pub fn map_iexprs(&self, f: &dyn Fn(&IExpr) -> IExpr) -> TensorCopy {
        TensorCopy {
            dst_at: f(&self.dst_at),
            coords: self.coords.iter().map(f).collect(),
            barrier_at: f(&self.barrier_at),
            ..self.clone()
        }
    }
}

/// The distinct tensor maps of `body`'s copies, in the order they first appear: the CUDA
/// kernel takes them, encoded, as an array in global memory after its buffers.
pub fn tensor_maps(body: &[Stmt]) -> Vec<TensorMap> {
    let mut out: Vec<TensorMap> = Vec::new();
    each_stmt(body, &mut |s| {
        let map = match s {
            Stmt::TensorCopy(c) => &c.map,
            Stmt::TensorStore(c) => &c.map,
            _ => return,
        };
        if !out.contains(map) {
            out.push(map.clone());
        }
    });
    out
}

/// Whether `body` has TMA statements (code for sm_90 on).
pub fn uses_tma(body: &[Stmt]) -> bool {
    any_stmt(body, &|s| {
        matches!(
            s,
            Stmt::Mbarrier(_) | Stmt::TensorCopy(_) | Stmt::TensorStore(_) | Stmt::AsyncProxy(_)
        )
    })
}

/// The mbarrier buffers of `body`: those its mbarrier statements and copies name.
pub fn mbarrier_buffers(body: &[Stmt]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    each_stmt(body, &mut |s| {
        let name = match s {
            Stmt::Mbarrier(m) => &m.buf,
            Stmt::TensorCopy(c) => &c.barrier,
            _ => return,
        };
        if !out.contains(name) {
            out.push(name.clone());
        }
    });
    out
}

pub mod store;
mod text;

pub use store::{AsyncProxy, TensorStore};

#[cfg(test)]
mod tests;
