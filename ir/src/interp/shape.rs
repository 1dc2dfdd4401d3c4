//! The interpreter's data-movement ops: padding, triangles, cumulative sums, gathers and
//! scatters (indices checked against their axis), transposes.

use super::{R, arg, around_axis};
use crate::dtype::DType;
use crate::graph::Node;
use crate::infer;
use crate::op::{AttrsExt, OpKind};
use crate::tensor::{Tensor, numel, strides};

/// A tensor of `shape` whose element `i` is element `indices[i]` of `src` (same dtype).
pub(super) fn take(src: &Tensor, shape: &[usize], indices: &[usize]) -> Tensor {
    let s = src.dtype().size();
    let mut bytes = Vec::with_capacity(indices.len() * s);
    for &j in indices {
        bytes.extend_from_slice(&src.bytes()[j * s..(j + 1) * s]);
    }
    Tensor::from_bytes(src.dtype(), shape.to_vec(), bytes).expect("take: sizes agree")
}

/// Builds a tensor of `shape` whose element at coordinate `idx` is `src[offset(idx)]`.
pub(super) fn gather_by(
    src: &Tensor,
    dtype: DType,
    shape: &[usize],
    offset: impl Fn(&[usize]) -> usize,
) -> Tensor {
    let n = numel(shape);
    let s = dtype.size();
    let mut bytes = Vec::with_capacity(n * s);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let j = offset(&idx);
        bytes.extend_from_slice(&src.bytes()[j * s..(j + 1) * s]);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Tensor::from_bytes(dtype, shape.to_vec(), bytes).expect("gather_by sizes agree")
}

/// The smallest and largest value of an integer dtype.
pub(super) fn int_limits(dt: DType) -> (i64, i64) {
    match dt {
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    }
}

/// An index read from an indices tensor, checked against `d` and made non-negative.
pub(super) fn checked_index(i: i64, d: usize) -> R<usize> {
    let d = d as i64;
    if i < -d || i >= d {
        return Err(format!(
            "index {i} out of range for a dimension of size {d}"
        ));
    }
    Ok(if i < 0 { i + d } else { i } as usize)
}

pub(super) fn gather_elements(
    n: &Node,
    x: &Tensor,
    ind: &Tensor,
    odt: DType,
    oshape: &[usize],
) -> R<Tensor> {
    let axis = infer::norm_axis(n.attrs.int("axis", 0)?, x.shape().len())?;
    let iv = ind.to_i64_vec();
    let xs = strides(x.shape());
    let os = strides(oshape);
    let mut offs = Vec::with_capacity(iv.len());
    for (flat, &i) in iv.iter().enumerate() {
        let mut off = 0;
        for k in 0..oshape.len() {
            let c = flat / os[k] % oshape[k];
            let c = if k == axis {
                checked_index(i, x.shape()[axis])?
            } else {
                c
            };
            off += c * xs[k];
        }
        offs.push(off);
    }
    Ok(gather_by(x, odt, oshape, |idx| {
        let flat: usize = idx.iter().zip(&os).map(|(c, s)| c * s).sum();
        offs[flat]
    }))
}

pub(super) fn gather_nd(
    n: &Node,
    x: &Tensor,
    ind: &Tensor,
    odt: DType,
    oshape: &[usize],
) -> R<Tensor> {
    let b = n.attrs.int("batch_dims", 0)?.max(0) as usize;
    let is = ind.shape();
    let k = *is.last().ok_or("indices must have rank >= 1")?;
    let xs = strides(x.shape());
    let iv = ind.to_i64_vec();
    // One slice of the data per index tuple: its offset.
    let tuples = iv.len() / k.max(1);
    let batch: usize = is[..b].iter().product();
    let per_batch = tuples / batch.max(1);
    let mut base = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let bi = t / per_batch.max(1);
        let mut off = 0;
        let mut rem = bi;
        for j in (0..b).rev() {
            off += rem % x.shape()[j] * xs[j];
            rem /= x.shape()[j];
        }
        for j in 0..k {
            off += checked_index(iv[t * k + j], x.shape()[b + j])? * xs[b + j];
        }
        base.push(off);
    }
    let slice: usize = x.shape()[b + k..].iter().product();
    Ok(gather_by(x, odt, oshape, |idx| {
        let flat: usize = idx.iter().zip(strides(oshape)).map(|(c, s)| c * s).sum();
        base[flat / slice.max(1)] + flat % slice.max(1)
    }))
}

