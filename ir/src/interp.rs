//! The reference interpreter for the graph IR: the definition of what every op means.
//!
//! Written for obviousness, not speed: every op reads its inputs as `f64` (or `i64` for
//! integer data), loops over output coordinates, and rounds the result to the output dtype.
//! Output shapes come from [`crate::infer`] applied to the actual input tensors, so the
//! interpreter and shape inference cannot disagree about shapes.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::{Graph, Node, ValueId, ValueType};
use crate::infer::{self, Window};
use crate::op::{AttrsExt, OpKind};
use crate::tensor::{Tensor, numel, strides};
use std::collections::HashMap;

type R<T> = std::result::Result<T, String>;

/// Runs the graph on `inputs` (one per graph input, in order) and returns its outputs.
pub fn run_graph(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut env = run_graph_values(g, inputs)?;
    g.outputs
        .iter()
        .map(|v| {
            env.remove(v)
                .or_else(|| env.get(v).cloned())
                .ok_or_else(|| {
                    IrError::Interp(format!("output `{}` was not computed", g.name_of(*v)))
                })
        })
        .collect()
}

/// Runs the graph on `inputs` and returns every value it computes (and its inputs and
/// initializers), e.g. the reference for one kernel of a compiled model.
pub fn run_graph_values(g: &Graph, inputs: &[Tensor]) -> Result<HashMap<ValueId, Tensor>> {
    if inputs.len() != g.inputs.len() {
        return Err(IrError::Interp(format!(
            "graph takes {} inputs, got {}",
            g.inputs.len(),
            inputs.len()
        )));
    }
    let mut env: HashMap<ValueId, Tensor> = HashMap::new();
    for (v, t) in &g.initializers {
        env.insert(*v, t.clone());
    }
    for (&v, t) in g.inputs.iter().zip(inputs) {
        if let Some(ty) = g.ty(v) {
            check_input(g.name_of(v), ty, t)?;
        }
        env.insert(v, t.clone());
    }
    for ix in g.topo_order()? {
        let n = g.node(ix);
        let args: Vec<Option<&Tensor>> = n
            .inputs
            .iter()
            .map(|i| i.and_then(|v| env.get(&v)))
            .collect();
        if n.inputs
            .iter()
            .zip(&args)
            .any(|(i, a)| i.is_some() && a.is_none())
        {
            return Err(IrError::Interp(format!(
                "node `{}` reads an undefined value",
                n.name
            )));
        }
        let outs = eval_node(n, &args).map_err(|msg| n.error(msg))?;
        for (v, t) in n.outputs.iter().zip(outs) {
            env.insert(*v, t);
        }
    }
    Ok(env)
}

/// Checks a runtime tensor against a declared input type (symbolic dims match any size).
pub fn check_input(name: &str, ty: &ValueType, t: &Tensor) -> Result<()> {
    let ok = ty.dtype == t.dtype()
        && ty.shape.len() == t.shape().len()
        && ty
            .shape
            .iter()
            .zip(t.shape())
            .all(|(d, &s)| d.known().is_none_or(|k| k == s));
    if ok {
        Ok(())
    } else {
        Err(IrError::Type(format!(
            "input `{name}` expects {ty}, got {}{:?}",
            t.dtype(),
            t.shape()
        )))
    }
}

