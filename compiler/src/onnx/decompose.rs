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
pub(super) fn hardmax(d: &mut Decomposer, x: ValueId, axis: i64, out: ValueId) -> Result<(), String> {
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
    let mut shape = vec![len];
    shape.extend(std::iter::repeat_n(1, ty.rank() - ax - 1));
    let iota = d.constant(
        "iota",
        Tensor::from_i64(DType::I64, shape, &(0..len as i64).collect::<Vec<_>>()),
    );
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
    let scale = inputs.get(1).copied().flatten().ok_or("LayerNormalization needs Scale")?;
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
        d.op(OpKind::Cast, &[normed], &[("to", int(ty.dtype.onnx_code() as i64))])
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
