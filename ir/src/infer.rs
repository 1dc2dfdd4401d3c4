//! Shape and type inference for every graph op, over possibly-symbolic dimensions.
//!
//! Ops whose output shape depends on an input's *values* (Reshape's shape, Slice's bounds,
//! reduction axes, …) need that input to be a constant; otherwise inference reports which
//! input it needs. Errors are plain strings here; [`Graph::infer_types`](crate::Graph::infer_types)
//! wraps them with the node's name and op.

use crate::dtype::DType;
use crate::graph::{Dim, Node, ValueType};
use crate::op::{Attr, AttrsExt, OpKind};
pub use crate::resize::{AxisTaps, ResizePlan, resize_plan};
use crate::tensor::Tensor;

type R<T> = std::result::Result<T, String>;

/// Normalises a possibly negative axis into `0..rank`.
pub fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) && !(r == 0 && axis == 0) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Numpy-style broadcast of several shapes.
pub fn broadcast(shapes: &[&[Dim]]) -> R<Vec<Dim>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut d = Dim::Known(1);
        for s in shapes {
            let off = rank - s.len();
            if i < off {
                continue;
            }
            let e = &s[i - off];
            d = match (&d, e) {
                (Dim::Known(1), _) => e.clone(),
                (_, Dim::Known(1)) => d,
                (a, b) if a == b => d,
                (a, b) => return Err(format!("cannot broadcast dimension {a} with {b}")),
            };
        }
        out.push(d);
    }
    Ok(out)
}

pub fn broadcast_static(shapes: &[&[usize]]) -> R<Vec<usize>> {
    let dims: Vec<Vec<Dim>> = shapes
        .iter()
        .map(|s| s.iter().map(|&d| Dim::Known(d)).collect())
        .collect();
    let refs: Vec<&[Dim]> = dims.iter().map(|d| d.as_slice()).collect();
    Ok(broadcast(&refs)?
        .into_iter()
        .map(|d| d.known().unwrap_or(0))
        .collect())
}

/// The static sizes of a tensor's dimensions after batch and channels (a window's input).
fn spatial_sizes(t: &ValueType) -> R<Vec<usize>> {
    t.shape[2..]
        .iter()
        .map(|d| known(d, "spatial size"))
        .collect()
}

fn known(d: &Dim, what: &str) -> R<usize> {
    d.known()
        .ok_or_else(|| format!("{what} must be a known size, is symbolic `{d}`"))
}

fn const_ints(c: Option<&Tensor>, what: &str) -> R<Vec<i64>> {
    let t = c.ok_or_else(|| {
        format!("input `{what}` must be a constant (an initializer) at compile time")
    })?;
    if t.dtype().is_float() {
        return Err(format!(
            "input `{what}` must hold integers, holds {}",
            t.dtype()
        ));
    }
    Ok(t.to_i64_vec())
}

/// Output size of one spatial dimension of a conv or pool.
pub fn pool_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad_lo: usize,
    pad_hi: usize,
    dilation: usize,
    ceil: bool,
) -> R<usize> {
    let eff = dilation * (kernel - 1) + 1;
    let padded = input + pad_lo + pad_hi;
    if padded < eff || stride == 0 {
        return Err(format!(
            "window of {eff} does not fit input {input} with pads {pad_lo}+{pad_hi}"
        ));
    }
    let n = padded - eff;
    let mut out = if ceil {
        n.div_ceil(stride) + 1
    } else {
        n / stride + 1
    };
    // ONNX: with ceil_mode, the last window must start inside the input or left padding.
    if ceil && (out - 1) * stride >= input + pad_lo {
        out -= 1;
    }
    Ok(out)
}

/// Spatial geometry of a conv or pool: kernel, strides, pads (begin.., end..), dilations.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
}

/// The `blocksize` of a DepthToSpace or SpaceToDepth (positive, and not absurd).
pub fn space_depth_block(n: &Node) -> R<usize> {
    match n.attrs.int("blocksize", 0)? {
        b @ 1..=4096 => Ok(b as usize),
        b => Err(format!("blocksize {b} must be in 1..=4096")),
    }
}

