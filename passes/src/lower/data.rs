//! Data movement: copies (Reshape and friends), Transpose, Concat, Slice, Gather.

use super::{Builder, NodeCx, clamp, idx, in_range, nest, serial_for, store_nest, strides_of};
use crate::error::PassError;
use tessera_ir::infer;
use tessera_ir::loops::{IExpr, Stmt, VExpr};
use tessera_ir::{AttrsExt, OpKind};

/// The loop nest `y[dst] = x0[src]` over `dims`: the body of every data-movement op.
fn move_elements(
    cx: &NodeCx,
    dims: &[(Option<String>, usize)],
    src: IExpr,
    dst: IExpr,
) -> Vec<Stmt> {
    store_nest(cx, dims, dst, VExpr::load(cx.buf(0), src))
}

/// Reshape, Flatten, Squeeze, Unsqueeze and Identity keep the row-major order: a flat copy.
pub(crate) fn copy(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let n: usize = cx.out_shape.iter().product();
    let dims = b.dims(&[n]);
    let i = idx(&dims)[0].clone();
    Ok(move_elements(cx, &dims, i.clone(), i))
}

pub(crate) fn transpose(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let r = s.len();
    let perm: Vec<usize> = match cx.node.attrs.ints("perm").map_err(|e| cx.err(e))? {
        Some(p) => p
            .iter()
            .map(|&a| infer::norm_axis(a, r))
            .collect::<Result<_, _>>()
            .map_err(|e| cx.err(e))?,
        None => (0..r).rev().collect(),
    };
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let ist = strides_of(s);
    let src = oi.iter().enumerate().fold(IExpr::c(0), |acc, (k, e)| {
        acc.plus(e.clone().times(ist[perm[k]] as i64))
    });
    let dst = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    Ok(move_elements(cx, &dims, src, dst))
}

/// Concat: for each outer coordinate, each input's contiguous chunk is copied in turn.
pub(crate) fn concat(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let axis = infer::norm_axis(
        cx.node.attrs.int("axis", 0).map_err(|e| cx.err(e))?,
        cx.out_shape.len(),
    )
    .map_err(|e| cx.err(e))?;
    let outer: usize = cx.out_shape[..axis].iter().product();
    let total: usize = cx.out_shape[axis..].iter().product();
    let dims = b.dims(&[outer]);
    let o = idx(&dims)[0].clone();
    let mut body = Vec::new();
    let mut off = 0usize;
    for i in (0..cx.bufs.len()).filter(|&i| cx.has(i)) {
        let chunk: usize = cx.shape(i)[axis..].iter().product();
        if chunk == 0 {
            continue;
        }
        let j = b.var();
        let dst = o
            .clone()
            .times(total as i64)
            .plus(IExpr::c(off as i64))
            .plus(IExpr::var(&j));
        let src = o.clone().times(chunk as i64).plus(IExpr::var(&j));
        let copy = Stmt::Store {
            buf: cx.out.clone(),
            index: dst,
            value: VExpr::load(cx.buf(i), src),
        };
        body.push(serial_for(&j, chunk, vec![copy]));
        off += chunk;
    }
    Ok(nest(&dims, body))
}

pub(crate) fn slice(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let opt = |i: usize| {
        if cx.has(i) {
            cx.const_ints(i).map(Some)
        } else {
            Ok(None)
        }
    };
    let (starts, ends) = (cx.const_ints(1)?, cx.const_ints(2)?);
    let (axes, steps) = (opt(3)?, opt(4)?);
    let p = infer::slice_params(s, &starts, &ends, axes.as_deref(), steps.as_deref())
        .map_err(|e| cx.err(e))?;
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let ist = strides_of(s);
    let src = oi.iter().enumerate().fold(IExpr::c(0), |acc, (k, e)| {
        acc.plus(
            IExpr::c(p[k].0)
                .plus(e.clone().times(p[k].1))
                .times(ist[k] as i64),
        )
    });
    let dst = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    Ok(move_elements(cx, &dims, src, dst))
}

