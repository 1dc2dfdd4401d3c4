//! Normalisation, softmax and reductions: loop nests around [`Reduce`] statements (pooling:
//! `pool.rs`).

use super::{Builder, NodeCx, clamp, idx, in_range, nest, serial_for, store_nest, strides_of};
use crate::error::PassError;
use tessera_ir::infer;
use tessera_ir::loops::{BinOp, CmpOp, IExpr, Reduce, ReduceOp, Stmt, UnOp, VExpr};
use tessera_ir::{AttrsExt, OpKind};

pub(super) fn reduce_stmt(
    acc: &str,
    dt: tessera_ir::DType,
    op: ReduceOp,
    init: VExpr,
    axes: Vec<(String, i64)>,
    value: VExpr,
    body: Vec<Stmt>,
) -> Stmt {
    Stmt::Reduce(Reduce {
        acc: acc.into(),
        dtype: dt,
        op,
        init,
        axes,
        value,
        body,
        vectorize: None,
    })
}

/// Softmax along `axis`: the max, then the exponentials written to the output, their sum
/// read back from it, and the output scaled by the sum's reciprocal — each exponential
/// computed once (recomputing it in the normalising pass cost half the kernel). LogSoftmax:
/// max, sum of exponentials, then `x - max - log(sum)`.
pub(crate) fn softmax(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let axis = infer::norm_axis(
        cx.node.attrs.int("axis", -1).map_err(|e| cx.err(e))?,
        s.len(),
    )
    .map_err(|e| cx.err(e))?;
    let (outer, len, inner) = (
        s[..axis].iter().product::<usize>(),
        s[axis],
        s[axis + 1..].iter().product::<usize>(),
    );
    let dt = cx.out_dtype;
    let dims = b.dims(&[outer, inner]);
    let ix = idx(&dims);
    let at = |k: &str| {
        ix[0]
            .clone()
            .times((len * inner) as i64)
            .plus(IExpr::var(k).times(inner as i64))
            .plus(ix[1].clone())
    };
    let (k0, k1, k2, k3) = (b.var(), b.var(), b.var(), b.var());
    let x = |k: &str| VExpr::load(cx.buf(0), at(k));
    let y = |k: &str| VExpr::load(&cx.out, at(k));
    let m = VExpr::Acc("m".into(), dt);
    let shifted = |k: &str| VExpr::un(UnOp::Exp, VExpr::bin(BinOp::Sub, x(k), m.clone()));
    let s = VExpr::Acc("s".into(), dt);
    let row = |k: String, value: VExpr| {
        let store = Stmt::Store {
            buf: cx.out.clone(),
            index: at(&k),
            value,
        };
        serial_for(&k, len, vec![store])
    };
    // LogSoftmax sums the exponentials and writes `x - max - log(sum)`; Softmax writes the
    // exponentials first and sums them back from the output.
    let (exps, summed, write) = if cx.node.op == OpKind::LogSoftmax {
        // x - max - log(sum): exact where exp(x - max) underflows.
        let value = VExpr::bin(
            BinOp::Sub,
            VExpr::bin(BinOp::Sub, x(&k3), m.clone()),
            VExpr::un(UnOp::Log, s),
        );
        (None, shifted(&k2), row(k3.clone(), value))
    } else {
        let scale = VExpr::bin(BinOp::Div, VExpr::f(1.0, dt), s);
        let normalise = row(k3.clone(), VExpr::bin(BinOp::Mul, y(&k3), scale));
        (Some(row(k1.clone(), shifted(&k1))), y(&k2), normalise)
    };
    let sum = reduce_stmt(
        "s",
        dt,
        ReduceOp::Sum,
        VExpr::f(0.0, dt),
        vec![(k2.clone(), len as i64)],
        summed,
        vec![write],
    );
    let after_max: Vec<Stmt> = exps.into_iter().chain([sum]).collect();
    let max = reduce_stmt(
        "m",
        dt,
        ReduceOp::Max,
        VExpr::f(f64::NEG_INFINITY, dt),
        vec![(k0.clone(), len as i64)],
        x(&k0),
        after_max,
    );
    Ok(nest(&dims, vec![max]))
}

