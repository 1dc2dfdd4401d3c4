//! ONNX operators that import as a small subgraph of graph-IR ops, following the function
//! bodies the ONNX spec gives them (e.g. `SoftmaxCrossEntropyLoss` is `LogSoftmax` then
//! `NegativeLogLikelihoodLoss`, itself a gather, a mask and a reduction).
//!
//! Why decompose instead of adding IR ops: each of these is rare, and as a composition of
//! existing ops it runs on every backend (interpreter, CPU, and later GPU) with no new kernel;
//! the fusion pass is where such groups become one kernel again.

use super::Importer;
use tessera_ir::{Attr, Attrs, DType, OpKind, Tensor, ValueId, ValueType};

/// Builds the nodes of one decomposed ONNX node; every name starts with the node's name.
pub(super) struct Decomposer<'a> {
    pub im: &'a mut Importer,
    pub node: String,
    count: usize,
}

impl<'a> Decomposer<'a> {
    pub fn new(im: &'a mut Importer, node: &str) -> Decomposer<'a> {
        Decomposer {
            im,
            node: node.to_string(),
            count: 0,
        }
    }

    /// Adds `op(inputs)` writing `out`.
    pub fn op_to(
        &mut self,
        op: OpKind,
        inputs: &[Option<ValueId>],
        attrs: &[(&str, Attr)],
        out: ValueId,
    ) {
        self.count += 1;
        let attrs: Attrs = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let name = format!("{}_{}{}", self.node, op.name().to_lowercase(), self.count);
        self.im.push(name, op, attrs, inputs.to_vec(), vec![out]);
    }

    /// Adds `op(inputs)` with a fresh output and returns it.
    pub fn op(&mut self, op: OpKind, inputs: &[ValueId], attrs: &[(&str, Attr)]) -> ValueId {
        let out = self.im.g.fresh_value(&format!(
            "{}_{}{}",
            self.node,
            op.name().to_lowercase(),
            self.count + 1
        ));
        let ins: Vec<Option<ValueId>> = inputs.iter().map(|&v| Some(v)).collect();
        self.op_to(op, &ins, attrs, out);
        out
    }

    /// A constant input.
    pub fn constant(&mut self, what: &str, t: Tensor) -> ValueId {
        let node = self.node.clone();
        self.im.const_input(&node, what, t)
    }

    pub fn ints(&mut self, what: &str, v: &[i64]) -> ValueId {
        self.constant(what, Tensor::from_i64(DType::I64, vec![v.len()], v))
    }

    /// The i64 positions `0..len` along an axis followed by `trailing` more, shaped
    /// `[len, 1, …, 1]` to broadcast against a tensor along that axis.
    pub fn iota(&mut self, len: usize, trailing: usize) -> ValueId {
        let mut shape = vec![len];
        shape.extend(std::iter::repeat_n(1, trailing));
        let values: Vec<i64> = (0..len as i64).collect();
        self.constant("iota", Tensor::from_i64(DType::I64, shape, &values))
    }

    pub fn scalar(&mut self, what: &str, dtype: DType, v: f64) -> ValueId {
        self.constant(what, Tensor::from_f64(dtype, vec![], &[v]))
    }

    /// The type of `v`, running (lenient) inference over the graph built so far if needed.
    pub fn ty(&mut self, v: ValueId) -> Result<ValueType, String> {
        if self.im.g.ty(v).is_none() {
            tessera_passes::fold::infer_and_fold(
                &mut self.im.g,
                tessera_passes::fold::Inference::Lenient,
            )
            .map_err(|e| e.to_string())?;
        }
        self.im
            .g
            .ty(v)
            .cloned()
            .ok_or_else(|| format!("the type of `{}` is unknown here", self.im.g.name_of(v)))
    }
}

fn int(v: i64) -> Attr {
    Attr::Int(v)
}

/// Hardmax at opset ≥ 13: one-hot of the first maximum along `axis`, as
/// `Cast(Equal(iota, ArgMax(x, axis, keepdims)))` with `iota` counting along the axis.
pub(super) fn hardmax(
    d: &mut Decomposer,
    x: ValueId,
    axis: i64,
    out: ValueId,
) -> Result<(), String> {
    let ty = d.ty(x)?;
    let ax = tessera_ir::infer::norm_axis(axis, ty.rank())?;
    let len = ty.shape[ax]
        .known()
        .ok_or("Hardmax along a symbolic dimension is not supported")?;
    let am = d.op(
        OpKind::ArgMax,
        &[x],
        &[("axis", int(ax as i64)), ("keepdims", int(1))],
    );
    let iota = d.iota(len, ty.rank() - ax - 1);
    let hit = d.op(OpKind::Equal, &[iota, am], &[]);
    d.op_to(
        OpKind::Cast,
        &[Some(hit)],
        &[("to", int(ty.dtype.onnx_code() as i64))],
        out,
    );
    Ok(())
}

/// LayerNormalization with its optional `Mean` and `InvStdDev` outputs, as the spec's function
/// body: statistics in the stash type (f32 by default), normalisation, scale and bias.
pub(super) fn layer_norm(
    d: &mut Decomposer,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    outputs: &[Option<ValueId>],
) -> Result<(), String> {
    use tessera_ir::AttrsExt;
    let x = inputs[0].ok_or("LayerNormalization needs X")?;
    let scale = inputs
        .get(1)
        .copied()
        .flatten()
        .ok_or("LayerNormalization needs Scale")?;
    let bias = inputs.get(2).copied().flatten();
    let ty = d.ty(x)?;
    let axis = tessera_ir::infer::norm_axis(attrs.int("axis", -1)?, ty.rank())?;
    let eps = attrs.float("epsilon", 1e-5)?;
    let stash = match attrs.int("stash_type", 1)? {
        1 => DType::F32,
        code => DType::from_onnx_code(code as i32).ok_or("unsupported stash_type")?,
    };
    let axes = d.ints("axes", &(axis as i64..ty.rank() as i64).collect::<Vec<_>>());
    let xs = if ty.dtype == stash {
        x
    } else {
        d.op(OpKind::Cast, &[x], &[("to", int(stash.onnx_code() as i64))])
    };
    let mean_out = outputs.get(1).copied().flatten();
    let mean = d.im.g.fresh_value(&format!("{}_mean", d.node));
    d.op_to(OpKind::ReduceMean, &[Some(xs), Some(axes)], &[], mean);
    let centered = d.op(OpKind::Sub, &[xs, mean], &[]);
    let sq = d.op(OpKind::Mul, &[centered, centered], &[]);
    let var = d.op(OpKind::ReduceMean, &[sq, axes], &[]);
    let e = d.scalar("epsilon", stash, eps);
    let ve = d.op(OpKind::Add, &[var, e], &[]);
    let sd = d.op(OpKind::Sqrt, &[ve], &[]);
    let inv = d.im.g.fresh_value(&format!("{}_invstd", d.node));
    d.op_to(OpKind::Reciprocal, &[Some(sd)], &[], inv);
    let normed = d.op(OpKind::Mul, &[centered, inv], &[]);
    let normed = if ty.dtype == stash {
        normed
    } else {
        d.op(
            OpKind::Cast,
            &[normed],
            &[("to", int(ty.dtype.onnx_code() as i64))],
        )
    };
    let y = outputs[0].ok_or("LayerNormalization needs Y")?;
    match bias {
        Some(b) => {
            let scaled = d.op(OpKind::Mul, &[normed, scale], &[]);
            d.op_to(OpKind::Add, &[Some(scaled), Some(b)], &[], y);
        }
        None => d.op_to(OpKind::Mul, &[Some(normed), Some(scale)], &[], y),
    }
    if let Some(m) = mean_out {
        d.op_to(OpKind::Identity, &[Some(mean)], &[], m);
    }
    if let Some(s) = outputs.get(2).copied().flatten() {
        d.op_to(OpKind::Identity, &[Some(inv)], &[], s);
    }
    Ok(())
}

/// NegativeLogLikelihoodLoss(input [N, C, d…], target [N, d…], weight [C]?) with
/// `reduction` (none, sum, mean) and `ignore_index`, as in the spec's function body.
pub(super) fn nll_loss(
    d: &mut Decomposer,
    input: ValueId,
    target: ValueId,
    weight: Option<ValueId>,
    attrs: &Attrs,
    out: ValueId,
) -> Result<(), String> {
    use tessera_ir::AttrsExt;
    let reduction = attrs.string("reduction", "mean")?;
    let ignore = attrs.get("ignore_index").map(|a| match a {
        Attr::Int(i) => Ok(*i),
        _ => Err("`ignore_index` must be an int".to_string()),
    });
    let ignore = ignore.transpose()?;
    let dt = d.ty(input)?.dtype;
    let tdt = d.ty(target)?.dtype;
    // Ignored places read class 0 (always in range) and get weight 0.
    let (t0, mask) = match ignore {
        Some(i) => {
            let iv = d.constant("ignore", Tensor::from_i64(tdt, vec![], &[i]));
            let is_ignored = d.op(OpKind::Equal, &[target, iv], &[]);
            let keep = d.op(OpKind::Not, &[is_ignored], &[]);
            let zero = d.constant("zero", Tensor::from_i64(tdt, vec![], &[0]));
            (d.op(OpKind::Where, &[keep, target, zero], &[]), Some(keep))
        }
        None => (target, None),
    };
    let one = d.ints("axis1", &[1]);
    let t1 = d.op(OpKind::Unsqueeze, &[t0, one], &[]);
    let picked = d.op(OpKind::GatherElements, &[input, t1], &[("axis", int(1))]);
    let picked = d.op(OpKind::Squeeze, &[picked, one], &[]);
    let loss = d.op(OpKind::Neg, &[picked], &[]);
    let w = match (weight, mask) {
        (Some(w), Some(m)) => {
            let wt = d.op(OpKind::Gather, &[w, t0], &[]);
            let zero = d.scalar("wzero", dt, 0.0);
            Some(d.op(OpKind::Where, &[m, wt, zero], &[]))
        }
        (Some(w), None) => Some(d.op(OpKind::Gather, &[w, t0], &[])),
        (None, Some(m)) => Some(d.op(OpKind::Cast, &[m], &[("to", int(dt.onnx_code() as i64))])),
        (None, None) => None,
    };
    let loss = match w {
        Some(w) => d.op(OpKind::Mul, &[loss, w], &[]),
        None => loss,
    };
    let keep0 = [("keepdims", int(0))];
    match (reduction.as_str(), w) {
        ("none", _) => d.op_to(OpKind::Identity, &[Some(loss)], &[], out),
        ("sum", _) => d.op_to(OpKind::ReduceSum, &[Some(loss)], &keep0, out),
        ("mean", Some(w)) => {
            let num = d.op(OpKind::ReduceSum, &[loss], &keep0);
            let den = d.op(OpKind::ReduceSum, &[w], &keep0);
            d.op_to(OpKind::Div, &[Some(num), Some(den)], &[], out);
        }
        ("mean", None) => d.op_to(OpKind::ReduceMean, &[Some(loss)], &keep0, out),
        (r, _) => return Err(format!("unknown reduction `{r}`")),
    }
    Ok(())
}

impl Decomposer<'_> {
    /// `Cast(v, to)` unless `v` already has that dtype.
    pub fn cast(&mut self, v: ValueId, to: DType) -> Result<ValueId, String> {
        if self.ty(v)?.dtype == to {
            return Ok(v);
        }
        Ok(self.op(OpKind::Cast, &[v], &[("to", int(to.onnx_code() as i64))]))
    }

