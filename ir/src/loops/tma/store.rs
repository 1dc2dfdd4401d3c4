//! Tensor stores (TMA, sm_90): one thread writes a whole box of shared memory out to a
//! global tensor in the background — how Hopper kernels (CUTLASS's TMA epilogues) store an
//! output tile without their threads' scattered `st.global`s: the threads write the tile to
//! shared memory, and one of them hands it to the copy engine and goes on.
//!
//! Three statements, only in thread loops:
//!
//! - `tensor_store(f16, sw128) out[origin; extents; strides; box dims] at(coords) =
//!   src[s]` ([`TensorStore`]): the box of the tensor map (see [`super::TensorMap`]; its
//!   `src` names the output buffer written) at `coords` gets the box of shared `src` that
//!   starts at `s` — row after row, under the 128-byte swizzle with `sw128` — except its
//!   elements outside the tensor, which are not written (the hardware clips). The store is
//!   one *bulk group* of the issuing thread: it reads `src` until the thread waits for it.
//! - `fence_proxy_async` ([`AsyncProxy::Fence`]): the thread's shared stores so far become
//!   visible to the copy engine (the *async proxy*: `fence.proxy.async.shared::cta`). A
//!   tensor store may read only elements whose writer fenced after writing them — and, from
//!   another thread, only when that fence comes before the store (a barrier between, or an
//!   mbarrier arrival after the fence whose phase the issuing thread has waited for).
//! - `bulk_wait_read pending(n)` ([`AsyncProxy::WaitRead`]): the thread waits until at most
//!   `n` of its tensor stores still read shared memory (`cp.async.bulk.wait_group.read n`):
//!   only then may their source be written again — by this thread, or by another that this
//!   one releases it to (an arrival after the wait) — and every store must have been waited
//!   for when its block ends (its source is the block's shared memory).
//!
//! **What it means.** The interpreter writes the box at once, when the store is issued, and
//! checks the rules above: that each element read was written and fenced, in an order the
//! issuing thread knows of, and that nothing writes the source while a store still reads it.
//! [`TensorStore::expand`] is the per-thread meaning (a nest of guarded stores): what the CPU
//! backend runs, where the fence and the wait do nothing. The CUDA backend issues
//! `cp.async.bulk.tensor.Nd.global.shared::cta.bulk_group` and commits it as a group.
//!
//! **Architecture invariant:** a tensor store writes an output of its dtype from a shared
//! buffer of that dtype, under the same rules as a tensor copy's box and tensor (alignment,
//! box sides, rows of whole 16-byte units, 128 of them with `sw128`); the verifier checks
//! them, the interpreter the fences and waits.

use super::TensorMap;
use crate::loops::{IExpr, Stmt, VExpr};

/// `map's box at coords = src[src_at..]`: one thread's store of a shared box to a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorStore {
    /// The tensor written (its `src`: the output buffer) and the box.
    pub map: TensorMap,
    /// A shared buffer and where the box's first element is in it.
    pub src: String,
    pub src_at: IExpr,
    /// The box's first element in the tensor, innermost first (may lie outside it).
    pub coords: Vec<IExpr>,
}

impl TensorStore {
    /// Where box element `flat` (row-major in the box) is read from `src`.
    pub fn place(&self, flat: IExpr) -> IExpr {
        self.map.shared_place(&self.src_at, flat)
    }

    /// The store as ordinary loop IR: a serial nest over the box storing each element that
    /// lies inside the tensor.
    pub fn expand(&self) -> Vec<Stmt> {
        let m = &self.map;
        m.walk_box(&self.coords, |e| Stmt::If {
            cond: e.inside,
            then: vec![Stmt::Store {
                buf: m.src.clone(),
                index: e.global,
                value: VExpr::load(&self.src, self.place(e.flat)),
            }],
        })
    }

    /// The statement with `f` applied to each of its index expressions.
    pub fn map_iexprs(&self, f: &dyn Fn(&IExpr) -> IExpr) -> TensorStore {
        TensorStore {
            src_at: f(&self.src_at),
            coords: self.coords.iter().map(f).collect(),
            ..self.clone()
        }
    }
}

/// A thread's ordering of its shared memory against the copy engine.
#[derive(Clone, Debug, PartialEq)]
pub enum AsyncProxy {
    /// `fence_proxy_async`: its shared stores so far are visible to tensor stores.
    Fence,
    /// `bulk_wait_read pending(n)`: waits until at most `pending` of its tensor stores still
    /// read their source.
    WaitRead { pending: i64 },
}

/// The most tensor stores a thread may leave reading (PTX's `wait_group` operand is a small
/// immediate; CUTLASS keeps one or two).
pub const MAX_PENDING_STORES: i64 = 8;

impl AsyncProxy {
    /// The keyword of the text form.
    pub fn keyword(&self) -> &'static str {
        match self {
            AsyncProxy::Fence => "fence_proxy_async",
            AsyncProxy::WaitRead { .. } => "bulk_wait_read",
        }
    }
}

#[cfg(test)]
mod tests;
