//! ONNX ops that are a line or two of IR ops, imported as that composition: GlobalMaxPool
//! and GlobalLpPool (a reduction over the spatial axes), LpNormalization (a division by the
//! norm), Mish (`x·tanh(softplus(x))`), Tan, Sinh and Cosh (from Sin/Cos and Exp), and OneHot
//! (a comparison of the indices with an iota, selecting `values`), and TopK for a constant `k`
//! of at most [`MAX_TOP_K`] (`k` rounds of ArgMax, each masking its pick).
//!
//! Each follows the ONNX definition; `compiler/tests/composed.rs` checks them against values
//! computed directly from that definition.

use super::decompose::Decomposer;
use tessera_ir::{Attr, Attrs, AttrsExt, DType, OpKind, Tensor, ValueId};

/// Whether `op_type` is imported here.
pub(super) fn handles(op_type: &str) -> bool {
    matches!(
        op_type,
        "GlobalMaxPool"
            | "GlobalLpPool"
            | "LpNormalization"
            | "Mish"
            | "Tan"
            | "Sinh"
            | "Cosh"
            | "OneHot"
            | "TopK"
    )
}

/// Writes `outputs = op_type(inputs)` (absent outputs are not computed).
pub(super) fn compose(
    d: &mut Decomposer,
    op_type: &str,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    outputs: &[Option<ValueId>],
) -> Result<(), String> {
    if op_type == "TopK" {
        return top_k(d, inputs, attrs, outputs);
    }
    let out = outputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| format!("{op_type} needs its output"))?;
    let x = inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| format!("{op_type} needs an input"))?;
    let one = |d: &mut Decomposer, op: OpKind, x: ValueId| d.op(op, &[x], &[]);
    match op_type {
        "GlobalMaxPool" | "GlobalLpPool" => {
            let rank = d.ty(x)?.rank();
            if rank < 3 {
                return Err(format!("{op_type} needs rank >= 3, has {rank}"));
            }
            let op = match op_type {
                "GlobalMaxPool" => OpKind::ReduceMax,
                _ => lp_reduction(attrs.int("p", 2)?)?,
            };
            let axes = d.ints("axes", &(2..rank as i64).collect::<Vec<_>>());
            d.op_to(
                op,
                &[Some(x), Some(axes)],
                &[("keepdims", Attr::Int(1))],
                out,
            );
        }
        "LpNormalization" => {
            let op = lp_reduction(attrs.int("p", 2)?)?;
            let axes = d.ints("axes", &[attrs.int("axis", -1)?]);
            let norm = d.op(op, &[x, axes], &[("keepdims", Attr::Int(1))]);
            d.op_to(OpKind::Div, &[Some(x), Some(norm)], &[], out);
        }
        "Mish" => {
            let soft = one(d, OpKind::Softplus, x);
            let t = one(d, OpKind::Tanh, soft);
            d.op_to(OpKind::Mul, &[Some(x), Some(t)], &[], out);
        }
        "Tan" => {
            let (s, c) = (one(d, OpKind::Sin, x), one(d, OpKind::Cos, x));
            d.op_to(OpKind::Div, &[Some(s), Some(c)], &[], out);
        }
        "Sinh" | "Cosh" => {
            // (e^x ∓ e^−x) / 2
            let dt = d.ty(x)?.dtype;
            let e = one(d, OpKind::Exp, x);
            let neg = one(d, OpKind::Neg, x);
            let e_neg = one(d, OpKind::Exp, neg);
            let op = if op_type == "Sinh" {
                OpKind::Sub
            } else {
                OpKind::Add
            };
            let both = d.op(op, &[e, e_neg], &[]);
            let half = d.scalar("half", dt, 0.5);
            d.op_to(OpKind::Mul, &[Some(both), Some(half)], &[], out);
        }
        "OneHot" => one_hot(d, inputs, attrs, out)?,
        other => return Err(format!("{other} is not composed here")),
    }
    Ok(())
}

/// The reduction of an Lp norm (p = 1 or 2, the values the ONNX ops allow).
fn lp_reduction(p: i64) -> Result<OpKind, String> {
    match p {
        1 => Ok(OpKind::ReduceL1),
        2 => Ok(OpKind::ReduceL2),
        p => Err(format!("p={p} is not supported (1 or 2)")),
    }
}

