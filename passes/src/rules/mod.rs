//! Rewrite rules of the graph optimizer, one topic per file, each rule a named entry of a
//! table (`rw!("name"; "lhs" => "rhs" if condition)`). See `README.md` for how to write one.
//!
//! Patterns speak the e-graph language of [`crate::egraph`]: `(Op ?attrs ?input…)`, the
//! attribute set always first, `_` an absent input, `{}` the empty attribute set. Conditions
//! read the type analysis (static types and constant values of e-classes).

pub mod algebra;
pub mod composite;
pub mod constants;
pub mod fusion;
pub mod layout;

use crate::egraph::{TEGraph, TNode, TypeAnalysis};
use egg::{Id, Subst, Var};
use tessera_ir::{Attrs, OpKind, Tensor, ValueType};

pub type Rw = egg::Rewrite<TNode, TypeAnalysis>;

/// What a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Algebraic identities (`x + 0`, `neg(neg x)`, …).
    Algebra,
    /// Transpose/Reshape chains and no-op layout changes, broadcasts made implicit.
    Layout,
    /// Folding constants into their consumers (Conv + BatchNormalization, Conv + bias Add).
    Constants,
    /// Composite ops written out by exporters (softmax, layer norm) back into one op.
    Composite,
    /// Operator fusion: elementwise chains into one kernel.
    Fusion,
}

impl Topic {
    pub const ALL: [Topic; 5] = [
        Topic::Algebra,
        Topic::Layout,
        Topic::Constants,
        Topic::Composite,
        Topic::Fusion,
    ];
}

/// The rules of `topics` (only those named in `only`, when given).
pub fn rules(topics: &[Topic], only: Option<&[String]>) -> Vec<Rw> {
    let mut all = Vec::new();
    for t in topics {
        all.extend(match t {
            Topic::Algebra => algebra::rules(),
            Topic::Layout => layout::rules(),
            Topic::Constants => constants::rules(),
            Topic::Composite => composite::rules(),
            Topic::Fusion => fusion::rules(),
        });
    }
    match only {
        Some(names) => all
            .into_iter()
            .filter(|r| names.iter().any(|n| n == r.name.as_str()))
            .collect(),
        None => all,
    }
}

/// Every rule's name with its topic.
pub fn names() -> Vec<(Topic, String)> {
    Topic::ALL
        .iter()
        .flat_map(|&t| {
            rules(&[t], None)
                .into_iter()
                .map(move |r| (t, r.name.to_string()))
        })
        .collect()
}

pub(crate) fn v(name: &str) -> Var {
    name.parse().expect("a pattern variable")
}

/// The type of an e-class.
pub(crate) fn ty(eg: &TEGraph, id: Id) -> Option<&ValueType> {
    eg[id].data.ty.as_ref()
}

/// The constant value of an e-class, if it is one.
pub(crate) fn konst(eg: &TEGraph, id: Id) -> Option<&Tensor> {
    eg[id].data.konst.as_deref()
}

/// The attribute set an attribute e-class stands for.
pub(crate) fn attrs_of(eg: &TEGraph, id: Id) -> Option<&Attrs> {
    eg[id].nodes.iter().find_map(|n| match n {
        TNode::Attrs(s) => eg.analysis.attrs.get(s),
        _ => None,
    })
}

/// Adds the node `op[attrs](inputs)` to `eclass`, unless its type differs from the class's
/// (inputs that broadcast or cast to another type): a rule never unions two types. Whether
/// the e-graph changed.
pub(crate) fn add_op(
    eg: &mut TEGraph,
    eclass: Id,
    op: OpKind,
    attrs: &Attrs,
    inputs: Vec<Id>,
) -> bool {
    let sym = eg.analysis.intern_attrs(attrs);
    let mut ch = vec![eg.add(TNode::Attrs(sym))];
    ch.extend(inputs);
    if crate::egraph::infer_node(eg, op, &ch).is_none_or(|t| Some(&t) != ty(eg, eclass)) {
        return false;
    }
    let node = eg.add(TNode::Op(op, ch));
    eg.union(eclass, node)
}

/// Condition: the rewritten class has the same type as `?x` (the rewrite neither broadcasts
/// nor casts).
pub(crate) fn same_type(x: &str) -> impl Fn(&mut TEGraph, Id, &Subst) -> bool + use<> {
    let x = v(x);
    move |eg, id, s| {
        let (a, b) = (ty(eg, id), ty(eg, s[x]));
        a.is_some() && a == b
    }
}

/// Condition: `?c` is a constant whose every element equals `value`.
pub(crate) fn all_equal(c: &str, value: f64) -> impl Fn(&mut TEGraph, Id, &Subst) -> bool + use<> {
    let c = v(c);
    move |eg, _, s| {
        konst(eg, s[c]).is_some_and(|t| !t.is_empty() && t.to_f64_vec().iter().all(|&x| x == value))
    }
}
