//! The geometry ops share between shape inference, the interpreter and the lowering:
//! axes and broadcasting, pooling and convolution windows, reshape targets, slice, pad and
//! permutation parameters read from attributes and constant inputs.

use super::R;
use crate::graph::{Dim, Node, ValueType};
use crate::op::{Attr, AttrsExt, OpKind};
use crate::tensor::Tensor;

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
pub(super) fn spatial_sizes(t: &ValueType) -> R<Vec<usize>> {
    t.shape[2..]
        .iter()
        .map(|d| known(d, "spatial size"))
        .collect()
}

pub(super) fn known(d: &Dim, what: &str) -> R<usize> {
    d.known()
        .ok_or_else(|| format!("{what} must be a known size, is symbolic `{d}`"))
}

pub(super) fn const_ints(c: Option<&Tensor>, what: &str) -> R<Vec<i64>> {
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
