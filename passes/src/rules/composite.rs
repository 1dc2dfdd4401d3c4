//! Composite ops written out by exporters: a (log-)softmax or a layer normalisation spelled as its
//! primitive steps (reductions, `Sub`, `Exp`, `Log`, `Sqrt`, `Div`, …) becomes the one op, which
//! lowers to one kernel. Exporters for opsets before 17 have no `LayerNormalization` and
//! write every transformer's norms out this way (PyTorch: `ReduceMean`, `Sub`, `Pow`,
//! `ReduceMean`, `Add`, `Sqrt`, `Div`, then `Mul` by the weight and `Add` of the bias).
//!
//! "Equal" here is up to rounding: the composite kernel multiplies by `1 / sqrt(var + eps)`
//! where the written-out form divides by `sqrt(var + eps)`, and sums in its own order
//! (within the reduction tolerance). NaN and infinities propagate the same way: both forms
//! subtract the row's maximum (softmax) or mean (layer norm) from every element first.
//! Only the numerically stable softmax (with the maximum subtracted) is matched: rewriting
//! `exp(x) / sum(exp(x))` to it would turn an overflow's NaN into a number.
//!
//! `Pow(c, 2)` is matched as `Mul(c, c)`, which the algebra rule `pow-two` puts in its class.

use super::{Rw, add_op, attrs_of, konst, ty, v};
use crate::egraph::{TEGraph, TNode, TypeAnalysis};
use egg::rewrite as rw;
use egg::{Applier, Id, PatternAst, Subst, Symbol, Var};
use tessera_ir::{Attr, Attrs, AttrsExt, DType, OpKind, Tensor};

/// `x - mean(x)` over the axes `?ax` (the centred rows of a layer norm).
const CENTRED: &str = "(Sub ?s ?x (ReduceMean ?m ?x ?ax))";

pub fn rules() -> Vec<Rw> {
    let centred_sq = format!("(Mul ?p {CENTRED} {CENTRED})");
    let layer_norm =
        format!("(Div ?d {CENTRED} (Sqrt ?q (Add ?a (ReduceMean ?m2 {centred_sq} ?ax2) ?eps)))");
    let layer_norm_rsqrt = format!(
        "(Mul ?d {CENTRED} (Reciprocal ?r (Sqrt ?q (Add ?a (ReduceMean ?m2 {centred_sq} ?ax2) ?eps))))"
    );
    let shifted_exp = "(Exp ?e (Sub ?s ?x (ReduceMax ?m ?x ?ax)))";
    let softmax = format!("(Div ?d {shifted_exp} (ReduceSum ?r {shifted_exp} ?ax2))");
    let log_softmax = format!(
        "(Sub ?d (Sub ?s ?x (ReduceMax ?m ?x ?ax)) (Log ?l (ReduceSum ?r {shifted_exp} ?ax2)))"
    );
    vec![
        rw!("softmax-written-out"; { parse(&softmax) } => { Softmax(OpKind::Softmax) }),
        rw!("log-softmax-written-out"; { parse(&log_softmax) } => { Softmax(OpKind::LogSoftmax) }),
        rw!("layernorm-written-out"; { parse(&layer_norm) } => { LayerNorm }),
        rw!("layernorm-written-out-rsqrt"; { parse(&layer_norm_rsqrt) } => { LayerNorm }),
        rw!("layernorm-scale"; "(Mul ?a (LayerNormalization ?l ?x ?one) ?k)" => { LayerNormAffine }),
        rw!("scale-layernorm"; "(Mul ?a ?k (LayerNormalization ?l ?x ?one))" => { LayerNormAffine }),
        rw!("layernorm-bias"; "(Add ?a (LayerNormalization ?l ?x ?g) ?k)" => { LayerNormAffine }),
        rw!("bias-layernorm"; "(Add ?a ?k (LayerNormalization ?l ?x ?g))" => { LayerNormAffine }),
    ]
}

fn parse(pattern: &str) -> egg::Pattern<TNode> {
    pattern.parse().expect("a well-formed pattern")
}