/// OneHot(indices, depth, values[off, on], axis): `on` where the (wrapped) index equals the
/// position along the new axis, else `off`; indices outside `[-depth, depth)` give all `off`.
/// `depth` must be a constant (it is the output's size).
fn one_hot(
    d: &mut Decomposer,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    out: ValueId,
) -> Result<(), String> {
    let input = |i: usize| inputs.get(i).copied().flatten();
    let (indices, depth, values) = (
        input(0).ok_or("needs indices")?,
        input(1).ok_or("needs depth")?,
        input(2).ok_or("needs values")?,
    );
    let depth_n = match d.im.g.initializers.get(&depth) {
        Some(t) if t.len() == 1 => t.get_f64(0) as i64,
        _ => return Err("depth must be a constant scalar".into()),
    };
    if !(1..=1 << 24).contains(&depth_n) {
        return Err(format!("depth {depth_n} is outside 1..=2^24"));
    }
    let rank = d.ty(indices)?.rank() as i64;
    let axis = attrs.int("axis", -1)?;
    let axis = if axis < 0 { axis + rank + 1 } else { axis };
    if !(0..=rank).contains(&axis) {
        return Err(format!(
            "axis {} is outside the output's rank {}",
            attrs.int("axis", -1)?,
            rank + 1
        ));
    }
    let idx = d.cast(indices, DType::I64)?;
    let zero = d.constant("zero", Tensor::from_i64(DType::I64, vec![], &[0]));
    let depth_v = d.constant("depth", Tensor::from_i64(DType::I64, vec![], &[depth_n]));
    let negative = d.op(OpKind::Less, &[idx, zero], &[]);
    let wrapped = d.op(OpKind::Add, &[idx, depth_v], &[]);
    let idx = d.op(OpKind::Where, &[negative, wrapped, idx], &[]);
    let at_axis = d.ints("axis", &[axis]);
    let idx = d.op(OpKind::Unsqueeze, &[idx, at_axis], &[]);
    // The positions along the new axis, shaped to broadcast against the unsqueezed indices.
    let iota = d.iota(depth_n as usize, (rank - axis) as usize);
    let hit = d.op(OpKind::Equal, &[idx, iota], &[]);
    let pick = |d: &mut Decomposer, i: i64| {
        let k = d.constant("which", Tensor::from_i64(DType::I64, vec![], &[i]));
        d.op(OpKind::Gather, &[values, k], &[("axis", Attr::Int(0))])
    };
    let (off, on) = (pick(d, 0), pick(d, 1));
    d.op_to(OpKind::Where, &[Some(hit), Some(on), Some(off)], &[], out);
    Ok(())
}

/// The largest `k` TopK is unrolled for (each pick is an ArgMax over the axis).
pub(super) const MAX_TOP_K: i64 = 64;

/// TopK(x, k) along `axis`: `k` rounds, each taking the ArgMax (ArgMin for `largest=0`) of
/// what is left — the first of equal values, as ONNX orders them — its value, and masking
/// it with −∞ (+∞). Values and indices come out sorted, which `sorted=0` also allows.
fn top_k(
    d: &mut Decomposer,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    outputs: &[Option<ValueId>],
) -> Result<(), String> {
    let input = |i: usize| inputs.get(i).copied().flatten();
    let (x, k) = (input(0).ok_or("needs X")?, input(1).ok_or("needs K")?);
    let ty = d.ty(x)?;
    if !ty.dtype.is_float() {
        return Err(format!(
            "TopK of {} is not supported (floats only)",
            ty.dtype
        ));
    }
    let k = match d.im.g.initializers.get(&k) {
        Some(t) if t.len() == 1 => t.get_i64(0),
        _ => return Err("K must be a constant".into()),
    };
    let rank = ty.rank();
    let axis = tessera_ir::infer::norm_axis(attrs.int("axis", -1)?, rank)?;
    let n = ty.shape[axis]
        .known()
        .ok_or("TopK along a symbolic dimension is not supported")?;
    if !(1..=MAX_TOP_K.min(n as i64)).contains(&k) {
        return Err(format!(
            "K={k} is outside 1..={} (the axis has {n}; at most {MAX_TOP_K} are unrolled)",
            n.min(MAX_TOP_K as usize)
        ));
    }
    let largest = attrs.int("largest", 1)? != 0;
    let (pick_op, fill) = match largest {
        true => (OpKind::ArgMax, f64::NEG_INFINITY),
        false => (OpKind::ArgMin, f64::INFINITY),
    };
    let iota = d.iota(n, rank - axis - 1);
    let masked = d.scalar("masked", ty.dtype, fill);
    let at = [("axis", Attr::Int(axis as i64))];
    let (mut left, mut values, mut indices) = (x, Vec::new(), Vec::new());
    for _ in 0..k {
        let pick = d.op(
            pick_op,
            &[left],
            &[("axis", Attr::Int(axis as i64)), ("keepdims", Attr::Int(1))],
        );
        values.push(Some(d.op(OpKind::GatherElements, &[x, pick], &at)));
        indices.push(Some(pick));
        let taken = d.op(OpKind::Equal, &[iota, pick], &[]);
        left = d.op(OpKind::Where, &[taken, masked, left], &[]);
    }
    if let Some(v) = outputs.first().copied().flatten() {
        d.op_to(OpKind::Concat, &values, &at, v);
    }
    if let Some(i) = outputs.get(1).copied().flatten() {
        d.op_to(OpKind::Concat, &indices, &at, i);
    }
    Ok(())
}
