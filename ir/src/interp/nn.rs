//! The neural-network ops of the interpreter: matrix products, convolutions (and the
//! transposed one), pooling, normalisation over lanes, reductions, the affine grid.

use super::scalar::bcast_index;
use super::shape::int_limits;
use super::{R, arg, around_axis};
use crate::dtype::DType;
use crate::graph::Node;
use crate::infer::{self, Window};
use crate::op::{AttrsExt, OpKind};
use crate::tensor::{Tensor, numel, strides};

/// Normalises consecutive lanes of `inner` values: `(v - mean) / sqrt(var + eps) * scale + shift`
/// with `(scale, shift) = affine(lane, position)` (LayerNormalization, InstanceNormalization).
pub(super) fn normalize_lanes(
    v: &[f64],
    inner: usize,
    eps: f64,
    affine: impl Fn(usize, usize) -> (f64, f64),
) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for (row, lane) in v.chunks(inner.max(1)).enumerate() {
        let mean = lane.iter().sum::<f64>() / inner as f64;
        let var = lane.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / inner as f64;
        for (j, x) in lane.iter().enumerate() {
            let (scale, shift) = affine(row, j);
            out[row * inner + j] = (x - mean) / (var + eps).sqrt() * scale + shift;
        }
    }
    out
}

pub(super) fn matmul(a: &Tensor, b: &Tensor, oshape: &[usize]) -> R<Tensor> {
    let (mut sa, mut sb) = (a.shape().to_vec(), b.shape().to_vec());
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    if sb.len() == 1 {
        sb.push(1);
    }
    let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let batch = infer::broadcast_static(&[&sa[..sa.len() - 2], &sb[..sb.len() - 2]])?;
    let ab = bcast_index(&sa[..sa.len() - 2], &batch);
    let bb = bcast_index(&sb[..sb.len() - 2], &batch);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut out = vec![0.0; numel(&batch) * m * n];
    for bt in 0..numel(&batch) {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += av[ab[bt] * m * k + i * k + p] * bv[bb[bt] * k * n + p * n + j];
                }
                out[bt * m * n + i * n + j] = s;
            }
        }
    }
    Ok(Tensor::from_f64(a.dtype(), oshape.to_vec(), &out))
}

pub(super) fn gemm(
    n: &Node,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    oshape: &[usize],
) -> R<Tensor> {
    let alpha = n.attrs.float("alpha", 1.0)?;
    let beta = n.attrs.float("beta", 1.0)?;
    let ta = n.attrs.int("transA", 0)? != 0;
    let tb = n.attrs.int("transB", 0)? != 0;
    let (m, nn) = (oshape[0], oshape[1]);
    let k = if ta { a.shape()[0] } else { a.shape()[1] };
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let ci = c.map(|c| bcast_index(c.shape(), oshape));
    let mut out = vec![0.0; m * nn];
    for i in 0..m {
        for j in 0..nn {
            let mut s = 0.0;
            for p in 0..k {
                let x = if ta { av[p * m + i] } else { av[i * k + p] };
                let y = if tb { bv[j * k + p] } else { bv[p * nn + j] };
                s += x * y;
            }
            let mut v = alpha * s;
            if let (Some(c), Some(ci)) = (c, &ci) {
                v += beta * c.get_f64(ci[i * nn + j]);
            }
            out[i * nn + j] = v;
        }
    }
    Ok(Tensor::from_f64(a.dtype(), oshape.to_vec(), &out))
}