/// DepthToSpace and SpaceToDepth as their definitions: a reshape to 6-D, a transpose, a
/// reshape to 4-D — `(6-D shape, permutation)` for input shape `[n, c, h, w]` and block `b`.
/// DepthToSpace's `DCR` mode reads channel `(i·b + j)·c' + c`, `CRD` channel `c·b² + i·b + j`,
/// for output `(c, h·b + i, w·b + j)`; SpaceToDepth is DCR's inverse.
pub fn space_depth_plan(n: &Node, s: &[usize], b: usize) -> R<(Vec<usize>, Vec<i64>)> {
    let (nb, c, h, w) = (s[0], s[1], s[2], s[3]);
    Ok(match n.op {
        OpKind::DepthToSpace if depth_to_space_crd(n)? => {
            (vec![nb, c / (b * b), b, b, h, w], vec![0, 1, 4, 2, 5, 3])
        }
        OpKind::DepthToSpace => (vec![nb, b, b, c / (b * b), h, w], vec![0, 3, 4, 1, 5, 2]),
        _ => (vec![nb, c, h / b, b, w / b, b], vec![0, 3, 5, 1, 2, 4]),
    })
}

/// Whether a DepthToSpace reads its channels in `CRD` order (else `DCR`, the default).
pub fn depth_to_space_crd(n: &Node) -> R<bool> {
    match n.attrs.string("mode", "DCR")?.as_str() {
        "DCR" => Ok(false),
        "CRD" => Ok(true),
        m => Err(format!("DepthToSpace mode `{m}` must be DCR or CRD")),
    }
}

/// A 1-D Conv, MaxPool or AveragePool as the 2-D one over a height-1 input (`[n, c, 1, l]`,
/// a weight `[cout, cpg, 1, k]`): the window attributes get a leading 1 (kernel, strides,
/// dilations) and 0 (pads) for the height. Everything else — group, auto_pad, ceil_mode,
/// count_include_pad — means the same on the 2-D node.
pub fn lift_1d_window(n: &Node) -> R<Node> {
    let mut lifted = n.clone();
    for (name, fill) in [("kernel_shape", 1), ("strides", 1), ("dilations", 1)] {
        if let Some(v) = n.attrs.ints(name)? {
            if v.len() != 1 {
                return Err(format!("attribute `{name}` must have 1 value, has {v:?}"));
            }
            lifted
                .attrs
                .insert(name.into(), Attr::Ints(vec![fill, v[0]]));
        }
    }
    if let Some(p) = n.attrs.ints("pads")? {
        if p.len() != 2 {
            return Err(format!("attribute `pads` must have 2 values, has {p:?}"));
        }
        lifted
            .attrs
            .insert("pads".into(), Attr::Ints(vec![0, p[0], 0, p[1]]));
    }
    Ok(lifted)
}

impl Window {
    /// Reads the window attributes of a node given the spatial input sizes.
    pub fn from_node(
        n: &Node,
        spatial: &[usize],
        kernel_from_weight: Option<&[usize]>,
    ) -> R<Window> {
        let k = spatial.len();
        let kernel: Vec<usize> = match (n.attrs.ints("kernel_shape")?, kernel_from_weight) {
            (Some(ks), _) => ks.iter().map(|&x| x as usize).collect(),
            (None, Some(w)) => w.to_vec(),
            (None, None) => return Err("missing attribute `kernel_shape`".into()),
        };
        let get = |name: &str, len: usize, def: usize| -> R<Vec<usize>> {
            Ok(match n.attrs.ints(name)? {
                Some(v) => {
                    if v.len() != len || v.iter().any(|&x| x < 0) {
                        return Err(format!(
                            "attribute `{name}` must have {len} non-negative values, has {v:?}"
                        ));
                    }
                    v.iter().map(|&x| x as usize).collect()
                }
                None => vec![def; len],
            })
        };
        if kernel.len() != k || kernel.contains(&0) {
            return Err(format!(
                "kernel_shape {kernel:?} does not match {k} spatial dims"
            ));
        }
        let strides = get("strides", k, 1)?;
        let dilations = get("dilations", k, 1)?;
        let ceil_mode = n.attrs.int("ceil_mode", 0)? != 0;
        let auto_pad = n.attrs.string("auto_pad", "NOTSET")?;
        let pads = match auto_pad.as_str() {
            "NOTSET" | "" => get("pads", 2 * k, 0)?,
            "VALID" => vec![0; 2 * k],
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut pads = vec![0; 2 * k];
                for i in 0..k {
                    let out = spatial[i].div_ceil(strides[i]);
                    let eff = dilations[i] * (kernel[i] - 1) + 1;
                    let total = ((out - 1) * strides[i] + eff).saturating_sub(spatial[i]);
                    let (lo, hi) = if auto_pad == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    pads[i] = lo;
                    pads[i + k] = hi;
                }
                pads
            }
            other => return Err(format!("unsupported auto_pad `{other}`")),
        };
        Ok(Window {
            kernel,
            strides,
            pads,
            dilations,
            ceil_mode,
        })
    }

    pub fn output_sizes(&self, spatial: &[usize]) -> R<Vec<usize>> {
        let k = spatial.len();
        (0..k)
            .map(|i| {
                pool_out(
                    spatial[i],
                    self.kernel[i],
                    self.strides[i],
                    self.pads[i],
                    self.pads[i + k],
                    self.dilations[i],
                    self.ceil_mode,
                )
            })
            .collect()
    }
}

