//! The graph optimizer: equality saturation (egg) over the graph IR, then extraction of the
//! cheapest equivalent graph — algebraic rewrites and operator fusion in one e-graph.
//!
//! - [`TNode`] is the e-graph language, one e-node per graph-IR node with typed payloads: the
//!   op kind, and the attribute set as the op's first child (an [`TNode::Attrs`] leaf), so
//!   rules can match `(Relu ?a ?x)` whatever the attributes are. Fused kernels are ordinary
//!   `Fused` op nodes whose `body` attribute holds the fused subgraph.
//! - [`TypeAnalysis`] gives every e-class its static type (and the value of constants); rules
//!   use it in their conditions, and the cost model reads sizes from it.
//! - Rules live in [`crate::rules`], one topic per file, as data.
//! - Saturation is bounded ([`OptimizeConfig`]: nodes, iterations, time) and how it stopped is
//!   reported as data ([`OptimizeReport::stop_reason`]), never as an error.
//! - Extraction minimises [`cost::KernelCost`], an explicit estimate of bytes moved, kernel
//!   launches and flops; it is one `egg::CostFunction`, so a learned model can replace it.
//!
//! Invariant: the optimizer runs on prepared graphs (static shapes) and returns a graph that
//! passes the verifier and computes the same outputs (up to float reassociation inside fused
//! kernels), with the same inputs and output names.

pub mod cost;

use crate::error::PassError;
use egg::{Analysis, DidMerge, EGraph, Id, Language, Symbol};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_ir::{Attrs, Graph, Node, OpKind, Tensor, ValueId, ValueType};

/// One e-node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TNode {
    /// A graph input or a constant, by value name.
    Leaf(Symbol),
    /// An omitted optional input.
    Absent,
    /// An attribute set, by its canonical text (see [`TypeAnalysis::attrs`]).
    Attrs(Symbol),
    /// A graph-IR op; children are `[attributes, inputs…]`.
    Op(OpKind, Vec<Id>),
}

impl Language for TNode {
    type Discriminant = (u8, Option<OpKind>, Option<Symbol>, usize);

    fn discriminant(&self) -> Self::Discriminant {
        match self {
            TNode::Leaf(s) => (0, None, Some(*s), 0),
            TNode::Absent => (1, None, None, 0),
            TNode::Attrs(s) => (2, None, Some(*s), 0),
            TNode::Op(k, c) => (3, Some(*k), None, c.len()),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
    }

    fn children(&self) -> &[Id] {
        match self {
            TNode::Op(_, c) => c,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            TNode::Op(_, c) => c,
            _ => &mut [],
        }
    }
}

impl std::fmt::Display for TNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TNode::Leaf(s) => write!(f, "{s}"),
            TNode::Absent => f.write_str("_"),
            TNode::Attrs(s) => write!(f, "{{{s}}}"),
            TNode::Op(k, _) => write!(f, "{k}"),
        }
    }
}

/// Parses pattern text: an op name with children is an op, `_` an absent input, `{…}` an
/// attribute set, anything else a leaf.
impl egg::FromOp for TNode {
    type Error = String;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        if let Some(k) = OpKind::parse(op).filter(|_| !children.is_empty()) {
            return Ok(TNode::Op(k, children));
        }
        if !children.is_empty() {
            return Err(format!("unknown op `{op}`"));
        }
        Ok(match op {
            "_" => TNode::Absent,
            s if s.starts_with('{') && s.ends_with('}') => {
                TNode::Attrs(Symbol::from(&s[1..s.len() - 1]))
            }
            s => TNode::Leaf(Symbol::from(s)),
        })
    }
}

/// What the analysis knows of an e-class.
#[derive(Debug, Clone, Default)]
pub struct Data {
    /// The static type (None for attribute and absent nodes).
    pub ty: Option<ValueType>,
    /// The value, for constants (shared: weights are not copied per e-class).
    pub konst: Option<Arc<Tensor>>,
    /// Consumers of the value in the input graph (graph outputs count as one); 0 for values
    /// rules created. Fusion does not inline a value with several consumers: that would
    /// compute it again in each.
    pub uses: usize,
}

/// Types (from shape inference) and constants of e-classes, plus the tables that give
/// leaves and attribute symbols their meaning.
#[derive(Default)]
pub struct TypeAnalysis {
    /// Graph inputs and constants by name: type, and value for constants.
    pub leaves: HashMap<Symbol, (ValueType, Option<Arc<Tensor>>)>,
    /// Attribute sets by their canonical text.
    pub attrs: HashMap<Symbol, Attrs>,
    /// The original graph's node names by e-class (kept when extraction picks their op).
    pub names: HashMap<Id, (OpKind, String)>,
}

