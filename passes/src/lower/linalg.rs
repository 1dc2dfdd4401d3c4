//! MatMul and Gemm as loop nests (convolutions are in `conv.rs`).
//!
//! Matrix products are lowered as one reduction over `k` per output element, in `i, j` order:
//! the default schedule vectorizes `j` (contiguous in `B` and `C`) with one accumulator per
//! lane held in a register for the whole reduction, and a GPU schedule binds `i, j` to
//! threads. Products big enough to pay for packing are rebuilt from their [`ProductSpec`]
//! by the tiled schedule instead.

use super::elementwise::coalesce;
use super::{Builder, NodeCx, serial_for, strides_of};
use crate::error::PassError;
use crate::product::{ProductSpec, convert};
use tessera_ir::AttrsExt;
use tessera_ir::loops::{BinOp, IExpr, Reduce, ReduceOp, Stmt, VExpr};

/// The accumulator of a product's reduction.
const DOT: &str = "dot";

fn mul(a: VExpr, b: VExpr) -> VExpr {
    VExpr::bin(BinOp::Mul, a, b)
}

/// An epilogue over product rows: the value transform, and the output coordinates of
/// element `(batch, i, j)`.
type RowEpilogue<'a> = (
    &'a super::Epilogue<'a>,
    &'a dyn Fn(&IExpr, &IExpr, &IExpr) -> Vec<IExpr>,
);

/// `C[i, j] = e(init(i, j) + Σ_k a(i, k) · b(k, j))` wrapped in the batch loop: one
/// reduction per output element, finished by the epilogue `e` (if any) as it is stored.
#[allow(clippy::too_many_arguments)]
fn product(
    b: &mut Builder,
    (out, dtype): (&str, tessera_ir::DType),
    (m, k, n): (usize, usize, usize),
    batch: usize,
    c_off: &dyn Fn(&IExpr) -> IExpr,
    a_val: &dyn Fn(&IExpr, &IExpr, &IExpr) -> VExpr,
    b_val: &dyn Fn(&IExpr, &IExpr, &IExpr) -> VExpr,
    init: &dyn Fn(&IExpr, &IExpr, &IExpr) -> VExpr,
    epilogue: Option<RowEpilogue>,
) -> Vec<Stmt> {
    let (bv, iv, jv, kv) = (b.var(), b.var(), b.var(), b.var());
    let (bi, ii, ji, ki) = (
        IExpr::var(&bv),
        IExpr::var(&iv),
        IExpr::var(&jv),
        IExpr::var(&kv),
    );
    let bi = if batch > 1 { bi } else { IExpr::c(0) };
    let ii = if m > 1 { ii } else { IExpr::c(0) };
    let cidx = |j: &IExpr| c_off(&bi).plus(ii.clone().times(n as i64)).plus(j.clone());
    let finish = |v: VExpr| match &epilogue {
        Some((epi, coords)) => epi(v, &coords(&bi, &ii, &ji)),
        None => v,
    };
    // Half-precision elements are summed in f32 (`accumulation_dtype`).
    let acc_dtype = crate::product::accumulation_dtype(dtype);
    let widen = |v: VExpr| convert(v, dtype, acc_dtype);
    let element = if k == 0 {
        Stmt::Store {
            buf: out.into(),
            index: cidx(&ji),
            value: finish(init(&bi, &ii, &ji)),
        }
    } else {
        Stmt::Reduce(Reduce {
            acc: DOT.into(),
            dtype: acc_dtype,
            op: ReduceOp::Sum,
            init: widen(init(&bi, &ii, &ji)),
            axes: vec![(kv.clone(), k as i64)],
            value: mul(widen(a_val(&bi, &ii, &ki)), widen(b_val(&bi, &ki, &ji))),
            body: vec![Stmt::Store {
                buf: out.into(),
                index: cidx(&ji),
                value: finish(convert(VExpr::Acc(DOT.into(), acc_dtype), acc_dtype, dtype)),
            }],
            vectorize: None,
        })
    };
    // The same product as data, in fresh variables, for the tiled schedule.
    let vars = [b.var(), b.var(), b.var(), b.var()];
    let [sb, si, sj, sk] = vars.clone().map(|v| IExpr::var(&v));
    let s_cidx = c_off(&sb).plus(si.clone().times(n as i64)).plus(sj.clone());
    b.product = Some(ProductSpec {
        batch: batch as i64,
        m: m as i64,
        n: n as i64,
        k: k as i64,
        out: out.into(),
        dtype,
        vars,
        c_index: s_cidx.clone(),
        a: a_val(&sb, &si, &sk),
        b: b_val(&sb, &sk, &sj),
        init: init(&sb, &si, &sj),
        finish: epilogue.map(|(epi, coords)| epi(VExpr::load(out, s_cidx), &coords(&sb, &si, &sj))),
        conv: None,
        a_blocks: None,
    });
    let mut body = vec![serial_for(&jv, n, vec![element])];
    if m > 1 {
        body = vec![serial_for(&iv, m, body)];
    }
    if batch > 1 {
        body = vec![serial_for(&bv, batch, body)];
    }
    body
}

