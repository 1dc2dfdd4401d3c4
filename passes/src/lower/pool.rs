//! Pooling (MaxPool, AveragePool, GlobalAveragePool): loop nests around
//! [`Reduce`](tessera_ir::loops::Reduce) statements over each output point's window, or its
//! windows unrolled.

use super::nn::{int_min, reduce_stmt};
use super::window::{Axis, RowPass, Span, Tap, Window2, chained};
use super::{Builder, NodeCx, idx, in_range, nest, serial_for};
use crate::error::PassError;
use tessera_ir::infer::Window;
use tessera_ir::loops::{BinOp, CmpOp, IExpr, ReduceOp, Stmt, VExpr};
use tessera_ir::{DType, OpKind};

/// MaxPool / AveragePool over NCHW with pads, strides, dilations and ceil mode.
///
/// Windows of up to [`MAX_UNROLLED_TAPS`] taps are unrolled ([`Window2`]): border rows
/// written out with only their valid taps, and in each row's column loop only the taps that
/// can reach the padding checked (masked loads in vector code) — the interior of a 3×3/2 max
/// pool is nine strided loads and eight maxima a vector. Larger windows reduce over their
/// taps in a loop ([`pool_taps_loop`]).
pub(crate) fn pool(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let xs = cx.shape(0);
    let (h, w) = (xs[2], xs[3]);
    let win = Window::from_node(cx.node, &[h, w], None).map_err(|e| cx.err(e))?;
    if win.kernel[0] * win.kernel[1] > MAX_UNROLLED_TAPS {
        return pool_taps_loop(cx, b, &win);
    }
    let (oh, ow) = (cx.out_shape[2], cx.out_shape[3]);
    let axis = |d: usize, size, out| Axis {
        size,
        out,
        kernel: win.kernel[d],
        stride: win.strides[d] as i64,
        dilation: win.dilations[d] as i64,
        pad: win.pads[d] as i64,
    };
    let window = Window2 {
        rows: axis(0, h, oh),
        cols: axis(1, w, ow),
    };
    // Where count_include_pad counts taps: inside the padded input.
    let padded = Window2 {
        rows: Axis {
            size: h + win.pads[0] + win.pads[2],
            pad: 0,
            ..window.rows
        },
        cols: Axis {
            size: w + win.pads[1] + win.pads[3],
            pad: 0,
            ..window.cols
        },
    };
    let include_pad = cx.flag("count_include_pad")?;
    let is_max = cx.node.op == OpKind::MaxPool;
    let dt = cx.out_dtype;
    let dims = b.dims(&[xs[0] * xs[1]]);
    let c = idx(&dims)[0].clone();
    let element = |_: &mut Builder, oy: &Span, ox: &Span| {
        let taps = window.taps(oy, ox);
        let read = |t: &Tap| {
            let index = c
                .clone()
                .times(h as i64)
                .plus(t.iy.clone())
                .times(w as i64)
                .plus(t.ix.clone());
            VExpr::load(cx.buf(0), index)
        };
        let value = if is_max {
            let lowest = lowest(dt);
            let terms = taps.iter().map(|t| t.guard(read(t), lowest.clone()));
            chained(terms.collect(), BinOp::Max).unwrap_or(lowest)
        } else {
            let zero = VExpr::f(0.0, dt);
            let terms = taps.iter().map(|t| t.guard(read(t), zero.clone()));
            let sum = chained(terms.collect(), BinOp::Add).unwrap_or(zero);
            let counted = match include_pad {
                true => padded.taps(oy, ox),
                false => taps,
            };
            VExpr::bin(BinOp::Div, sum, tap_count(&counted, dt))
        };
        Stmt::Store {
            buf: cx.out.clone(),
            index: c
                .clone()
                .times(oh as i64)
                .plus(oy.at.clone())
                .times(ow as i64)
                .plus(ox.at.clone()),
            value,
        }
    };
    let plane = window.plane(
        b,
        1,
        &mut |b: &mut Builder, oys: &[Span], ox, pass| match pass {
            RowPass::Compute => oys.iter().map(|oy| element(b, oy, ox)).collect(),
            RowPass::Finish => vec![],
        },
    );
    Ok(nest(&dims, plane))
}

