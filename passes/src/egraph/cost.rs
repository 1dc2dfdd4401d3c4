//! The extraction cost: an explicit estimate of a kernel's time, in bytes-equivalents.
//!
//! For every op e-node (one kernel once lowered):
//!
//! ```text
//! cost = bytes read + bytes written + LAUNCH_BYTES + flops / FLOPS_PER_BYTE
//! ```
//!
//! where bytes are the e-class types' sizes (inputs read once, the output written once),
//! `LAUNCH_BYTES` stands for a kernel's fixed overhead (dispatch, a pass over the loop nest,
//! lost cache locality between kernels), and flops are estimated per op (2·M·N·K for matrix
//! products and convolutions, one per output element and body op for elementwise kernels).
//! A fused kernel reads its inputs and writes its output once: what fusion saves is the
//! intermediate tensors' traffic and the launches. Leaves and attributes cost nothing.
//!
//! egg extracts by tree cost, so a value shared by two consumers is counted twice: this
//! penalises recomputing a shared producer inside two fused kernels, which is the trade-off
//! the cost should see. The sums are exact ([`TreeCost`]): along a recurrence they double
//! with every step. This is one `egg::CostFunction`; a learned model can replace it.

use super::{TEGraph, TNode};
use egg::{CostFunction, Id, Language};
use num_bigint::BigUint;
use tessera_ir::{Graph, OpKind, ValueType};

/// Bytes-equivalent of one kernel launch.
pub const LAUNCH_BYTES: f64 = 16384.0;
/// Flops that cost as much as moving one byte.
pub const FLOPS_PER_BYTE: f64 = 8.0;

fn bytes(t: &ValueType) -> f64 {
    t.static_shape()
        .map(|s| s.iter().product::<usize>() as f64 * t.dtype.size() as f64)
        .unwrap_or(0.0)
}

fn elements(t: &ValueType) -> f64 {
    t.static_shape()
        .map(|s| s.iter().product::<usize>() as f64)
        .unwrap_or(0.0)
}

/// Flops of one op given its input and output types (and, for Fused, its body size; the
/// anchor's flops come from [`body_anchor_flops`]).
pub fn flops(op: OpKind, ins: &[Option<&ValueType>], out: &ValueType, body_ops: usize) -> f64 {
    flops_with(op, ins, out, body_ops, 0.0)
}

/// Flops of a fused body's anchor (MatMul, Gemm or Conv), if it has one.
pub fn body_anchor_flops(body: &Graph) -> f64 {
    body.nodes()
        .filter(|(_, n)| crate::lower::is_anchor(n.op))
        .filter_map(|(_, n)| {
            let ins: Vec<Option<&ValueType>> = n
                .inputs
                .iter()
                .map(|i| i.and_then(|v| body.ty(v)))
                .collect();
            body.ty(n.outputs[0]).map(|o| flops(n.op, &ins, o, 0))
        })
        .sum()
}

fn flops_with(
    op: OpKind,
    ins: &[Option<&ValueType>],
    out: &ValueType,
    body_ops: usize,
    anchor_flops: f64,
) -> f64 {
    let n = elements(out);
    match op {
        OpKind::MatMul | OpKind::Gemm => {
            let k = ins
                .first()
                .copied()
                .flatten()
                .and_then(|a| a.static_shape())
                .and_then(|s| s.last().copied())
                .unwrap_or(1) as f64;
            2.0 * n * k
        }
        OpKind::Conv | OpKind::ConvTranspose => {
            let w = ins.get(1).copied().flatten().map(elements).unwrap_or(1.0);
            let co = out.static_shape().map(|s| s[1]).unwrap_or(1) as f64;
            2.0 * n * w / co.max(1.0)
        }
        OpKind::Fused => n * body_ops as f64 + anchor_flops,
        _ => n,
    }
}

/// The cost of one kernel: its traffic, launch and flops.
pub fn kernel_cost(
    op: OpKind,
    ins: &[Option<&ValueType>],
    out: &ValueType,
    body: Option<&Graph>,
) -> f64 {
    let read: f64 = ins
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| input_read_bytes(body, i, t)))
        .sum();
    let (body_ops, anchor) = match body {
        Some(b) => (b.node_count(), body_anchor_flops(b)),
        None => (0, 0.0),
    };
    read + bytes(out) + LAUNCH_BYTES + flops_with(op, ins, out, body_ops, anchor) / FLOPS_PER_BYTE
}