/// Resolves Reshape's target shape (with ONNX's `0` = copy and `-1` = infer).
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> R<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or("reshape `0` refers past the input rank")?,
            ),
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("invalid reshape target {spec:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?}"
        ));
    }
    Ok(out)
}

/// Resolved Slice parameters per axis: (start, step, count).
pub fn slice_params(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> R<Vec<(i64, i64, usize)>> {
    let rank = shape.len();
    let mut out: Vec<(i64, i64, usize)> = shape.iter().map(|&d| (0, 1, d)).collect();
    if starts.len() != ends.len() {
        return Err("Slice starts and ends differ in length".into());
    }
    for i in 0..starts.len() {
        let axis = match axes {
            Some(a) => norm_axis(*a.get(i).ok_or("Slice axes shorter than starts")?, rank)?,
            None => i,
        };
        if axis >= rank {
            return Err(format!("Slice axis {axis} out of range"));
        }
        let step = steps.map(|s| s.get(i).copied().unwrap_or(1)).unwrap_or(1);
        if step == 0 {
            return Err("Slice step 0".into());
        }
        let d = shape[axis] as i64;
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let mut s = starts[i];
        let mut e = ends[i];
        if s < 0 {
            s += d;
        }
        if e < 0 {
            e += d;
        }
        let count;
        if step > 0 {
            s = clamp(s, 0, d);
            e = clamp(e, 0, d);
            count = if e > s { (e - s + step - 1) / step } else { 0 };
        } else {
            s = clamp(s, -1, d - 1);
            e = clamp(e, -1, d - 1);
            count = if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            };
        }
        out[axis] = (s, step, count as usize);
    }
    Ok(out)
}

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
    let t = |i: usize| -> R<&ValueType> {
        tys.get(i)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| format!("missing input {i}"))
    };
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
        MatMul => {
            let (a, b) = (x?, t(1)?);
            // `b_perm` (set by the optimizer's `transpose-into-matmul` rule, not ONNX): the
            // right operand is input 1 transposed by this permutation.
            let b_permuted;
            let b = match n.attrs.ints("b_perm")? {
                Some(p) => {
                    let perm = permutation(Some(p), b.rank())?;
                    b_permuted = ValueType {
                        dtype: b.dtype,
                        shape: permuted(&b.shape, &perm),
                    };
                    &b_permuted
                }
                None => b,
            };
            if a.dtype != b.dtype {
                return Err("operands differ in dtype".into());
            }
            if a.rank() == 0 || b.rank() == 0 {
                return Err("MatMul of a scalar".into());
            }
            let mut sa = a.shape.clone();
            let mut sb = b.shape.clone();
            let (va, vb) = (sa.len() == 1, sb.len() == 1);
            if va {
                sa.insert(0, Dim::Known(1));
            }
            if vb {
                sb.push(Dim::Known(1));
            }
            let (k1, k2) = (&sa[sa.len() - 1], &sb[sb.len() - 2]);
            if k1 != k2 {
                return Err(format!("inner dimensions differ: {k1} vs {k2}"));
            }
            let mut out = broadcast(&[&sa[..sa.len() - 2], &sb[..sb.len() - 2]])?;
            if !va {
                out.push(sa[sa.len() - 2].clone());
            }
            if !vb {
                out.push(sb[sb.len() - 1].clone());
            }
            one(a.dtype, out)
        }
        Gemm => {
            let (a, b) = (x?, t(1)?);
            if a.rank() != 2 || b.rank() != 2 {
                return Err("Gemm needs 2-D operands".into());
            }
            let ta = n.attrs.int("transA", 0)? != 0;
            let tb = n.attrs.int("transB", 0)? != 0;
            let (m, k1) = if ta {
                (&a.shape[1], &a.shape[0])
            } else {
                (&a.shape[0], &a.shape[1])
            };
            let (k2, nn) = if tb {
                (&b.shape[1], &b.shape[0])
            } else {
                (&b.shape[0], &b.shape[1])
            };
            if k1 != k2 {
                return Err(format!("inner dimensions differ: {k1} vs {k2}"));
            }
            let out = vec![m.clone(), nn.clone()];
            if let Ok(cc) = t(2) {
                broadcast(&[&cc.shape, &out]).map_err(|e| format!("C does not broadcast: {e}"))?;
            }
            one(a.dtype, out)
        }
        Conv => {
            let (xx, w) = (x?, t(1)?);
            if !matches!(xx.rank(), 3 | 4) || w.rank() != xx.rank() {
                return Err(format!(
                    "only 1-D and 2-D Conv (rank-3 or rank-4 input and weight) are supported, got ranks {} and {}",
                    xx.rank(),
                    w.rank()
                ));
            }
            let group = n.attrs.int("group", 1)?;
            let cin = known(&xx.shape[1], "input channels")?;
            let wshape: Vec<usize> = w.static_shape().ok_or("weight shape must be static")?;
            if group <= 0
                || cin as i64 % group != 0
                || wshape[1] * group as usize != cin
                || !wshape[0].is_multiple_of(group as usize)
            {
                return Err(format!(
                    "channels {cin}, weight {wshape:?} and group {group} are inconsistent"
                ));
            }
            let spatial = spatial_sizes(xx)?;
            let win = Window::from_node(n, &spatial, Some(&wshape[2..]))?;
            if win.ceil_mode {
                return Err("ceil_mode is not a Conv attribute".into());
            }
            let o = win.output_sizes(&spatial)?;
            let mut out = vec![xx.shape[0].clone(), Dim::Known(wshape[0])];
            out.extend(o.into_iter().map(Dim::Known));
            one(xx.dtype, out)
        }
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