    /// `x - zero_point` in i32, the zero point reshaped to `[n, 1, …]` (rank `rank`) when it is
    /// per-row / per-channel along axis `per_axis`.
    fn minus_zero_point(
        &mut self,
        x: ValueId,
        zp: Option<ValueId>,
        per_axis: Option<(usize, usize)>,
    ) -> Result<ValueId, String> {
        let xi = self.cast(x, DType::I32)?;
        let Some(zp) = zp else { return Ok(xi) };
        let zi = self.cast(zp, DType::I32)?;
        let zi = match per_axis {
            Some((axis, rank)) if self.ty(zp)?.rank() == 1 => {
                let mut shape = vec![1i64; rank - axis];
                shape[0] = -1;
                let s = self.ints("zp_shape", &shape);
                self.op(OpKind::Reshape, &[zi, s], &[])
            }
            _ => zi,
        };
        Ok(self.op(OpKind::Sub, &[xi, zi], &[]))
    }

    /// Requantises an i32 accumulator: `saturate(round(acc · multiplier) + zero_point)` in f64
    /// (as onnx's reference promotes), cast to `to`.
    fn requantize(
        &mut self,
        acc: ValueId,
        multiplier: ValueId,
        zero_point: Option<ValueId>,
        to: DType,
    ) -> Result<ValueId, String> {
        let accf = self.cast(acc, DType::F64)?;
        let m = self.cast(multiplier, DType::F64)?;
        let scaled = self.op(OpKind::Mul, &[accf, m], &[]);
        let shifted = match zero_point {
            Some(z) => {
                let zf = self.cast(z, DType::F64)?;
                self.op(OpKind::Add, &[scaled, zf], &[])
            }
            None => scaled,
        };
        let rounded = self.op(OpKind::Round, &[shifted], &[]);
        let (lo, hi) = if to == DType::I8 {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        let (lo, hi) = (
            self.scalar("qmin", DType::F64, lo),
            self.scalar("qmax", DType::F64, hi),
        );
        let clipped = self.op(OpKind::Clip, &[rounded, lo, hi], &[]);
        self.cast(clipped, to)
    }
}

/// MatMulInteger / ConvInteger / QLinearMatMul / QLinearConv: integer products of
/// zero-point-shifted operands in i32, requantised for the QLinear forms.
pub(super) fn quantized_product(
    d: &mut Decomposer,
    op_type: &str,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    out: ValueId,
) -> Result<(), String> {
    let get = |i: usize| inputs.get(i).copied().flatten();
    let need = |i: usize| get(i).ok_or_else(|| format!("{op_type} needs input {i}"));
    let conv = op_type.contains("Conv");
    let product_op = if conv { OpKind::Conv } else { OpKind::MatMul };
    let conv_attrs: Vec<(&str, Attr)> = attrs
        .iter()
        .filter(|_| conv)
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let (a, a_zp, b, b_zp) = match op_type {
        "MatMulInteger" | "ConvInteger" => (need(0)?, get(2), need(1)?, get(3)),
        _ => (need(0)?, get(2), need(3)?, get(5)),
    };
    let a_rank = d.ty(a)?.rank();
    let b_rank = d.ty(b)?.rank();
    // Per-row zero points of A (matmul), per-output-channel ones of W (conv).
    let a_axis = (!conv).then(|| (a_rank.saturating_sub(2), a_rank));
    let b_axis = conv.then_some((0, b_rank));
    let ai = d.minus_zero_point(a, a_zp, a_axis)?;
    let bi = d.minus_zero_point(b, b_zp, b_axis)?;
    let acc = d.im.g.fresh_value(&format!("{}_acc", d.node));
    d.op_to(product_op, &[Some(ai), Some(bi)], &conv_attrs, acc);
    if matches!(op_type, "MatMulInteger" | "ConvInteger") {
        d.op_to(OpKind::Identity, &[Some(acc)], &[], out);
        return Ok(());
    }
    // QLinear: multiplier = a_scale · b_scale / y_scale (in the scales' f32).
    let (a_scale, b_scale, y_scale, y_zp) = (need(1)?, need(4)?, need(6)?, get(7));
    let a_scale = match d.ty(a_scale)?.rank() {
        1 if !conv => {
            let s = d.ints("scale_shape", &[-1, 1]);
            d.op(OpKind::Reshape, &[a_scale, s], &[])
        }
        _ => a_scale,
    };
    let b_scale = match d.ty(b_scale)?.rank() {
        1 if conv => {
            let s = d.ints("scale_shape", &[1, -1, 1, 1]);
            d.op(OpKind::Reshape, &[b_scale, s], &[])
        }
        _ => b_scale,
    };
    let ab = d.op(OpKind::Mul, &[a_scale, b_scale], &[]);
    let m = d.op(OpKind::Div, &[ab, y_scale], &[]);
    let acc = match get(8).filter(|_| conv) {
        Some(bias) => {
            let bias = d.cast(bias, DType::I32)?;
            let s = d.ints("bias_shape", &[1, -1, 1, 1]);
            let bias = d.op(OpKind::Reshape, &[bias, s], &[]);
            d.op(OpKind::Add, &[acc, bias], &[])
        }
        None => acc,
    };
    let to = match y_zp {
        Some(z) => d.ty(z)?.dtype,
        None => d.ty(a)?.dtype,
    };
    let y = d.requantize(acc, m, y_zp, to)?;
    d.op_to(OpKind::Identity, &[Some(y)], &[], out);
    Ok(())
}

/// DynamicQuantizeLinear: u8 quantisation with a scale and zero point from the data's range
/// (including 0), in f32 as the reference computes it.
pub(super) fn dynamic_quantize(
    d: &mut Decomposer,
    x: ValueId,
    outputs: &[Option<ValueId>],
) -> Result<(), String> {
    let f = DType::F32;
    let keep0 = [("keepdims", int(0))];
    let zero = d.scalar("zero", f, 0.0);
    let mx = d.op(OpKind::ReduceMax, &[x], &keep0);
    let mx = d.op(OpKind::Max, &[mx, zero], &[]);
    let mn = d.op(OpKind::ReduceMin, &[x], &keep0);
    let mn = d.op(OpKind::Min, &[mn, zero], &[]);
    let range = d.op(OpKind::Sub, &[mx, mn], &[]);
    let same = d.op(OpKind::Equal, &[mx, mn], &[]);
    let one = d.scalar("one", f, 1.0);
    let range = d.op(OpKind::Where, &[same, one, range], &[]);
    let q = d.scalar("qrange", f, 255.0);
    let scale = d.op(OpKind::Div, &[range, q], &[]);
    let ratio = d.op(OpKind::Div, &[mn, scale], &[]);
    let izp = d.op(OpKind::Sub, &[zero, ratio], &[]);
    let zp = d.op(OpKind::Clip, &[izp, zero, q], &[]);
    let zp = d.op(OpKind::Round, &[zp], &[]);
    let xs = d.op(OpKind::Div, &[x, scale], &[]);
    let xs = d.op(OpKind::Round, &[xs], &[]);
    let y = d.op(OpKind::Add, &[xs, zp], &[]);
    let y = d.op(OpKind::Clip, &[y, zero, q], &[]);
    let u8c = [("to", int(DType::U8.onnx_code() as i64))];
    if let Some(o) = outputs.first().copied().flatten() {
        d.op_to(OpKind::Cast, &[Some(y)], &u8c, o);
    }
    if let Some(o) = outputs.get(1).copied().flatten() {
        d.op_to(OpKind::Identity, &[Some(scale)], &[], o);
    }
    if let Some(o) = outputs.get(2).copied().flatten() {
        d.op_to(OpKind::Cast, &[Some(zp)], &u8c, o);
    }
    Ok(())
}

/// `(x - mean) / sqrt(var + eps)` over `axes` (keepdims), the statistics of every
/// normalisation below; returns (normalised, mean, population variance).
fn standardize(
    d: &mut Decomposer,
    x: ValueId,
    axes: &[i64],
    eps: f64,
    dt: DType,
) -> (ValueId, ValueId, ValueId) {
    let ax = d.ints("axes", axes);
    let mean = d.op(OpKind::ReduceMean, &[x, ax], &[]);
    let centered = d.op(OpKind::Sub, &[x, mean], &[]);
    let sq = d.op(OpKind::Mul, &[centered, centered], &[]);
    let var = d.op(OpKind::ReduceMean, &[sq, ax], &[]);
    let e = d.scalar("epsilon", dt, eps);
    let ve = d.op(OpKind::Add, &[var, e], &[]);
    let sd = d.op(OpKind::Sqrt, &[ve], &[]);
    (d.op(OpKind::Div, &[centered, sd], &[]), mean, var)
}

/// MeanVarianceNormalization: `(x - mean) / (sqrt(E[x²] - mean²) + 1e-9)` over `axes`.
pub(super) fn mean_variance_norm(
    d: &mut Decomposer,
    x: ValueId,
    attrs: &Attrs,
    out: ValueId,
) -> Result<(), String> {
    use tessera_ir::AttrsExt;
    let axes = attrs.ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    let dt = d.ty(x)?.dtype;
    let ax = d.ints("axes", &axes);
    let mean = d.op(OpKind::ReduceMean, &[x, ax], &[]);
    let sq = d.op(OpKind::Mul, &[x, x], &[]);
    let sq_mean = d.op(OpKind::ReduceMean, &[sq, ax], &[]);
    let mean_sq = d.op(OpKind::Mul, &[mean, mean], &[]);
    let var = d.op(OpKind::Sub, &[sq_mean, mean_sq], &[]);
    let sd = d.op(OpKind::Sqrt, &[var], &[]);
    let e = d.scalar("epsilon", dt, 1e-9);
    let den = d.op(OpKind::Add, &[sd, e], &[]);
    let centered = d.op(OpKind::Sub, &[x, mean], &[]);
    d.op_to(OpKind::Div, &[Some(centered), Some(den)], &[], out);
    Ok(())
}

/// GroupNormalization (opset 21: per-channel scale and bias; opset 18: per-group).
pub(super) fn group_norm(
    d: &mut Decomposer,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    opset: i64,
    out: ValueId,
) -> Result<(), String> {
    use tessera_ir::AttrsExt;
    let x = inputs[0].ok_or("GroupNormalization needs X")?;
    let (scale, bias) = (
        inputs.get(1).copied().flatten().ok_or("needs scale")?,
        inputs.get(2).copied().flatten().ok_or("needs bias")?,
    );
    let ty = d.ty(x)?;
    let groups = attrs.int("num_groups", 0)?;
    let eps = attrs.float("epsilon", 1e-5)?;
    let c = ty
        .shape
        .get(1)
        .and_then(|c| c.known())
        .ok_or("needs a known channel count")? as i64;
    if groups <= 0 || c % groups != 0 {
        return Err(format!("{c} channels do not split into {groups} groups"));
    }
    let stash = if attrs.int("stash_type", 1)? == 1 {
        DType::F32
    } else {
        ty.dtype
    };
    let xs = d.cast(x, stash)?;
    let grouped_shape = d.ints("grouped", &[0, groups, -1]);
    let g = d.op(OpKind::Reshape, &[xs, grouped_shape], &[]);
    let (normed, _, _) = standardize(d, g, &[2], eps, stash);
    let shape = d.op(OpKind::Shape, &[x], &[]);
    let normed = d.op(OpKind::Reshape, &[normed, shape], &[]);
    let normed = d.cast(normed, ty.dtype)?;
    let per_channel = |d: &mut Decomposer, v: ValueId| -> Result<ValueId, String> {
        let v = if opset < 21 {
            // One value per group, repeated over the group's channels.
            let s = d.ints("group_col", &[groups, 1]);
            let col = d.op(OpKind::Reshape, &[v, s], &[]);
            let rep = d.ints("group_rep", &[groups, c / groups]);
            let full = d.op(OpKind::Expand, &[col, rep], &[]);
            let flat = d.ints("flat", &[c]);
            d.op(OpKind::Reshape, &[full, flat], &[])
        } else {
            v
        };
        let mut s = vec![1i64; ty.rank()];
        s[1] = c;
        let s = d.ints("channel_shape", &s);
        Ok(d.op(OpKind::Reshape, &[v, s], &[]))
    };
    let sc = per_channel(d, scale)?;
    let bi = per_channel(d, bias)?;
    let y = d.op(OpKind::Mul, &[normed, sc], &[]);
    d.op_to(OpKind::Add, &[Some(y), Some(bi)], &[], out);
    Ok(())
}

/// BatchNormalization with `training_mode = 1`: batch statistics normalise the input, and the
/// running mean and variance outputs are updated with `momentum`.
pub(super) fn batch_norm_training(
    d: &mut Decomposer,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    outputs: &[Option<ValueId>],
) -> Result<(), String> {
    use tessera_ir::AttrsExt;
    let need = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or(format!("needs input {i}"))
    };
    let (x, scale, bias, mean, var) = (need(0)?, need(1)?, need(2)?, need(3)?, need(4)?);
    let ty = d.ty(x)?;
    let eps = attrs.float("epsilon", 1e-5)?;
    let momentum = attrs.float("momentum", 0.9)?;
    let axes: Vec<i64> = (0..ty.rank() as i64).filter(|&a| a != 1).collect();
    let (normed, bmean, bvar) = standardize(d, x, &axes, eps, ty.dtype);
    let mut s = vec![1i64; ty.rank()];
    s[1] = -1;
    let cs = d.ints("channel_shape", &s);
    let sc = d.op(OpKind::Reshape, &[scale, cs], &[]);
    let bi = d.op(OpKind::Reshape, &[bias, cs], &[]);
    let y = d.op(OpKind::Mul, &[normed, sc], &[]);
    if let Some(o) = outputs.first().copied().flatten() {
        d.op_to(OpKind::Add, &[Some(y), Some(bi)], &[], o);
    }
    let flat = d.ints("flat", &[-1]);
    let m = d.scalar("momentum", ty.dtype, momentum);
    let m1 = d.scalar("one_minus_momentum", ty.dtype, 1.0 - momentum);
    for (k, (running, batch)) in [(mean, bmean), (var, bvar)].into_iter().enumerate() {
        if let Some(o) = outputs.get(k + 1).copied().flatten() {
            let b = d.op(OpKind::Reshape, &[batch, flat], &[]);
            let old = d.op(OpKind::Mul, &[running, m], &[]);
            let new = d.op(OpKind::Mul, &[b, m1], &[]);
            d.op_to(OpKind::Add, &[Some(old), Some(new)], &[], o);
        }
    }
    Ok(())
}