/// Evaluates one node on concrete tensors.
pub fn eval_node(n: &Node, args: &[Option<&Tensor>]) -> R<Vec<Tensor>> {
    let tys: Vec<Option<ValueType>> = args
        .iter()
        .map(|a| a.map(|t| ValueType::new(t.dtype(), t.shape())))
        .collect();
    let out_ty = infer::infer(n, &tys, args)?;
    let oshape = out_ty[0]
        .static_shape()
        .ok_or("output shape is not static")?;
    let odt = out_ty[0].dtype;
    let a = |i: usize| -> R<&Tensor> {
        args.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("missing input {i}"))
    };
    let x = a(0);
    use OpKind::*;
    let t = match n.op {
        Constant => n.attrs.tensor("value")?.ok_or("missing value")?,
        Identity => x?.clone(),
        Relu | Sigmoid | Tanh | Erf | Gelu | Exp | Log | Sqrt | Reciprocal | Neg | Abs | Floor
        | Ceil | LeakyRelu | Sin | Cos | Softplus | HardSigmoid | HardSwish | Elu | Selu | Celu
        | Sign | Round | Softsign | ThresholdedRelu | Shrink | BitwiseNot => {
            let x = x?;
            let params = UnaryParams::of(n)?;
            if x.dtype().is_float() {
                let f = |v: f64| unary(n.op, v, &params);
                Tensor::from_f64(
                    odt,
                    oshape,
                    &x.to_f64_vec().into_iter().map(f).collect::<Vec<_>>(),
                )
            } else {
                let f = |v: i64| match n.op {
                    Neg => v.wrapping_neg(),
                    Abs => v.wrapping_abs(),
                    Relu => v.max(0),
                    Sign => v.signum(),
                    BitwiseNot => !v,
                    Shrink => unary(Shrink, v as f64, &params) as i64,
                    _ => v,
                };
                Tensor::from_i64(
                    odt,
                    oshape,
                    &x.to_i64_vec().into_iter().map(f).collect::<Vec<_>>(),
                )
            }
        }
        LRN => {
            let x = x?;
            let (alpha, beta, bias) = (
                n.attrs.float("alpha", 1e-4)?,
                n.attrs.float("beta", 0.75)?,
                n.attrs.float("bias", 1.0)?,
            );
            let size = n.attrs.int("size", 1)? as usize;
            let (c, inner) = (x.shape()[1], x.shape()[2..].iter().product::<usize>());
            let v = x.to_f64_vec();
            let (lo, hi) = ((size - 1) / 2, (size - 1).div_ceil(2));
            let out: Vec<f64> = (0..v.len())
                .map(|i| {
                    let (b, ch, r) = (i / (c * inner), (i / inner) % c, i % inner);
                    let sq: f64 = (ch.saturating_sub(lo)..=(ch + hi).min(c - 1))
                        .map(|k| v[(b * c + k) * inner + r].powi(2))
                        .sum();
                    v[i] / (bias + alpha / size as f64 * sq).powf(beta)
                })
                .collect();
            Tensor::from_f64(odt, oshape, &out)
        }
        InstanceNormalization => {
            let x = x?;
            if x.shape().len() < 3 {
                return Err("InstanceNormalization needs rank >= 3".into());
            }
            let eps = n.attrs.float("epsilon", 1e-5)?;
            let (c, inner) = (x.shape()[1], x.shape()[2..].iter().product::<usize>());
            let (sc, b) = (a(1)?.to_f64_vec(), a(2)?.to_f64_vec());
            if sc.len() != c || b.len() != c {
                return Err(format!("scale and bias must have {c} values"));
            }
            let out = normalize_lanes(&x.to_f64_vec(), inner, eps, |row, _| {
                (sc[row % c], b[row % c])
            });
            Tensor::from_f64(odt, oshape, &out)
        }
        PRelu => {
            let (x, s) = (x?, a(1)?);
            let si = bcast_index(s.shape(), &oshape);
            let v: Vec<f64> = x
                .to_f64_vec()
                .iter()
                .enumerate()
                .map(|(i, &v)| if v < 0.0 { s.get_f64(si[i]) * v } else { v })
                .collect();
            Tensor::from_f64(odt, oshape, &v)
        }
        Range => {
            let (s, d) = (a(0)?, a(2)?);
            if odt.is_float() {
                let (s, d) = (s.get_f64(0), d.get_f64(0));
                Tensor::from_f64(
                    odt,
                    oshape.clone(),
                    &(0..oshape[0]).map(|i| s + i as f64 * d).collect::<Vec<_>>(),
                )
            } else {
                let (s, d) = (s.get_i64(0), d.get_i64(0));
                Tensor::from_i64(
                    odt,
                    oshape.clone(),
                    &(0..oshape[0] as i64).map(|i| s + i * d).collect::<Vec<_>>(),
                )
            }
        }
        Pad => {
            let x = x?;
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
            if odt.is_float() {
                Tensor::from_f64(odt, oshape, &v)
            } else {
                Tensor::from_i64(
                    odt,
                    oshape,
                    &v.iter().map(|&f| f as i64).collect::<Vec<_>>(),
                )
            }
        }
        ConvTranspose => {
            let (x, w) = (x?, a(1)?);
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
                                        let oy = iy as i64 * g.strides[0]
                                            + ky as i64 * g.dilations[0]
                                            - g.pad_begin[0];
                                        let ox = ix as i64 * g.strides[1]
                                            + kx as i64 * g.dilations[1]
                                            - g.pad_begin[1];
                                        if oy < 0 || ox < 0 || oy >= oh as i64 || ox >= ow as i64 {
                                            continue;
                                        }
                                        let oc = grp * cpg_out + co;
                                        out[((b * g.out_channels + oc) * oh + oy as usize) * ow
                                            + ox as usize] += xval
                                            * wv[((ci * cpg_out + co) * g.kernel[0] + ky)
                                                * g.kernel[1]
                                                + kx];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Tensor::from_f64(x.dtype(), oshape, &out)
        }
        Resize => {
            let x = x?;
            let p = infer::resize_plan(
                n,
                x.shape(),
                args.get(1).copied().flatten(),
                args.get(2).copied().flatten(),
                args.get(3).copied().flatten(),
            )?;
            Tensor::from_f64(odt, oshape, &p.apply(&x.to_f64_vec(), x.shape()))
        }
        ArgMax | ArgMin => {
            let x = x?;
            let axis = infer::norm_axis(n.attrs.int("axis", 0)?, x.shape().len())?;
            let last = n.attrs.int("select_last_index", 0)? != 0;
            let s = x.shape();
            let (outer, len, inner) = (
                s[..axis].iter().product::<usize>(),
                s[axis],
                s[axis + 1..].iter().product::<usize>(),
            );
            let v = x.to_f64_vec();
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let mut best = 0usize;
                    for k in 1..len {
                        let (a, b) = (
                            v[(o * len + k) * inner + i],
                            v[(o * len + best) * inner + i],
                        );
                        let better = if n.op == ArgMax {
                            a > b || (last && a == b)
                        } else {
                            a < b || (last && a == b)
                        };
                        if better {
                            best = k;
                        }
                    }
                    out.push(best as i64);
                }
            }
            Tensor::from_i64(DType::I64, oshape, &out)
        }
        Trilu => {
            let x = x?;
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
            if x.dtype().is_float() {
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
            }
        }
        CumSum => {
            let x = x?;
            let axis = infer::norm_axis(a(1)?.get_i64(0), x.shape().len())?;
            let (exclusive, reverse) = (
                n.attrs.int("exclusive", 0)? != 0,
                n.attrs.int("reverse", 0)? != 0,
            );
            let s = x.shape();
            let (outer, len, inner) = (
                s[..axis].iter().product::<usize>(),
                s[axis],
                s[axis + 1..].iter().product::<usize>(),
            );
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
            if float {
                Tensor::from_f64(odt, oshape, &out_f)
            } else {
                Tensor::from_i64(odt, oshape, &out_i)
            }
        }
        Tile => {
            let x = x?;
            let is = strides(x.shape());
            let os = strides(&oshape);
            let idx: Vec<usize> = (0..numel(&oshape))
                .map(|o| {
                    (0..oshape.len())
                        .map(|k| (o / os[k] % oshape[k]) % x.shape()[k] * is[k])
                        .sum()
                })
                .collect();
            take(x, &oshape, &idx)
        }
        IsNaN | IsInf => {
            let (neg, pos) = (
                n.attrs.int("detect_negative", 1)? != 0,
                n.attrs.int("detect_positive", 1)? != 0,
            );
            let f = |v: f64| match n.op {
                IsNaN => v.is_nan(),
                _ => (v == f64::INFINITY && pos) || (v == f64::NEG_INFINITY && neg),
            };
            Tensor::from_i64(
                odt,
                oshape,
                &x?.to_f64_vec()
                    .into_iter()
                    .map(|v| f(v) as i64)
                    .collect::<Vec<_>>(),
            )
        }
        Size => Tensor::from_i64(odt, oshape, &[x?.len() as i64]),
        HannWindow | HammingWindow | BlackmanWindow => {
            let size = oshape[0];
            let periodic = n.attrs.int("periodic", 1)? != 0;
            let denom = if periodic {
                size
            } else {
                size.saturating_sub(1)
            } as f64;
            let pi = std::f64::consts::PI;
            let v: Vec<f64> = (0..size)
                .map(|i| {
                    let t = i as f64 / denom;
                    match n.op {
                        HannWindow => (pi * t).sin().powi(2),
                        HammingWindow => 25.0 / 46.0 - (21.0 / 46.0) * (2.0 * pi * t).cos(),
                        _ => 0.42 - 0.5 * (2.0 * pi * t).cos() + 0.08 * (4.0 * pi * t).cos(),
                    }
                })
                .collect();
            Tensor::from_f64(odt, oshape, &v)
        }
        MelWeightMatrix => Tensor::from_f64(
            odt,
            oshape.clone(),
            &mel_weight_matrix(
                oshape[1],
                a(1)?.get_i64(0),
                a(2)?.get_i64(0),
                a(3)?.get_f64(0),
                a(4)?.get_f64(0),
            ),
        ),
        DFT => {
            let x = x?;
            let p = crate::signal::dft_plan(
                n,
                x.shape(),
                args.get(1).copied().flatten(),
                args.get(2).copied().flatten(),
            )?;
            Tensor::from_f64(odt, oshape, &p.apply(&x.to_f64_vec(), x.shape()))
        }
        NonMaxSuppression => {
            let found = crate::detect::non_max_suppression(n, args)?;
            let flat: Vec<i64> = found.iter().flatten().copied().collect();
            Tensor::from_i64(odt, oshape, &flat)
        }
        AffineGrid => {
            let theta = x?.to_f64_vec();
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
            Tensor::from_f64(odt, oshape, &out)
        }
        STFT => {
            let x = x?;
            let w = args.get(2).copied().flatten().map(|t| t.to_f64_vec());
            let p = crate::signal::stft_plan(
                n,
                x.shape(),
                args.get(1).copied().flatten(),
                w.as_ref().map(|w| w.len()),
                args.get(3).copied().flatten(),
            )?;
            Tensor::from_f64(
                odt,
                oshape,
                &p.apply(&x.to_f64_vec(), x.shape(), w.as_deref()),
            )
        }
        WinogradInput => {
            let x = x?;
            let p = crate::winograd::WinogradPlan::of_input(n, x.shape())?;
            Tensor::from_f64(odt, oshape, &p.apply_input(&x.to_f64_vec(), x.shape()))
        }
        WinogradOutput => {
            let x = x?;
            let p = crate::winograd::WinogradPlan::of_output(n, x.shape())?;
            let bias = args.get(1).copied().flatten().map(Tensor::to_f64_vec);
            let y = p.apply_output(&x.to_f64_vec(), x.shape(), bias.as_deref());
            Tensor::from_f64(odt, oshape, &y)
        }
        Col2Im => {
            let x = x?;
            let p = crate::col2im::col2im_plan(
                n,
                x.shape(),
                args.get(1).copied().flatten(),
                args.get(2).copied().flatten(),
            )?;
            Tensor::from_f64(odt, oshape, &p.apply(&x.to_f64_vec(), x.shape()))
        }
        NonZero => {
            let x = x?;
            let (s, v) = (x.shape(), x.to_f64_vec());
            let hits: Vec<usize> = (0..v.len()).filter(|&i| v[i] != 0.0).collect();
            let st = strides(s);
            let mut out = vec![0i64; s.len() * hits.len()];
            for (j, &h) in hits.iter().enumerate() {
                for d in 0..s.len() {
                    out[d * hits.len() + j] = (h / st[d] % s[d]) as i64;
                }
            }
            Tensor::from_i64(odt, oshape, &out)
        }
        Not => Tensor::from_i64(
            odt,
            oshape,
            &x?.to_i64_vec()
                .iter()
                .map(|&v| (v == 0) as i64)
                .collect::<Vec<_>>(),
        ),
        Clip => {
            let x = x?;
            let lo = args
                .get(1)
                .copied()
                .flatten()
                .map(|t| t.get_f64(0))
                .unwrap_or(f64::NEG_INFINITY);
            let hi = args
                .get(2)
                .copied()
                .flatten()
                .map(|t| t.get_f64(0))
                .unwrap_or(f64::INFINITY);
            let v: Vec<f64> = x
                .to_f64_vec()
                .into_iter()
                .map(|v| if v.is_nan() { v } else { v.max(lo).min(hi) })
                .collect();
            Tensor::from_f64(odt, oshape, &v)
        }
        Add | Sub | Mul | Div | Pow | Max | Min | Sum | Equal | Less | Greater | And | Or
        | GreaterOrEqual | LessOrEqual | Xor | BitwiseAnd | BitwiseOr | BitwiseXor => {
            let ins: Vec<&Tensor> = args.iter().flatten().copied().collect();
            let mut acc = ins[0].clone();
            if ins.len() == 1 {
                acc = acc.reshaped(oshape.clone()).map_err(|e| e.to_string())?;
            }
            for b in &ins[1..] {
                acc = binary(n.op, &acc, b)?;
            }
            acc
        }
        Where => {
            let (c, x, y) = (a(0)?, a(1)?, a(2)?);
            let (ci, xi, yi) = (
                bcast_index(c.shape(), &oshape),
                bcast_index(x.shape(), &oshape),
                bcast_index(y.shape(), &oshape),
            );
            // x and y share the output dtype: pick each element's bytes from one of them.
            let size = odt.size();
            let mut bytes = Vec::with_capacity(numel(&oshape) * size);
            for i in 0..numel(&oshape) {
                let (t, j) = if c.get_i64(ci[i]) != 0 {
                    (x, xi[i])
                } else {
                    (y, yi[i])
                };
                bytes.extend_from_slice(&t.bytes()[j * size..(j + 1) * size]);
            }
            Tensor::from_bytes(odt, oshape, bytes).map_err(|e| e.to_string())?
        }
        Mod => binary_mod(Mod, x?, a(1)?, n.attrs.int("fmod", 0)? != 0)?,
        Cast | CastLike => x?.cast(odt),
        Fused => {
            let body = n.attrs.graph("body")?;
            let ins: Vec<Tensor> = args
                .iter()
                .map(|a| a.cloned().ok_or_else(|| "missing input".to_string()))
                .collect::<R<_>>()?;
            run_graph(body, &ins)
                .map_err(|e| e.to_string())?
                .pop()
                .ok_or("the body has no output")?
        }
        MatMul => match n.attrs.ints("b_perm")? {
            Some(p) => {
                let b = a(1)?;
                let b = transpose(b, &infer::permutation(Some(p), b.shape().len())?)?;
                matmul(x?, &b, &oshape)?
            }
            None => matmul(x?, a(1)?, &oshape)?,
        },
        Gemm => gemm(n, x?, a(1)?, args.get(2).copied().flatten(), &oshape)?,
        Conv | MaxPool | AveragePool if x.as_ref().is_ok_and(|x| x.shape().len() == 3) => {
            // 1-D: the 2-D window over a height-1 input.
            let lifted = infer::lift_1d_window(n)?;
            let up = |t: &Tensor| {
                let s = t.shape();
                t.clone()
                    .reshaped(vec![s[0], s[1], 1, s[2]])
                    .map_err(|e| e.to_string())
            };
            let x = up(x?)?;
            let lifted_out = [oshape[0], oshape[1], 1, oshape[2]];
            let y = match n.op {
                Conv => conv(
                    &lifted,
                    &x,
                    &up(a(1)?)?,
                    args.get(2).copied().flatten(),
                    &lifted_out,
                )?,
                _ => pool(&lifted, &x, &lifted_out)?,
            };
            y.reshaped(oshape.clone()).map_err(|e| e.to_string())?
        }
        Conv => conv(n, x?, a(1)?, args.get(2).copied().flatten(), &oshape)?,
        MaxPool | AveragePool => pool(n, x?, &oshape)?,
        GlobalAveragePool => {
            let x = x?;
            let (nc, hw) = (
                oshape[0] * oshape[1],
                x.len() / (oshape[0] * oshape[1]).max(1),
            );
            let v = x.to_f64_vec();
            Tensor::from_f64(
                odt,
                oshape,
                &(0..nc)
                    .map(|i| v[i * hw..(i + 1) * hw].iter().sum::<f64>() / hw as f64)
                    .collect::<Vec<_>>(),
            )
        }
        BatchNormalization => {
            let x = x?;
            let eps = n.attrs.float("epsilon", 1e-5)?;
            let (sc, b, m, var) = (
                a(1)?.to_f64_vec(),
                a(2)?.to_f64_vec(),
                a(3)?.to_f64_vec(),
                a(4)?.to_f64_vec(),
            );
            let c = x.shape()[1];
            let inner: usize = x.shape()[2..].iter().product();
            let v: Vec<f64> = x
                .to_f64_vec()
                .iter()
                .enumerate()
                .map(|(i, &xv)| {
                    let ch = (i / inner) % c;
                    (xv - m[ch]) / (var[ch] + eps).sqrt() * sc[ch] + b[ch]
                })
                .collect();
            Tensor::from_f64(odt, oshape, &v)
        }
        LayerNormalization => {
            let x = x?;
            let axis = infer::norm_axis(n.attrs.int("axis", -1)?, x.shape().len())?;
            let eps = n.attrs.float("epsilon", 1e-5)?;
            let inner: usize = x.shape()[axis..].iter().product();
            let sc = a(1)?;
            let bias = args.get(2).copied().flatten();
            let si = bcast_index(sc.shape(), &x.shape()[axis..]);
            let bi = bias.map(|b| bcast_index(b.shape(), &x.shape()[axis..]));
            let out = normalize_lanes(&x.to_f64_vec(), inner, eps, |_, j| {
                let shift = match (bias, &bi) {
                    (Some(b), Some(bi)) => b.get_f64(bi[j]),
                    _ => 0.0,
                };
                (sc.get_f64(si[j]), shift)
            });
            Tensor::from_f64(odt, oshape, &out)
        }
        Softmax | LogSoftmax => {
            let x = x?;
            let axis = infer::norm_axis(n.attrs.int("axis", -1)?, x.shape().len())?;
            reduce_like(x, axis, |lane| {
                let m = lane.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = lane.iter().map(|v| (v - m).exp()).collect();
                let s: f64 = e.iter().sum();
                if n.op == LogSoftmax {
                    lane.iter().map(|v| v - m - s.ln()).collect()
                } else {
                    e.into_iter().map(|v| v / s).collect()
                }
            })
        }
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceL2 | ReduceSumSquare
        | ReduceProd | ReduceL1 | ReduceLogSum | ReduceLogSumExp => {
            let x = x?;
            let axes = infer::reduce_axes(
                n,
                x.shape().len(),
                args.get(1).copied().flatten(),
                args.get(1).is_some_and(|a| a.is_some()),
            )?;
            reduce(n.op, x, &axes, odt, oshape)
        }
        Reshape | Flatten | Squeeze | Unsqueeze => {
            x?.clone().reshaped(oshape).map_err(|e| e.to_string())?
        }
        DepthToSpace | SpaceToDepth => {
            // Output (c, y, x) by its definition's index arithmetic (not its reshapes).
            let x = x?;
            let b = infer::space_depth_block(n)?;
            let (cin, h, w) = (x.shape()[1], x.shape()[2], x.shape()[3]);
            let (oc, is_d2s) = (oshape[1], n.op == DepthToSpace);
            let crd = is_d2s && infer::depth_to_space_crd(n)?;
            gather_by(x, odt, &oshape, |o| {
                let (nb, c, y, xx) = (o[0], o[1], o[2], o[3]);
                let (ci, iy, ix) = if is_d2s {
                    let (i, j) = (y % b, xx % b);
                    let ci = if crd {
                        c * b * b + i * b + j
                    } else {
                        (i * b + j) * oc + c
                    };
                    (ci, y / b, xx / b)
                } else {
                    let (ij, ci) = (c / cin, c % cin);
                    (ci, y * b + ij / b, xx * b + ij % b)
                };
                ((nb * cin + ci) * h + iy) * w + ix
            })
        }
        Transpose => {
            let x = x?;
            transpose(
                x,
                &infer::permutation(n.attrs.ints("perm")?, x.shape().len())?,
            )?
        }
        Concat => {
            let ins: Vec<&Tensor> = args.iter().flatten().copied().collect();
            let axis = infer::norm_axis(n.attrs.int("axis", 0)?, oshape.len())?;
            let outer: usize = oshape[..axis].iter().product();
            let mut bytes = Vec::with_capacity(numel(&oshape) * odt.size());
            for o in 0..outer {
                for t in &ins {
                    let chunk = t.shape()[axis..].iter().product::<usize>() * odt.size();
                    bytes.extend_from_slice(&t.bytes()[o * chunk..(o + 1) * chunk]);
                }
            }
            Tensor::from_bytes(odt, oshape, bytes).map_err(|e| e.to_string())?
        }
        Slice => {
            let x = x?;
            let ints = |i: usize| args.get(i).copied().flatten().map(|t| t.to_i64_vec());
            let p = infer::slice_params(
                x.shape(),
                &ints(1).unwrap_or_default(),
                &ints(2).unwrap_or_default(),
                ints(3).as_deref(),
                ints(4).as_deref(),
            )?;
            let is = strides(x.shape());
            gather_by(x, odt, &oshape, |idx| {
                idx.iter()
                    .enumerate()
                    .map(|(i, &c)| (p[i].0 + c as i64 * p[i].1) as usize * is[i])
                    .sum()
            })
        }
        Gather => {
            let (x, ind) = (x?, a(1)?);
            let axis = infer::norm_axis(n.attrs.int("axis", 0)?, x.shape().len())?;
            let d = x.shape()[axis] as i64;
            let iv = ind.to_i64_vec();
            for &i in &iv {
                if i < -d || i >= d {
                    return Err(format!("index {i} out of range for axis of size {d}"));
                }
            }
            let is = strides(x.shape());
            let q = ind.shape().len();
            let ist = strides(ind.shape());
            gather_by(x, odt, &oshape, |idx| {
                let mut off = 0;
                for (k, &c) in idx[..axis].iter().enumerate() {
                    off += c * is[k];
                }
                let flat: usize = idx[axis..axis + q]
                    .iter()
                    .zip(&ist)
                    .map(|(c, s)| c * s)
                    .sum();
                let mut g = iv[flat];
                if g < 0 {
                    g += d;
                }
                off += g as usize * is[axis];
                for (k, &c) in idx[axis + q..].iter().enumerate() {
                    off += c * is[axis + 1 + k];
                }
                off
            })
        }
        GatherElements => gather_elements(n, x?, a(1)?, odt, &oshape)?,
        GatherND => gather_nd(n, x?, a(1)?, odt, &oshape)?,
        ScatterElements | ScatterND => scatter(n, x?, a(1)?, a(2)?)?,
        Expand => {
            let x = x?;
            take(x, &oshape, &bcast_index(x.shape(), &oshape))
        }
        ConstantOfShape => {
            let v = n
                .attrs
                .tensor("value")?
                .unwrap_or_else(|| Tensor::from_f64(DType::F32, vec![1], &[0.0]));
            if v.len() != 1 {
                return Err("`value` must have one element".into());
            }
            let cnt = numel(&oshape);
            Tensor::from_bytes(odt, oshape, v.bytes().repeat(cnt)).map_err(|e| e.to_string())?
        }
        Shape => {
            let x = x?;
            let (s, e) = infer::shape_range(n, x.shape().len() as i64)?;
            Tensor::from_i64(
                DType::I64,
                oshape,
                &x.shape()[s as usize..e as usize]
                    .iter()
                    .map(|&d| d as i64)
                    .collect::<Vec<_>>(),
            )
        }
    };
    Ok(vec![t])
}