/// LayerNormalization over the axes from `axis` to the end, with scale and optional bias.
pub(crate) fn layer_norm(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let axis = infer::norm_axis(
        cx.node.attrs.int("axis", -1).map_err(|e| cx.err(e))?,
        s.len(),
    )
    .map_err(|e| cx.err(e))?;
    let eps = cx
        .node
        .attrs
        .float("epsilon", 1e-5)
        .map_err(|e| cx.err(e))?;
    let (outer, inner) = (
        s[..axis].iter().product::<usize>(),
        s[axis..].iter().product::<usize>(),
    );
    // Scale and bias broadcast over the normalised dimensions.
    let norm_shape = &s[axis..];
    let param = |i: usize, k: &IExpr| {
        let ps = cx.shape(i);
        let mut aligned = vec![1; norm_shape.len() - ps.len().min(norm_shape.len())];
        aligned.extend_from_slice(ps);
        let st = strides_of(&aligned);
        let ns = strides_of(norm_shape);
        let mut off = IExpr::c(0);
        for d in 0..norm_shape.len() {
            if aligned[d] != 1 {
                off = off.plus(
                    k.clone()
                        .floordiv(ns[d] as i64)
                        .modulo(norm_shape[d] as i64)
                        .times(st[d] as i64),
                );
            }
        }
        VExpr::load(cx.buf(i), off)
    };
    Ok(normalize_rows(cx, b, outer, inner, eps, &|_, k| {
        (param(1, k), cx.has(2).then(|| param(2, k)))
    }))
}

/// Scale and optional bias of element `k` (second argument) of lane `row` (first argument).
type Affine<'a> = dyn Fn(&IExpr, &IExpr) -> (VExpr, Option<VExpr>) + 'a;

/// Normalises `rows` lanes of `inner` contiguous elements each:
/// `y = (x - mean) / sqrt(var + eps) * scale + bias`, where `affine(row, k)` gives the scale
/// and optional bias of element `k` of lane `row`. Mean and variance are two reductions.
fn normalize_rows(
    cx: &NodeCx,
    b: &mut Builder,
    rows: usize,
    inner: usize,
    eps: f64,
    affine: &Affine<'_>,
) -> Vec<Stmt> {
    let dt = cx.out_dtype;
    let dims = b.dims(&[rows]);
    let r = idx(&dims)[0].clone();
    let row = r.clone().times(inner as i64);
    let (k1, k2, k3) = (b.var(), b.var(), b.var());
    let x = |k: &str| VExpr::load(cx.buf(0), row.clone().plus(IExpr::var(k)));
    let n = VExpr::f(inner as f64, dt);
    let mean = VExpr::bin(BinOp::Div, VExpr::Acc("s".into(), dt), n.clone());
    let centered = |k: &str| VExpr::bin(BinOp::Sub, x(k), mean.clone());
    let var = VExpr::bin(BinOp::Div, VExpr::Acc("q".into(), dt), n);
    let rstd = VExpr::bin(
        BinOp::Div,
        VExpr::f(1.0, dt),
        VExpr::un(UnOp::Sqrt, VExpr::bin(BinOp::Add, var, VExpr::f(eps, dt))),
    );
    let (scale, bias) = affine(&r, &IExpr::var(&k3));
    let mut y = VExpr::bin(
        BinOp::Mul,
        VExpr::bin(BinOp::Mul, centered(&k3), rstd),
        scale,
    );
    if let Some(bias) = bias {
        y = VExpr::bin(BinOp::Add, y, bias);
    }
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index: row.clone().plus(IExpr::var(&k3)),
        value: y,
    };
    let write = serial_for(&k3, inner, vec![store]);
    let sq = VExpr::bin(BinOp::Mul, centered(&k2), centered(&k2));
    let q = reduce_stmt(
        "q",
        dt,
        ReduceOp::Sum,
        VExpr::f(0.0, dt),
        vec![(k2, inner as i64)],
        sq,
        vec![write],
    );
    nest(
        &dims,
        vec![reduce_stmt(
            "s",
            dt,
            ReduceOp::Sum,
            VExpr::f(0.0, dt),
            vec![(k1.clone(), inner as i64)],
            x(&k1),
            vec![q],
        )],
    )
}

