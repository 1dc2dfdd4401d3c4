//! Folding constants into their consumers: a BatchNormalization after a Conv with constant
//! weights becomes new Conv weights and bias; an Add of a constant per-channel vector after a
//! Conv becomes the Conv's bias.

use super::{Rw, konst, ty, v};
use crate::egraph::{TEGraph, TNode, TypeAnalysis};
use egg::rewrite as rw;
use egg::{Applier, Id, PatternAst, Subst, Symbol, Var};
use tessera_ir::{AttrsExt, OpKind, Tensor};

pub fn rules() -> Vec<Rw> {
    vec![
        rw!("conv-batchnorm";
            "(BatchNormalization ?n (Conv ?c ?x ?w) ?s ?beta ?m ?var)" => { ConvBatchNorm }),
        rw!("conv-bias-batchnorm";
            "(BatchNormalization ?n (Conv ?c ?x ?w ?b) ?s ?beta ?m ?var)" => { ConvBatchNorm }),
        rw!("conv-add-bias"; "(Add ?a (Conv ?c ?x ?w) ?k)" => { ConvAddBias }),
        rw!("conv-bias-add"; "(Add ?a ?k (Conv ?c ?x ?w))" => { ConvAddBias }),
    ]
}

/// Whether the matched class already holds a Conv (the fold happened in an earlier iteration).
fn already_a_conv(eg: &TEGraph, id: Id) -> bool {
    eg[id]
        .nodes
        .iter()
        .any(|n| matches!(n, TNode::Op(OpKind::Conv, _)))
}

fn bn_epsilon(eg: &TEGraph, n: Id) -> f64 {
    super::attrs_of(eg, n)
        .map(|a| a.float("epsilon", 1e-5).unwrap_or(1e-5))
        .unwrap_or(1e-5)
}

/// `bn(conv(x, w, b)) = conv(x, w·k, (b − mean)·k + beta)` with `k = scale / sqrt(var + eps)`
/// per output channel (weights and statistics must be constants).
struct ConvBatchNorm;

impl Applier<TNode, TypeAnalysis> for ConvBatchNorm {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        if already_a_conv(eg, id) {
            return vec![]; // folded in an earlier iteration: skip recomputing the weights
        }
        let get = |eg: &TEGraph, name: &str| konst(eg, s[v(name)]).cloned();
        let (Some(w), Some(sc), Some(beta), Some(mean), Some(var)) = (
            get(eg, "?w"),
            get(eg, "?s"),
            get(eg, "?beta"),
            get(eg, "?m"),
            get(eg, "?var"),
        ) else {
            return vec![];
        };
        let bias = s.get(v("?b")).and_then(|&b| konst(eg, b).cloned());
        if s.get(v("?b")).is_some() && bias.is_none() {
            return vec![]; // a run-time bias
        }
        let co = w.shape()[0];
        if !w.dtype().is_float() || [&sc, &beta, &mean, &var].iter().any(|t| t.len() != co) {
            return vec![];
        }
        let eps = bn_epsilon(eg, s[v("?n")]);
        let (sc, beta, mean, var) = (
            sc.to_f64_vec(),
            beta.to_f64_vec(),
            mean.to_f64_vec(),
            var.to_f64_vec(),
        );
        let k: Vec<f64> = if tessera_ir::planted::active(tessera_ir::planted::Bug::ConvBnFold) {
            (0..co).map(|c| sc[c] / (var[c] + eps)).collect()
        } else {
            (0..co).map(|c| sc[c] / (var[c] + eps).sqrt()).collect()
        };
        let per = w.len() / co.max(1);
        let wv: Vec<f64> = w
            .to_f64_vec()
            .iter()
            .enumerate()
            .map(|(i, &x)| x * k[i / per])
            .collect();
        let b0 = bias
            .map(|b| b.to_f64_vec())
            .unwrap_or_else(|| vec![0.0; co]);
        let bv: Vec<f64> = (0..co)
            .map(|c| (b0[c] - mean[c]) * k[c] + beta[c])
            .collect();
        let nw = eg
            .analysis
            .new_constant("bn_w", Tensor::from_f64(w.dtype(), w.shape().to_vec(), &wv));
        let nb = eg
            .analysis
            .new_constant("bn_b", Tensor::from_f64(w.dtype(), vec![co], &bv));
        let (nw, nb) = (eg.add(TNode::Leaf(nw)), eg.add(TNode::Leaf(nb)));
        let conv = eg.add(TNode::Op(
            OpKind::Conv,
            vec![s[v("?c")], s[v("?x")], nw, nb],
        ));
        if eg.union(id, conv) { vec![id] } else { vec![] }
    }

    fn vars(&self) -> Vec<Var> {
        vec![
            v("?n"),
            v("?c"),
            v("?x"),
            v("?w"),
            v("?s"),
            v("?beta"),
            v("?m"),
            v("?var"),
        ]
    }
}

/// `conv(x, w) + k` with `k` a constant of one value per output channel (shape `[C, 1, …]`
/// or `[1, C, 1, …]`) is `conv(x, w, k)`, when the sum keeps the conv's type.
struct ConvAddBias;

impl Applier<TNode, TypeAnalysis> for ConvAddBias {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        if already_a_conv(eg, id) {
            return vec![];
        }
        let Some(k) = konst(eg, s[v("?k")]).cloned() else {
            return vec![];
        };
        let Some(w) = ty(eg, s[v("?w")]).and_then(|t| t.static_shape()) else {
            return vec![];
        };
        let co = w[0];
        let rank = w.len();
        let ks = k.shape();
        let trailing_ones = |from: usize| ks[from..].iter().all(|&d| d == 1);
        let per_channel = k.len() == co
            && ((ks.len() == rank - 1 && ks.first() == Some(&co) && trailing_ones(1))
                || (ks.len() == rank && ks[0] == 1 && ks[1] == co && trailing_ones(2)));
        let conv_class = eg.lookup(TNode::Op(
            OpKind::Conv,
            vec![s[v("?c")], s[v("?x")], s[v("?w")]],
        ));
        let keeps_type = conv_class.is_some_and(|c| ty(eg, c) == ty(eg, id));
        if !per_channel || !keeps_type || k.dtype() != ty(eg, id).map_or(k.dtype(), |t| t.dtype) {
            return vec![];
        }
        let b = eg.analysis.new_constant(
            "conv_bias",
            Tensor::from_bytes(k.dtype(), vec![co], k.bytes().to_vec()).expect("same size"),
        );
        let b = eg.add(TNode::Leaf(b));
        let conv = eg.add(TNode::Op(
            OpKind::Conv,
            vec![s[v("?c")], s[v("?x")], s[v("?w")], b],
        ));
        if eg.union(id, conv) { vec![id] } else { vec![] }
    }

    fn vars(&self) -> Vec<Var> {
        vec![v("?a"), v("?c"), v("?x"), v("?w"), v("?k")]
    }
}