/// The reduced axes of a reduction with attributes `attrs` and axes input `axes`, as a
/// sorted list of non-negative axes, when it keeps the reduced dimensions (so its result
/// broadcasts back against the input).
fn kept_axes(eg: &TEGraph, attrs: Id, axes: Id, rank: usize) -> Option<Vec<usize>> {
    let a = attrs_of(eg, attrs)?;
    if a.int("keepdims", 1).ok()? != 1 {
        return None;
    }
    let raw = konst(eg, axes)?.to_i64_vec();
    if raw.is_empty() {
        return None; // all axes or none, by `noop_with_empty_axes`: not these idioms
    }
    let mut out: Vec<usize> = raw
        .iter()
        .map(|&x| tessera_ir::infer::norm_axis(x, rank).ok())
        .collect::<Option<_>>()?;
    out.sort();
    out.dedup();
    Some(out)
}

/// The static shape and dtype of `x`, when it is a floating-point tensor.
fn float_shape(eg: &TEGraph, x: Id) -> Option<(Vec<usize>, DType)> {
    let t = ty(eg, x)?;
    t.dtype.is_float().then_some((t.static_shape()?, t.dtype))
}

/// Joins `op[attrs](inputs)` to the matched class `id` (when it types like the class).
fn with_op(eg: &mut TEGraph, id: Id, op: OpKind, attrs: &Attrs, inputs: Vec<Id>) -> Vec<Id> {
    if add_op(eg, id, op, attrs, inputs) {
        vec![id]
    } else {
        vec![]
    }
}

/// `exp(x - max(x)) / sum(exp(x - max(x)))` over one axis is `Softmax[axis](x)`, and
/// `(x - max(x)) - log(sum(exp(x - max(x))))` is `LogSoftmax[axis](x)`.
struct Softmax(OpKind);

impl Applier<TNode, TypeAnalysis> for Softmax {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let x = s[v("?x")];
        let Some(rank) = float_shape(eg, x).map(|(shape, _)| shape.len()) else {
            return vec![];
        };
        let max = kept_axes(eg, s[v("?m")], s[v("?ax")], rank);
        let sum = kept_axes(eg, s[v("?r")], s[v("?ax2")], rank);
        let (Some(max), Some(sum)) = (max, sum) else {
            return vec![];
        };
        if max.len() != 1 || max != sum {
            return vec![];
        }
        let attrs = Attrs::from([("axis".to_string(), Attr::Int(max[0] as i64))]);
        with_op(eg, id, self.0, &attrs, vec![x])
    }

    fn vars(&self) -> Vec<Var> {
        ["?d", "?e", "?s", "?x", "?m", "?ax", "?r", "?ax2"]
            .map(v)
            .to_vec()
    }
}

/// `(x - mean(x)) / sqrt(mean((x - mean(x))²) + eps)` over the trailing axes from `a` on is
/// `LayerNormalization[axis=a, epsilon=eps](x, ones)`; `layernorm-scale` and
/// `layernorm-bias` then take in the weight and bias.
struct LayerNorm;

impl Applier<TNode, TypeAnalysis> for LayerNorm {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let x = s[v("?x")];
        let Some((shape, dtype)) = float_shape(eg, x) else {
            return vec![];
        };
        let rank = shape.len();
        let mean = kept_axes(eg, s[v("?m")], s[v("?ax")], rank);
        let var = kept_axes(eg, s[v("?m2")], s[v("?ax2")], rank);
        let (Some(axes), Some(var)) = (mean, var) else {
            return vec![];
        };
        // LayerNormalization normalises a trailing run of axes.
        let first = axes[0];
        if axes != var || axes != (first..rank).collect::<Vec<_>>() {
            return vec![];
        }
        let eps = match konst(eg, s[v("?eps")]) {
            Some(t) if t.len() == 1 && t.dtype() == dtype => t.to_f64_vec()[0],
            _ => return vec![],
        };
        if !(eps.is_finite() && eps >= 0.0) {
            return vec![];
        }
        let norm: Vec<usize> = shape[first..].to_vec();
        let count = norm.iter().product::<usize>();
        let ones = eg
            .analysis
            .new_constant("ln_scale", Tensor::from_f64(dtype, norm, &vec![1.0; count]));
        let ones = eg.add(TNode::Leaf(ones));
        let attrs = Attrs::from([
            ("axis".to_string(), Attr::Int(first as i64)),
            ("epsilon".to_string(), Attr::Float(eps)),
        ]);
        with_op(eg, id, OpKind::LayerNormalization, &attrs, vec![x, ones])
    }

    fn vars(&self) -> Vec<Var> {
        [
            "?d", "?s", "?x", "?m", "?ax", "?q", "?a", "?m2", "?p", "?ax2", "?eps",
        ]
        .map(v)
        .to_vec()
    }
}