/// Gather along `axis`; negative indices wrap (floor modulo the axis size).
pub(crate) fn gather(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let axis = infer::norm_axis(
        cx.node.attrs.int("axis", 0).map_err(|e| cx.err(e))?,
        s.len(),
    )
    .map_err(|e| cx.err(e))?;
    let is = cx.shape(1);
    let q = is.len();
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let ind = VExpr::load(
        cx.buf(1),
        IExpr::linear(&oi[axis..axis + q], &strides_of(is)),
    );
    let g = IExpr::Of(Box::new(ind)).modulo(s[axis] as i64);
    let mut coords: Vec<IExpr> = oi[..axis].to_vec();
    coords.push(g);
    coords.extend_from_slice(&oi[axis + q..]);
    let src = IExpr::linear(&coords, &strides_of(s));
    let dst = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    Ok(move_elements(cx, &dims, src, dst))
}

/// ConstantOfShape too large to fold: a fill kernel.
pub(crate) fn fill(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let v = cx.node.attrs.tensor("value").map_err(|e| cx.err(e))?;
    let value = match v {
        Some(t) if t.dtype().is_float() => VExpr::f(t.get_f64(0), cx.out_dtype),
        Some(t) => VExpr::i(t.get_i64(0), cx.out_dtype),
        None => VExpr::lit(0.0, cx.out_dtype),
    };
    let n: usize = cx.out_shape.iter().product();
    let dims = b.dims(&[n]);
    let i = idx(&dims)[0].clone();
    Ok(store_nest(cx, &dims, i, value))
}

/// Constant and Shape are always folded before lowering; reaching here means folding was skipped.
pub(crate) fn constant(cx: &NodeCx, _b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    Err(cx.err("constant-producing ops are folded before lowering; run fold::prepare first"))
}

/// Range: `y[i] = start + i * delta` (start and delta read from their scalar inputs).
pub(crate) fn range(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let dims = b.dims(&cx.out_shape);
    let i = idx(&dims)[0].clone();
    let value = VExpr::bin(
        tessera_ir::loops::BinOp::Add,
        VExpr::load(cx.buf(0), IExpr::c(0)),
        VExpr::bin(
            tessera_ir::loops::BinOp::Mul,
            VExpr::Index(i.clone(), cx.out_dtype),
            VExpr::load(cx.buf(2), IExpr::c(0)),
        ),
    );
    Ok(store_nest(cx, &dims, i, value))
}

/// Pad (constant, edge, reflect): each output coordinate maps back to an input coordinate;
/// outside the input, constant mode writes the fill value (from a clamped, in-bounds read).
pub(crate) fn pad(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    use tessera_ir::loops::BinOp;
    let s = cx.shape(0);
    let (begin, _) = infer::pad_amounts(
        cx.node,
        s.len(),
        cx.consts.get(1).copied().flatten(),
        cx.consts.get(3).copied().flatten(),
        cx.has(3),
    )
    .map_err(|e| cx.err(e))?;
    let mode = cx
        .node
        .attrs
        .string("mode", "constant")
        .map_err(|e| cx.err(e))?;
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let mut coords = Vec::new();
    let mut inside: Option<VExpr> = None;
    for (k, o) in oi.iter().enumerate() {
        let d = s[k] as i64;
        let i = o.clone().minus(IExpr::c(begin[k]));
        let clamped = IExpr::Min(
            Box::new(IExpr::Max(Box::new(i.clone()), Box::new(IExpr::c(0)))),
            Box::new(IExpr::c(d - 1)),
        );
        coords.push(match mode.as_str() {
            "edge" | "constant" => clamped,
            // reflect: |i| below, 2(d-1) - i above (pads are smaller than d, checked by inference).
            _ => {
                let below = IExpr::Max(Box::new(i.clone()), Box::new(IExpr::c(0).minus(i.clone())));
                IExpr::Min(
                    Box::new(below),
                    Box::new(IExpr::c(2 * (d - 1)).minus(i.clone())),
                )
            }
        });
        if mode == "constant" && (begin[k] != 0 || cx.out_shape[k] != s[k]) {
            let ok = in_range(i, s[k]);
            inside = Some(match inside {
                Some(p) => VExpr::bin(BinOp::And, p, ok),
                None => ok,
            });
        }
    }
    let mut value = VExpr::load(cx.buf(0), IExpr::linear(&coords, &strides_of(s)));
    if let Some(c) = inside {
        let fill = if cx.has(2) {
            VExpr::load(cx.buf(2), IExpr::c(0))
        } else {
            VExpr::lit(0.0, cx.out_dtype)
        };
        value = VExpr::select(c, value, fill);
    }
    let dst = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    Ok(store_nest(cx, &dims, dst, value))
}

