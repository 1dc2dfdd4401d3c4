//! The verifier's rules for TMA statements (see [`crate::loops::tma`]): mbarriers in shared
//! `i64` buffers touched by nothing else, tensor copies and stores whose tensor, box and
//! shared place the hardware accepts.

use super::{Ctx, err, iexpr};
use crate::error::Result;
use crate::loops::gpu::{SWIZZLE_ALIGNMENT, shared_alignment};
use crate::loops::mma::SWIZZLE_SPAN;
use crate::loops::tma::store::MAX_PENDING_STORES;
use crate::loops::tma::{
    AsyncProxy, GLOBAL_ALIGNMENT, MAX_ARRIVALS, MAX_BOX_SIDE, MAX_EXPECT_BYTES, MBARRIER_DTYPE,
    Mbarrier, MbarrierOp, RANKS, SHARED_ALIGNMENT, TensorCopy, TensorMap, TensorStore,
};
use crate::loops::{BufRole, IExpr};

/// Whether `buf[at]` names an mbarrier: a shared buffer of [`MBARRIER_DTYPE`].
fn mbarrier_ok(cx: &Ctx, buf: &str, at: &IExpr, what: &str) -> Result<()> {
    match cx.prog.buffer(buf) {
        Some(b) if b.role == BufRole::Shared && b.dtype == MBARRIER_DTYPE => iexpr(cx, at),
        _ => Err(err(
            cx.prog,
            format!("{what}: mbarrier `{buf}` is not a shared {MBARRIER_DTYPE} buffer"),
        )),
    }
}

pub(super) fn mbarrier(cx: &Ctx, m: &Mbarrier) -> Result<()> {
    let what = format!("{} `{}`", m.keyword(), m.buf);
    let bad = |msg: String| Err(err(cx.prog, format!("{what}: {msg}")));
    if cx.thread.is_none() {
        return bad("outside a thread loop".into());
    }
    mbarrier_ok(cx, &m.buf, &m.at, &what)?;
    match &m.op {
        MbarrierOp::Init { count } if !(1..=MAX_ARRIVALS).contains(count) => {
            bad(format!("count {count} (1 to {MAX_ARRIVALS})"))
        }
        MbarrierOp::ExpectTx { bytes } if !(0..=MAX_EXPECT_BYTES).contains(bytes) => {
            bad(format!("{bytes} bytes (0 to {MAX_EXPECT_BYTES})"))
        }
        MbarrierOp::Wait { parity } => iexpr(cx, parity),
        _ => Ok(()),
    }
}

pub(super) fn tensor_copy(cx: &Ctx, c: &TensorCopy) -> Result<()> {
    let what = format!("tensor_copy into `{}`", c.dst);
    let tensor = TensorSide {
        role: BufRole::Input,
        words: "from an input into a shared buffer",
    };
    box_rules(cx, &what, &c.map, tensor, (&c.dst, &c.dst_at), &c.coords)?;
    mbarrier_ok(cx, &c.barrier, &c.barrier_at, "tensor_copy")
}

pub(super) fn tensor_store(cx: &Ctx, c: &TensorStore) -> Result<()> {
    let what = format!("tensor_store into `{}`", c.map.src);
    let tensor = TensorSide {
        role: BufRole::Output,
        words: "from a shared buffer into an output",
    };
    box_rules(cx, &what, &c.map, tensor, (&c.src, &c.src_at), &c.coords)
}

pub(super) fn async_proxy(cx: &Ctx, a: &AsyncProxy) -> Result<()> {
    let bad = |msg: String| Err(err(cx.prog, format!("{}: {msg}", a.keyword())));
    if cx.thread.is_none() {
        return bad("outside a thread loop".into());
    }
    match a {
        AsyncProxy::WaitRead { pending } if !(0..=MAX_PENDING_STORES).contains(pending) => bad(
            format!("{pending} pending stores (0 to {MAX_PENDING_STORES})"),
        ),
        _ => Ok(()),
    }
}

/// The global side of a tensor statement: the role its tensor's buffer must have.
struct TensorSide {
    role: BufRole,
    words: &'static str,
}