/// ReduceSum / ReduceMean / ReduceMax over constant axes.
pub(crate) fn reduce_op(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0).to_vec();
    let has_axes = cx.has(1);
    let axes = infer::reduce_axes(
        cx.node,
        s.len(),
        cx.consts.get(1).copied().flatten(),
        has_axes,
    )
    .map_err(|e| cx.err(e))?;
    let dt = cx.out_dtype;
    let kept: Vec<usize> = s
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let dims = b.dims(&kept);
    let mut coords = idx(&dims);
    let mut raxes = Vec::new();
    for &a in &axes {
        if s[a] > 1 {
            let v = b.var();
            coords[a] = IExpr::var(&v);
            raxes.push((v, s[a] as i64));
        }
    }
    let loaded = match cx.prologue {
        Some(p) => p(&coords),
        None => VExpr::load(cx.buf(0), IExpr::linear(&coords, &strides_of(&s))),
    };
    let value = match cx.node.op {
        OpKind::ReduceL2 | OpKind::ReduceSumSquare => {
            VExpr::bin(BinOp::Mul, loaded.clone(), loaded)
        }
        OpKind::ReduceL1 => VExpr::un(UnOp::Abs, loaded),
        OpKind::ReduceLogSumExp => VExpr::un(UnOp::Exp, loaded),
        _ => loaded,
    };
    let count: usize = axes.iter().map(|&a| s[a]).product();
    let (op, init) = match cx.node.op {
        OpKind::ReduceMax if dt.is_float() => {
            let init = if tessera_ir::planted::active(tessera_ir::planted::Bug::ReduceMaxInit) {
                0.0
            } else {
                f64::NEG_INFINITY
            };
            (ReduceOp::Max, VExpr::f(init, dt))
        }
        OpKind::ReduceMax => (ReduceOp::Max, VExpr::i(int_min(dt), dt)),
        OpKind::ReduceMin if dt.is_float() => (ReduceOp::Min, VExpr::f(f64::INFINITY, dt)),
        OpKind::ReduceMin => (ReduceOp::Min, VExpr::i(int_max(dt), dt)),
        OpKind::ReduceProd => (ReduceOp::Prod, VExpr::lit(1.0, dt)),
        _ => (ReduceOp::Sum, VExpr::lit(0.0, dt)),
    };
    // What is stored from the folded value.
    let finish = |v: VExpr| match cx.node.op {
        OpKind::ReduceMean => VExpr::bin(BinOp::Div, v, VExpr::lit(count as f64, dt)),
        OpKind::ReduceL2 => VExpr::un(UnOp::Sqrt, v),
        OpKind::ReduceLogSum | OpKind::ReduceLogSumExp => VExpr::un(UnOp::Log, v),
        _ => v,
    };
    let float_only = matches!(
        cx.node.op,
        OpKind::ReduceL2 | OpKind::ReduceLogSum | OpKind::ReduceLogSumExp
    );
    if float_only && !dt.is_float() {
        return Err(cx.err(format!("{} of integers is not supported", cx.node.op)));
    }
    // A fused epilogue sees the output's coordinates (reduced axes dropped without keepdims).
    let keep = cx.node.attrs.int("keepdims", 1).map_err(|e| cx.err(e))? != 0;
    let out_coords = |kept_idx: &[IExpr]| -> Vec<IExpr> {
        kept_idx
            .iter()
            .enumerate()
            .filter(|(i, _)| keep || !axes.contains(i))
            .map(|(_, e)| e.clone())
            .collect()
    };
    let finish = |v: VExpr, kept_idx: &[IExpr]| match cx.epilogue {
        Some(epi) => epi(finish(v), &out_coords(kept_idx)),
        None => finish(v),
    };
    if count == 0 {
        // An empty reduction stores the identity, finished (e.g. log(0) = -inf).
        let dims = b.dims(&kept);
        let ix = idx(&dims);
        let out_idx = IExpr::linear(&ix, &strides_of(&kept));
        return Ok(store_nest(cx, &dims, out_idx, finish(init, &ix)));
    }
    let out_idx = IExpr::linear(&idx(&dims), &strides_of(&kept));
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index: out_idx.clone(),
        value: finish(VExpr::Acc("r".into(), dt), &idx(&dims)),
    };
    let stmt = if raxes.is_empty() {
        Stmt::Store {
            buf: cx.out.clone(),
            index: out_idx,
            value: finish(value, &idx(&dims)),
        }
    } else {
        Stmt::Reduce(Reduce {
            acc: "r".into(),
            dtype: dt,
            op,
            init,
            axes: raxes,
            value,
            body: vec![store],
            vectorize: None,
        })
    };
    Ok(nest(&dims, vec![stmt]))
}