/// Tile: output coordinate modulo the input size.
pub(crate) fn tile(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let coords: Vec<IExpr> = oi
        .iter()
        .zip(s)
        .map(|(o, &d)| {
            if d == 1 {
                IExpr::c(0)
            } else {
                o.clone().modulo(d as i64)
            }
        })
        .collect();
    let src = IExpr::linear(&coords, &strides_of(s));
    let dst = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    Ok(move_elements(cx, &dims, src, dst))
}

/// Trilu: keep the upper (or lower) triangle of the last two dimensions, zero the rest.
pub(crate) fn trilu(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    use tessera_ir::loops::CmpOp;
    let s = &cx.out_shape;
    let r = s.len();
    let k = if cx.has(1) { cx.const_ints(1)?[0] } else { 0 };
    let upper = cx.node.attrs.int("upper", 1).map_err(|e| cx.err(e))? != 0;
    let dims = b.dims(s);
    let oi = idx(&dims);
    let diff = oi[r - 1].clone().minus(oi[r - 2].clone());
    let keep = VExpr::ICmp(if upper { CmpOp::Ge } else { CmpOp::Le }, diff, IExpr::c(k));
    let at = IExpr::linear(&oi, &strides_of(s));
    let value = VExpr::select(
        keep,
        VExpr::load(cx.buf(0), at.clone()),
        VExpr::lit(0.0, cx.out_dtype),
    );
    Ok(store_nest(cx, &dims, at, value))
}

/// CumSum along one axis: a sequential scan per lane that reads the previous output, so its
/// scan loop is never parallelised or vectorized (see `carries_dependence`).
pub(crate) fn cumsum(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    use tessera_ir::loops::{BinOp, CmpOp};
    let s = &cx.out_shape;
    let axis = infer::norm_axis(cx.const_ints(1)?[0], s.len()).map_err(|e| cx.err(e))?;
    let exclusive = cx.node.attrs.int("exclusive", 0).map_err(|e| cx.err(e))? != 0;
    let reverse = cx.node.attrs.int("reverse", 0).map_err(|e| cx.err(e))? != 0;
    let (outer, len, inner) = (
        s[..axis].iter().product::<usize>(),
        s[axis],
        s[axis + 1..].iter().product::<usize>(),
    );
    let dims = b.dims(&[outer, inner]);
    let oi = idx(&dims);
    let step = b.var();
    let len_i = len as i64;
    // Position along the axis for this step, and the previous position in scan order.
    let k = if reverse {
        IExpr::c(len_i - 1).minus(IExpr::var(&step))
    } else {
        IExpr::var(&step)
    };
    let prev = if reverse {
        k.clone().plus(IExpr::c(1))
    } else {
        k.clone().minus(IExpr::c(1))
    };
    let at = |p: IExpr| {
        oi[0]
            .clone()
            .times(len_i)
            .plus(p)
            .times(inner as i64)
            .plus(oi[1].clone())
    };
    let first = VExpr::ICmp(CmpOp::Eq, IExpr::var(&step), IExpr::c(0));
    let dt = cx.out_dtype;
    let carried = VExpr::select(
        first.clone(),
        VExpr::lit(0.0, dt),
        VExpr::load(&cx.out, at(clamp(prev.clone(), len))),
    );
    let term = if exclusive {
        VExpr::select(
            first,
            VExpr::lit(0.0, dt),
            VExpr::load(cx.buf(0), at(clamp(prev, len))),
        )
    } else {
        VExpr::load(cx.buf(0), at(k.clone()))
    };
    let update = Stmt::Store {
        buf: cx.out.clone(),
        index: at(k),
        value: VExpr::bin(BinOp::Add, carried, term),
    };
    let scan = serial_for(&step, len, vec![update]);
    Ok(nest(&dims, vec![scan]))
}