pub(crate) fn matmul(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let (mut sa, mut sb) = (cx.shape(0).to_vec(), cx.shape(1).to_vec());
    // `b_perm`: B is input 1 transposed, read in place through the permuted strides.
    let b_perm = match cx.node.attrs.ints("b_perm").map_err(|e| cx.err(e))? {
        Some(_) if sb.len() < 2 => return Err(cx.err("b_perm needs a right operand of rank >= 2")),
        Some(p) => {
            let perm = tessera_ir::infer::permutation(Some(p), sb.len()).map_err(|e| cx.err(e))?;
            let strides = tessera_ir::infer::permuted(&strides_of(&sb), &perm);
            sb = tessera_ir::infer::permuted(&sb, &perm);
            Some(strides)
        }
        None => None,
    };
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    if sb.len() == 1 {
        sb.push(1);
    }
    let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let (ba, bb) = (sa[..sa.len() - 2].to_vec(), sb[..sb.len() - 2].to_vec());
    let batch_shape = tessera_ir::infer::broadcast_static(&[&ba, &bb]).map_err(|e| cx.err(e))?;
    let batch: usize = batch_shape.iter().product();
    // Batch offsets of A and B: decompose the flat batch index over the (coalesced) batch shape.
    let (mbatch, mops) = coalesce(&batch_shape, &[ba.clone(), bb.clone()]);
    let offs = move |bi: &IExpr, op: usize| -> IExpr {
        let mut off = IExpr::c(0);
        let mut rem_stride = 1usize;
        let st = strides_of(&mops[op]);
        for d in (0..mbatch.len()).rev() {
            let coord = bi
                .clone()
                .floordiv(rem_stride as i64)
                .modulo(mbatch[d] as i64);
            if mops[op][d] != 1 {
                off = off.plus(coord.times(st[d] as i64));
            }
            rem_stride *= mbatch[d];
        }
        off
    };
    let offs2 = offs.clone();
    let (a, bn) = (cx.buf(0).to_string(), cx.buf(1).to_string());
    let dt = cx.out_dtype;
    // Output coordinates for an epilogue: the batch index decomposed, then row and column.
    let out_rank = cx.out_shape.len();
    let coords = |bi: &IExpr, i: &IExpr, j: &IExpr| -> Vec<IExpr> {
        let mut c = Vec::with_capacity(out_rank);
        c.extend(batch_coords(bi, &batch_shape));
        c.push(i.clone());
        c.push(j.clone());
        c
    };
    let epilogue = match cx.epilogue {
        Some(e) if cx.shape(0).len() >= 2 && cx.shape(1).len() >= 2 => {
            Some((e, &coords as &dyn Fn(&IExpr, &IExpr, &IExpr) -> Vec<IExpr>))
        }
        Some(_) => return Err(cx.err("an epilogue needs a matrix product of rank >= 2")),
        None => None,
    };
    Ok(product(
        b,
        (&cx.out, cx.out_dtype),
        (m, k, n),
        batch,
        &|bi| bi.clone().times((m * n) as i64),
        &|bi, i, kk| {
            VExpr::load(
                &a,
                offs(bi, 0)
                    .times((m * k) as i64)
                    .plus(i.clone().times(k as i64))
                    .plus(kk.clone()),
            )
        },
        &|bi, kk, j| match &b_perm {
            Some(st) => VExpr::load(&bn, strided_index(st, &sb, &batch_shape, bi, kk, j)),
            None => VExpr::load(
                &bn,
                offs2(bi, 1)
                    .times((k * n) as i64)
                    .plus(kk.clone().times(n as i64))
                    .plus(j.clone()),
            ),
        },
        &|_, _, _| VExpr::lit(0.0, dt),
        epilogue,
    ))
}

