//! The reference interpreter for the graph IR: the definition of what every op means.
//!
//! Written for obviousness, not speed: every op reads its inputs as `f64` (or `i64` for
//! integer data), loops over output coordinates, and rounds the result to the output dtype.
//! Output shapes come from [`crate::infer`] applied to the actual input tensors, so the
//! interpreter and shape inference cannot disagree about shapes.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::{Graph, Node, ValueId, ValueType};
use crate::infer;
use crate::op::{AttrsExt, OpKind};
use crate::tensor::{Tensor, numel, strides};
use std::collections::HashMap;

mod nn;
mod scalar;
mod shape;
mod spectral;

pub use nn::affine_grid_coord;
use nn::{conv, gemm, matmul, normalize_lanes, pool, reduce, reduce_like};
pub use scalar::{UnaryParams, bcast_index, erf, unary};
use scalar::{binary, binary_mod};
use shape::{gather_by, gather_elements, gather_nd, scatter, take, transpose};

type R<T> = std::result::Result<T, String>;

/// A shape seen around `axis`: the elements before it (outer), its length, after it (inner).
fn around_axis(s: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        s[..axis].iter().product(),
        s[axis],
        s[axis + 1..].iter().product(),
    )
}

/// Input `i` of a node's arguments (an error where it is missing or omitted).
fn arg<'t>(args: &[Option<&'t Tensor>], i: usize) -> R<&'t Tensor> {
    args.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("missing input {i}"))
}

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
    let a = |i: usize| arg(args, i);
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
        Pad => shape::pad(n, args, odt, oshape)?,
        ConvTranspose => nn::conv_transpose(n, args, oshape)?,
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
            let (outer, len, inner) = around_axis(s, axis);
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
        Trilu => shape::trilu(n, args, odt, oshape)?,
        CumSum => shape::cum_sum(n, args, odt, oshape)?,
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
        HannWindow | HammingWindow | BlackmanWindow => spectral::window(n, odt, oshape)?,
        MelWeightMatrix => spectral::mel_weight_matrix_op(args, odt, oshape)?,
        DFT => spectral::dft(n, args, odt, oshape)?,
        NonMaxSuppression => {
            let found = crate::detect::non_max_suppression(n, args)?;
            let flat: Vec<i64> = found.iter().flatten().copied().collect();
            Tensor::from_i64(odt, oshape, &flat)
        }
        AffineGrid => nn::affine_grid(n, args, odt, oshape)?,
        STFT => spectral::stft(n, args, odt, oshape)?,
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