/// Resize (nearest, linear): each output coordinate maps back to a real input coordinate,
/// computed in f64 as the reference does; linear mode blends the 2^k neighbouring elements of
/// the k resized dimensions (indices clamped to the edge).
pub(crate) fn resize(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    use tessera_ir::DType::{F64, I64};
    use tessera_ir::loops::{BinOp, UnOp};
    let s = cx.shape(0).to_vec();
    let p = infer::resize_plan(
        cx.node,
        &s,
        cx.consts.get(1).copied().flatten(),
        cx.consts.get(2).copied().flatten(),
        cx.consts.get(3).copied().flatten(),
    )
    .map_err(|e| cx.err(e))?;
    if !p.direct() {
        return Err(cx.err(
            "this Resize mode is legalised to matrix products before lowering (legalize::resize)",
        ));
    }
    let dims = b.dims(&p.out);
    let oi = idx(&dims);
    let f = |v: f64| VExpr::f(v, F64);
    let to_index = |v: VExpr| IExpr::Of(Box::new(VExpr::Cast(I64, Box::new(v))));
    // Per dimension: (low index, high index, weight of high) — or the identity.
    let mut taps: Vec<(IExpr, IExpr, Option<VExpr>)> = Vec::new();
    for d in 0..s.len() {
        if p.is_identity(d, s[d]) {
            taps.push((oi[d].clone(), oi[d].clone(), None));
            continue;
        }
        let x = VExpr::Index(oi[d].clone(), F64);
        // As the reference: the real-valued output width `scale * input` (not the integer
        // output size) enters the transformations.
        let (sc, in_len) = (p.scales[d], s[d] as f64);
        let width = sc * in_len;
        let src = match p.coord_mode.as_str() {
            "asymmetric" => VExpr::bin(BinOp::Div, x, f(sc)),
            "align_corners" if width == 1.0 => f(0.0),
            "align_corners" => VExpr::bin(BinOp::Mul, x, f((in_len - 1.0) / (width - 1.0))),
            "pytorch_half_pixel" if width == 1.0 => f(-0.5),
            _ => VExpr::bin(
                BinOp::Sub,
                VExpr::bin(BinOp::Div, VExpr::bin(BinOp::Add, x, f(0.5)), f(sc)),
                f(0.5),
            ),
        };
        if p.linear() {
            let fl = VExpr::un(UnOp::Floor, src.clone());
            let lo = to_index(fl.clone());
            taps.push((
                clamp(lo.clone(), s[d]),
                clamp(lo.plus(IExpr::c(1)), s[d]),
                Some(VExpr::bin(BinOp::Sub, src, fl)),
            ));
        } else {
            let r = match p.nearest_mode.as_str() {
                "floor" => VExpr::un(UnOp::Floor, src),
                "ceil" => VExpr::un(UnOp::Ceil, src),
                "round_prefer_ceil" => VExpr::un(UnOp::Floor, VExpr::bin(BinOp::Add, src, f(0.5))),
                _ => VExpr::un(UnOp::Ceil, VExpr::bin(BinOp::Sub, src, f(0.5))),
            };
            let i = clamp(to_index(r), s[d]);
            taps.push((i.clone(), i, None));
        }
    }
    let blended: Vec<usize> = (0..s.len()).filter(|&d| taps[d].2.is_some()).collect();
    let st = strides_of(&s);
    let mut acc: Option<VExpr> = None;
    for corner in 0..(1usize << blended.len()) {
        let mut weight: Option<VExpr> = None;
        let coords: Vec<IExpr> = (0..s.len())
            .map(|d| match blended.iter().position(|&x| x == d) {
                Some(k) => {
                    let high = corner >> k & 1 == 1;
                    let t = taps[d].2.clone().expect("blended dims have weights");
                    let w = if high {
                        t
                    } else {
                        VExpr::bin(BinOp::Sub, f(1.0), t)
                    };
                    weight = Some(match weight.take() {
                        Some(x) => VExpr::bin(BinOp::Mul, x, w),
                        None => w,
                    });
                    if high {
                        taps[d].1.clone()
                    } else {
                        taps[d].0.clone()
                    }
                }
                None => taps[d].0.clone(),
            })
            .collect();
        let v = VExpr::Cast(
            F64,
            Box::new(VExpr::load(cx.buf(0), IExpr::linear(&coords, &st))),
        );
        let term = match weight {
            Some(w) => VExpr::bin(BinOp::Mul, w, v),
            None => v,
        };
        acc = Some(match acc {
            Some(a) => VExpr::bin(BinOp::Add, a, term),
            None => term,
        });
    }
    let value = VExpr::Cast(cx.out_dtype, Box::new(acc.expect("at least one corner")));
    let dst = IExpr::linear(&oi, &strides_of(&p.out));
    Ok(store_nest(cx, &dims, dst, value))
}