/// Bytes a kernel reads of its input `i` (of type `t`): all of it, unless a fused body reads
/// it only through views (Slices, one-index Gathers, Transposes), which read their own elements.
fn input_read_bytes(body: Option<&Graph>, i: usize, t: &ValueType) -> f64 {
    let full = bytes(t);
    let Some(body) = body else {
        return full;
    };
    let Some(&v) = body.inputs.get(i) else {
        return full;
    };
    let readers: Vec<&tessera_ir::Node> = body
        .nodes()
        .map(|(_, n)| n)
        .filter(|n| n.inputs.contains(&Some(v)))
        .collect();
    let through_views = !readers.is_empty()
        && readers
            .iter()
            .all(|n| crate::lower::is_view_op(n.op) && n.inputs[0] == Some(v));
    if !through_views {
        return full;
    }
    let viewed: f64 = readers
        .iter()
        .map(|n| body.ty(n.outputs[0]).map(bytes).unwrap_or(full))
        .sum();
    viewed.min(full)
}

/// The extraction cost function over the e-graph.
pub struct KernelCost<'a> {
    eg: &'a TEGraph,
    /// The e-class of every op e-node: its output type is the class's (rules only union
    /// e-nodes of one type), so extraction never re-runs shape inference.
    class_of: std::collections::HashMap<&'a TNode, Id>,
}

impl<'a> KernelCost<'a> {
    pub fn new(eg: &'a TEGraph) -> Self {
        let class_of = eg
            .classes()
            .flat_map(|c| c.nodes.iter().map(move |n| (n, c.id)))
            .filter(|(n, _)| matches!(n, TNode::Op(..)))
            .collect();
        KernelCost { eg, class_of }
    }
}

/// A tree cost, exact: egg sums a value's cost into every consumer, so along a recurrence
/// that reads its state twice per step the sum doubles with every step — in `f64`, after a
/// few dozen steps the launches one choice saves fell below the sum's rounding and the
/// extraction chose at random. Kernel costs are rounded to whole bytes-equivalents and summed
/// without loss.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TreeCost {
    Finite(BigUint),
    /// An e-node whose type is unknown: never chosen.
    Infinite,
}

impl TreeCost {
    fn of(kernel: f64) -> TreeCost {
        if kernel.is_finite() {
            TreeCost::Finite(BigUint::from(kernel.max(0.0).round() as u64))
        } else {
            TreeCost::Infinite
        }
    }

    fn add(self, o: TreeCost) -> TreeCost {
        match (self, o) {
            (TreeCost::Finite(a), TreeCost::Finite(b)) => TreeCost::Finite(a + b),
            _ => TreeCost::Infinite,
        }
    }
}

impl CostFunction<TNode> for KernelCost<'_> {
    type Cost = TreeCost;

    fn cost<C>(&mut self, enode: &TNode, mut costs: C) -> TreeCost
    where
        C: FnMut(Id) -> TreeCost,
    {
        let children = enode
            .children()
            .iter()
            .fold(TreeCost::Finite(BigUint::ZERO), |acc, &c| acc.add(costs(c)));
        let TNode::Op(op, ch) = enode else {
            return children;
        };
        let ins: Vec<Option<&ValueType>> = ch[1..]
            .iter()
            .map(|&c| self.eg[c].data.ty.as_ref())
            .collect();
        let out = match self.class_of.get(enode) {
            Some(&c) => self.eg[c].data.ty.clone(),
            None => super::infer_node(self.eg, *op, ch),
        };
        let Some(out) = out else {
            return TreeCost::Infinite;
        };
        let body = body_of(self.eg, ch[0]);
        children.add(TreeCost::of(kernel_cost(*op, &ins, &out, body)))
    }
}

/// The body of a fused node's attribute class (None for other ops).
fn body_of(eg: &TEGraph, attrs: Id) -> Option<&Graph> {
    match eg[attrs].nodes.first() {
        Some(TNode::Attrs(s)) => eg.analysis.attrs.get(s).and_then(|a| match a.get("body") {
            Some(tessera_ir::Attr::Graph(b)) => Some(&*b.0),
            _ => None,
        }),
        _ => None,
    }
}

/// Bytes a graph's kernels read and write (each kernel reads its inputs and writes its output
/// once): the "bytes moved" estimate the benchmarks report.
pub fn graph_bytes(g: &Graph) -> f64 {
    g.nodes()
        .map(|(_, n)| {
            let read: f64 = n
                .inputs
                .iter()
                .filter_map(|i| i.and_then(|v| g.ty(v)))
                .map(bytes)
                .sum();
            read + g.ty(n.outputs[0]).map(bytes).unwrap_or(0.0)
        })
        .sum()
}

/// The same cost summed over a graph's nodes (each value counted once).
pub fn graph_cost(g: &Graph) -> f64 {
    g.nodes()
        .map(|(_, n)| {
            let ins: Vec<Option<&ValueType>> =
                n.inputs.iter().map(|i| i.and_then(|v| g.ty(v))).collect();
            let body = match n.attrs.get("body") {
                Some(tessera_ir::Attr::Graph(b)) => Some(&*b.0),
                _ => None,
            };
            match g.ty(n.outputs[0]) {
                Some(out) => kernel_cost(n.op, &ins, out, body),
                None => 0.0,
            }
        })
        .sum()
}