/// The largest value of an integer dtype (the identity of `min`).
fn int_max(dt: tessera_ir::DType) -> i64 {
    use tessera_ir::DType::*;
    match dt {
        I32 => i32::MAX as i64,
        I8 => i8::MAX as i64,
        U8 => u8::MAX as i64,
        Bool => 1,
        _ => i64::MAX,
    }
}

/// The smallest value of an integer dtype (the identity of `max`).
pub(super) fn int_min(dt: tessera_ir::DType) -> i64 {
    use tessera_ir::DType::*;
    match dt {
        I32 => i32::MIN as i64,
        I8 => i8::MIN as i64,
        U8 | Bool => 0,
        _ => i64::MIN,
    }
}

/// LRN across channels: `x / (bias + alpha / size * sum of squares in the window)^beta`.
pub(crate) fn lrn(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let at = |k: &str, d: f64| cx.node.attrs.float(k, d).map_err(|e| cx.err(e));
    let (alpha, beta, bias) = (at("alpha", 1e-4)?, at("beta", 0.75)?, at("bias", 1.0)?);
    let size = cx.node.attrs.int("size", 1).map_err(|e| cx.err(e))?;
    let s = cx.shape(0);
    let (nb, c, inner) = (s[0], s[1], s[2..].iter().product::<usize>());
    let dt = cx.out_dtype;
    let dims = b.dims(&[nb, c, inner]);
    let ix = idx(&dims);
    let k = b.var();
    let lo = (size - 1) / 2;
    let ch = ix[1].clone().plus(IExpr::var(&k)).minus(IExpr::c(lo));
    let at_ch = |chan: IExpr| {
        ix[0]
            .clone()
            .times(c as i64)
            .plus(chan)
            .times(inner as i64)
            .plus(ix[2].clone())
    };
    let v = VExpr::load(cx.buf(0), at_ch(clamp(ch.clone(), c)));
    let sq = VExpr::select(
        in_range(ch, c),
        VExpr::bin(BinOp::Mul, v.clone(), v),
        VExpr::f(0.0, dt),
    );
    let x = VExpr::load(cx.buf(0), at_ch(ix[1].clone()));
    let denom = VExpr::bin(
        BinOp::Pow,
        VExpr::bin(
            BinOp::Add,
            VExpr::f(bias, dt),
            VExpr::bin(
                BinOp::Mul,
                VExpr::f(alpha / size as f64, dt),
                VExpr::Acc("s".into(), dt),
            ),
        ),
        VExpr::f(beta, dt),
    );
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index: at_ch(ix[1].clone()),
        value: VExpr::bin(BinOp::Div, x, denom),
    };
    Ok(nest(
        &dims,
        vec![reduce_stmt(
            "s",
            dt,
            ReduceOp::Sum,
            VExpr::f(0.0, dt),
            vec![(k, size)],
            sq,
            vec![store],
        )],
    ))
}