/// An index read from `buf` at `at`, wrapped into `[0, d)` (negative indices count from the
/// end; the wrap also keeps a bad index inside the buffer).
fn index_at(buf: &str, at: IExpr, d: usize) -> IExpr {
    IExpr::Of(Box::new(VExpr::load(buf, at))).modulo(d as i64)
}

/// GatherElements: `y[i…] = x[i…]` with the `axis` coordinate read from `indices[i…]`.
pub(crate) fn gather_elements(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let axis = infer::norm_axis(
        cx.node.attrs.int("axis", 0).map_err(|e| cx.err(e))?,
        s.len(),
    )
    .map_err(|e| cx.err(e))?;
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let dst = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    let mut coords = oi.clone();
    coords[axis] = index_at(cx.buf(1), dst.clone(), s[axis]);
    let src = IExpr::linear(&coords, &strides_of(s));
    Ok(move_elements(cx, &dims, src, dst))
}

/// GatherND: each index tuple (the last indices dimension) selects a slice of the data after
/// `batch_dims` leading dimensions shared by data and indices.
pub(crate) fn gather_nd(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0);
    let is = cx.shape(1);
    let bd = cx
        .node
        .attrs
        .int("batch_dims", 0)
        .map_err(|e| cx.err(e))?
        .max(0) as usize;
    let (q, k) = (is.len(), is[is.len() - 1]);
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let ist = strides_of(is);
    let tuple_base = IExpr::linear(&oi[..q - 1], &ist[..q - 1]);
    let mut coords: Vec<IExpr> = oi[..bd].to_vec();
    for j in 0..k {
        let at = tuple_base.clone().plus(IExpr::c(j as i64));
        coords.push(index_at(cx.buf(1), at, s[bd + j]));
    }
    coords.extend_from_slice(&oi[q - 1..]);
    let src = IExpr::linear(&coords, &strides_of(s));
    let dst = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    Ok(move_elements(cx, &dims, src, dst))
}

