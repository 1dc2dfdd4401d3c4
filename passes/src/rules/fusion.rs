//! Operator fusion: every elementwise op gets a `Fused` form (a one-kernel node whose `body`
//! attribute is a graph of elementwise ops), and the largest fitting `Fused` form of each
//! operand is inlined into it — so a chain `relu(x·s + b)` has, in its e-class, one kernel
//! computing the whole chain. An operand computed by a MatMul, Gemm, 2-D Conv or Col2Im can become
//! the body's *anchor* (at most one per body, and the chain must keep its output type): the
//! elementwise ops then run as the product's epilogue. A reduction whose data is computed
//! by elementwise ops can *sink* them (map then reduce: `ReduceSum(x·x)`, a mean of squared
//! deviations) into one kernel computing the data in registers. An operand that is a Slice
//! or a one-index Gather with constant parameters, or a Transpose, is read through as a
//! *view*: the body loads the elements where they are, and the copy kernel is not needed (the
//! gates of an LSTM step, sliced from one product, feed one cell-update kernel). A value with several
//! consumers is inlined only into a body that holds all of them (a product and its bias read
//! twice by a GELU); otherwise it would be computed twice. Extraction decides, by cost, which
//! intermediate tensors to materialise.
//!
//! Bounds keep saturation fast: bodies of at most [`MAX_BODY_OPS`] ops and
//! [`MAX_INPUTS`] inputs; scalar constants are folded into bodies, other constants stay inputs.

use super::{Rw, add_op};
use crate::egraph::{TEGraph, TNode, TypeAnalysis};
use crate::lower::{ViewMap, is_view_op};
use egg::{Applier, Id, PatternAst, SearchMatches, Searcher, Subst, Symbol, Var};
use std::collections::HashMap;
use tessera_ir::op::SubGraph;
use tessera_ir::{Attr, Attrs, Graph, Node, OpKind, ValueId};

