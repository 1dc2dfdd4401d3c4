//! Layout rules: chains of Transpose and of shape-only views (Reshape, Flatten, Squeeze,
//! Unsqueeze) collapse, views and broadcasts that change nothing disappear, an Expand
//! feeding a broadcasting binary op becomes the op's own broadcast, and a Transpose feeding
//! a MatMul's right operand becomes the product's strided read (`b_perm`).

use super::{Rw, add_op, attrs_of, same_type, ty, v};
use crate::egraph::{TEGraph, TNode, TypeAnalysis};
use egg::rewrite as rw;
use egg::{Applier, ConditionalApplier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use tessera_ir::planted::{self, Bug};
use tessera_ir::{Attr, Attrs, DType, OpKind, Tensor};

const VIEWS: [OpKind; 4] = [
    OpKind::Reshape,
    OpKind::Flatten,
    OpKind::Squeeze,
    OpKind::Unsqueeze,
];

pub fn rules() -> Vec<Rw> {
    let mut r = vec![
        rw!("transpose-transpose"; "(Transpose ?a (Transpose ?b ?x))" => { TransposeChain }),
        rw!("transpose-noop"; "(Transpose ?a ?x)" => "?x" if identity_perm("?a")),
        rw!("transpose-into-matmul"; "(MatMul ?a ?x (Transpose ?p ?y))" => { TransposeIntoMatMul }),
        rw!("reshape-noop"; "(Reshape ?a ?x ?s)" => "?x" if same_type("?x")),
        rw!("flatten-noop"; "(Flatten ?a ?x)" => "?x" if same_type("?x")),
        rw!("squeeze-noop"; "(Squeeze ?a ?x ?s)" => "?x" if same_type("?x")),
        rw!("unsqueeze-noop"; "(Unsqueeze ?a ?x ?s)" => "?x" if same_type("?x")),
        rw!("expand-noop"; "(Expand ?a ?x ?s)" => "?x" if same_type("?x")),
    ];
    for (name, pat) in [
        ("view-chain-reshape", "(Reshape ?a ?y ?s)"),
        ("view-chain-flatten", "(Flatten ?a ?y)"),
        ("view-chain-squeeze", "(Squeeze ?a ?y ?s)"),
        ("view-chain-unsqueeze", "(Unsqueeze ?a ?y ?s)"),
    ] {
        let p: Pattern<TNode> = pat.parse().expect("pattern");
        r.push(Rewrite::new(name, p, ViewChain).expect("rule"));
    }
    for op in ["Add", "Sub", "Mul", "Div", "Max", "Min"] {
        for (side, pat, out) in [
            (
                "lhs",
                format!("({op} ?a (Expand ?b ?x ?s) ?y)"),
                format!("({op} ?a ?x ?y)"),
            ),
            (
                "rhs",
                format!("({op} ?a ?y (Expand ?b ?x ?s))"),
                format!("({op} ?a ?y ?x)"),
            ),
        ] {
            let lhs: Pattern<TNode> = pat.parse().expect("pattern");
            let rhs: Pattern<TNode> = out.parse().expect("pattern");
            let name = format!("expand-into-{}-{side}", op.to_lowercase());
            let cond = ConditionalApplier {
                condition: broadcast_keeps_type("?x", "?y"),
                applier: rhs,
            };
            r.push(Rewrite::new(name, lhs, cond).expect("rule"));
        }
    }
    r
}

/// Condition: `?a` is a Transpose whose permutation is the identity.
fn identity_perm(a: &str) -> impl Fn(&mut TEGraph, Id, &Subst) -> bool + use<> {
    let a = v(a);
    move |eg, _, s| match attrs_of(eg, s[a]).and_then(|at| at.get("perm")) {
        Some(Attr::Ints(p)) => p.iter().enumerate().all(|(i, &x)| x == i as i64),
        _ => false,
    }
}

/// Condition: broadcasting `?x` with `?y` gives the rewritten class's type.
fn broadcast_keeps_type(x: &str, y: &str) -> impl Fn(&mut TEGraph, Id, &Subst) -> bool + use<> {
    let (x, y) = (v(x), v(y));
    move |eg, id, s| {
        let (Some(tx), Some(ty_), Some(out)) = (ty(eg, s[x]), ty(eg, s[y]), ty(eg, id)) else {
            return false;
        };
        let (Some(a), Some(b), Some(o)) =
            (tx.static_shape(), ty_.static_shape(), out.static_shape())
        else {
            return false;
        };
        tx.dtype == out.dtype
            && tessera_ir::infer::broadcast_static(&[&a, &b]).is_ok_and(|s| s == o)
    }
}

/// The permutation of a Transpose attribute class (default: reversed axes).
fn perm(eg: &TEGraph, a: Id, rank: usize) -> Vec<usize> {
    match attrs_of(eg, a).and_then(|at| at.get("perm")) {
        Some(Attr::Ints(p)) => p.iter().map(|&x| x as usize).collect(),
        _ => (0..rank).rev().collect(),
    }
}

/// `transpose(transpose(x, q), p)` is one transpose by `q∘p` (`out[i] = x[q[p[i]]]`).
struct TransposeChain;

impl Applier<TNode, TypeAnalysis> for TransposeChain {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let (a, b, x) = (s[v("?a")], s[v("?b")], s[v("?x")]);
        let Some(rank) = ty(eg, x).map(|t| t.rank()) else {
            return vec![];
        };
        let (p, q) = (perm(eg, a, rank), perm(eg, b, rank));
        if p.len() != rank || q.len() != rank {
            return vec![];
        }
        let composed: Vec<i64> = if planted::active(Bug::TransposeCompose) {
            q.iter().map(|&i| p[i] as i64).collect()
        } else {
            p.iter().map(|&i| q[i] as i64).collect()
        };
        let new = if composed.iter().enumerate().all(|(i, &c)| c == i as i64) {
            x
        } else {
            let mut at = Attrs::new();
            at.insert("perm".into(), Attr::Ints(composed));
            let sym = eg.analysis.intern_attrs(&at);
            let an = eg.add(TNode::Attrs(sym));
            eg.add(TNode::Op(OpKind::Transpose, vec![an, x]))
        };
        if eg.union(id, new) { vec![id] } else { vec![] }
    }

    fn vars(&self) -> Vec<Var> {
        vec![v("?a"), v("?b"), v("?x")]
    }
}