/// Normalises consecutive lanes of `inner` values: `(v - mean) / sqrt(var + eps) * scale + shift`
/// with `(scale, shift) = affine(lane, position)` (LayerNormalization, InstanceNormalization).
fn normalize_lanes(
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

/// A tensor of `shape` whose element `i` is element `indices[i]` of `src` (same dtype).
fn take(src: &Tensor, shape: &[usize], indices: &[usize]) -> Tensor {
    let s = src.dtype().size();
    let mut bytes = Vec::with_capacity(indices.len() * s);
    for &j in indices {
        bytes.extend_from_slice(&src.bytes()[j * s..(j + 1) * s]);
    }
    Tensor::from_bytes(src.dtype(), shape.to_vec(), bytes).expect("take: sizes agree")
}

/// The scalar meaning of each unary float op.
/// Attribute values of the parameterised unary ops, with each op's ONNX defaults.
#[derive(Clone, Debug)]
pub struct UnaryParams {
    pub alpha: f64,
    pub beta: f64,
    /// Selu's scale.
    pub gamma: f64,
    pub approximate: String,
}

impl UnaryParams {
    pub fn of(n: &Node) -> R<UnaryParams> {
        if n.op == OpKind::Shrink {
            // Shrink's bias travels as beta and its lambd as gamma.
            return Ok(UnaryParams {
                alpha: 0.0,
                beta: n.attrs.float("bias", 0.0)?,
                gamma: n.attrs.float("lambd", 0.5)?,
                approximate: String::new(),
            });
        }
        let (da, db) = match n.op {
            OpKind::HardSigmoid => (0.2, 0.5),
            OpKind::Elu | OpKind::Celu | OpKind::ThresholdedRelu => (1.0, 0.0),
            OpKind::Selu => (1.673_263_192_176_818_8, 0.0),
            _ => (0.01, 0.0),
        };
        Ok(UnaryParams {
            alpha: n.attrs.float("alpha", da)?,
            gamma: n.attrs.float("gamma", 1.050_701_022_148_132_3)?,
            beta: n.attrs.float("beta", db)?,
            approximate: n.attrs.string("approximate", "none")?,
        })
    }
}

/// The scalar meaning of each unary float op.
pub fn unary(op: OpKind, v: f64, p: &UnaryParams) -> f64 {
    use OpKind::*;
    let (alpha, approximate) = (p.alpha, p.approximate.as_str());
    match op {
        Sin => v.sin(),
        Cos => v.cos(),
        // Stable form: exp never overflows.
        Softplus => v.max(0.0) + (-v.abs()).exp().ln_1p(),
        HardSigmoid => (p.alpha * v + p.beta).clamp(0.0, 1.0),
        HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
        Elu => {
            if v >= 0.0 {
                v
            } else {
                alpha * (v.exp() - 1.0)
            }
        }
        Selu => p.gamma * if v > 0.0 { v } else { alpha * (v.exp() - 1.0) },
        Celu => v.max(0.0) + (alpha * ((v / alpha).exp() - 1.0)).min(0.0),
        Relu => v.max(0.0),
        Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Tanh => v.tanh(),
        Erf => erf(v),
        Gelu if approximate == "tanh" => {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
        }
        Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        Exp => v.exp(),
        Log => v.ln(),
        Sqrt => v.sqrt(),
        Reciprocal => 1.0 / v,
        Neg => -v,
        Abs => v.abs(),
        Floor => v.floor(),
        Ceil => v.ceil(),
        LeakyRelu => {
            if v >= 0.0 {
                v
            } else {
                alpha * v
            }
        }
        Sign => {
            if v.is_nan() {
                v
            } else if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Round => v.round_ties_even(),
        Softsign => v / (1.0 + v.abs()),
        ThresholdedRelu => {
            if v > alpha {
                v
            } else {
                0.0
            }
        }
        Shrink => {
            let (bias, lambd) = (p.beta, p.gamma);
            if v < -lambd {
                v + bias
            } else if v > lambd {
                v - bias
            } else {
                0.0
            }
        }
        _ => f64::NAN,
    }
}

/// erf to double precision (Abramowitz–Stegun 7.1.26 is too coarse; this uses the
/// complementary-error-function continued expansion from W. J. Cody's rational fits).
pub fn erf(x: f64) -> f64 {
    // Numerical Recipes' erfc with Chebyshev fit: relative error < 1.2e-7 everywhere,
    // refined by one Newton step on erf' = 2/sqrt(pi) exp(-x^2) via a series for small |x|.
    if x.abs() < 2.0 {
        // Maclaurin series: converges fast for |x| < 2 (terms shrink below 1e-17 by n = 40).
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..60 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // Continued fraction for erfc, accurate for |x| >= 2.
    let ax = x.abs();
    let mut f = 0.0;
    for k in (1..=60).rev() {
        f = (k as f64 / 2.0) / (ax + f);
    }
    let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
    if x > 0.0 { 1.0 - erfc } else { erfc - 1.0 }
}

/// For each element of `out_shape`, the flat index of the broadcast element of `in_shape`.
pub fn bcast_index(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let r = out_shape.len();
    let off = r - in_shape.len();
    let is = strides(in_shape);
    let n = numel(out_shape);
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let mut f = 0;
        for k in off..r {
            if in_shape[k - off] != 1 {
                f += idx[k] * is[k - off];
            }
        }
        res.push(f);
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    res
}

/// Builds a tensor of `shape` whose element at coordinate `idx` is `src[offset(idx)]`.
fn gather_by(
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

fn binary(op: OpKind, a: &Tensor, b: &Tensor) -> R<Tensor> {
    binary_mod(op, a, b, false)
}

/// [`binary`] with Mod's `fmod` flag.
fn binary_mod(op: OpKind, a: &Tensor, b: &Tensor, fmod: bool) -> R<Tensor> {
    use OpKind::*;
    let shape = infer::broadcast_static(&[a.shape(), b.shape()])?;
    let (ai, bi) = (
        bcast_index(a.shape(), &shape),
        bcast_index(b.shape(), &shape),
    );
    let n = numel(&shape);
    let cmp = matches!(
        op,
        Equal | Less | Greater | And | Or | GreaterOrEqual | LessOrEqual | Xor
    );
    if a.dtype().is_float() {
        let f = |x: f64, y: f64| match op {
            Add | Sum => x + y,
            Sub => x - y,
            Mul => x * y,
            Div => x / y,
            Pow => x.powf(y),
            Max => {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.max(y)
                }
            }
            Min => {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.min(y)
                }
            }
            Equal => (x == y) as i64 as f64,
            Less => (x < y) as i64 as f64,
            Greater => (x > y) as i64 as f64,
            GreaterOrEqual => (x >= y) as i64 as f64,
            LessOrEqual => (x <= y) as i64 as f64,
            // fmod: the remainder has the dividend's sign (C fmod).
            Mod => x % y,
            _ => f64::NAN,
        };
        let v: Vec<f64> = (0..n)
            .map(|i| f(a.get_f64(ai[i]), b.get_f64(bi[i])))
            .collect();
        Ok(Tensor::from_f64(
            if cmp { DType::Bool } else { a.dtype() },
            shape,
            &v,
        ))
    } else {
        let f = |x: i64, y: i64| -> R<i64> {
            Ok(match op {
                Add | Sum => x.wrapping_add(y),
                Sub => x.wrapping_sub(y),
                Mul => x.wrapping_mul(y),
                Div => {
                    if y == 0 {
                        return Err("integer division by zero".into());
                    }
                    x.wrapping_div(y)
                }
                Pow => (x as f64).powf(y as f64) as i64,
                Max => x.max(y),
                Min => x.min(y),
                Equal => (x == y) as i64,
                Less => (x < y) as i64,
                Greater => (x > y) as i64,
                GreaterOrEqual => (x >= y) as i64,
                LessOrEqual => (x <= y) as i64,
                // Bitwise on integers; on bools the same as the logical ops.
                And | BitwiseAnd => x & y,
                Or | BitwiseOr => x | y,
                Xor | BitwiseXor => x ^ y,
                Mod if y == 0 => return Err("integer modulo by zero".into()),
                Mod if fmod => x.wrapping_rem(y),
                // The remainder takes the divisor's sign (Python's %).
                Mod => {
                    let r = x.wrapping_rem(y);
                    if r != 0 && ((r < 0) != (y < 0)) {
                        r + y
                    } else {
                        r
                    }
                }
                _ => 0,
            })
        };
        let v: Vec<i64> = (0..n)
            .map(|i| f(a.get_i64(ai[i]), b.get_i64(bi[i])))
            .collect::<R<_>>()?;
        Ok(Tensor::from_i64(
            if cmp { DType::Bool } else { a.dtype() },
            shape,
            &v,
        ))
    }
}

fn matmul(a: &Tensor, b: &Tensor, oshape: &[usize]) -> R<Tensor> {
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

fn gemm(n: &Node, a: &Tensor, b: &Tensor, c: Option<&Tensor>, oshape: &[usize]) -> R<Tensor> {
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

fn conv(n: &Node, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, oshape: &[usize]) -> R<Tensor> {
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

fn pool(n: &Node, x: &Tensor, oshape: &[usize]) -> R<Tensor> {
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
fn reduce_like(x: &Tensor, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Tensor {
    let s = x.shape();
    let (outer, len, inner) = (
        s[..axis].iter().product::<usize>(),
        s[axis],
        s[axis + 1..].iter().product::<usize>(),
    );
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

fn reduce(op: OpKind, x: &Tensor, axes: &[usize], odt: DType, oshape: Vec<usize>) -> Tensor {
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

/// The smallest and largest value of an integer dtype.
fn int_limits(dt: DType) -> (i64, i64) {
    match dt {
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    }
}

/// An index read from an indices tensor, checked against `d` and made non-negative.
fn checked_index(i: i64, d: usize) -> R<usize> {
    let d = d as i64;
    if i < -d || i >= d {
        return Err(format!(
            "index {i} out of range for a dimension of size {d}"
        ));
    }
    Ok(if i < 0 { i + d } else { i } as usize)
}

fn gather_elements(n: &Node, x: &Tensor, ind: &Tensor, odt: DType, oshape: &[usize]) -> R<Tensor> {
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

fn gather_nd(n: &Node, x: &Tensor, ind: &Tensor, odt: DType, oshape: &[usize]) -> R<Tensor> {
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
fn scatter(n: &Node, x: &Tensor, ind: &Tensor, upd: &Tensor) -> R<Tensor> {
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

/// MelWeightMatrix as onnx's reference computes it: triangular filters on the mel scale,
/// `[dft_length / 2 + 1, num_mel_bins]` row-major.
fn mel_weight_matrix(bins: usize, dft: i64, rate: i64, lo_hz: f64, hi_hz: f64) -> Vec<f64> {
    let spec = (dft / 2 + 1) as usize;
    let mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / 10f64.ln();
    let (lo, hi) = (mel(lo_hz), mel(hi_hz));
    let step = (hi - lo) / (bins + 2) as f64;
    let freq: Vec<i64> = (0..bins + 2)
        .map(|i| {
            let m = i as f64 * step + lo;
            let hz = 700.0 * (m / 2595.0 * 10f64.ln()).exp_m1();
            (((dft + 1) as f64 * hz) / rate as f64).floor() as i64
        })
        .collect();
    let mut out = vec![0.0; spec * bins];
    let mut set = |j: i64, i: usize, v: f64| {
        if j >= 0 && (j as usize) < spec {
            out[j as usize * bins + i] = v;
        }
    };
    for i in 0..bins {
        let (l, c, h) = (freq[i], freq[i + 1], freq[i + 2]);
        if c == l {
            set(c, i, 1.0);
        } else {
            for j in l..=c {
                set(j, i, (j - l) as f64 / (c - l) as f64);
            }
        }
        if h > c {
            for j in c..h {
                set(j, i, (h - j) as f64 / (h - c) as f64);
            }
        }
    }
    out
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

/// `x` transposed by `perm` (axis `i` of the result is axis `perm[i]` of `x`).
fn transpose(x: &Tensor, perm: &[usize]) -> R<Tensor> {
    let is = strides(x.shape());
    let shape = infer::permuted(x.shape(), perm);
    Ok(gather_by(x, x.dtype(), &shape, |idx| {
        idx.iter().enumerate().map(|(i, &c)| c * is[perm[i]]).sum()
    }))
}