/// Shape's `[start, end)` after clamping.
pub fn shape_range(n: &Node, rank: i64) -> R<(i64, i64)> {
    let fix = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank);
    Ok((
        fix(n.attrs.int("start", 0)?),
        fix(n.attrs.int("end", rank)?),
    ))
}

/// The reduced axes of a ReduceX node (opset-18 form: axes as an optional input).
pub fn reduce_axes(
    n: &Node,
    rank: usize,
    axes_const: Option<&Tensor>,
    has_axes_input: bool,
) -> R<Vec<usize>> {
    let axes = if has_axes_input {
        const_ints(axes_const, "axes")?
    } else {
        vec![]
    };
    if axes.is_empty() {
        if n.attrs.int("noop_with_empty_axes", 0)? != 0 {
            return Ok(vec![]);
        }
        return Ok((0..rank).collect());
    }
    let mut v: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect::<R<_>>()?;
    v.sort();
    v.dedup();
    Ok(v)
}

/// Number of elements of `Range(start, limit, delta)`.
pub fn range_len(start: f64, limit: f64, delta: f64) -> R<usize> {
    if delta == 0.0 || !delta.is_finite() {
        return Err("Range delta must be finite and non-zero".into());
    }
    let n = ((limit - start) / delta).ceil();
    // NaN (from infinite bounds) fails this check too.
    if n.is_nan() || n >= (1u64 << 40) as f64 {
        return Err(format!("Range of {n} elements is too large"));
    }
    Ok(n.max(0.0) as usize)
}

/// Pad amounts `(begin, end)` per dimension from the `pads` input and optional `axes`.
pub fn pad_amounts(
    n: &Node,
    rank: usize,
    pads: Option<&Tensor>,
    axes: Option<&Tensor>,
    has_axes: bool,
) -> R<(Vec<i64>, Vec<i64>)> {
    let p = const_ints(pads, "pads")?;
    let axes: Vec<usize> = if has_axes {
        const_ints(axes, "axes")?
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<R<_>>()?
    } else {
        (0..rank).collect()
    };
    if p.len() != 2 * axes.len() {
        return Err(format!("pads {p:?} must have 2 x {} values", axes.len()));
    }
    let mode = n.attrs.string("mode", "constant")?;
    if !matches!(mode.as_str(), "constant" | "edge" | "reflect") {
        return Err(format!("Pad mode `{mode}` is not supported"));
    }
    let (mut b, mut e) = (vec![0; rank], vec![0; rank]);
    for (k, &a) in axes.iter().enumerate() {
        b[a] = p[k];
        e[a] = p[k + axes.len()];
    }
    Ok((b, e))
}

/// Geometry of a 2-D ConvTranspose: output channels and size, begin pads, strides, dilations.
#[derive(Clone, Debug)]
pub struct ConvTransposeGeometry {
    pub out_channels: usize,
    pub out: [usize; 2],
    pub pad_begin: [i64; 2],
    pub strides: [i64; 2],
    pub dilations: [i64; 2],
    pub kernel: [usize; 2],
    pub group: usize,
}

