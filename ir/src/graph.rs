//! The graph IR: named values, nodes on a petgraph DAG, initializers, and one optional
//! symbolic dimension (such as the batch) per value.
//!
//! **Invariant:** every value has exactly one definition — a graph input, an initializer, or
//! one node output — and the node DAG is acyclic. [`Graph::verify`] checks both, plus each
//! node against its op's [`Schema`](crate::op::Schema) and the inferred types.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::{Attrs, OpKind};
use crate::tensor::Tensor;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// One dimension of a shape: a known size or a named symbol bound at run time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// Element type and shape of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl ValueType {
    pub fn new(dtype: DType, shape: &[usize]) -> ValueType {
        ValueType {
            dtype,
            shape: shape.iter().map(|&d| Dim::Known(d)).collect(),
        }
    }
    /// The shape if every dimension is known.
    pub fn static_shape(&self) -> Option<Vec<usize>> {
        self.shape.iter().map(Dim::known).collect()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    /// `None` until shape inference has run.
    pub ty: Option<ValueType>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: OpKind,
    pub attrs: Attrs,
    /// `None` is an omitted optional input (ONNX's empty name).
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// An error about this node: its name, its op and `msg`.
    pub fn error(&self, msg: impl Into<String>) -> IrError {
        IrError::Node {
            node: self.name.clone(),
            op: self.op.name().into(),
            msg: msg.into(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    /// Default-domain opset the model was written against (informational after import).
    pub opset: i64,
    values: Vec<Value>,
    by_name: HashMap<String, ValueId>,
    dag: StableDiGraph<Node, ()>,
    producer: HashMap<ValueId, NodeIndex>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub initializers: BTreeMap<ValueId, Tensor>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            opset: 21,
            ..Default::default()
        }
    }

    /// Returns the value with this name, creating an untyped one if needed.
    pub fn value(&mut self, name: &str) -> ValueId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = ValueId(self.values.len() as u32);
        self.values.push(Value {
            name: name.to_string(),
            ty: None,
        });
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// A fresh value whose name starts with `hint` and is unused.
    pub fn fresh_value(&mut self, hint: &str) -> ValueId {
        let mut name = hint.to_string();
        let mut i = 0;
        while self.by_name.contains_key(&name) {
            i += 1;
            name = format!("{hint}_{i}");
        }
        self.value(&name)
    }

    pub fn lookup(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }
    pub fn value_info(&self, id: ValueId) -> &Value {
        &self.values[id.0 as usize]
    }
    pub fn name_of(&self, id: ValueId) -> &str {
        &self.values[id.0 as usize].name
    }
    pub fn ty(&self, id: ValueId) -> Option<&ValueType> {
        self.values[id.0 as usize].ty.as_ref()
    }
    pub fn set_ty(&mut self, id: ValueId, ty: ValueType) {
        self.values[id.0 as usize].ty = Some(ty);
    }
    pub fn num_values(&self) -> usize {
        self.values.len()
    }

    pub fn add_input(&mut self, name: &str, ty: ValueType) -> ValueId {
        let id = self.value(name);
        self.set_ty(id, ty);
        self.inputs.push(id);
        id
    }

    pub fn add_initializer(&mut self, name: &str, t: Tensor) -> ValueId {
        let id = self.value(name);
        self.set_ty(id, ValueType::new(t.dtype(), t.shape()));
        self.initializers.insert(id, t);
        id
    }

    /// Adds a node and wires its DAG edges from the producers of its inputs.
    pub fn add_node(&mut self, node: Node) -> NodeIndex {
        let outputs = node.outputs.clone();
        let inputs: Vec<ValueId> = node.inputs.iter().flatten().copied().collect();
        let ix = self.dag.add_node(node);
        for v in inputs {
            if let Some(&p) = self.producer.get(&v) {
                self.dag.add_edge(p, ix, ());
            }
        }
        for v in outputs {
            self.producer.insert(v, ix);
        }
        ix
    }

    /// Adds the DAG edges from node `ix` to the nodes already in the graph that read its
    /// outputs: for a node added in place of one removed (a rewrite that keeps the output's
    /// value), whose consumers [`Graph::add_node`] does not know of.
    pub fn connect_consumers(&mut self, ix: NodeIndex) {
        let outputs = self.dag[ix].outputs.clone();
        let consumers: Vec<NodeIndex> = self
            .dag
            .node_indices()
            .filter(|&c| c != ix)
            .filter(|&c| {
                self.dag[c]
                    .inputs
                    .iter()
                    .flatten()
                    .any(|v| outputs.contains(v))
            })
            .collect();
        for c in consumers {
            self.dag.add_edge(ix, c, ());
        }
    }

    /// Convenience for API users: adds `op(inputs)` with one fresh output and returns it.
    pub fn op(&mut self, op: OpKind, inputs: &[ValueId], attrs: Attrs) -> ValueId {
        let name = format!("{}_{}", op.name().to_lowercase(), self.dag.node_count());
        let out = self.fresh_value(&name);
        self.add_node(Node {
            name,
            op,
            attrs,
            inputs: inputs.iter().map(|&v| Some(v)).collect(),
            outputs: vec![out],
        });
        out
    }

    pub fn remove_node(&mut self, ix: NodeIndex) -> Option<Node> {
        let n = self.dag.remove_node(ix)?;
        for v in &n.outputs {
            self.producer.remove(v);
        }
        Some(n)
    }

    pub fn node(&self, ix: NodeIndex) -> &Node {
        &self.dag[ix]
    }
    pub fn node_mut(&mut self, ix: NodeIndex) -> &mut Node {
        &mut self.dag[ix]
    }
    pub fn producer(&self, v: ValueId) -> Option<NodeIndex> {
        self.producer.get(&v).copied()
    }
    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }
    pub fn dag(&self) -> &StableDiGraph<Node, ()> {
        &self.dag
    }

    /// Nodes in a topological order, stable: among ready nodes the earliest inserted comes
    /// first (Kahn's algorithm with a min-heap), so printing and lowering are deterministic.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut indeg: HashMap<NodeIndex, usize> =
            self.dag.node_indices().map(|i| (i, 0)).collect();
        for e in self.dag.edge_indices() {
            let (_, b) = self.dag.edge_endpoints(e).expect("edge has endpoints");
            *indeg.get_mut(&b).expect("endpoint is a node") += 1;
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(i, _)| Reverse(*i))
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for j in self
                .dag
                .neighbors_directed(i, petgraph::Direction::Outgoing)
            {
                let d = indeg.get_mut(&j).expect("neighbor is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(j));
                }
            }
        }
        if order.len() != indeg.len() {
            let stuck = indeg
                .iter()
                .find(|(i, d)| **d > 0 && !order.contains(i))
                .map(|(i, _)| self.dag[*i].name.clone())
                .unwrap_or_default();
            return Err(IrError::Verify(format!(
                "the graph has a cycle through node `{stuck}`"
            )));
        }
        Ok(order)
    }

    /// The type of a value, or an error naming it if inference has not given it one.
    pub fn ty_of(&self, v: ValueId) -> Result<&ValueType> {
        self.ty(v)
            .ok_or_else(|| IrError::Type(format!("value `{}` has no type", self.name_of(v))))
    }

    /// Checks the structural invariants (see the module doc) and every node's schema.
    pub fn verify(&self) -> Result<()> {
        let mut defined: HashSet<ValueId> = HashSet::new();
        for &v in self.inputs.iter().chain(self.initializers.keys()) {
            if !defined.insert(v) && !self.inputs.contains(&v) {
                return Err(IrError::Verify(format!(
                    "value `{}` is defined twice",
                    self.name_of(v)
                )));
            }
        }
        for ix in self.topo_order()? {
            let n = &self.dag[ix];
            let schema = n.op.schema();
            let err = |msg: String| n.error(msg);
            if n.inputs.len() < schema.min_inputs || n.inputs.len() > schema.max_inputs {
                return Err(err(format!(
                    "has {} inputs, expected {}..={}",
                    n.inputs.len(),
                    schema.min_inputs,
                    schema.max_inputs
                )));
            }
            if n.outputs.len() != schema.outputs {
                return Err(err(format!(
                    "has {} outputs, expected {}",
                    n.outputs.len(),
                    schema.outputs
                )));
            }
            for (name, a) in &n.attrs {
                match schema.attrs.iter().find(|(k, _)| k == name) {
                    None => return Err(err(format!("unknown attribute `{name}`"))),
                    Some((_, kind))
                        if *kind != a.kind()
                            && !(*kind == crate::op::AttrKind::Float
                                && a.kind() == crate::op::AttrKind::Int) =>
                    {
                        return Err(err(format!(
                            "attribute `{name}` should be {kind:?}, is {:?}",
                            a.kind()
                        )));
                    }
                    _ => {}
                }
            }
            for v in n.inputs.iter().flatten() {
                if !defined.contains(v) {
                    return Err(err(format!(
                        "input `{}` is used before it is defined",
                        self.name_of(*v)
                    )));
                }
            }
            for &v in &n.outputs {
                if !defined.insert(v) {
                    return Err(err(format!(
                        "output `{}` is defined twice",
                        self.name_of(v)
                    )));
                }
            }
        }
        for &v in &self.outputs {
            if !defined.contains(&v) {
                return Err(IrError::Verify(format!(
                    "graph output `{}` is never defined",
                    self.name_of(v)
                )));
            }
        }
        for (v, t) in &self.initializers {
            if let Some(ty) = self.ty(*v)
                && (ty.dtype != t.dtype() || ty.static_shape().as_deref() != Some(t.shape()))
            {
                return Err(IrError::Verify(format!(
                    "initializer `{}` disagrees with its type {ty}",
                    self.name_of(*v)
                )));
            }
        }
        Ok(())
    }

    /// Replaces every symbolic dimension named in `bindings` by its size (e.g. `N` → 8) in
    /// the types of the graph's inputs; types of other values are cleared for re-inference.
    pub fn specialize(&self, bindings: &BTreeMap<String, usize>) -> Graph {
        let mut g = self.clone();
        let inputs: HashSet<ValueId> = g.inputs.iter().copied().collect();
        for (i, v) in g.values.iter_mut().enumerate() {
            let id = ValueId(i as u32);
            if g.initializers.contains_key(&id) {
                continue;
            }
            if !inputs.contains(&id) {
                v.ty = None;
                continue;
            }
            if let Some(ty) = &mut v.ty {
                for d in &mut ty.shape {
                    if let Dim::Sym(s) = d
                        && let Some(&n) = bindings.get(s)
                    {
                        *d = Dim::Known(n);
                    }
                }
            }
        }
        g
    }

    /// Symbolic dimension names used by the graph's inputs.
    pub fn symbols(&self) -> Vec<String> {
        let mut out = Vec::new();
        for &v in &self.inputs {
            if let Some(ty) = self.ty(v) {
                for d in &ty.shape {
                    if let Dim::Sym(s) = d
                        && !out.contains(s)
                    {
                        out.push(s.clone());
                    }
                }
            }
        }
        out
    }

    /// Removes nodes whose outputs are not needed by the graph outputs, and unused initializers.
    pub fn eliminate_dead_code(&mut self) {
        let mut live: HashSet<ValueId> = self.outputs.iter().copied().collect();
        let order = self.topo_order().unwrap_or_default();
        for &ix in order.iter().rev() {
            let n = &self.dag[ix];
            if n.outputs.iter().any(|o| live.contains(o)) {
                live.extend(n.inputs.iter().flatten().copied());
            } else {
                self.remove_node(ix);
            }
        }
        self.initializers.retain(|v, _| live.contains(v));
    }

    /// Graph inputs whose *values*, not only shapes, the compiler needs: they reach an input
    /// slot listed by [`OpKind::value_inputs`] (axes, pads, target shapes, …) directly or
    /// through other nodes. `Shape` and `Size` stop the walk, since they read only a shape.
    /// An executable specialises on these inputs' values (see [`Graph::bind_value`]).
    pub fn value_dependent_inputs(&self) -> Vec<ValueId> {
        let mut needed: Vec<ValueId> = Vec::new();
        for (_, n) in self.nodes() {
            for &slot in n.op.value_inputs() {
                if let Some(Some(v)) = n.inputs.get(slot) {
                    needed.push(*v);
                }
            }
        }
        let mut seen: HashSet<ValueId> = HashSet::new();
        let mut found = Vec::new();
        while let Some(v) = needed.pop() {
            if !seen.insert(v) || self.initializers.contains_key(&v) {
                continue;
            }
            if self.inputs.contains(&v) {
                found.push(v);
            } else if let Some(p) = self.producer(v) {
                let n = &self.dag[p];
                if !matches!(n.op, OpKind::Shape | OpKind::Size) {
                    needed.extend(n.inputs.iter().flatten().copied());
                }
            }
        }
        found.sort_by_key(|v| self.inputs.iter().position(|i| i == v));
        found
    }

    /// Replaces every use of `v` by nodes with a new initializer holding `t` (value
    /// specialisation); `v` itself stays a graph input, now unread.
    pub fn bind_value(&mut self, v: ValueId, t: Tensor) {
        let name = format!("{}_value", self.name_of(v));
        let c = self.fresh_value(&name);
        let name = self.name_of(c).to_string();
        self.add_initializer(&name, t);
        let ixs: Vec<NodeIndex> = self.dag.node_indices().collect();
        for ix in ixs {
            for i in self.dag[ix].inputs.iter_mut().flatten() {
                if *i == v {
                    *i = c;
                }
            }
        }
    }

    /// Runs shape and type inference over the whole graph in topological order.
    pub fn infer_types(&mut self) -> Result<()> {
        for ix in self.topo_order()? {
            let n = self.dag[ix].clone();
            let mut tys = Vec::new();
            let mut consts = Vec::new();
            for inp in &n.inputs {
                match inp {
                    Some(v) => {
                        tys.push(Some(
                            self.ty_of(*v).map_err(|e| n.error(e.to_string()))?.clone(),
                        ));
                        consts.push(self.initializers.get(v));
                    }
                    None => {
                        tys.push(None);
                        consts.push(None);
                    }
                }
            }
            let out = crate::infer::infer(&n, &tys, &consts).map_err(|msg| n.error(msg))?;
            for (v, t) in n.outputs.iter().zip(out) {
                self.set_ty(*v, t);
            }
        }
        Ok(())
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.dag.node_indices().map(move |i| (i, &self.dag[i]))
    }
}