/// The rules a tensor copy's or store's box obeys (see [`crate::loops::tma`]): its tensor in
/// a buffer of `tensor.role`, its shared side `shared` a shared buffer, both of the map's
/// dtype; alignment, rank, box sides.
fn box_rules(
    cx: &Ctx,
    what: &str,
    m: &TensorMap,
    tensor: TensorSide,
    (shared, shared_at): (&str, &IExpr),
    coords: &[IExpr],
) -> Result<()> {
    let prog = cx.prog;
    let bad = |msg: String| Err(err(prog, format!("{what}: {msg}")));
    if cx.thread.is_none() {
        return bad("outside a thread loop".into());
    }
    let elem = m.dtype.size() as i64;
    let (dst, src) = match (prog.buffer(shared), prog.buffer(&m.src)) {
        (Some(dst), Some(src))
            if dst.role == BufRole::Shared
                && src.role == tensor.role
                && dst.dtype == m.dtype
                && src.dtype == m.dtype =>
        {
            (dst, src)
        }
        _ => {
            return bad(format!(
                "{}, both {} (`{}` and `{shared}`)",
                tensor.words, m.dtype, m.src
            ));
        }
    };
    let rank = m.extents.len();
    if !RANKS.contains(&rank)
        || m.strides.len() + 1 != rank
        || m.box_dims.len() != rank
        || coords.len() != rank
    {
        return bad(format!(
            "rank {rank} with {} strides, {} box sides, {} coordinates ({} to {} dimensions, \
             one stride fewer)",
            m.strides.len(),
            m.box_dims.len(),
            coords.len(),
            RANKS.start(),
            RANKS.end()
        ));
    }
    if m.extents.iter().any(|&e| e < 1) || m.strides.iter().any(|&s| s < 1) {
        return bad("extents and strides must be positive".into());
    }
    if m.origin < 0
        || (m.origin * elem) % GLOBAL_ALIGNMENT != 0
        || m.strides.iter().any(|s| (s * elem) % GLOBAL_ALIGNMENT != 0)
    {
        return bad(format!(
            "the tensor's start ({}) and strides ({:?}) must be {GLOBAL_ALIGNMENT}-byte aligned",
            m.origin, m.strides
        ));
    }
    let last = m.origin
        + (m.extents[0] - 1)
        + (1..rank)
            .map(|d| (m.extents[d] - 1).saturating_mul(m.strides[d - 1]))
            .sum::<i64>();
    if last >= src.len as i64 {
        return bad(format!(
            "the tensor reaches element {last} of `{}` ({} long)",
            m.src, src.len
        ));
    }
    if m.box_dims.iter().any(|b| !(1..=MAX_BOX_SIDE).contains(b))
        || (m.box_dims[0] * elem) % GLOBAL_ALIGNMENT != 0
        || m.box_bytes() > MAX_EXPECT_BYTES
    {
        return bad(format!(
            "box {:?}: sides 1 to {MAX_BOX_SIDE}, rows of whole {GLOBAL_ALIGNMENT}-byte units",
            m.box_dims
        ));
    }
    // Where it lands: the swizzle's period (or 128 bytes) from a 1024-byte-aligned buffer.
    let aligned = shared_alignment(dst.len * dst.dtype.size()) == SWIZZLE_ALIGNMENT;
    let (period, row_ok) = match m.swizzle {
        true => (
            SWIZZLE_SPAN * 2 / elem,
            elem == 2 && m.box_dims[0] * elem == 128,
        ),
        false => (SHARED_ALIGNMENT / elem, true),
    };
    if !aligned || !row_ok || shared_at.residue(period) != Some(0) {
        return bad(format!(
            "shared at `{shared_at}`: a box needs a buffer of 1 KB or more and a start {} bytes \
             aligned{}",
            period * elem,
            match m.swizzle {
                true => ", and with sw128 rows of 128 bytes of 2-byte elements",
                false => "",
            }
        ));
    }
    iexpr(cx, shared_at)?;
    for e in coords {
        iexpr(cx, e)?;
    }
    Ok(())
}