/// `LayerNormalization(x, ones) * k` is `LayerNormalization(x, k)`, and
/// `LayerNormalization(x, g) + k` is `LayerNormalization(x, g, k)`, for a constant `k` that
/// varies only along the normalised axes (it is materialised to their full shape, which is
/// what the op's scale and bias broadcast from).
struct LayerNormAffine;

impl Applier<TNode, TypeAnalysis> for LayerNormAffine {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let scaling = s.get(v("?one")).is_some();
        let x = s[v("?x")];
        let Some(attrs) = attrs_of(eg, s[v("?l")]).cloned() else {
            return vec![];
        };
        let Ok(axis) = attrs.int("axis", -1) else {
            return vec![];
        };
        let Some(shape) = ty(eg, x).and_then(|t| t.static_shape()) else {
            return vec![];
        };
        let Ok(first) = tessera_ir::infer::norm_axis(axis, shape.len()) else {
            return vec![];
        };
        let Some(k) = konst(eg, s[v("?k")]).cloned() else {
            return vec![];
        };
        let Some(k) = over_trailing(&k, &shape, first) else {
            return vec![];
        };
        let inputs = if scaling {
            // Only a unit scale may be replaced (a scale of its own multiplies again).
            let unit =
                konst(eg, s[v("?one")]).is_some_and(|t| t.to_f64_vec().iter().all(|&e| e == 1.0));
            if !unit {
                return vec![];
            }
            let k = eg.analysis.new_constant("ln_scale", k);
            vec![x, eg.add(TNode::Leaf(k))]
        } else {
            let k = eg.analysis.new_constant("ln_bias", k);
            vec![x, s[v("?g")], eg.add(TNode::Leaf(k))]
        };
        with_op(eg, id, OpKind::LayerNormalization, &attrs, inputs)
    }

    fn vars(&self) -> Vec<Var> {
        ["?a", "?l", "?x", "?k"].map(v).to_vec()
    }
}

/// `k` broadcast to the trailing dimensions `shape[first..]`, when `k` broadcasts against
/// `shape` without varying along (or adding) any leading dimension.
fn over_trailing(k: &Tensor, shape: &[usize], first: usize) -> Option<Tensor> {
    let ks = k.shape();
    if ks.len() > shape.len() || !k.dtype().is_float() {
        return None;
    }
    // Right-align k's shape against the full shape.
    let pad = shape.len() - ks.len();
    let aligned: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(ks.iter().copied())
        .collect();
    let fits = aligned
        .iter()
        .zip(shape)
        .enumerate()
        .all(|(d, (&a, &s))| a == 1 || (a == s && d >= first));
    if !fits {
        return None;
    }
    let norm = &shape[first..];
    let kd = &aligned[first..];
    let values = k.to_f64_vec();
    let (ns, ks_st) = (
        tessera_ir::tensor::strides(norm),
        tessera_ir::tensor::strides(kd),
    );
    let count = norm.iter().product::<usize>();
    let full: Vec<f64> = (0..count)
        .map(|i| {
            let at: usize = (0..norm.len())
                .map(|d| {
                    if kd[d] == 1 {
                        0
                    } else {
                        (i / ns[d]) % norm[d] * ks_st[d]
                    }
                })
                .sum();
            values[at]
        })
        .collect();
    Some(Tensor::from_f64(k.dtype(), norm.to_vec(), &full))
}