/// ScatterElements and ScatterND: a copy of the data with `updates` written (or combined by
/// `reduction`: none, add, mul, max, min) at the indexed places, in index order.
pub(super) fn scatter(n: &Node, x: &Tensor, ind: &Tensor, upd: &Tensor) -> R<Tensor> {
    let reduction = n.attrs.string("reduction", "none")?;
    let combine = |old: f64, new: f64| -> R<f64> {
        Ok(match reduction.as_str() {
            "none" => new,
            "add" => old + new,
            "mul" => old * new,
            "max" => old.max(new),
            "min" => old.min(new),
            r => return Err(format!("unknown reduction `{r}`")),
        })
    };
    let mut out = x.to_f64_vec();
    let uv = upd.to_f64_vec();
    let iv = ind.to_i64_vec();
    let xs = strides(x.shape());
    if n.op == OpKind::ScatterElements {
        let axis = infer::norm_axis(n.attrs.int("axis", 0)?, x.shape().len())?;
        let ist = strides(ind.shape());
        for (flat, &i) in iv.iter().enumerate() {
            let mut off = 0;
            for k in 0..ist.len() {
                let c = flat / ist[k] % ind.shape()[k];
                let c = if k == axis {
                    checked_index(i, x.shape()[axis])?
                } else {
                    c
                };
                off += c * xs[k];
            }
            out[off] = combine(out[off], uv[flat])?;
        }
    } else {
        let k = *ind.shape().last().ok_or("indices must have rank >= 1")?;
        let slice: usize = x.shape()[k..].iter().product();
        for t in 0..iv.len() / k.max(1) {
            let mut off = 0;
            for j in 0..k {
                off += checked_index(iv[t * k + j], x.shape()[j])? * xs[j];
            }
            for e in 0..slice {
                out[off + e] = combine(out[off + e], uv[t * slice + e])?;
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out))
}

/// `x` transposed by `perm` (axis `i` of the result is axis `perm[i]` of `x`).
pub(super) fn transpose(x: &Tensor, perm: &[usize]) -> R<Tensor> {
    let is = strides(x.shape());
    let shape = infer::permuted(x.shape(), perm);
    Ok(gather_by(x, x.dtype(), &shape, |idx| {
        idx.iter().enumerate().map(|(i, &c)| c * is[perm[i]]).sum()
    }))
}

/// Pad: constant, edge or reflect padding of every axis.
pub(super) fn pad(n: &Node, args: &[Option<&Tensor>], odt: DType, oshape: Vec<usize>) -> R<Tensor> {
    let x = arg(args, 0)?;
    let (begin, _) = infer::pad_amounts(
        n,
        x.shape().len(),
        args.get(1).copied().flatten(),
        args.get(3).copied().flatten(),
        args.get(3).is_some_and(|t| t.is_some()),
    )?;
    let mode = n.attrs.string("mode", "constant")?;
    let fill = args
        .get(2)
        .copied()
        .flatten()
        .map(|t| t.get_f64(0))
        .unwrap_or(0.0);
    let is = strides(x.shape());
    let os = strides(&oshape);
    let v: Vec<f64> = (0..numel(&oshape))
        .map(|o| {
            let mut off = 0i64;
            for k in 0..oshape.len() {
                let d = x.shape()[k] as i64;
                let mut i = (o / os[k] % oshape[k]) as i64 - begin[k];
                if i < 0 || i >= d {
                    match mode.as_str() {
                        "edge" => i = i.clamp(0, d - 1),
                        "reflect" => i = if i < 0 { -i } else { 2 * (d - 1) - i },
                        _ => return fill,
                    }
                }
                off += i * is[k] as i64;
            }
            x.get_f64(off as usize)
        })
        .collect();
    Ok(if odt.is_float() {
        Tensor::from_f64(odt, oshape, &v)
    } else {
        Tensor::from_i64(
            odt,
            oshape,
            &v.iter().map(|&f| f as i64).collect::<Vec<_>>(),
        )
    })
}

/// Trilu: the upper or lower triangle of the last two axes, from diagonal `k`.
pub(super) fn trilu(
    n: &Node,
    args: &[Option<&Tensor>],
    odt: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    let x = arg(args, 0)?;
    let r = x.shape().len();
    let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
    let k = args
        .get(1)
        .copied()
        .flatten()
        .map(|t| t.get_i64(0))
        .unwrap_or(0);
    let upper = n.attrs.int("upper", 1)? != 0;
    let keep: Vec<usize> = (0..x.len())
        .map(|i| {
            let (row, col) = (((i / cols) % rows) as i64, (i % cols) as i64);
            let kept = if upper {
                col - row >= k
            } else {
                col - row <= k
            };
            kept as usize
        })
        .collect();
    Ok(if x.dtype().is_float() {
        let v: Vec<f64> = x
            .to_f64_vec()
            .iter()
            .zip(&keep)
            .map(|(v, &k)| if k == 1 { *v } else { 0.0 })
            .collect();
        Tensor::from_f64(odt, oshape, &v)
    } else {
        let v: Vec<i64> = x
            .to_i64_vec()
            .iter()
            .zip(&keep)
            .map(|(v, &k)| if k == 1 { *v } else { 0 })
            .collect();
        Tensor::from_i64(odt, oshape, &v)
    })
}

/// CumSum along an axis, exclusive and reversed as asked.
pub(super) fn cum_sum(
    n: &Node,
    args: &[Option<&Tensor>],
    odt: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    let x = arg(args, 0)?;
    let axis = infer::norm_axis(arg(args, 1)?.get_i64(0), x.shape().len())?;
    let (exclusive, reverse) = (
        n.attrs.int("exclusive", 0)? != 0,
        n.attrs.int("reverse", 0)? != 0,
    );
    let s = x.shape();
    let (outer, len, inner) = around_axis(s, axis);
    let float = x.dtype().is_float();
    let v = x.to_f64_vec();
    let iv = x.to_i64_vec();
    let mut out_f = vec![0.0; v.len()];
    let mut out_i = vec![0i64; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let (mut acc_f, mut acc_i) = (0.0, 0i64);
            for step in 0..len {
                let k = if reverse { len - 1 - step } else { step };
                let at = (o * len + k) * inner + i;
                if !exclusive {
                    acc_f += v[at];
                    acc_i = acc_i.wrapping_add(iv[at]);
                }
                out_f[at] = acc_f;
                out_i[at] = acc_i;
                if exclusive {
                    acc_f += v[at];
                    acc_i = acc_i.wrapping_add(iv[at]);
                }
            }
        }
    }
    Ok(if float {
        Tensor::from_f64(odt, oshape, &out_f)
    } else {
        Tensor::from_i64(odt, oshape, &out_i)
    })
}