/// Windows with more taps than this (a 9×9 pool) reduce over their taps in a loop.
const MAX_UNROLLED_TAPS: usize = 64;

/// The lowest value of `dt`: the identity of max.
fn lowest(dt: DType) -> VExpr {
    match dt.is_float() {
        true => VExpr::f(f64::NEG_INFINITY, dt),
        false => VExpr::i(int_min(dt), dt),
    }
}

/// How many of `taps` read inside: the unchecked ones counted at compile time, the checked
/// ones one by one.
fn tap_count(taps: &[Tap], dt: DType) -> VExpr {
    let fixed = taps.iter().filter(|t| t.inside.is_none()).count();
    let checked = taps
        .iter()
        .filter(|t| t.inside.is_some())
        .map(|t| t.guard(VExpr::f(1.0, dt), VExpr::f(0.0, dt)));
    match chained(checked.collect(), BinOp::Add) {
        Some(n) if fixed > 0 => VExpr::bin(BinOp::Add, VExpr::f(fixed as f64, dt), n),
        Some(n) => n,
        None => VExpr::f(fixed as f64, dt),
    }
}

/// A pooling whose taps are reduced in a loop (windows too large to unroll): each output row
/// is one column loop, taps that can fall in the padding read through a check.
fn pool_taps_loop(cx: &NodeCx, b: &mut Builder, win: &Window) -> Result<Vec<Stmt>, PassError> {
    let xs = cx.shape(0);
    let w = xs[3];
    let (oh, ow) = (cx.out_shape[2], cx.out_shape[3]);
    let dims = b.dims(&[xs[0] * xs[1], oh]);
    let ix = idx(&dims);
    let guard_cols = interior_columns(win, w, ow) != (0, ow as i64);
    let t = b.var();
    let body = pool_point(cx, b, win, [&ix[0], &ix[1], &IExpr::var(&t)], guard_cols)?;
    Ok(nest(&dims, vec![serial_for(&t, ow, vec![body])]))
}

/// The output columns `lo..hi` whose every tap column lies inside the image (`lo == hi`
/// when there are none).
fn interior_columns(win: &Window, w: usize, ow: usize) -> (i64, i64) {
    use crate::product::valid_outputs;
    let (s, d, p) = (
        win.strides[1] as i64,
        win.dilations[1] as i64,
        win.pads[1] as i64,
    );
    // Inside for the first tap from `lo`, for the last tap up to `hi`.
    let (lo, _) = valid_outputs(-p, s, w, ow);
    let (_, hi) = valid_outputs((win.kernel[1] as i64 - 1) * d - p, s, w, ow);
    (lo, hi.max(lo))
}