impl TypeAnalysis {
    /// Interns an attribute set.
    pub fn intern_attrs(&mut self, a: &Attrs) -> Symbol {
        let s = Symbol::from(tessera_ir::text::print_attrs(a));
        self.attrs.entry(s).or_insert_with(|| a.clone());
        s
    }

    /// Registers a constant made by a rule and returns its leaf name, which is derived from
    /// the contents: the same constant made twice is one leaf (so rules reach a fixpoint).
    pub fn new_constant(&mut self, hint: &str, t: Tensor) -> Symbol {
        // FNV-1a over dtype, shape and bytes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        };
        eat(t.dtype().onnx_code() as u8);
        for d in t.shape() {
            d.to_le_bytes().iter().for_each(|&b| eat(b));
        }
        t.bytes().iter().for_each(|&b| eat(b));
        let s = Symbol::from(format!("{hint}_{h:016x}"));
        self.leaves
            .entry(s)
            .or_insert_with(|| (ValueType::new(t.dtype(), t.shape()), Some(Arc::new(t))));
        s
    }
}

pub type TEGraph = EGraph<TNode, TypeAnalysis>;

/// Infers the type of an op e-node from its children's data.
pub fn infer_node(eg: &TEGraph, op: OpKind, children: &[Id]) -> Option<ValueType> {
    let attrs = match eg[children[0]].nodes.first() {
        Some(TNode::Attrs(s)) => eg.analysis.attrs.get(s)?.clone(),
        _ => return None,
    };
    let mut tys = Vec::new();
    let mut consts = Vec::new();
    let mut inputs = Vec::new();
    for &c in &children[1..] {
        let absent = eg[c].nodes.iter().any(|n| matches!(n, TNode::Absent));
        inputs.push((!absent).then_some(ValueId(0)));
        tys.push(eg[c].data.ty.clone());
        consts.push(eg[c].data.konst.as_deref());
    }
    let node = Node {
        name: String::new(),
        op,
        attrs,
        inputs,
        outputs: vec![ValueId(0)],
    };
    tessera_ir::infer::infer(&node, &tys, &consts)
        .ok()
        .and_then(|mut v| v.pop())
}

impl Analysis<TNode> for TypeAnalysis {
    type Data = Data;

    fn make(eg: &mut TEGraph, enode: &TNode, _id: Id) -> Data {
        match enode {
            TNode::Leaf(s) => match eg.analysis.leaves.get(s) {
                Some((ty, k)) => Data {
                    ty: Some(ty.clone()),
                    konst: k.clone(),
                    uses: 0,
                },
                None => Data::default(),
            },
            TNode::Absent | TNode::Attrs(_) => Data::default(),
            TNode::Op(op, children) => Data {
                ty: infer_node(eg, *op, children),
                konst: None,
                uses: 0,
            },
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty;
            changed = true;
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed = true;
        }
        if b.uses > a.uses {
            a.uses = b.uses;
            changed = true;
        }
        DidMerge(changed, true)
    }
}

/// Limits of one optimisation.
#[derive(Clone, Debug)]
pub struct OptimizeConfig {
    pub node_limit: usize,
    /// Default 32: a BERT layer with written-out layer norms saturates after 22 iterations
    /// (the composite rules take one step each); at 12 it stopped early, with the same graph.
    pub iter_limit: usize,
    pub time_limit: Duration,
    /// Rule topics to use (all by default).
    pub topics: Vec<crate::rules::Topic>,
    /// Only these rules (by name), when set — for tests of single rules.
    pub only: Option<Vec<String>>,
}

impl Default for OptimizeConfig {
    fn default() -> Self {
        OptimizeConfig {
            node_limit: 20_000,
            iter_limit: 32,
            time_limit: Duration::from_millis(800),
            topics: crate::rules::Topic::ALL.to_vec(),
            only: None,
        }
    }
}

/// What one optimisation did (data, not an error).
#[derive(Clone, Debug)]
pub struct OptimizeReport {
    pub stop_reason: String,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// Times each rule was applied.
    pub applied: Vec<(String, usize)>,
    pub kernels_before: usize,
    pub kernels_after: usize,
    pub cost_before: f64,
    pub cost_after: f64,
    pub elapsed: Duration,
}

