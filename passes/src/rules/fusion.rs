//! Operator fusion: every elementwise op gets a `Fused` form (a one-kernel node whose `body`
//! attribute is a graph of elementwise ops), and a `Fused` form of its operand is inlined into
//! it — so a chain `relu(x·s + b)` has, in its e-class, one kernel computing the whole chain.
//! Extraction then decides, by cost, which intermediate tensors to materialise.
//!
//! Bounds keep saturation fast: bodies of at most [`MAX_BODY_OPS`] ops and
//! [`MAX_INPUTS`] inputs; scalar constants are folded into bodies, other constants stay inputs.

use super::Rw;
use crate::egraph::{TEGraph, TNode, TypeAnalysis};
use egg::{Applier, Id, PatternAst, SearchMatches, Searcher, Subst, Symbol, Var};
use std::collections::HashMap;
use tessera_ir::op::SubGraph;
use tessera_ir::{Attr, Attrs, Graph, Node, OpKind, ValueId};

/// Largest fused body.
pub const MAX_BODY_OPS: usize = 24;
/// Most inputs of a fused kernel.
pub const MAX_INPUTS: usize = 8;

pub fn rules() -> Vec<Rw> {
    vec![egg::Rewrite::new("fuse-elementwise", ElementwiseOps, FuseElementwise).expect("rule")]
}

/// Whether an op can live in a fused body (elementwise with a scalar meaning whose operands
/// all broadcast to its output).
pub fn fusible(op: OpKind) -> bool {
    op.is_elementwise() && !matches!(op, OpKind::CastLike | OpKind::Fused)
}

/// Matches every e-class holding a fusible op.
struct ElementwiseOps;