/// One output element of a pooling at `[channel, row, column]`; `guard_cols` false where
/// every tap column is known to lie inside the image.
fn pool_point(
    cx: &NodeCx,
    b: &mut Builder,
    win: &Window,
    [c, oy, ox]: [&IExpr; 3],
    guard_cols: bool,
) -> Result<Stmt, PassError> {
    let xs = cx.shape(0);
    let (h, w) = (xs[2], xs[3]);
    let (oh, ow) = (cx.out_shape[2], cx.out_shape[3]);
    let is_max = cx.node.op == OpKind::MaxPool;
    let include_pad = cx.flag("count_include_pad")?;
    let dt = cx.out_dtype;
    let (kyv, kxv) = (b.var(), b.var());
    let iy = oy
        .clone()
        .times(win.strides[0] as i64)
        .plus(IExpr::var(&kyv).times(win.dilations[0] as i64))
        .minus(IExpr::c(win.pads[0] as i64));
    let ixx = ox
        .clone()
        .times(win.strides[1] as i64)
        .plus(IExpr::var(&kxv).times(win.dilations[1] as i64))
        .minus(IExpr::c(win.pads[1] as i64));
    let planted = tessera_ir::planted::active(tessera_ir::planted::Bug::PoolPadBound);
    let in_rows = match planted {
        true => VExpr::ICmp(CmpOp::Lt, iy.clone(), IExpr::c(h as i64)),
        false => in_range(iy.clone(), h),
    };
    let inside = match (guard_cols, planted) {
        (false, _) => in_rows,
        (true, true) => VExpr::bin(
            BinOp::And,
            in_rows,
            VExpr::ICmp(CmpOp::Lt, ixx.clone(), IExpr::c(w as i64)),
        ),
        (true, false) => VExpr::bin(BinOp::And, in_rows, in_range(ixx.clone(), w)),
    };
    // Read only where `inside` holds (the `select`s below): the address needs no clamp.
    let load = VExpr::load(
        cx.buf(0),
        c.clone()
            .times(h as i64)
            .plus(iy.clone())
            .times(w as i64)
            .plus(ixx.clone()),
    );
    let out_idx = c
        .clone()
        .times((oh * ow) as i64)
        .plus(oy.clone().times(ow as i64))
        .plus(ox.clone());
    let axes = vec![(kyv, win.kernel[0] as i64), (kxv, win.kernel[1] as i64)];
    let stmt = if is_max {
        let v = VExpr::select(inside, load, lowest(dt));
        reduce_stmt(
            "m",
            dt,
            ReduceOp::Max,
            lowest(dt),
            axes,
            v,
            vec![Stmt::Store {
                buf: cx.out.clone(),
                index: out_idx,
                value: VExpr::Acc("m".into(), dt),
            }],
        )
    } else {
        let sum = VExpr::select(inside.clone(), load, VExpr::f(0.0, dt));
        // With count_include_pad the divisor counts taps inside the padded image; otherwise
        // only taps inside the image.
        let counted = if include_pad {
            VExpr::bin(
                BinOp::And,
                VExpr::ICmp(CmpOp::Lt, iy, IExpr::c((h + win.pads[2]) as i64)),
                VExpr::ICmp(CmpOp::Lt, ixx, IExpr::c((w + win.pads[3]) as i64)),
            )
        } else {
            inside
        };
        let cnt = VExpr::select(counted, VExpr::f(1.0, dt), VExpr::f(0.0, dt));
        let (ax2, ay2) = (b.var(), b.var());
        let cnt = cnt
            .subst(&axes[0].0, &IExpr::var(&ay2))
            .subst(&axes[1].0, &IExpr::var(&ax2));
        let axes2 = vec![(ay2, axes[0].1), (ax2, axes[1].1)];
        let store = Stmt::Store {
            buf: cx.out.clone(),
            index: out_idx,
            value: VExpr::bin(
                BinOp::Div,
                VExpr::Acc("s".into(), dt),
                VExpr::Acc("c".into(), dt),
            ),
        };
        reduce_stmt(
            "s",
            dt,
            ReduceOp::Sum,
            VExpr::f(0.0, dt),
            axes,
            sum,
            vec![reduce_stmt(
                "c",
                dt,
                ReduceOp::Sum,
                VExpr::f(0.0, dt),
                axes2,
                cnt,
                vec![store],
            )],
        )
    };
    Ok(stmt)
}

pub(crate) fn global_avg_pool(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let xs = cx.shape(0);
    let nc = xs[0] * xs[1];
    let hw: usize = xs[2..].iter().product();
    let dt = cx.out_dtype;
    let dims = b.dims(&[nc]);
    let o = idx(&dims)[0].clone();
    let k = b.var();
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index: o.clone(),
        value: VExpr::bin(
            BinOp::Div,
            VExpr::Acc("s".into(), dt),
            VExpr::f(hw as f64, dt),
        ),
    };
    let v = VExpr::load(cx.buf(0), o.times(hw as i64).plus(IExpr::var(&k)));
    Ok(nest(
        &dims,
        vec![reduce_stmt(
            "s",
            dt,
            ReduceOp::Sum,
            VExpr::f(0.0, dt),
            vec![(k, hw as i64)],
            v,
            vec![store],
        )],
    ))
}
