//! Shape and type inference for every graph op, over possibly-symbolic dimensions.
//!
//! Ops whose output shape depends on an input's *values* (Reshape's shape, Slice's bounds,
//! reduction axes, …) need that input to be a constant; otherwise inference reports which
//! input it needs. Errors are plain strings here; [`Graph::infer_types`](crate::Graph::infer_types)
//! wraps them with the node's name and op.

use crate::dtype::DType;
use crate::graph::{Dim, Node, ValueType};
use crate::op::{AttrsExt, OpKind};
pub use crate::resize::{AxisTaps, ResizePlan, resize_plan};
use crate::tensor::Tensor;

type R<T> = std::result::Result<T, String>;

mod geometry;
mod products;

pub use geometry::{
    ConvTransposeGeometry, Window, broadcast, broadcast_static, conv_transpose_geometry,
    depth_to_space_crd, lift_1d_window, norm_axis, pad_amounts, permutation, permuted, pool_out,
    range_len, reduce_axes, reshape_target, shape_range, slice_params, space_depth_block,
    space_depth_plan,
};
use geometry::{const_ints, known, spatial_sizes};

/// Infers the output types of `n` from its input types and any constant inputs, and rejects
/// outputs with more than [`crate::tensor::MAX_ELEMENTS`] elements.
pub fn infer(n: &Node, tys: &[Option<ValueType>], consts: &[Option<&Tensor>]) -> R<Vec<ValueType>> {
    let out = infer_shapes(n, tys, consts)?;
    for t in &out {
        if let Some(s) = t.static_shape()
            && crate::tensor::checked_numel(&s).is_none()
        {
            return Err(format!(
                "output {t} has more than {} elements",
                crate::tensor::MAX_ELEMENTS
            ));
        }
    }
    Ok(out)
}

/// Input `i`'s type (an error where it is missing or omitted).
fn input(tys: &[Option<ValueType>], i: usize) -> R<&ValueType> {
    tys.get(i)
        .and_then(|t| t.as_ref())
        .ok_or_else(|| format!("missing input {i}"))
}

/// The static shape of `x`, an input of `n`, or an error naming the op.
fn static_input(n: &Node, x: &ValueType) -> R<Vec<usize>> {
    x.static_shape()
        .ok_or_else(|| format!("{} needs a static input shape", n.op))
}