/// InstanceNormalization: normalise each (batch, channel) plane over its spatial elements,
/// then scale and shift per channel.
pub(crate) fn instance_norm(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    if s.len() < 3 {
        return Err(cx.err("InstanceNormalization needs rank >= 3"));
    }
    let eps = cx
        .node
        .attrs
        .float("epsilon", 1e-5)
        .map_err(|e| cx.err(e))?;
    let (c, inner) = (s[1], s[2..].iter().product::<usize>());
    // Lanes are (batch, channel) planes; scale and bias are per channel.
    let per_channel = |i: usize, row: &IExpr| VExpr::load(cx.buf(i), row.clone().modulo(c as i64));
    Ok(normalize_rows(cx, b, s[0] * c, inner, eps, &|row, _| {
        (per_channel(1, row), Some(per_channel(2, row)))
    }))
}

/// ArgMax / ArgMin along one axis: the extreme value first, then the first (or last) index
/// holding it, as two reductions per lane.
pub(crate) fn arg_extreme(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0).to_vec();
    let axis = infer::norm_axis(
        cx.node.attrs.int("axis", 0).map_err(|e| cx.err(e))?,
        s.len(),
    )
    .map_err(|e| cx.err(e))?;
    let last = cx.flag("select_last_index")?;
    let is_max = cx.node.op == OpKind::ArgMax;
    let (outer, len, inner) = (
        s[..axis].iter().product::<usize>(),
        s[axis],
        s[axis + 1..].iter().product::<usize>(),
    );
    let xt = cx.in_dtypes[0].unwrap_or(tessera_ir::DType::F32);
    let dims = b.dims(&[outer, inner]);
    let oi = idx(&dims);
    let at = |k: &str| {
        VExpr::load(
            cx.buf(0),
            oi[0]
                .clone()
                .times((len * inner) as i64)
                .plus(IExpr::var(k).times(inner as i64))
                .plus(oi[1].clone()),
        )
    };
    let (k1, k2) = (b.var(), b.var());
    let i64t = tessera_ir::DType::I64;
    let ext_init = match (is_max, xt.is_float()) {
        (true, true) => VExpr::f(f64::NEG_INFINITY, xt),
        (false, true) => VExpr::f(f64::INFINITY, xt),
        (true, false) => VExpr::i(int_min(xt), xt),
        (false, false) => VExpr::i(int_max(xt), xt),
    };
    // Index of a lane equal to the extreme; others contribute a value that never wins.
    let hit = VExpr::Cmp(
        CmpOp::Eq,
        Box::new(at(&k2)),
        Box::new(VExpr::Acc("m".into(), xt)),
    );
    let (pick_op, miss) = if last {
        (ReduceOp::Max, -1)
    } else {
        (ReduceOp::Min, len as i64)
    };
    let candidate = VExpr::select(
        hit,
        VExpr::Index(IExpr::var(&k2), i64t),
        VExpr::i(miss, i64t),
    );
    let out_idx = oi[0].clone().times(inner as i64).plus(oi[1].clone());
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index: out_idx,
        value: VExpr::Acc("i".into(), i64t),
    };
    let pick = reduce_stmt(
        "i",
        i64t,
        pick_op,
        VExpr::i(miss, i64t),
        vec![(k2, len as i64)],
        candidate,
        vec![store],
    );
    let ext = reduce_stmt(
        "m",
        xt,
        if is_max { ReduceOp::Max } else { ReduceOp::Min },
        ext_init,
        vec![(k1.clone(), len as i64)],
        at(&k1),
        vec![pick],
    );
    Ok(nest(&dims, vec![ext]))
}