/// ScatterElements / ScatterND: copy the data, then walk the updates in order (serially: two
/// updates may hit one place) writing or combining (`reduction`) each at its indexed place.
pub(crate) fn scatter(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    use tessera_ir::loops::BinOp;
    let s = cx.shape(0).to_vec();
    let n: usize = s.iter().product();
    let copy_dims = b.dims(&[n]);
    let i = idx(&copy_dims)[0].clone();
    let mut body = move_elements(cx, &copy_dims, i.clone(), i);
    let reduction = cx
        .node
        .attrs
        .string("reduction", "none")
        .map_err(|e| cx.err(e))?;
    let (upd_shape, dst) = if cx.node.op == OpKind::ScatterElements {
        let axis = infer::norm_axis(
            cx.node.attrs.int("axis", 0).map_err(|e| cx.err(e))?,
            s.len(),
        )
        .map_err(|e| cx.err(e))?;
        let us = cx.shape(2).to_vec();
        let dims = b.dims(&us);
        let ui = idx(&dims);
        let at = IExpr::linear(&ui, &strides_of(&us));
        let mut coords = ui.clone();
        coords[axis] = index_at(cx.buf(1), at, s[axis]);
        (
            (dims, at_of(&ui, &us)),
            IExpr::linear(&coords, &strides_of(&s)),
        )
    } else {
        let is = cx.shape(1).to_vec();
        let k = is[is.len() - 1];
        let us = cx.shape(2).to_vec();
        let dims = b.dims(&us);
        let ui = idx(&dims);
        let q = is.len();
        let base = IExpr::linear(&ui[..q - 1], &strides_of(&is)[..q - 1]);
        let mut coords: Vec<IExpr> = (0..k)
            .map(|j| index_at(cx.buf(1), base.clone().plus(IExpr::c(j as i64)), s[j]))
            .collect();
        coords.extend_from_slice(&ui[q - 1..]);
        (
            (dims, at_of(&ui, &us)),
            IExpr::linear(&coords, &strides_of(&s)),
        )
    };
    let (dims, upd_at) = upd_shape;
    let new = VExpr::load(cx.buf(2), upd_at);
    let old = VExpr::load(&cx.out, dst.clone());
    let value = match reduction.as_str() {
        "none" => new,
        "add" => VExpr::bin(BinOp::Add, old, new),
        "mul" => VExpr::bin(BinOp::Mul, old, new),
        "max" => VExpr::bin(BinOp::Max, old, new),
        "min" => VExpr::bin(BinOp::Min, old, new),
        r => return Err(cx.err(format!("unknown reduction `{r}`"))),
    };
    body.extend(nest(
        &dims,
        vec![Stmt::Store {
            buf: cx.out.clone(),
            index: dst,
            value,
        }],
    ));
    Ok(body)
}

/// The flat row-major offset of coordinates `ix` in `shape`.
fn at_of(ix: &[IExpr], shape: &[usize]) -> IExpr {
    IExpr::linear(ix, &strides_of(shape))
}

/// AffineGrid: `grid[n, …p, k] = Σ_j theta[n, k, j] · point_j(p)`, the homogeneous point
/// (x, y, [z], 1) of output position p computed from its indices.
pub(crate) fn affine_grid(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    use tessera_ir::loops::BinOp;
    let os = cx.out_shape.clone();
    let ns = os.len() - 2;
    let align = cx.flag("align_corners")?;
    let dt = cx.out_dtype;
    let dims = b.dims(&os);
    let oi = idx(&dims);
    let coord = |d: usize| -> VExpr {
        let len = os[1 + d] as f64;
        let i = VExpr::Index(oi[1 + d].clone(), dt);
        let (mul, add) = if align {
            if len <= 1.0 {
                (0.0, -1.0)
            } else {
                (2.0 / (len - 1.0), -1.0)
            }
        } else {
            (2.0 / len, 1.0 / len - 1.0)
        };
        VExpr::bin(
            BinOp::Add,
            VExpr::bin(BinOp::Mul, i, VExpr::f(mul, dt)),
            VExpr::f(add, dt),
        )
    };
    let theta = |j: usize| {
        let at = oi[0]
            .clone()
            .times((ns * (ns + 1)) as i64)
            .plus(oi[ns + 1].clone().times((ns + 1) as i64))
            .plus(IExpr::c(j as i64));
        VExpr::load(cx.buf(0), at)
    };
    let mut value = theta(ns);
    for j in 0..ns {
        let term = VExpr::bin(BinOp::Mul, theta(j), coord(ns - 1 - j));
        value = VExpr::bin(BinOp::Add, term, value);
    }
    let dst = IExpr::linear(&oi, &strides_of(&os));
    Ok(store_nest(cx, &dims, dst, value))
}