impl Searcher<TNode, TypeAnalysis> for ElementwiseOps {
    fn search_eclass_with_limit(
        &self,
        eg: &TEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, TNode>> {
        let hit = eg[eclass]
            .nodes
            .iter()
            .any(|n| matches!(n, TNode::Op(k, _) if fusible(*k)));
        (hit && limit > 0).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

/// Builds, for each fusible op of the class, the fused form that inlines one fused form of
/// each operand class (when it fits the bounds).
struct FuseElementwise;

impl Applier<TNode, TypeAnalysis> for FuseElementwise {
    fn apply_one(
        &self,
        eg: &mut TEGraph,
        eclass: Id,
        _: &Subst,
        _: Option<&PatternAst<TNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let ops: Vec<(OpKind, Vec<Id>)> = eg[eclass]
            .nodes
            .iter()
            .filter_map(|n| match n {
                TNode::Op(k, c) if fusible(*k) => Some((*k, c.clone())),
                _ => None,
            })
            .collect();
        let mut changed = vec![];
        for (op, children) in ops {
            let Some((attrs, inputs)) = fuse(eg, op, &children) else {
                continue;
            };
            let sym = eg.analysis.intern_attrs(&attrs);
            let mut ch = vec![eg.add(TNode::Attrs(sym))];
            ch.extend(inputs);
            // A body whose inputs do not broadcast to the op's type is not added.
            if crate::egraph::infer_node(eg, OpKind::Fused, &ch)
                .is_none_or(|t| Some(&t) != eg[eclass].data.ty.as_ref())
            {
                continue;
            }
            let node = eg.add(TNode::Op(OpKind::Fused, ch));
            if eg.union(eclass, node) {
                changed.push(eclass);
            }
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

/// The body and inputs of `op(children)` with its operands' fused forms inlined.
fn fuse(eg: &TEGraph, op: OpKind, children: &[Id]) -> Option<(Attrs, Vec<Id>)> {
    let attrs = super::attrs_of(eg, children[0])?.clone();
    let mut b = Body::default();
    let mut args = Vec::new();
    for &c in &children[1..] {
        let c = eg.find(c);
        if eg[c].nodes.iter().any(|n| matches!(n, TNode::Absent)) {
            args.push(None);
            continue;
        }
        let ty = eg[c].data.ty.clone()?;
        if let Some(k) = super::konst(eg, c).filter(|k| k.len() == 1) {
            let name = format!("k{}", b.g.num_values());
            args.push(Some(b.g.add_initializer(&name, k.clone())));
            continue;
        }
        // Inline the operand's smallest fused form that fits.
        let inner = eg[c]
            .nodes
            .iter()
            .filter_map(|n| match n {
                TNode::Op(OpKind::Fused, ch) => {
                    let body = match super::attrs_of(eg, ch[0])?.get("body") {
                        Some(Attr::Graph(g)) => g.0.clone(),
                        _ => return None,
                    };
                    Some((body, ch[1..].to_vec()))
                }
                _ => None,
            })
            .min_by_key(|(body, _)| body.node_count());
        match inner {
            Some((body, ins)) if b.g.node_count() + body.node_count() < MAX_BODY_OPS => {
                args.push(Some(b.inline(eg, &body, &ins)?));
            }
            _ => args.push(Some(b.input(c, ty))),
        }
    }
    if b.inputs.len() > MAX_INPUTS {
        return None;
    }
    let out = b.g.fresh_value("y");
    b.g.add_node(Node {
        name: format!("n{}", b.g.node_count()),
        op,
        attrs,
        inputs: args,
        outputs: vec![out],
    });
    b.g.outputs.push(out);
    b.g.infer_types().ok()?;
    let mut a = Attrs::new();
    a.insert("body".into(), Attr::Graph(SubGraph(Box::new(b.g))));
    Some((a, b.inputs))
}

/// A fused body under construction: its graph and the e-classes feeding its inputs.
struct Body {
    g: Graph,
    inputs: Vec<Id>,
    by_class: HashMap<Id, ValueId>,
}

impl Default for Body {
    fn default() -> Self {
        Body {
            g: Graph::new("body"),
            inputs: Vec::new(),
            by_class: HashMap::new(),
        }
    }
}

impl Body {
    fn input(&mut self, class: Id, ty: tessera_ir::ValueType) -> ValueId {
        if let Some(&v) = self.by_class.get(&class) {
            return v;
        }
        let v = self.g.add_input(&format!("x{}", self.inputs.len()), ty);
        self.inputs.push(class);
        self.by_class.insert(class, v);
        v
    }

    /// Copies `body` (whose inputs are the classes `ins`) in; returns its output value.
    fn inline(&mut self, eg: &TEGraph, body: &Graph, ins: &[Id]) -> Option<ValueId> {
        let mut map: HashMap<ValueId, ValueId> = HashMap::new();
        for (&bv, &c) in body.inputs.iter().zip(ins) {
            let c = eg.find(c);
            let ty = eg[c].data.ty.clone()?;
            map.insert(bv, self.input(c, ty));
        }
        for (&bv, t) in &body.initializers {
            let name = format!("k{}", self.g.num_values());
            map.insert(bv, self.g.add_initializer(&name, t.clone()));
        }
        for ix in body.topo_order().ok()? {
            let n = body.node(ix);
            let inputs = n
                .inputs
                .iter()
                .map(|i| {
                    i.map(|v| map.get(&v).copied())
                        .unwrap_or(Some(ValueId(u32::MAX)))
                })
                .map(|v| v.filter(|x| x.0 != u32::MAX))
                .collect();
            let out = self.g.fresh_value(&format!("t{}", self.g.num_values()));
            if let Some(t) = body.ty(n.outputs[0]) {
                self.g.set_ty(out, t.clone());
            }
            self.g.add_node(Node {
                name: format!("n{}", self.g.node_count()),
                op: n.op,
                attrs: n.attrs.clone(),
                inputs,
                outputs: vec![out],
            });
            map.insert(n.outputs[0], out);
        }
        map.get(body.outputs.first()?).copied()
    }
}