pub(super) fn conv(
    n: &Node,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    oshape: &[usize],
) -> R<Tensor> {
    let (batch, cin, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cout, cpg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let group = n.attrs.int("group", 1)? as usize;
    let win = Window::from_node(n, &[h, wd], Some(&[kh, kw]))?;
    let (oh, ow) = (oshape[2], oshape[3]);
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let opg = cout / group;
    let mut out = vec![0.0; numel(oshape)];
    for b in 0..batch {
        for co in 0..cout {
            let g = co / opg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map(|t| t.get_f64(co)).unwrap_or(0.0);
                    for ci in 0..cpg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * win.strides[0] + ky * win.dilations[0]) as i64
                                    - win.pads[0] as i64;
                                let ix = (ox * win.strides[1] + kx * win.dilations[1]) as i64
                                    - win.pads[1] as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let c = g * cpg + ci;
                                s += xv[((b * cin + c) * h + iy as usize) * wd + ix as usize]
                                    * wv[((co * cpg + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                    out[((b * cout + co) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), oshape.to_vec(), &out))
}

pub(super) fn pool(n: &Node, x: &Tensor, oshape: &[usize]) -> R<Tensor> {
    let (h, wd) = (x.shape()[2], x.shape()[3]);
    let win = Window::from_node(n, &[h, wd], None)?;
    let is_max = n.op == OpKind::MaxPool;
    let include_pad = n.attrs.int("count_include_pad", 0)? != 0;
    let (oh, ow) = (oshape[2], oshape[3]);
    let xv = x.to_f64_vec();
    let mut out = vec![0.0; numel(oshape)];
    for bc in 0..oshape[0] * oshape[1] {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if is_max { f64::NEG_INFINITY } else { 0.0 };
                let mut count = 0usize;
                for ky in 0..win.kernel[0] {
                    for kx in 0..win.kernel[1] {
                        let iy = (oy * win.strides[0] + ky * win.dilations[0]) as i64
                            - win.pads[0] as i64;
                        let ix = (ox * win.strides[1] + kx * win.dilations[1]) as i64
                            - win.pads[1] as i64;
                        let inside = iy >= 0 && ix >= 0 && iy < h as i64 && ix < wd as i64;
                        // count_include_pad counts positions inside the padded input, not past it.
                        let in_padded =
                            iy < (h + win.pads[2]) as i64 && ix < (wd + win.pads[3]) as i64;
                        if inside {
                            let v = xv[(bc * h + iy as usize) * wd + ix as usize];
                            acc = if is_max { acc.max(v) } else { acc + v };
                            count += 1;
                        } else if include_pad && in_padded {
                            count += 1;
                        }
                    }
                }
                out[(bc * oh + oy) * ow + ox] = if is_max {
                    acc
                } else {
                    acc / count.max(1) as f64
                };
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), oshape.to_vec(), &out))
}

/// Applies `f` to every 1-D lane along `axis` and writes the results back in place.
pub(super) fn reduce_like(x: &Tensor, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Tensor {
    let s = x.shape();
    let (outer, len, inner) = around_axis(s, axis);
    let v = x.to_f64_vec();
    let mut out = vec![0.0; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let lane: Vec<f64> = (0..len).map(|k| v[(o * len + k) * inner + i]).collect();
            for (k, r) in f(&lane).into_iter().enumerate() {
                out[(o * len + k) * inner + i] = r;
            }
        }
    }
    Tensor::from_f64(x.dtype(), s.to_vec(), &out)
}

pub(super) fn reduce(
    op: OpKind,
    x: &Tensor,
    axes: &[usize],
    odt: DType,
    oshape: Vec<usize>,
) -> Tensor {
    let s = x.shape();
    let kept: Vec<usize> = s
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let n_out = numel(&kept);
    let count = s
        .iter()
        .enumerate()
        .filter(|(i, _)| axes.contains(i))
        .map(|(_, &d)| d)
        .product::<usize>();
    let init = match op {
        OpKind::ReduceMax if x.dtype() == DType::Bool => 0.0,
        OpKind::ReduceMin if x.dtype() == DType::Bool => 1.0,
        OpKind::ReduceMax if !x.dtype().is_float() => int_limits(x.dtype()).0 as f64,
        OpKind::ReduceMin if !x.dtype().is_float() => int_limits(x.dtype()).1 as f64,
        OpKind::ReduceMax => f64::NEG_INFINITY,
        OpKind::ReduceMin => f64::INFINITY,
        OpKind::ReduceProd => 1.0,
        _ => 0.0,
    };
    let mut acc = vec![init; n_out];
    let ks = strides(&kept);
    let mut idx = vec![0usize; s.len()];
    for i in 0..x.len() {
        let o: usize = idx
            .iter()
            .enumerate()
            .map(|(k, &c)| if axes.contains(&k) { 0 } else { c * ks[k] })
            .sum();
        let v = x.get_f64(i);
        acc[o] = match op {
            _ if v.is_nan() || acc[o].is_nan() => f64::NAN,
            OpKind::ReduceMax => acc[o].max(v),
            OpKind::ReduceMin => acc[o].min(v),
            OpKind::ReduceL2 | OpKind::ReduceSumSquare => acc[o] + v * v,
            OpKind::ReduceProd => acc[o] * v,
            OpKind::ReduceL1 => acc[o] + v.abs(),
            OpKind::ReduceLogSumExp => acc[o] + v.exp(),
            _ => acc[o] + v,
        };
        for k in (0..s.len()).rev() {
            idx[k] += 1;
            if idx[k] < s[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    if op == OpKind::ReduceL2 {
        for a in &mut acc {
            *a = a.sqrt();
        }
    }
    if matches!(op, OpKind::ReduceLogSum | OpKind::ReduceLogSumExp) {
        for a in &mut acc {
            *a = a.ln();
        }
    }
    if op == OpKind::ReduceMean {
        for a in &mut acc {
            *a /= count as f64;
        }
    }
    Tensor::from_f64(odt, oshape, &acc)
}

/// AffineGrid's normalised coordinate of index `i` along a dimension of `len` in [-1, 1].
pub fn affine_grid_coord(i: usize, len: usize, align_corners: bool) -> f64 {
    if align_corners {
        if len <= 1 {
            -1.0
        } else {
            -1.0 + i as f64 * 2.0 / (len as f64 - 1.0)
        }
    } else {
        -1.0 + (2 * i + 1) as f64 / len as f64
    }
}

/// ConvTranspose (2-D), in scatter form: every input element adds its weighted kernel.
pub(super) fn conv_transpose(n: &Node, args: &[Option<&Tensor>], oshape: Vec<usize>) -> R<Tensor> {
    let (x, w) = (arg(args, 0)?, arg(args, 1)?);
    let g = infer::conv_transpose_geometry(n, x.shape(), w.shape())?;
    let (nb, cin, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cpg_out, cpg_in) = (w.shape()[1], cin / g.group);
    let (oh, ow) = (g.out[0], g.out[1]);
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let mut out = vec![0.0; numel(&oshape)];
    if let Some(bias) = args.get(2).copied().flatten() {
        for (i, o) in out.iter_mut().enumerate() {
            *o = bias.get_f64((i / (oh * ow)) % g.out_channels);
        }
    }
    // Scatter form: every input element adds its weighted kernel to the output.
    for b in 0..nb {
        for ci in 0..cin {
            let grp = ci / cpg_in;
            for iy in 0..h {
                for ix in 0..wd {
                    let xval = xv[((b * cin + ci) * h + iy) * wd + ix];
                    for co in 0..cpg_out {
                        for ky in 0..g.kernel[0] {
                            for kx in 0..g.kernel[1] {
                                let oy = iy as i64 * g.strides[0] + ky as i64 * g.dilations[0]
                                    - g.pad_begin[0];
                                let ox = ix as i64 * g.strides[1] + kx as i64 * g.dilations[1]
                                    - g.pad_begin[1];
                                if oy < 0 || ox < 0 || oy >= oh as i64 || ox >= ow as i64 {
                                    continue;
                                }
                                let oc = grp * cpg_out + co;
                                out[((b * g.out_channels + oc) * oh + oy as usize) * ow
                                    + ox as usize] += xval
                                    * wv[((ci * cpg_out + co) * g.kernel[0] + ky) * g.kernel[1]
                                        + kx];
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), oshape, &out))
}

/// AffineGrid: the sampling grid of affine matrices `theta`.
pub(super) fn affine_grid(
    n: &Node,
    args: &[Option<&Tensor>],
    odt: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    let theta = arg(args, 0)?.to_f64_vec();
    let ns = oshape.len() - 2; // spatial dims
    let align = n.attrs.int("align_corners", 0)? != 0;
    let sp = &oshape[1..=ns];
    let np: usize = sp.iter().product();
    let mut out = Vec::with_capacity(numel(&oshape));
    for b in 0..oshape[0] {
        for p in 0..np {
            // Homogeneous point: x (last spatial dim), y, [z], 1.
            let mut pt: Vec<f64> = (0..ns)
                .map(|j| {
                    let d = ns - 1 - j;
                    let len = sp[d];
                    let i = p / sp[d + 1..].iter().product::<usize>() % len;
                    affine_grid_coord(i, len, align)
                })
                .collect();
            pt.push(1.0);
            for k in 0..ns {
                let row = &theta[(b * ns + k) * (ns + 1)..(b * ns + k + 1) * (ns + 1)];
                out.push(row.iter().zip(&pt).map(|(t, v)| t * v).sum());
            }
        }
    }
    Ok(Tensor::from_f64(odt, oshape, &out))
}