fn infer_shapes(
    n: &Node,
    tys: &[Option<ValueType>],
    consts: &[Option<&Tensor>],
) -> R<Vec<ValueType>> {
    use OpKind::*;
    let t = |i: usize| input(tys, i);
    let c = |i: usize| consts.get(i).copied().flatten();
    let x = t(0);
    let one = |dtype: DType, shape: Vec<Dim>| Ok(vec![ValueType { dtype, shape }]);
    match n.op {
        Constant => {
            let v = n
                .attrs
                .tensor("value")?
                .ok_or("missing attribute `value`")?;
            one(
                v.dtype(),
                v.shape().iter().map(|&d| Dim::Known(d)).collect(),
            )
        }
        Relu
        | Sigmoid
        | Tanh
        | Erf
        | Gelu
        | Exp
        | Log
        | Sqrt
        | Reciprocal
        | Neg
        | Abs
        | Floor
        | Ceil
        | LeakyRelu
        | Identity
        | Softmax
        | Sin
        | Cos
        | Softplus
        | HardSigmoid
        | HardSwish
        | Elu
        | Selu
        | Celu
        | Sign
        | Round
        | Softsign
        | ThresholdedRelu
        | Shrink
        | BitwiseNot
        | LogSoftmax
        | InstanceNormalization => {
            let x = x?;
            if !matches!(
                n.op,
                Identity | Abs | Neg | Relu | Sign | Shrink | BitwiseNot
            ) && !x.dtype.is_float()
            {
                return Err(format!("needs a float input, got {}", x.dtype));
            }
            if n.op == BitwiseNot && !x.dtype.is_int() {
                return Err(format!("needs an integer input, got {}", x.dtype));
            }
            if matches!(n.op, Softmax | LogSoftmax) {
                norm_axis(n.attrs.int("axis", -1)?, x.rank())?;
            }
            one(x.dtype, x.shape.clone())
        }
        Not => one(DType::Bool, x?.shape.clone()),
        IsNaN | IsInf => {
            let x = x?;
            if !x.dtype.is_float() {
                return Err(format!("needs a float input, got {}", x.dtype));
            }
            one(DType::Bool, x.shape.clone())
        }
        Size => {
            x?;
            one(DType::I64, vec![])
        }
        HannWindow | HammingWindow | BlackmanWindow | MelWeightMatrix => {
            let code = n.attrs.int("output_datatype", 1)?;
            let dt = DType::from_onnx_code(code as i32)
                .ok_or_else(|| format!("unsupported output_datatype {code}"))?;
            let scalar = |i: usize, what: &str| -> R<i64> {
                match const_ints(c(i), what)?.as_slice() {
                    [v] if *v >= 0 && *v < (1 << 31) => Ok(*v),
                    v => Err(format!("`{what}` must be one non-negative value, is {v:?}")),
                }
            };
            let shape = if n.op == MelWeightMatrix {
                let bins = scalar(0, "num_mel_bins")? as usize;
                let dft = scalar(1, "dft_length")? as usize;
                vec![dft / 2 + 1, bins]
            } else {
                vec![scalar(0, "size")? as usize]
            };
            one(dt, shape.into_iter().map(Dim::Known).collect())
        }
        DFT => {
            let xx = x?;
            if !xx.dtype.is_float() {
                return Err(format!("needs a float input, got {}", xx.dtype));
            }
            let s = static_input(n, xx)?;
            let p = crate::signal::dft_plan(n, &s, c(1), c(2))?;
            one(
                xx.dtype,
                p.out_shape(&s).into_iter().map(Dim::Known).collect(),
            )
        }
        NonMaxSuppression => {
            let found = crate::detect::non_max_suppression(n, consts)
                .map_err(|e| format!("{e} (NonMaxSuppression needs its inputs' values)"))?;
            one(DType::I64, vec![Dim::Known(found.len()), Dim::Known(3)])
        }
        AffineGrid => {
            let theta = x?;
            let size = const_ints(c(1), "size")?;
            let spatial = size.len().saturating_sub(2);
            if !matches!(spatial, 2 | 3) || size.iter().any(|&d| d <= 0 || d >= 1 << 31) {
                return Err(format!(
                    "size {size:?} must be [N, C, H, W] or [N, C, D, H, W]"
                ));
            }
            let want = [Dim::Known(spatial), Dim::Known(spatial + 1)];
            if theta.rank() != 3 || theta.shape[1..] != want {
                return Err(format!(
                    "theta {} must be [N, {}, {}]",
                    theta,
                    spatial,
                    spatial + 1
                ));
            }
            let mut s = vec![theta.shape[0].clone()];
            s.extend(size[2..].iter().map(|&d| Dim::Known(d as usize)));
            s.push(Dim::Known(spatial));
            one(theta.dtype, s)
        }
        STFT => {
            let xx = x?;
            let s = xx
                .static_shape()
                .ok_or("STFT needs a static signal shape")?;
            let window = tys.get(2).and_then(|t| t.as_ref());
            let wlen = match window {
                Some(w) if w.rank() == 1 => Some(known(&w.shape[0], "the window length")?),
                Some(w) => return Err(format!("window {w} must be 1-D")),
                None => None,
            };
            let p = crate::signal::stft_plan(n, &s, c(1), wlen, c(3))?;
            one(
                xx.dtype,
                p.out_shape(s[0]).into_iter().map(Dim::Known).collect(),
            )
        }
        WinogradInput => {
            let xx = x?;
            let s = static_input(n, xx)?;
            let p = crate::winograd::WinogradPlan::of_input(n, &s)?;
            let a = p.alpha();
            let shape = [s[0], a * a, s[1], p.tile_count()];
            one(xx.dtype, shape.into_iter().map(Dim::Known).collect())
        }
        WinogradOutput => {
            let xx = x?;
            let s = static_input(n, xx)?;
            let p = crate::winograd::WinogradPlan::of_output(n, &s)?;
            if let Ok(b) = t(1)
                && (b.dtype != xx.dtype || b.static_shape() != Some(vec![s[2]]))
            {
                return Err(format!("bias {b} is not [{}] of {}", s[2], xx.dtype));
            }
            let shape = [s[0], s[2], p.out[0], p.out[1]];
            one(xx.dtype, shape.into_iter().map(Dim::Known).collect())
        }
        Col2Im => {
            let xx = x?;
            let s = static_input(n, xx)?;
            let p = crate::col2im::col2im_plan(n, &s, c(1), c(2))?;
            one(
                xx.dtype,
                p.out_shape(s[0]).into_iter().map(Dim::Known).collect(),
            )
        }
        NonZero => {
            let xx = x?;
            let data = c(0).ok_or("NonZero needs its input's value (its output shape)")?;
            let count = data.to_f64_vec().iter().filter(|&&v| v != 0.0).count();
            one(DType::I64, vec![Dim::Known(xx.rank()), Dim::Known(count)])
        }
        PRelu => {
            let (x, slope) = (x?, t(1)?);
            if slope.dtype != x.dtype {
                return Err("slope dtype differs from the input".into());
            }
            let out = broadcast(&[&x.shape, &slope.shape])?;
            if out != x.shape {
                return Err(format!(
                    "slope {} does not broadcast to the input {}",
                    ValueType {
                        dtype: slope.dtype,
                        shape: slope.shape.clone()
                    },
                    x
                ));
            }
            one(x.dtype, x.shape.clone())
        }
        Range => {
            let d = x?.dtype;
            let (s, l, dl) = (c(0), c(1), c(2));
            let (Some(s), Some(l), Some(dl)) = (s, l, dl) else {
                return Err("Range needs constant start, limit and delta".into());
            };
            let n = range_len(s.get_f64(0), l.get_f64(0), dl.get_f64(0))?;
            one(d, vec![Dim::Known(n)])
        }
        Pad => {
            let x = x?;
            let (begin, end) = pad_amounts(
                n,
                x.rank(),
                c(1),
                c(3),
                tys.get(3).is_some_and(|t| t.is_some()),
            )?;
            let reflect = n.attrs.string("mode", "constant")? == "reflect";
            let mut s = Vec::new();
            for (i, d) in x.shape.iter().enumerate() {
                let dk = known(d, "a padded dimension")? as i64;
                if reflect && (begin[i] >= dk || end[i] >= dk) {
                    return Err(format!(
                        "reflect pads of dimension {i} must be smaller than its size {dk}"
                    ));
                }
                let k = dk + begin[i] + end[i];
                if k < 0 {
                    return Err(format!("pads make dimension {i} negative"));
                }
                s.push(Dim::Known(k as usize));
            }
            one(x.dtype, s)
        }
        ConvTranspose => {
            let (xx, w) = (x?, t(1)?);
            let xs = static_input(n, xx)?;
            let ws = w.static_shape().ok_or("weight shape must be static")?;
            let g = conv_transpose_geometry(n, &xs, &ws)?;
            one(
                xx.dtype,
                vec![
                    Dim::Known(xs[0]),
                    Dim::Known(g.out_channels),
                    Dim::Known(g.out[0]),
                    Dim::Known(g.out[1]),
                ],
            )
        }
        Resize => {
            let x = x?;
            let p = resize_plan(n, &static_input(n, x)?, c(1), c(2), c(3))?;
            one(x.dtype, p.out.iter().map(|&d| Dim::Known(d)).collect())
        }
        ArgMax | ArgMin => {
            let x = x?;
            let axis = norm_axis(n.attrs.int("axis", 0)?, x.rank())?;
            let keep = n.attrs.int("keepdims", 1)? != 0;
            let mut s = x.shape.clone();
            if keep {
                s[axis] = Dim::Known(1);
            } else {
                s.remove(axis);
            }
            one(DType::I64, s)
        }
        Trilu => {
            let x = x?;
            if x.rank() < 2 {
                return Err("Trilu needs rank >= 2".into());
            }
            if tys.get(1).is_some_and(|t| t.is_some()) {
                const_ints(c(1), "k")?;
            }
            one(x.dtype, x.shape.clone())
        }
        CumSum => {
            let x = x?;
            let axis = const_ints(c(1), "axis")?;
            if axis.len() != 1 {
                return Err("CumSum axis must be a scalar".into());
            }
            norm_axis(axis[0], x.rank())?;
            one(x.dtype, x.shape.clone())
        }
        Tile => {
            let x = x?;
            let reps = const_ints(c(1), "repeats")?;
            if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
                return Err(format!("repeats {reps:?} do not match rank {}", x.rank()));
            }
            let s = x
                .shape
                .iter()
                .zip(&reps)
                .map(|(d, &r)| Ok(Dim::Known(known(d, "a tiled dimension")? * r as usize)))
                .collect::<R<Vec<_>>>()?;
            one(x.dtype, s)
        }
        LRN => {
            let x = x?;
            if x.rank() < 3 || n.attrs.int("size", 0)? <= 0 {
                return Err("LRN needs rank >= 3 and a positive `size`".into());
            }
            one(x.dtype, x.shape.clone())
        }
        Clip => {
            let x = x?;
            one(x.dtype, x.shape.clone())
        }
        Add | Sub | Mul | Div | Pow | Max | Min | Sum | Equal | Less | Greater | And | Or
        | GreaterOrEqual | LessOrEqual | Xor | BitwiseAnd | BitwiseOr | BitwiseXor | Mod => {
            let present: Vec<&ValueType> = tys.iter().flatten().collect();
            let dtype = present.first().ok_or("no typed inputs")?.dtype;
            if n.op != Pow && present.iter().any(|p| p.dtype != dtype) {
                return Err(format!(
                    "input dtypes differ: {:?}",
                    present.iter().map(|p| p.dtype.name()).collect::<Vec<_>>()
                ));
            }
            let shapes: Vec<&[Dim]> = present.iter().map(|p| p.shape.as_slice()).collect();
            if matches!(n.op, BitwiseAnd | BitwiseOr | BitwiseXor) && !dtype.is_int() {
                return Err(format!("needs integer inputs, got {dtype}"));
            }
            if matches!(n.op, And | Or | Xor) && dtype != DType::Bool {
                return Err(format!("needs bool inputs, got {dtype}"));
            }
            let out_dtype = if matches!(
                n.op,
                Equal | Less | Greater | And | Or | GreaterOrEqual | LessOrEqual | Xor
            ) {
                DType::Bool
            } else {
                dtype
            };
            one(out_dtype, broadcast(&shapes)?)
        }
        Where => {
            let (cnd, a, b) = (t(0)?, t(1)?, t(2)?);
            if cnd.dtype != DType::Bool {
                return Err("condition must be bool".into());
            }
            if a.dtype != b.dtype {
                return Err("branches differ in dtype".into());
            }
            one(a.dtype, broadcast(&[&cnd.shape, &a.shape, &b.shape])?)
        }
        CastLike => one(t(1)?.dtype, x?.shape.clone()),
        Fused => {
            let body = n.attrs.graph("body")?;
            if body.inputs.len() != n.inputs.len() || body.outputs.len() != 1 {
                return Err(format!(
                    "body takes {} inputs and gives {} outputs; the node has {} inputs",
                    body.inputs.len(),
                    body.outputs.len(),
                    n.inputs.len()
                ));
            }
            for (k, &v) in body.inputs.iter().enumerate() {
                let want = body.ty(v).ok_or("body inputs must be typed")?;
                let got = t(k)?;
                if got.dtype != want.dtype || got.shape != want.shape {
                    return Err(format!("input {k} is {got}, the body expects {want}"));
                }
            }
            let out = body
                .ty(body.outputs[0])
                .ok_or("the body's output must be typed")?;
            Ok(vec![out.clone()])
        }
        Cast => {
            let to = n.attrs.int("to", 0)?;
            let dt = DType::from_onnx_code(to as i32)
                .ok_or_else(|| format!("unsupported Cast target type code {to}"))?;
            one(dt, x?.shape.clone())
        }
        MatMul => products::matmul(n, tys),
        Gemm => products::gemm(n, tys),
        Conv => products::conv(n, tys),
        MaxPool | AveragePool => {
            let xx = x?;
            if !matches!(xx.rank(), 3 | 4) {
                return Err(
                    "only 1-D and 2-D pooling (rank-3 or rank-4 input) are supported".into(),
                );
            }
            if n.attrs.int("storage_order", 0)? != 0 {
                return Err("storage_order=1 is not supported".into());
            }
            let spatial = spatial_sizes(xx)?;
            let win = Window::from_node(n, &spatial, None)?;
            let o = win.output_sizes(&spatial)?;
            let mut out = vec![xx.shape[0].clone(), xx.shape[1].clone()];
            out.extend(o.into_iter().map(Dim::Known));
            one(xx.dtype, out)
        }
        GlobalAveragePool => {
            let xx = x?;
            if xx.rank() < 3 {
                return Err("GlobalAveragePool needs rank >= 3".into());
            }
            let mut s = xx.shape[..2].to_vec();
            s.extend(std::iter::repeat_n(Dim::Known(1), xx.rank() - 2));
            one(xx.dtype, s)
        }
        BatchNormalization => {
            if n.attrs.int("training_mode", 0)? != 0 {
                return Err("training_mode=1 is not supported".into());
            }
            let xx = x?;
            if xx.rank() < 2 {
                return Err("BatchNormalization needs rank >= 2".into());
            }
            one(xx.dtype, xx.shape.clone())
        }
        LayerNormalization => {
            let xx = x?;
            norm_axis(n.attrs.int("axis", -1)?, xx.rank())?;
            one(xx.dtype, xx.shape.clone())
        }
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceL2 | ReduceSumSquare
        | ReduceProd | ReduceL1 | ReduceLogSum | ReduceLogSumExp => {
            let xx = x?;
            let axes = reduce_axes(n, xx.rank(), c(1), tys.get(1).is_some_and(|t| t.is_some()))?;
            let keep = n.attrs.int("keepdims", 1)? != 0;
            let mut s = Vec::new();
            for (i, d) in xx.shape.iter().enumerate() {
                if axes.contains(&i) {
                    if keep {
                        s.push(Dim::Known(1));
                    }
                } else {
                    s.push(d.clone());
                }
            }
            one(xx.dtype, s)
        }
        Reshape => {
            let xx = x?;
            let spec = const_ints(c(1), "shape")?;
            let allowzero = n.attrs.int("allowzero", 0)? != 0;
            // A symbolic leading dim is kept when the spec copies it with `0`.
            if let Some(st) = xx.static_shape() {
                let s = reshape_target(&st, &spec, allowzero)?;
                one(xx.dtype, s.into_iter().map(Dim::Known).collect())
            } else {
                let mut s = Vec::new();
                for (i, &v) in spec.iter().enumerate() {
                    s.push(match v {
                        0 if !allowzero => {
                            xx.shape.get(i).cloned().ok_or("reshape `0` past rank")?
                        }
                        v if v > 0 => Dim::Known(v as usize),
                        _ => Dim::Sym(format!("{}_d{i}", n.name)),
                    });
                }
                one(xx.dtype, s)
            }
        }
        Flatten => {
            let xx = x?;
            let r = xx.rank() as i64;
            let axis = n.attrs.int("axis", 1)?;
            let axis = if axis < 0 { axis + r } else { axis };
            if axis < 0 || axis > r {
                return Err(format!("axis {axis} out of range"));
            }
            let prod = |ds: &[Dim]| -> Dim {
                let mut p = 1;
                for d in ds {
                    match d {
                        Dim::Known(k) => p *= k,
                        Dim::Sym(_) if ds.len() == 1 => return d.clone(),
                        Dim::Sym(s) => return Dim::Sym(format!("{s}_flat")),
                    }
                }
                Dim::Known(p)
            };
            let a = axis as usize;
            one(xx.dtype, vec![prod(&xx.shape[..a]), prod(&xx.shape[a..])])
        }
        DepthToSpace | SpaceToDepth => {
            let xx = x?;
            let b = space_depth_block(n)?;
            if xx.rank() != 4 {
                return Err(format!("{} needs a rank-4 input", n.op.name()));
            }
            let d = |i: usize, what: &str| known(&xx.shape[i], what);
            let (c, h, w) = (d(1, "channels")?, d(2, "height")?, d(3, "width")?);
            let out = if n.op == DepthToSpace {
                depth_to_space_crd(n)?;
                if !c.is_multiple_of(b * b) {
                    return Err(format!(
                        "channels {c} are not a multiple of blocksize² {}",
                        b * b
                    ));
                }
                [c / (b * b), h * b, w * b]
            } else {
                if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
                    return Err(format!(
                        "height {h} and width {w} are not multiples of blocksize {b}"
                    ));
                }
                [c * b * b, h / b, w / b]
            };
            let mut shape = vec![xx.shape[0].clone()];
            shape.extend(out.into_iter().map(Dim::Known));
            one(xx.dtype, shape)
        }
        Transpose => {
            let xx = x?;
            let perm = permutation(n.attrs.ints("perm")?, xx.rank())?;
            one(xx.dtype, permuted(&xx.shape, &perm))
        }
        Squeeze => {
            let xx = x?;
            let axes: Vec<usize> = if tys.len() > 1 && tys[1].is_some() {
                const_ints(c(1), "axes")?
                    .iter()
                    .map(|&a| norm_axis(a, xx.rank()))
                    .collect::<R<_>>()?
            } else {
                xx.shape
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| **d == Dim::Known(1))
                    .map(|(i, _)| i)
                    .collect()
            };
            for &a in &axes {
                if xx.shape[a] != Dim::Known(1) {
                    return Err(format!("cannot squeeze axis {a} of size {}", xx.shape[a]));
                }
            }
            one(
                xx.dtype,
                xx.shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect(),
            )
        }
        Unsqueeze => {
            let xx = x?;
            let out_rank = xx.rank() + const_ints(c(1), "axes")?.len();
            let mut axes: Vec<usize> = const_ints(c(1), "axes")?
                .iter()
                .map(|&a| norm_axis(a, out_rank))
                .collect::<R<_>>()?;
            axes.sort();
            axes.dedup();
            if axes.len() + xx.rank() != out_rank {
                return Err("repeated Unsqueeze axes".into());
            }
            let mut it = xx.shape.iter();
            one(
                xx.dtype,
                (0..out_rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            Dim::Known(1)
                        } else {
                            it.next().unwrap().clone()
                        }
                    })
                    .collect(),
            )
        }
        Concat => {
            let present: Vec<&ValueType> = tys.iter().flatten().collect();
            let first = present[0];
            let axis = norm_axis(n.attrs.int("axis", 0)?, first.rank())?;
            let mut total = 0;
            for p in &present {
                if p.rank() != first.rank() || p.dtype != first.dtype {
                    return Err("inputs differ in rank or dtype".into());
                }
                for i in 0..first.rank() {
                    if i != axis && p.shape[i] != first.shape[i] {
                        return Err(format!("inputs differ on axis {i}"));
                    }
                }
                total += known(&p.shape[axis], "the concat axis")?;
            }
            let mut s = first.shape.clone();
            s[axis] = Dim::Known(total);
            one(first.dtype, s)
        }
        Slice => {
            let xx = x?;
            let shape = static_input(n, xx)?;
            let starts = const_ints(c(1), "starts")?;
            let ends = const_ints(c(2), "ends")?;
            let axes = if tys.len() > 3 && tys[3].is_some() {
                Some(const_ints(c(3), "axes")?)
            } else {
                None
            };
            let steps = if tys.len() > 4 && tys[4].is_some() {
                Some(const_ints(c(4), "steps")?)
            } else {
                None
            };
            let p = slice_params(&shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
            one(
                xx.dtype,
                p.iter().map(|&(_, _, cnt)| Dim::Known(cnt)).collect(),
            )
        }
        Gather => {
            let (xx, idx) = (x?, t(1)?);
            if !matches!(idx.dtype, DType::I64 | DType::I32) {
                return Err("indices must be i32 or i64".into());
            }
            let axis = norm_axis(n.attrs.int("axis", 0)?, xx.rank())?;
            let mut s = xx.shape[..axis].to_vec();
            s.extend(idx.shape.iter().cloned());
            s.extend(xx.shape[axis + 1..].iter().cloned());
            one(xx.dtype, s)
        }
        GatherElements => {
            let (xx, idx) = (x?, t(1)?);
            if !matches!(idx.dtype, DType::I64 | DType::I32) {
                return Err("indices must be i32 or i64".into());
            }
            if idx.rank() != xx.rank() {
                return Err(format!(
                    "indices have rank {}, data rank {}",
                    idx.rank(),
                    xx.rank()
                ));
            }
            norm_axis(n.attrs.int("axis", 0)?, xx.rank())?;
            one(xx.dtype, idx.shape.clone())
        }
        GatherND => {
            let (xx, idx) = (x?, t(1)?);
            if !matches!(idx.dtype, DType::I64 | DType::I32) {
                return Err("indices must be i32 or i64".into());
            }
            let b = n.attrs.int("batch_dims", 0)?.max(0) as usize;
            let q = idx.rank();
            let k = match idx.shape.last() {
                Some(d) => known(d, "the last indices dimension")?,
                None => return Err("indices must have rank >= 1".into()),
            };
            if b >= q || b + k > xx.rank() {
                return Err(format!(
                    "batch_dims {b} and index depth {k} do not fit data rank {} and indices rank {q}",
                    xx.rank()
                ));
            }
            let mut s = idx.shape[..q - 1].to_vec();
            s.extend(xx.shape[b + k..].iter().cloned());
            one(xx.dtype, s)
        }
        ScatterElements | ScatterND => {
            let (xx, idx, upd) = (x?, t(1)?, t(2)?);
            if !matches!(idx.dtype, DType::I64 | DType::I32) {
                return Err("indices must be i32 or i64".into());
            }
            if upd.dtype != xx.dtype {
                return Err("updates and data differ in dtype".into());
            }
            if n.op == ScatterElements {
                norm_axis(n.attrs.int("axis", 0)?, xx.rank())?;
                if idx.shape != upd.shape || idx.rank() != xx.rank() {
                    return Err(
                        "indices and updates must have the data's rank and one shape".into(),
                    );
                }
            }
            one(xx.dtype, xx.shape.clone())
        }
        Expand => {
            let xx = x?;
            let target: Vec<Dim> = const_ints(c(1), "shape")?
                .iter()
                .map(|&d| Dim::Known(d.max(0) as usize))
                .collect();
            one(xx.dtype, broadcast(&[&xx.shape, &target])?)
        }
        ConstantOfShape => {
            let s = const_ints(c(0), "shape")?;
            let dt = n
                .attrs
                .tensor("value")?
                .map(|v| v.dtype())
                .unwrap_or(DType::F32);
            if s.iter().any(|&d| d < 0) {
                return Err(format!("negative dimension in {s:?}"));
            }
            one(dt, s.iter().map(|&d| Dim::Known(d as usize)).collect())
        }
        Shape => {
            let r = x?.rank() as i64;
            let (start, end) = shape_range(n, r)?;
            one(DType::I64, vec![Dim::Known((end - start).max(0) as usize)])
        }
    }
}