/// QuantizeLinear (`saturate(round(x / scale) + zero_point)`) and DequantizeLinear
/// (`(x - zero_point) · scale`), per tensor or per `axis` (1-D scale and zero point).
pub(super) fn quantize_linear(
    d: &mut Decomposer,
    quantize: bool,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    out: ValueId,
) -> Result<(), String> {
    use tessera_ir::AttrsExt;
    let x = inputs[0].ok_or("needs an input")?;
    let scale = inputs.get(1).copied().flatten().ok_or("needs a scale")?;
    let zp = inputs.get(2).copied().flatten();
    let rank = d.ty(x)?.rank();
    let axis_attr = attrs.int("axis", 1)?;
    // A 1-D scale / zero point runs along `axis`.
    let along_axis = |d: &mut Decomposer, v: ValueId| -> Result<ValueId, String> {
        if d.ty(v)?.rank() != 1 || rank <= 1 {
            return Ok(v);
        }
        let axis = tessera_ir::infer::norm_axis(axis_attr, rank)?;
        let mut s = vec![1i64; rank - axis];
        s[0] = -1;
        let s = d.ints("axis_shape", &s);
        Ok(d.op(OpKind::Reshape, &[v, s], &[]))
    };
    let scale = along_axis(d, scale)?;
    let zp = zp.map(|z| along_axis(d, z)).transpose()?;
    let sdt = d.ty(scale)?.dtype;
    if quantize {
        let to = match zp {
            Some(z) => d.ty(z)?.dtype,
            None => DType::U8,
        };
        let q = d.op(OpKind::Div, &[x, scale], &[]);
        let q = d.op(OpKind::Round, &[q], &[]);
        let q = match zp {
            Some(z) => {
                let zf = d.cast(z, sdt)?;
                d.op(OpKind::Add, &[q, zf], &[])
            }
            None => q,
        };
        let (lo, hi) = if to == DType::I8 {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        let (lo, hi) = (d.scalar("qmin", sdt, lo), d.scalar("qmax", sdt, hi));
        let q = d.op(OpKind::Clip, &[q, lo, hi], &[]);
        d.op_to(
            OpKind::Cast,
            &[Some(q)],
            &[("to", int(to.onnx_code() as i64))],
            out,
        );
    } else {
        let xi = d.cast(x, DType::I32)?;
        let centered = match zp {
            Some(z) => {
                let zi = d.cast(z, DType::I32)?;
                d.op(OpKind::Sub, &[xi, zi], &[])
            }
            None => xi,
        };
        let f = d.cast(centered, sdt)?;
        d.op_to(OpKind::Mul, &[Some(f), Some(scale)], &[], out);
    }
    Ok(())
}

/// CenterCropPad as a Pad with signed amounts: per axis `diff = target - size`, begin
/// `diff / 2` (truncating: the reference's floor for padding, its centred start for
/// cropping), end `diff - begin`; negative amounts crop.
pub(super) fn center_crop_pad(
    d: &mut Decomposer,
    x: ValueId,
    target: ValueId,
    attrs: &Attrs,
    out: ValueId,
) -> Result<(), String> {
    use tessera_ir::AttrsExt;
    let rank = d.ty(x)?.rank() as i64;
    let axes = attrs.ints("axes")?.unwrap_or_else(|| (0..rank).collect());
    let axes_c = d.ints("axes", &axes);
    let shape = d.op(OpKind::Shape, &[x], &[]);
    let dims = d.op(OpKind::Gather, &[shape, axes_c], &[]);
    let target = d.cast(target, DType::I64)?;
    let diff = d.op(OpKind::Sub, &[target, dims], &[]);
    let two = d.constant("two", Tensor::from_i64(DType::I64, vec![], &[2]));
    let begin = d.op(OpKind::Div, &[diff, two], &[]);
    let end = d.op(OpKind::Sub, &[diff, begin], &[]);
    let pads = d.op(OpKind::Concat, &[begin, end], &[("axis", int(0))]);
    d.op_to(
        OpKind::Pad,
        &[Some(x), Some(pads), None, Some(axes_c)],
        &[],
        out,
    );
    Ok(())
}

/// Split becomes one Slice per output, so the IR needs no multi-output kernels. Sizes come
/// from the `split` input or attribute, else equal parts (the last smaller). When the sizes or
/// the split dimension are known only later (a run-time `split` input, a shape that depends on
/// input values), the bounds are computed in the graph — `ends = CumSum(sizes)` — and value
/// specialisation folds them before lowering.
pub(super) fn split(
    d: &mut Decomposer,
    x: ValueId,
    axis: i64,
    sizes_input: Option<ValueId>,
    sizes_attr: Option<Vec<i64>>,
    outputs: &[ValueId],
) -> Result<(), String> {
    let n_out = outputs.len() as i64;
    let known_sizes = match (sizes_input, sizes_attr) {
        (Some(v), _) => d.im.g.initializers.get(&v).map(|t| t.to_i64_vec()),
        (None, a) => a,
    };
    let ax = d.ints("axis", &[axis]);
    let equal_static = if sizes_input.is_none() && known_sizes.is_none() {
        let ty = d.ty(x).ok();
        match ty {
            Some(ty) => {
                let a = tessera_ir::infer::norm_axis(axis, ty.rank())?;
                ty.shape[a].known().map(|dim| {
                    let (dim, chunk) = (dim as i64, (dim as i64 + n_out - 1) / n_out);
                    (0..n_out)
                        .map(|k| (dim - k * chunk).clamp(0, chunk))
                        .collect()
                })
            }
            None => None,
        }
    } else {
        None
    };
    if let Some(sizes) = known_sizes.or(equal_static) {
        if sizes.len() != outputs.len() || sizes.iter().any(|&s| s < 0) {
            return Err(format!(
                "split sizes {sizes:?} do not match {} outputs",
                outputs.len()
            ));
        }
        let mut start = 0;
        for (k, (&size, &out)) in sizes.iter().zip(outputs).enumerate() {
            let st = d.ints(&format!("start{k}"), &[start]);
            let en = d.ints(&format!("end{k}"), &[start + size]);
            d.op_to(
                OpKind::Slice,
                &[Some(x), Some(st), Some(en), Some(ax)],
                &[],
                out,
            );
            start += size;
        }
        return Ok(());
    }
    let sizes = match sizes_input {
        Some(v) => v,
        None => {
            // Equal parts of a dimension known later: chunk = ceil(dim / n), size_k =
            // clamp(dim - k·chunk, 0, chunk).
            let shape = d.op(OpKind::Shape, &[x], &[]);
            let dim = d.op(OpKind::Gather, &[shape, ax], &[]);
            let (n1, n) = (d.ints("n_minus_1", &[n_out - 1]), d.ints("n", &[n_out]));
            let padded = d.op(OpKind::Add, &[dim, n1], &[]);
            let chunk = d.op(OpKind::Div, &[padded, n], &[]);
            let ks = d.ints("k", &(0..n_out).collect::<Vec<_>>());
            let before = d.op(OpKind::Mul, &[ks, chunk], &[]);
            let left = d.op(OpKind::Sub, &[dim, before], &[]);
            let zero = d.ints("zero", &[0]);
            let lo = d.op(OpKind::Max, &[left, zero], &[]);
            d.op(OpKind::Min, &[lo, chunk], &[])
        }
    };
    let zero = d.ints("zero", &[0]);
    let ends = d.op(OpKind::CumSum, &[sizes, zero], &[]);
    let mut start = zero;
    for (k, &out) in outputs.iter().enumerate() {
        let (lo, hi) = (d.ints("k", &[k as i64]), d.ints("k1", &[k as i64 + 1]));
        let end = d.op(OpKind::Slice, &[ends, lo, hi], &[]);
        d.op_to(
            OpKind::Slice,
            &[Some(x), Some(start), Some(end), Some(ax)],
            &[],
            out,
        );
        start = end;
    }
    Ok(())
}