/// `matmul(x, transpose(y, p))` is `matmul[b_perm = p](x, y)`: the product reads `y` in place
/// through the permuted strides, and the transposed copy (a kernel and a tensor's traffic)
/// disappears — attention's `K^T` and per-head `V` come from a Transpose of the projection.
struct TransposeIntoMatMul;

impl Applier<TNode, TypeAnalysis> for TransposeIntoMatMul {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let (a, p, x, y) = (s[v("?a")], s[v("?p")], s[v("?x")], s[v("?y")]);
        let Some(rank) = ty(eg, y).map(|t| t.rank()).filter(|&r| r >= 2) else {
            return vec![];
        };
        // A product already reading a permuted operand keeps it (no composition here).
        if attrs_of(eg, a).is_none_or(|at| !at.is_empty()) {
            return vec![];
        }
        let perm: Vec<i64> = perm(eg, p, rank).iter().map(|&i| i as i64).collect();
        if perm.len() != rank || !strided_read_pays(eg, id, x, &perm) {
            return vec![];
        }
        let mut at = Attrs::new();
        at.insert("b_perm".into(), Attr::Ints(perm));
        if add_op(eg, id, OpKind::MatMul, &at, vec![x, y]) {
            vec![id]
        } else {
            vec![]
        }
    }

    fn vars(&self) -> Vec<Var> {
        vec![v("?a"), v("?p"), v("?x"), v("?y")]
    }
}

/// Whether a MatMul (class `id`, left operand `x`) reads its transposed right operand in
/// place at no loss: always when the rows of `B` stay contiguous (the permutation keeps the
/// last axis last: a per-head `V`); otherwise (`K^T`: each row of `B` is a column of the
/// source) only when the default schedule packs `B`, so that it is gathered once per panel,
/// or takes dot products along `k` where `B` is contiguous along `k` (the source's last
/// axis is `B`'s rows: one query against a key cache) — in a plain loop nest every row of
/// `A` would gather it again (16 × 16 × 16 heads: ten times slower than the copy and a
/// contiguous read).
fn strided_read_pays(eg: &TEGraph, id: Id, x: Id, perm: &[i64]) -> bool {
    let rank = perm.len() as i64;
    if perm.last() == Some(&(rank - 1)) {
        return true;
    }
    let (Some(a), Some(out)) = (
        ty(eg, x).and_then(|t| t.static_shape()),
        ty(eg, id).and_then(|t| t.static_shape()),
    ) else {
        return false;
    };
    let (Some(&k), Some(&n)) = (a.last(), out.last()) else {
        return false;
    };
    let m = crate::product::matmul_rows(&a);
    let (n, k) = (n as i64, k as i64);
    let batch = out.iter().product::<usize>() as i64 / (m * n).max(1);
    let b_along_k = perm.len() >= 2 && perm[perm.len() - 2] == rank - 1;
    crate::product::packs_b_everywhere(batch, m, n, k)
        || (b_along_k && crate::product::dots_along_k_everywhere(batch, m, n, k))
}

/// A view of a view is one Reshape of the inner view's input to the final static shape.
struct ViewChain;

impl Applier<TNode, TypeAnalysis> for ViewChain {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        id: Id,
        s: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let y = s[v("?y")];
        let inner = eg[y].nodes.iter().find_map(|n| match n {
            TNode::Op(k, c) if VIEWS.contains(k) => Some(c[1]),
            _ => None,
        });
        let (Some(x), Some(out)) = (inner, ty(eg, id).and_then(|t| t.static_shape())) else {
            return vec![];
        };
        let dims: Vec<i64> = out.iter().map(|&d| d as i64).collect();
        let shape = Tensor::from_i64(DType::I64, vec![dims.len()], &dims);
        let sym = eg.analysis.new_constant("shape", shape);
        let c = eg.add(TNode::Leaf(sym));
        let empty = eg.analysis.intern_attrs(&Attrs::new());
        let an = eg.add(TNode::Attrs(empty));
        let new = eg.add(TNode::Op(OpKind::Reshape, vec![an, x, c]));
        if eg.union(id, new) { vec![id] } else { vec![] }
    }

    fn vars(&self) -> Vec<Var> {
        vec![v("?y")]
    }
}