/// Optimises a prepared graph (static shapes). Returns the new graph and a report.
pub fn optimize(g: &Graph, cfg: &OptimizeConfig) -> Result<(Graph, OptimizeReport), PassError> {
    let start = Instant::now();
    let mut eg = TEGraph::new(TypeAnalysis::default());
    let roots = to_egraph(g, &mut eg)?;
    let cost_before = cost::graph_cost(g);
    let rules = crate::rules::rules(&cfg.topics, cfg.only.as_deref());
    let mut runner = egg::Runner::default()
        .with_egraph(eg)
        .with_node_limit(cfg.node_limit)
        .with_iter_limit(cfg.iter_limit)
        .with_time_limit(cfg.time_limit)
        .run(&rules);
    let stop_reason = match &runner.stop_reason {
        Some(egg::StopReason::Saturated) => "saturated".to_string(),
        Some(egg::StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(egg::StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(egg::StopReason::TimeLimit(t)) => format!("time limit ({t:.3} s)"),
        Some(egg::StopReason::Other(s)) => s.clone(),
        None => "not run".into(),
    };
    let mut applied: HashMap<String, usize> = HashMap::new();
    for it in &runner.iterations {
        for (r, n) in &it.applied {
            *applied.entry(r.to_string()).or_default() += n;
        }
    }
    let mut applied: Vec<(String, usize)> = applied.into_iter().collect();
    applied.sort();
    runner.egraph.rebuild();
    let out = from_egraph(g, &runner.egraph, &roots)?;
    let report = OptimizeReport {
        stop_reason,
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        applied,
        kernels_before: g.node_count(),
        kernels_after: out.node_count(),
        cost_before,
        cost_after: cost::graph_cost(&out),
        elapsed: start.elapsed(),
    };
    Ok((out, report))
}

/// Adds the graph to the e-graph; returns the e-class of each graph output.
pub fn to_egraph(g: &Graph, eg: &mut TEGraph) -> Result<Vec<Id>, PassError> {
    let err = |msg: String| PassError::Optimize(msg);
    let mut class: HashMap<ValueId, Id> = HashMap::new();
    for &v in &g.inputs {
        let ty = g.ty_of(v).map_err(|e| err(e.to_string()))?.clone();
        let s = Symbol::from(g.name_of(v));
        eg.analysis.leaves.insert(s, (ty, None));
        class.insert(v, eg.add(TNode::Leaf(s)));
    }
    for (&v, t) in &g.initializers {
        let s = Symbol::from(g.name_of(v));
        eg.analysis.leaves.insert(
            s,
            (
                ValueType::new(t.dtype(), t.shape()),
                Some(Arc::new(t.clone())),
            ),
        );
        class.insert(v, eg.add(TNode::Leaf(s)));
    }
    let absent = eg.add(TNode::Absent);
    for ix in g.topo_order().map_err(|e| err(e.to_string()))? {
        let n = g.node(ix);
        if n.outputs.len() != 1 {
            return Err(err(format!("node `{}` has several outputs", n.name)));
        }
        let a = eg.analysis.intern_attrs(&n.attrs);
        let mut children = vec![eg.add(TNode::Attrs(a))];
        for i in &n.inputs {
            children.push(match i {
                Some(v) => *class
                    .get(v)
                    .ok_or_else(|| err(format!("node `{}` reads an undefined value", n.name)))?,
                None => absent,
            });
        }
        let id = eg.add(TNode::Op(n.op, children));
        eg.analysis.names.insert(id, (n.op, n.name.clone()));
        class.insert(n.outputs[0], id);
    }
    // Use counts: consumers of each value, graph outputs counting as one more.
    let mut uses: HashMap<Id, usize> = HashMap::new();
    for (_, n) in g.nodes() {
        // A node reading a value twice (`x · x`) is one consumer.
        let mut read: Vec<ValueId> = n.inputs.iter().flatten().copied().collect();
        read.sort();
        read.dedup();
        for i in read {
            if let Some(&c) = class.get(&i) {
                *uses.entry(c).or_default() += 1;
            }
        }
    }
    let roots: Vec<Id> = g
        .outputs
        .iter()
        .map(|v| {
            class
                .get(v)
                .copied()
                .ok_or_else(|| err(format!("output `{}` is undefined", g.name_of(*v))))
        })
        .collect::<Result<_, _>>()?;
    for &r in &roots {
        *uses.entry(r).or_default() += 1;
    }
    for (c, n) in uses {
        let c = eg.find(c);
        eg[c].data.uses = eg[c].data.uses.max(n);
    }
    Ok(roots)
}

/// Rebuilds a graph from the cheapest e-node of every needed e-class (shared classes become
/// shared values). Inputs and output names are those of `orig`.
pub fn from_egraph(orig: &Graph, eg: &TEGraph, roots: &[Id]) -> Result<Graph, PassError> {
    let extractor = egg::Extractor::new(eg, cost::KernelCost::new(eg));
    let mut b = Rebuild {
        eg,
        extractor,
        g: Graph::new(orig.name.clone()),
        memo: HashMap::new(),
        count: 0,
        names: {
            // Several original nodes can share a class after rewrites; listing them in the
            // order they were added (the graph's topological order) keeps the names chosen
            // below independent of hash order.
            let mut by_id: Vec<_> = eg.analysis.names.iter().collect();
            by_id.sort_by_key(|(c, _)| **c);
            let mut names: HashMap<Id, Vec<(OpKind, String)>> = HashMap::new();
            for (c, n) in by_id {
                names.entry(eg.find(*c)).or_default().push(n.clone());
            }
            names
        },
        used: Default::default(),
    };
    b.g.opset = orig.opset;
    for &v in &orig.inputs {
        let ty = orig
            .ty_of(v)
            .map_err(|e| PassError::Optimize(e.to_string()))?;
        b.g.add_input(orig.name_of(v), ty.clone());
    }
    // Output classes are built with the original output names.
    let mut outs = Vec::new();
    for (k, &r) in roots.iter().enumerate() {
        let want = orig.name_of(orig.outputs[k]).to_string();
        let v = b.value(r, Some(&want))?;
        outs.push(v);
    }
    b.g.outputs = outs;
    b.g.infer_types()
        .map_err(|e| PassError::Optimize(format!("the optimised graph: {e}")))?;
    b.g.verify()
        .map_err(|e| PassError::Optimize(format!("the optimised graph: {e}")))?;
    Ok(b.g)
}

struct Rebuild<'a> {
    eg: &'a TEGraph,
    extractor: egg::Extractor<'a, cost::KernelCost<'a>, TNode, TypeAnalysis>,
    g: Graph,
    memo: HashMap<Id, ValueId>,
    count: usize,
    /// Original node names (and ops) by canonical e-class, in the original graph's order.
    names: HashMap<Id, Vec<(OpKind, String)>>,
    used: std::collections::HashSet<String>,
}

impl Rebuild<'_> {
    fn value(&mut self, class: Id, name: Option<&str>) -> Result<ValueId, PassError> {
        let class = self.eg.find(class);
        if let Some(&v) = self.memo.get(&class) {
            return Ok(v);
        }
        let node = self.extractor.find_best_node(class).clone();
        let v = match &node {
            TNode::Leaf(s) => {
                let (_, k) = self
                    .eg
                    .analysis
                    .leaves
                    .get(s)
                    .ok_or_else(|| PassError::Optimize(format!("unknown leaf `{s}`")))?;
                match k {
                    Some(t) => self.g.add_initializer(s.as_str(), (**t).clone()),
                    None => self.g.lookup(s.as_str()).ok_or_else(|| {
                        PassError::Optimize(format!("input `{s}` is not a graph input"))
                    })?,
                }
            }
            TNode::Absent | TNode::Attrs(_) => {
                return Err(PassError::Optimize(
                    "an attribute node used as a value".into(),
                ));
            }
            TNode::Op(op, children) => {
                let attrs = match self.extractor.find_best_node(children[0]) {
                    TNode::Attrs(s) => self.eg.analysis.attrs.get(s).cloned().unwrap_or_default(),
                    _ => return Err(PassError::Optimize("an op without attributes".into())),
                };
                let mut inputs = Vec::new();
                for &c in &children[1..] {
                    let absent = matches!(self.extractor.find_best_node(c), TNode::Absent);
                    inputs.push(if absent {
                        None
                    } else {
                        Some(self.value(c, None)?)
                    });
                }
                self.count += 1;
                // The original node's name when its op is kept (the first such node of the
                // class); a fused kernel or a rewritten op (a folded Conv, a softmax written
                // out) is named after the last node whose value it computes, so a profile
                // still points into the user's model.
                let orig = self
                    .names
                    .get(&class)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let kept = orig.iter().find(|(k, _)| k == op);
                let nname = match (kept, orig.last()) {
                    (Some((_, n)), _) => n.clone(),
                    (None, Some((_, n))) => format!("{}_{n}", op.name().to_lowercase()),
                    _ => format!("{}_{}", op.name().to_lowercase(), self.count),
                };
                let nname = if self.used.insert(nname.clone()) {
                    nname
                } else {
                    let n = format!("{nname}_{}", self.count);
                    self.used.insert(n.clone());
                    n
                };
                let out = match name {
                    Some(n) if self.g.lookup(n).is_none() => self.g.value(n),
                    _ => self.g.fresh_value(&nname),
                };
                self.g.add_node(Node {
                    name: nname,
                    op: *op,
                    attrs,
                    inputs,
                    outputs: vec![out],
                });
                out
            }
        };
        self.memo.insert(class, v);
        Ok(v)
    }
}