pub fn conv_transpose_geometry(n: &Node, xs: &[usize], ws: &[usize]) -> R<ConvTransposeGeometry> {
    if xs.len() != 4 || ws.len() != 4 {
        return Err("only 2-D ConvTranspose (rank-4 input and weight) is supported".into());
    }
    let group = n.attrs.int("group", 1)?;
    if group <= 0 || xs[1] != ws[0] || !xs[1].is_multiple_of(group as usize) {
        return Err(format!(
            "input channels {}, weight {ws:?} and group {group} are inconsistent",
            xs[1]
        ));
    }
    let two = |name: &str, def: i64| -> R<[i64; 2]> {
        match n.attrs.ints(name)? {
            Some(v) if v.len() == 2 => Ok([v[0], v[1]]),
            Some(v) => Err(format!("attribute `{name}` must have 2 values, has {v:?}")),
            None => Ok([def, def]),
        }
    };
    let strides = two("strides", 1)?;
    let dilations = two("dilations", 1)?;
    let out_pad = two("output_padding", 0)?;
    if strides.iter().chain(&dilations).any(|&v| v <= 0) || out_pad.iter().any(|&v| v < 0) {
        return Err("strides and dilations must be positive, output_padding non-negative".into());
    }
    let kernel = [ws[2], ws[3]];
    let eff = |i: usize| (kernel[i] as i64 - 1) * dilations[i] + 1;
    let full = |i: usize| strides[i] * (xs[i + 2] as i64 - 1) + out_pad[i] + eff(i);
    let auto_pad = n.attrs.string("auto_pad", "NOTSET")?;
    let (out, pad_begin) = if let Some(os) = n.attrs.ints("output_shape")? {
        let os: Vec<i64> = os.iter().rev().take(2).rev().copied().collect();
        if os.len() != 2 || os.iter().any(|&v| v <= 0) {
            return Err(format!("output_shape {os:?} is not a 2-D spatial size"));
        }
        let mut pb = [0i64; 2];
        for i in 0..2 {
            let total = full(i) - os[i];
            pb[i] = if auto_pad == "SAME_UPPER" {
                total / 2
            } else {
                total - total / 2
            };
        }
        ([os[0] as usize, os[1] as usize], pb)
    } else {
        let pads = match (auto_pad.as_str(), n.attrs.ints("pads")?) {
            ("NOTSET" | "" | "VALID", Some(p)) if p.len() == 4 => [p[0], p[1], p[2], p[3]],
            ("NOTSET" | "" | "VALID", None) => [0; 4],
            ("NOTSET" | "", Some(p)) => return Err(format!("pads {p:?} must have 4 values")),
            (mode @ ("SAME_UPPER" | "SAME_LOWER"), _) => {
                let mut p = [0i64; 4];
                for i in 0..2 {
                    let total = (full(i) - xs[i + 2] as i64 * strides[i]).max(0);
                    let (lo, hi) = if mode == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    p[i] = lo;
                    p[i + 2] = hi;
                }
                p
            }
            (other, _) => return Err(format!("unsupported auto_pad `{other}`")),
        };
        let o0 = full(0) - pads[0] - pads[2];
        let o1 = full(1) - pads[1] - pads[3];
        if o0 <= 0 || o1 <= 0 {
            return Err(format!("pads {pads:?} leave no output"));
        }
        ([o0 as usize, o1 as usize], [pads[0], pads[1]])
    };
    Ok(ConvTransposeGeometry {
        out_channels: ws[1] * group as usize,
        out,
        pad_begin,
        strides,
        dilations,
        kernel,
        group: group as usize,
    })
}

/// A Transpose-style permutation of `rank` axes: `perm` with negative axes normalised, or
/// the reversed axes when absent; anything but a permutation of `0..rank` is an error.
pub fn permutation(perm: Option<Vec<i64>>, rank: usize) -> R<Vec<usize>> {
    let perm: Vec<usize> = match perm {
        Some(p) => p.iter().map(|&a| norm_axis(a, rank)).collect::<R<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} is not a permutation of rank {rank}"));
    }
    Ok(perm)
}

/// `shape` transposed by `perm`: axis `i` of the result is axis `perm[i]` of `shape`.
pub fn permuted<T: Clone>(shape: &[T], perm: &[usize]) -> Vec<T> {
    perm.iter().map(|&p| shape[p].clone()).collect()
}