/// The flat index of `B[batch bi, kk, j]` for a B of shape `shape` (rank >= 2) whose axes
/// lie `strides` elements apart: the batch index is decomposed over `batch` (the product's
/// broadcast batch shape, right-aligned with B's), broadcast axes contributing nothing.
fn strided_index(
    strides: &[usize],
    shape: &[usize],
    batch: &[usize],
    bi: &IExpr,
    kk: &IExpr,
    j: &IExpr,
) -> IExpr {
    let r = shape.len();
    let mut idx = kk
        .clone()
        .times(strides[r - 2] as i64)
        .plus(j.clone().times(strides[r - 1] as i64));
    for (d, coord) in batch_coords(bi, batch).into_iter().enumerate() {
        // Axis d of the batch is axis d - (batch rank - B's batch rank) of B.
        let axis = (d + r - 2).checked_sub(batch.len());
        if let Some(axis) = axis.filter(|&a| shape[a] != 1) {
            idx = idx.plus(coord.times(strides[axis] as i64));
        }
    }
    idx
}

/// The flat batch index `bi` decomposed into coordinates over `batch` (row-major).
fn batch_coords(bi: &IExpr, batch: &[usize]) -> Vec<IExpr> {
    let mut coords = Vec::with_capacity(batch.len());
    let mut rem = 1usize;
    for &d in batch.iter().rev() {
        coords.push(bi.clone().floordiv(rem as i64).modulo(d as i64));
        rem *= d;
    }
    coords.reverse();
    coords
}

pub(crate) fn gemm(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let at = |name: &str, d: f64| cx.node.attrs.float(name, d).map_err(|e| cx.err(e));
    let (alpha, beta) = (at("alpha", 1.0)?, at("beta", 1.0)?);
    let ta = cx.node.attrs.int("transA", 0).map_err(|e| cx.err(e))? != 0;
    let tb = cx.node.attrs.int("transB", 0).map_err(|e| cx.err(e))? != 0;
    let (m, n) = (cx.out_shape[0], cx.out_shape[1]);
    let k = if ta { cx.shape(0)[0] } else { cx.shape(0)[1] };
    let dt = cx.out_dtype;
    let (a, bn) = (cx.buf(0).to_string(), cx.buf(1).to_string());
    let a_val = move |_: &IExpr, i: &IExpr, kk: &IExpr| {
        let idx = if ta {
            kk.clone().times(m as i64).plus(i.clone())
        } else {
            i.clone().times(k as i64).plus(kk.clone())
        };
        let v = VExpr::load(&a, idx);
        if alpha == 1.0 {
            v
        } else {
            mul(VExpr::f(alpha, dt), v)
        }
    };
    let b_val = move |_: &IExpr, kk: &IExpr, j: &IExpr| {
        let idx = if tb {
            j.clone().times(k as i64).plus(kk.clone())
        } else {
            kk.clone().times(n as i64).plus(j.clone())
        };
        VExpr::load(&bn, idx)
    };
    let c = if cx.has(2) && beta != 0.0 {
        Some((cx.buf(2).to_string(), cx.shape(2).to_vec()))
    } else {
        None
    };
    let init = move |_: &IExpr, i: &IExpr, j: &IExpr| match &c {
        None => VExpr::lit(0.0, dt),
        Some((cb, cs)) => {
            let mut cs2 = vec![1; 2 - cs.len()];
            cs2.extend_from_slice(cs);
            let ii = if cs2[0] == 1 { IExpr::c(0) } else { i.clone() };
            let jj = if cs2[1] == 1 { IExpr::c(0) } else { j.clone() };
            let v = VExpr::load(cb, ii.times(cs2[1] as i64).plus(jj));
            if beta == 1.0 {
                v
            } else {
                mul(VExpr::f(beta, dt), v)
            }
        }
    };
    let coords = |_: &IExpr, i: &IExpr, j: &IExpr| vec![i.clone(), j.clone()];
    let epilogue = cx
        .epilogue
        .map(|e| (e, &coords as &dyn Fn(&IExpr, &IExpr, &IExpr) -> Vec<IExpr>));
    Ok(product(
        b,
        (&cx.out, cx.out_dtype),
        (m, k, n),
        1,
        &|_| IExpr::c(0),
        &a_val,
        &b_val,
        &init,
        epilogue,
    ))
}