/// Largest fused body.
pub const MAX_BODY_OPS: usize = 24;
/// Longest chain of views (a Slice of a Gather, say) a body reads through.
pub const VIEW_DEPTH: usize = 3;
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
            .any(|n| matches!(n, TNode::Op(k, _) if fusible(*k) || crate::lower::is_sink(*k)));
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
        let sinks: Vec<(OpKind, Vec<Id>)> = eg[eclass]
            .nodes
            .iter()
            .filter_map(|n| match n {
                TNode::Op(k, c) if crate::lower::is_sink(*k) => Some((*k, c.clone())),
                _ => None,
            })
            .collect();
        for (op, children) in sinks {
            let Some((attrs, inputs)) = fuse_sink(eg, op, &children) else {
                continue;
            };
            if add_op(eg, eclass, OpKind::Fused, &attrs, inputs) {
                changed.push(eclass);
            }
        }
        // Each op gets a purely elementwise form and, when an operand is a product, an
        // anchored one per form of that product (say, a MatMul reading a Transpose and the
        // same MatMul reading the Transpose's input in place): consumers pick whichever fits
        // their own body, extraction the cheapest.
        for (op, children) in ops {
            let direct = direct_anchors(eg, &children[1..]);
            let anchored: Vec<Anchoring> = match direct.is_empty() {
                true => std::iter::once(Anchoring::Inlined(None))
                    .chain(shared_products(eg, &children[1..]).map(|c| Anchoring::Inlined(Some(c))))
                    .collect(),
                false => direct.into_iter().map(Anchoring::Direct).collect(),
            };
            for anchor in std::iter::once(Anchoring::None).chain(anchored) {
                let Some((attrs, inputs)) = fuse(eg, op, &children, &anchor) else {
                    continue;
                };
                if add_op(eg, eclass, OpKind::Fused, &attrs, inputs) {
                    changed.push(eclass);
                }
            }
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

/// The body and inputs of `op(children)` with its operands' fused forms inlined, rooted as
/// `anchoring` says: a direct operand's product e-node becomes the body's anchor first (so
/// the other operands' bodies that read it read the anchor's value, not memory).
fn fuse(
    eg: &TEGraph,
    op: OpKind,
    children: &[Id],
    anchoring: &Anchoring,
) -> Option<(Attrs, Vec<Id>)> {
    let attrs = super::attrs_of(eg, children[0])?.clone();
    let mut b = Body::default();
    let classes: Vec<Id> = children[1..].iter().map(|&c| eg.find(c)).collect();
    let anchor = !matches!(anchoring, Anchoring::None);
    // A direct operand that is a product anchors the body; otherwise one operand's
    // anchored body may be inlined below. A product read by several consumers may anchor
    // the body only if the body holds all of them (checked below): otherwise it would be
    // computed twice.
    if let Anchoring::Direct((c, k, ch)) = anchoring {
        b.anchor(eg, *c, *k, ch)?;
    }
    if let Anchoring::Inlined(Some(c)) = anchoring {
        b.inline_shared_product(eg, *c)?;
    }
    let mut args = Vec::new();
    for &c in &classes {
        if eg[c].nodes.iter().any(|n| matches!(n, TNode::Absent)) {
            args.push(None);
            continue;
        }
        if let Some(&v) = b.by_class.get(&c) {
            args.push(Some(v));
            continue;
        }
        let ty = eg[c].data.ty.clone()?;
        if let Some(k) = super::konst(eg, c).filter(|k| k.len() == 1) {
            args.push(Some(b.constant(k.clone())));
            continue;
        }
        // Inline the operand's largest fused form that fits (one anchor per body at most) —
        // unless other consumers need the value too.
        let inner = if !single_use(eg, c) {
            None
        } else {
            largest_fused_form(eg, c, |body| {
                b.g.node_count() + body.node_count() < MAX_BODY_OPS
                    && !((b.anchored || !anchor) && has_anchor(body))
                    && !(has_sink(body) && (anchor || b.anchored || b.sunk))
            })
        };
        match inner {
            Some((body, ins)) => {
                b.anchored |= has_anchor(&body);
                b.sunk |= has_sink(&body);
                let v = b.inline(eg, &body, &ins)?;
                // Later operands whose bodies read this class read the value computed here.
                b.by_class.insert(c, v);
                args.push(Some(v));
            }
            None => args.push(Some(b.view_or_input(eg, c, ty))),
        }
    }
    if anchor && !b.anchored {
        return None; // the same as the purely elementwise form
    }
    let out = b.finish(op, attrs, args)?;
    for &(class, value) in &b.held_whole {
        let readers =
            b.g.nodes()
                .filter(|(_, n)| n.inputs.contains(&Some(value)))
                .count();
        if readers < eg[eg.find(class)].data.uses {
            return None;
        }
    }
    if b.anchored || b.sunk {
        // The epilogue stores into the anchor's (or reduction's) output: same type, no
        // broadcasting.
        let root_out =
            b.g.nodes()
                .find(|(_, n)| crate::lower::is_anchor(n.op) || crate::lower::is_sink(n.op))
                .map(|(_, n)| n.outputs[0])?;
        if b.g.ty(root_out) != b.g.ty(out) {
            return None;
        }
    }
    Some(b.into_attrs())
}

/// Which product a fused body is rooted at.
enum Anchoring {
    /// None: a purely elementwise body.
    None,
    /// This e-node (its class, op and children) of a direct operand's class.
    Direct((Id, OpKind, Vec<Id>)),
    /// An anchored fused form of an operand, inlined: the first that fits, in operand order
    /// (`None`; single-use operands only), or that of the given operand class read by
    /// several consumers, inlined before the others so that their bodies read its value —
    /// all its consumers must then be in this body (a GELU `x·(1 + erf(x/√2))/2` after a
    /// product and its bias reads the biased product twice).
    Inlined(Option<Id>),
}

/// Every product e-node among the operand classes that could anchor a body.
fn direct_anchors(eg: &TEGraph, operands: &[Id]) -> Vec<(Id, OpKind, Vec<Id>)> {
    let mut found = Vec::new();
    for c in operands.iter().map(|&c| eg.find(c)) {
        for n in &eg[c].nodes {
            if let TNode::Op(k, ch) = n
                && anchorable(eg, *k, ch)
                && !found.iter().any(|(fc, _, fch)| *fc == c && fch == ch)
            {
                found.push((c, *k, ch.clone()));
            }
        }
    }
    found
}

/// The operand classes read by several consumers that have a product form
/// ([`Anchoring::Inlined`]).
fn shared_products<'a>(eg: &'a TEGraph, operands: &'a [Id]) -> impl Iterator<Item = Id> + 'a {
    let mut seen = Vec::new();
    operands.iter().map(|&c| eg.find(c)).filter(move |&c| {
        let new = !seen.contains(&c);
        seen.push(c);
        new && !single_use(eg, c) && largest_fused_form(eg, c, product_form).is_some()
    })
}

/// A fused body that is a product with an epilogue, small enough to inline.
fn product_form(body: &Graph) -> bool {
    has_anchor(body) && !has_sink(body) && body.node_count() < MAX_BODY_OPS
}

/// The largest fused form in class `c` whose body `fits`, with its input classes.
fn largest_fused_form(
    eg: &TEGraph,
    c: Id,
    fits: impl Fn(&Graph) -> bool,
) -> Option<(Graph, Vec<Id>)> {
    eg[c]
        .nodes
        .iter()
        .filter_map(|n| match n {
            TNode::Op(OpKind::Fused, ch) => match super::attrs_of(eg, ch[0])?.get("body") {
                Some(Attr::Graph(g)) => Some((g.0.as_ref(), ch)),
                _ => None,
            },
            _ => None,
        })
        .filter(|(body, _)| fits(body))
        .max_by_key(|(body, _)| body.node_count())
        .map(|(body, ch)| (body.clone(), ch[1..].to_vec()))
}

/// A fused body under construction: its graph and the e-classes feeding its inputs.
struct Body {
    g: Graph,
    inputs: Vec<Id>,
    by_class: HashMap<Id, ValueId>,
    /// Whether the body has its anchor (MatMul, Gemm or Conv) already.
    anchored: bool,
    /// Whether the body has a reduction already (its epilogue is what follows).
    sunk: bool,
    /// Values read by several consumers that the body computes (a direct anchor's product,
    /// an inlined product form): valid only if the body holds every consumer — else the
    /// value would be computed twice. Their classes and values.
    held_whole: Vec<(Id, ValueId)>,
    /// The view classes read through a view in the body, and the view's value.
    views: HashMap<Id, ValueId>,
}

/// Whether the value of class `c` has at most one consumer (values made by rules count as
/// single-use).
fn single_use(eg: &TEGraph, c: Id) -> bool {
    eg[eg.find(c)].data.uses <= 1
}

fn has_sink(body: &Graph) -> bool {
    body.nodes().any(|(_, n)| crate::lower::is_sink(n.op))
}

/// A reduction `op(data, axes?)` with the data's largest purely elementwise fused form
/// inlined before it (the data must have no other consumer; the axes must be constant).
fn fuse_sink(eg: &TEGraph, op: OpKind, children: &[Id]) -> Option<(Attrs, Vec<Id>)> {
    let attrs = super::attrs_of(eg, children[0])?.clone();
    let data = eg.find(*children.get(1)?);
    if !single_use(eg, data) {
        return None;
    }
    let inner = largest_fused_form(eg, data, |body| {
        body.node_count() < MAX_BODY_OPS && !has_anchor(body) && !has_sink(body)
    });
    let mut b = Body::default();
    // The data's elementwise form becomes the prologue; without one, the reduction reads its
    // input (the kernel is then a plain reduction that consumers' epilogues can join).
    let v = match inner {
        Some((body, ins)) => b.inline(eg, &body, &ins)?,
        None => {
            let ty = eg[data].data.ty.clone()?;
            b.view_or_input(eg, data, ty)
        }
    };
    let mut inputs = vec![Some(v)];
    if let Some(&axes) = children.get(2) {
        let axes = eg.find(axes);
        if eg[axes].nodes.iter().any(|n| matches!(n, TNode::Absent)) {
            inputs.push(None);
        } else {
            let k = super::konst(eg, axes)?;
            inputs.push(Some(b.g.add_initializer("axes", k.clone())));
        }
    }
    b.finish(op, attrs, inputs)?;
    Some(b.into_attrs())
}

fn has_anchor(body: &Graph) -> bool {
    body.nodes().any(|(_, n)| crate::lower::is_anchor(n.op))
}

/// Whether an op e-node can anchor a fused body: a product of rank ≥ 2 operands, a 2-D conv.
fn anchorable(eg: &TEGraph, op: OpKind, ch: &[Id]) -> bool {
    let rank = |i: usize| {
        ch.get(i)
            .and_then(|&c| eg[c].data.ty.as_ref())
            .map(|t| t.rank())
    };
    match op {
        OpKind::MatMul => rank(1).is_some_and(|r| r >= 2) && rank(2).is_some_and(|r| r >= 2),
        OpKind::Gemm => true,
        OpKind::Conv => rank(1) == Some(4),
        OpKind::Col2Im => true,
        _ => false,
    }
}

impl Default for Body {
    fn default() -> Self {
        Body {
            g: Graph::new("body"),
            inputs: Vec::new(),
            by_class: HashMap::new(),
            anchored: false,
            sunk: false,
            held_whole: Vec::new(),
            views: HashMap::new(),
        }
    }
}

impl Body {
    /// Adds the body's last node `op(inputs)` as its output (within the input bound, and
    /// typed); returns the output value.
    fn finish(
        &mut self,
        op: OpKind,
        attrs: Attrs,
        inputs: Vec<Option<ValueId>>,
    ) -> Option<ValueId> {
        if self.inputs.len() > MAX_INPUTS {
            return None;
        }
        let out = self.push(Some("y"), op, attrs, inputs);
        self.g.outputs.push(out);
        self.g.infer_types().ok()?;
        Some(out)
    }

    /// The `Fused` attributes holding this body, and the classes feeding its inputs.
    fn into_attrs(self) -> (Attrs, Vec<Id>) {
        let mut a = Attrs::new();
        a.insert("body".into(), Attr::Graph(SubGraph(Box::new(self.g))));
        (a, self.inputs)
    }

    /// A body constant (`k<n>`).
    fn constant(&mut self, t: tessera_ir::Tensor) -> ValueId {
        let name = format!("k{}", self.g.num_values());
        self.g.add_initializer(&name, t)
    }

    /// Adds the body node `op(inputs)` (`n<n>`) writing a new value named `out` (`t<n>` by
    /// default); returns that value.
    fn push(
        &mut self,
        out: Option<&str>,
        op: OpKind,
        attrs: Attrs,
        inputs: Vec<Option<ValueId>>,
    ) -> ValueId {
        let name = match out {
            Some(n) => n.to_string(),
            None => format!("t{}", self.g.num_values()),
        };
        let out = self.g.fresh_value(&name);
        self.g.add_node(Node {
            name: format!("n{}", self.g.node_count()),
            op,
            attrs,
            inputs,
            outputs: vec![out],
        });
        out
    }

    fn input(&mut self, class: Id, ty: tessera_ir::ValueType) -> ValueId {
        if let Some(&v) = self.by_class.get(&class) {
            return v;
        }
        let v = self.g.add_input(&format!("x{}", self.inputs.len()), ty);
        self.inputs.push(class);
        self.by_class.insert(class, v);
        v
    }

    /// The body value of operand class `c`: a view when `c` is a Slice or a one-index Gather
    /// with constant parameters, or a Transpose ([`ViewMap::of`]) — of a body input, or of another such view
    /// up to [`VIEW_DEPTH`] deep — else a new body input. A view's data must be a body input:
    /// a value the body computes (an anchor's output) cannot be read at other coordinates.
    fn view_or_input(&mut self, eg: &TEGraph, c: Id, ty: tessera_ir::ValueType) -> ValueId {
        match self.view(eg, c, VIEW_DEPTH) {
            Some(v) => v,
            None => self.input(c, ty),
        }
    }

    fn view(&mut self, eg: &TEGraph, c: Id, depth: usize) -> Option<ValueId> {
        let c = eg.find(c);
        if let Some(&v) = self.views.get(&c) {
            return Some(v);
        }
        if depth == 0 {
            return None;
        }
        let (op, ch) = eg[c].nodes.iter().find_map(|n| match n {
            TNode::Op(k, ch) if is_view_op(*k) => Some((*k, ch.clone())),
            _ => None,
        })?;
        let attrs = super::attrs_of(eg, ch[0])?.clone();
        let data = eg.find(*ch.get(1)?);
        let data_ty = eg[data].data.ty.clone()?;
        let mut params = Vec::new();
        for &p in &ch[2..] {
            let p = eg.find(p);
            if eg[p].nodes.iter().any(|n| matches!(n, TNode::Absent)) {
                params.push(None);
            } else {
                params.push(Some(super::konst(eg, p)?.clone()));
            }
        }
        let param_refs: Vec<Option<&tessera_ir::Tensor>> =
            params.iter().map(Option::as_ref).collect();
        ViewMap::of(op, &attrs, &data_ty.static_shape()?, &param_refs)?;
        let src = match self.view(eg, data, depth - 1) {
            Some(v) => v,
            None => match self.by_class.get(&data) {
                Some(&v) if !self.g.inputs.contains(&v) => return None,
                _ => self.input(data, data_ty),
            },
        };
        let ty = eg[c].data.ty.clone()?;
        let mut inputs = vec![Some(src)];
        for p in params {
            inputs.push(p.map(|t| self.constant(t)));
        }
        let out = self.push(None, op, attrs, inputs);
        self.g.set_ty(out, ty);
        self.views.insert(c, out);
        Some(out)
    }

    /// Adds the anchor op `op(children)` of e-class `class`, reading new body inputs (the
    /// inputs whose values decide its shape — Col2Im's image and block shapes — as body
    /// constants); later uses of that class read its output.
    fn anchor(&mut self, eg: &TEGraph, class: Id, op: OpKind, ch: &[Id]) -> Option<ValueId> {
        let attrs = super::attrs_of(eg, ch[0])?.clone();
        let mut inputs = Vec::new();
        for (slot, &c) in ch[1..].iter().enumerate() {
            let c = eg.find(c);
            if eg[c].nodes.iter().any(|n| matches!(n, TNode::Absent)) {
                inputs.push(None);
            } else if op.value_inputs().contains(&slot) {
                let k = super::konst(eg, c)?.clone();
                inputs.push(Some(self.constant(k)));
            } else {
                let ty = eg[c].data.ty.clone()?;
                inputs.push(Some(self.input(c, ty)));
            }
        }
        let out = self.push(None, op, attrs, inputs);
        self.by_class.insert(class, out);
        self.anchored = true;
        self.held_whole.push((class, out));
        Some(out)
    }

    /// Inlines the product form of class `c`, read by several consumers, before anything
    /// else ([`Anchoring::Inlined`]); the body must then hold all of them.
    fn inline_shared_product(&mut self, eg: &TEGraph, c: Id) -> Option<()> {
        let (body, ins) = largest_fused_form(eg, c, product_form)?;
        let v = self.inline(eg, &body, &ins)?;
        self.anchored = true;
        self.by_class.insert(c, v);
        self.held_whole.push((c, v));
        Some(())
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
            map.insert(bv, self.constant(t.clone()));
        }
        for ix in body.topo_order().ok()? {
            let n = body.node(ix);
            let inputs = n
                .inputs
                .iter()
                .map(|i| i.and_then(|v| map.get(&v).copied()))
                .collect();
            let out = self.push(None, n.op, n.attrs.clone(), inputs);
            if let Some(t) = body.ty(n.outputs[0]) {
                self.g.set_ty(out, t.clone());
            }
            map.insert(n.outputs[0], out);
            if crate::lower::is_anchor(n.op)
                && let Some(class) = anchor_class(eg, body, n, ins)
            {
                // Other operands reading the product read this value, not memory.
                self.by_class.insert(class, out);
            }
        }
        map.get(body.outputs.first()?).copied()
    }
}

/// The e-class of an anchor node of a fused body whose inputs are the classes `ins`.
fn anchor_class(eg: &TEGraph, body: &Graph, n: &Node, ins: &[Id]) -> Option<Id> {
    let sym = Symbol::from(tessera_ir::text::print_attrs(&n.attrs));
    let mut children = vec![eg.lookup(TNode::Attrs(sym))?];
    for i in &n.inputs {
        let v = (*i)?;
        let pos = body.inputs.iter().position(|&x| x == v)?;
        children.push(eg.find(*ins.get(pos)?));
    }
    eg.lookup(TNode::Op(n.op, children)).map(|c| eg.find(c))
}