/// Col2Im in gather form: each image position sums the column entries that blocks put there.
///
/// Along an axis with dilation 1, the offsets that reach position `y` are those of its phase,
/// `ky = (y + pad) mod stride + j·stride`, from block `(y + pad) / stride − j`: a tap loop of
/// `⌈kernel / stride⌉` steps instead of `kernel` (none when the kernel is at most the stride —
/// a ConvTranspose that upsamples by its kernel size reads one entry per output), guarded
/// where the offset or the block falls outside. Other dilations test every offset for being
/// a multiple of the stride away. A fused epilogue (a ConvTranspose's bias, an activation)
/// applies to each position's sum.
pub(crate) fn col2im(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    use tessera_ir::loops::{BinOp, CmpOp, Reduce, ReduceOp};
    let s = cx.shape(0).to_vec();
    let p = tessera_ir::col2im::col2im_plan(
        cx.node,
        &s,
        cx.consts.get(1).copied().flatten(),
        cx.consts.get(2).copied().flatten(),
    )
    .map_err(|e| cx.err(e))?;
    let k = p.image.len();
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let and = |a: Option<VExpr>, c: VExpr| match a {
        Some(a) => VExpr::bin(BinOp::And, a, c),
        None => c,
    };
    let mut ok: Option<VExpr> = None;
    let mut blocks = Vec::with_capacity(k);
    let mut offsets = Vec::with_capacity(k);
    let mut taps: Vec<(String, i64)> = Vec::new();
    for d in 0..k {
        let at = oi[2 + d].clone().plus(IExpr::c(p.pad_begin[d] as i64));
        let (st, kernel, nb) = (p.strides[d] as i64, p.block[d] as i64, p.n_blocks[d]);
        if p.dilations[d] == 1 {
            // Offset `phase + j·stride` from block `at / stride − j`.
            let steps = (kernel + st - 1) / st;
            let j = match steps {
                1 => IExpr::c(0),
                _ => {
                    let j = b.var();
                    taps.push((j.clone(), steps));
                    IExpr::var(&j)
                }
            };
            let offset = at.clone().modulo(st).plus(j.clone().times(st));
            let block = at.floordiv(st).minus(j);
            if kernel % st != 0 {
                ok = Some(and(
                    ok,
                    VExpr::ICmp(CmpOp::Lt, offset.clone(), IExpr::c(kernel)),
                ));
            }
            ok = Some(and(ok, in_range(block.clone(), nb)));
            blocks.push(clamp(block, nb));
            offsets.push(offset);
        } else {
            // t = y + pad − kk·dilation must be a multiple of the stride, t / stride a block.
            let kk = b.var();
            taps.push((kk.clone(), kernel));
            let t = at.minus(IExpr::var(&kk).times(p.dilations[d] as i64));
            let hit = VExpr::bin(
                BinOp::And,
                in_range(t.clone(), p.n_blocks[d] * p.strides[d]),
                VExpr::ICmp(CmpOp::Eq, t.clone().modulo(st), IExpr::c(0)),
            );
            ok = Some(and(ok, hit));
            blocks.push(clamp(t.floordiv(st), nb));
            offsets.push(IExpr::var(&kk));
        }
    }
    let kernel: usize = p.block.iter().product();
    let kflat = IExpr::linear(&offsets, &strides_of(&p.block));
    let row = oi[1].clone().times(kernel as i64).plus(kflat);
    let col = IExpr::linear(&blocks, &strides_of(&p.n_blocks));
    let at = IExpr::linear(&[oi[0].clone(), row, col], &strides_of(&s));
    let dt = cx.out_dtype;
    let value = VExpr::select(
        ok.expect("Col2Im has spatial dimensions"),
        VExpr::load(cx.buf(0), at),
        VExpr::lit(0.0, dt),
    );
    let finish = |v: VExpr| match cx.epilogue {
        Some(epi) => epi(v, &oi),
        None => v,
    };
    let index = IExpr::linear(&oi, &strides_of(&cx.out_shape));
    if taps.is_empty() {
        let store = Stmt::Store {
            buf: cx.out.clone(),
            index,
            value: finish(value),
        };
        return Ok(nest(&dims, vec![store]));
    }
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index,
        value: finish(VExpr::Acc("col".into(), dt)),
    };
    let red = Stmt::Reduce(Reduce {
        acc: "col".into(),
        dtype: dt,
        op: ReduceOp::Sum,
        init: VExpr::lit(0.0, dt),
        axes: taps,
        value,
        body: vec![store],
        vectorize: None,
    });
    Ok(nest(&dims, vec![red]))
}
