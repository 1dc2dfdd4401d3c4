//! A `Fused` node as one kernel. Its body is a graph of elementwise ops over the node's inputs,
//! optionally rooted at one *anchor* — a MatMul, Gemm or Conv whose output every other body
//! op consumes, directly or not.
//!
//! - Elementwise only: one loop nest over the output, each element computed by composing the
//!   body's scalar expressions ([`super::elementwise::scalar_expr`]) on broadcast loads of the
//!   inputs; intermediates live in registers, never in memory.
//! - With an anchor: the anchor's own lowering runs with the rest of the body as its
//!   epilogue ([`super::Epilogue`]), applied where each output element becomes final (at the
//!   register store of a short convolution, or as an in-place pass over each finished row of
//!   a matrix product or long convolution, while the row is in cache).

use super::body_views::{BodyViews, is_view_op};
use super::elementwise::{bcast, scalar_expr};
use super::{Builder, NodeCx, idx, store_nest, strides_of};
use crate::error::PassError;
use std::collections::HashMap;
use tessera_ir::loops::{IExpr, Stmt, VExpr};
use tessera_ir::{AttrsExt, Graph, NodeIndex, OpKind, ValueId};

/// Ops that can root a fused body: the products, Col2Im (the scatter half of a
/// ConvTranspose, whose bias and activation then apply to each position's sum) and
/// WinogradOutput (the last step of a Winograd convolution, which takes over its Conv's
/// epilogue).
pub fn is_anchor(op: OpKind) -> bool {
    matches!(
        op,
        OpKind::MatMul | OpKind::Gemm | OpKind::Conv | OpKind::Col2Im | OpKind::WinogradOutput
    )
}

/// The anchor of a fused body whose nodes in topological order are `order`: its first
/// MatMul, Gemm, Conv or Col2Im.
pub(crate) fn anchor(body: &Graph, order: &[NodeIndex]) -> Option<NodeIndex> {
    order
        .iter()
        .copied()
        .find(|&ix| is_anchor(body.node(ix).op))
}

pub(crate) fn fused(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let body = cx.node.attrs.graph("body").map_err(|e| cx.err(e))?;
    let order = body.topo_order().map_err(|e| cx.err(e.to_string()))?;
    let views = BodyViews::of(body).map_err(|e| cx.err(e))?;
    if let Some(&sink) = order.iter().find(|&&ix| is_sink(body.node(ix).op)) {
        return reduction_sink(cx, b, body, &views, &order, sink);
    }
    match anchor(body, &order) {
        None if !views.is_empty() => {
            // Views read at mapped coordinates: one loop per output dimension (the
            // coalesced nest below would lose the coordinates).
            let dims = b.dims(&cx.out_shape);
            let coords = idx(&dims);
            let env = read_env(cx, body, &views, &coords, cx.out_shape.len());
            let value = compose(cx, body, &order, env, None)?;
            let out_index = IExpr::linear(&coords, &strides_of(&cx.out_shape));
            Ok(store_nest(cx, &dims, out_index, value))
        }
        None => {
            let shapes: Vec<Vec<usize>> =
                (0..cx.bufs.len()).map(|i| cx.shape(i).to_vec()).collect();
            let bc = bcast(b, &cx.out_shape, &shapes);
            let mut env: HashMap<ValueId, VExpr> = HashMap::new();
            for (i, &v) in body.inputs.iter().enumerate() {
                env.insert(v, VExpr::load(cx.buf(i), bc.loads[i].clone()));
            }
            let value = compose(cx, body, &order, env, None)?;
            Ok(store_nest(cx, &bc.dims, bc.out_index, value))
        }
        Some(a) => {
            let an = body.node(a);
            let input_pos = |v: ValueId| body.inputs.iter().position(|&x| x == v);
            let mut bufs = Vec::new();
            let mut in_shapes = Vec::new();
            let mut in_dtypes = Vec::new();
            let mut consts = Vec::new();
            for i in &an.inputs {
                match i.and_then(input_pos) {
                    Some(p) => {
                        bufs.push(Some(cx.buf(p).to_string()));
                        in_shapes.push(Some(cx.shape(p).to_vec()));
                        in_dtypes.push(cx.in_dtypes[p]);
                        consts.push(cx.consts.get(p).copied().flatten());
                    }
                    None if i.is_none() => {
                        bufs.push(None);
                        in_shapes.push(None);
                        in_dtypes.push(None);
                        consts.push(None);
                    }
                    // A value the anchor's shape depends on, held by the body.
                    None if let Some(t) = i.and_then(|v| body.initializers.get(&v)) => {
                        bufs.push(None);
                        in_shapes.push(Some(t.shape().to_vec()));
                        in_dtypes.push(Some(t.dtype()));
                        consts.push(Some(t));
                    }
                    None => return Err(cx.err("the anchor must read the kernel's inputs")),
                }
            }
            // The epilogue: the anchor's value and broadcast loads of the other inputs at the
            // output coordinates, through the rest of the body.
            let out_rank = cx.out_shape.len();
            let epilogue = |value: VExpr, coords: &[IExpr]| -> VExpr {
                let mut env = read_env(cx, body, &views, coords, out_rank);
                env.insert(an.outputs[0], value);
                compose(cx, body, &order, env, Some(a))
                    .unwrap_or_else(|_| VExpr::lit(f64::NAN, cx.out_dtype))
            };
            // Checked once here, at the first element, so the closure above cannot fail.
            let mut first = read_env(cx, body, &views, &vec![IExpr::c(0); out_rank], out_rank);
            first.insert(an.outputs[0], VExpr::lit(0.0, cx.out_dtype));
            compose(cx, body, &order, first, Some(a))?;
            let acx = NodeCx {
                node: an,
                in_shapes,
                in_dtypes,
                consts,
                out_shape: cx.out_shape.clone(),
                out_dtype: cx.out_dtype,
                bufs,
                out: cx.out.clone(),
                epilogue: Some(&epilogue),
                prologue: None,
                weight_row_blocks: cx.weight_row_blocks,
            };
            match an.op {
                OpKind::MatMul => super::linalg::matmul(&acx, b),
                OpKind::Gemm => super::linalg::gemm(&acx, b),
                OpKind::Col2Im => super::data::col2im(&acx, b),
                OpKind::WinogradOutput => super::winograd::output(&acx, b),
                _ => super::conv::conv(&acx, b),
            }
        }
    }
}

/// The body's inputs and views loaded at output coordinates `coords` of a value of rank
/// `rank` (broadcast: inputs and views of a higher rank are left out).
fn read_env(
    cx: &NodeCx,
    body: &Graph,
    views: &BodyViews,
    coords: &[IExpr],
    rank: usize,
) -> HashMap<ValueId, VExpr> {
    let mut env: HashMap<ValueId, VExpr> = HashMap::new();
    for (i, &v) in body.inputs.iter().enumerate() {
        if cx.shape(i).len() <= rank {
            env.insert(v, bcast_load(cx, i, coords, rank));
        }
    }
    views.add_loads(cx, body, coords, rank, &mut env);
    env
}

/// Composes the scalar expressions of the body's elementwise nodes (skipping `skip`, the
/// anchor, whose value `env` already holds) and returns the body output's expression.
fn compose(
    cx: &NodeCx,
    body: &Graph,
    order: &[tessera_ir::NodeIndex],
    mut env: HashMap<ValueId, VExpr>,
    skip: Option<tessera_ir::NodeIndex>,
) -> Result<VExpr, PassError> {
    compose_to(cx, body, order, &mut env, skip, body.outputs[0])
}

/// [`compose`] up to the value `target`.
fn compose_to(
    cx: &NodeCx,
    body: &Graph,
    order: &[tessera_ir::NodeIndex],
    env: &mut HashMap<ValueId, VExpr>,
    skip: Option<tessera_ir::NodeIndex>,
    target: ValueId,
) -> Result<VExpr, PassError> {
    let skipped_reads = |v: ValueId| skip.is_some_and(|s| body.node(s).inputs.contains(&Some(v)));
    let view_reads = |v: ValueId| {
        body.nodes()
            .any(|(_, n)| is_view_op(n.op) && n.inputs[1..].contains(&Some(v)))
    };
    for (&v, t) in &body.initializers {
        // A reduction's axes, Col2Im's image and block shapes: read by the skipped root
        // itself, not composed; a view's bounds: read when its loads were made.
        let root_constant = t.len() != 1 && (skipped_reads(v) || view_reads(v));
        if env.contains_key(&v) || root_constant {
            continue;
        }
        if t.len() != 1 {
            return Err(cx.err(format!(
                "body constant `{}` has {} elements; only scalars are folded into a fused kernel",
                body.name_of(v),
                t.len()
            )));
        }
        let lit = if t.dtype().is_float() {
            VExpr::f(t.get_f64(0), t.dtype())
        } else {
            VExpr::i(t.get_i64(0), t.dtype())
        };
        env.insert(v, lit);
    }
    for &ix in order {
        // Views are loads, already in `env` where they are read.
        if Some(ix) == skip || is_view_op(body.node(ix).op) {
            continue;
        }
        if env.contains_key(&target) {
            break;
        }
        let n = body.node(ix);
        if !n.op.is_elementwise() {
            return Err(cx.err(format!("{} in a fused body is not elementwise", n.op)));
        }
        // A node whose operands are not available here belongs to another part of the body
        // (the prologue of a reduction when composing its epilogue): skip it.
        if n.inputs.iter().flatten().any(|v| !env.contains_key(v)) {
            continue;
        }
        let ty = |v: ValueId| body.ty(v).cloned();
        let mut args = Vec::with_capacity(n.inputs.len());
        let mut in_dtypes = Vec::with_capacity(n.inputs.len());
        let mut in_shapes = Vec::with_capacity(n.inputs.len());
        for i in &n.inputs {
            args.push(i.and_then(|v| env.get(&v).cloned()));
            in_dtypes.push(i.and_then(&ty).map(|t| t.dtype));
            in_shapes.push(i.and_then(&ty).and_then(|t| t.static_shape()));
        }
        let out_ty = ty(n.outputs[0]).ok_or_else(|| cx.err("untyped value in the body"))?;
        let inner = NodeCx {
            node: n,
            in_shapes,
            in_dtypes,
            consts: n
                .inputs
                .iter()
                .map(|i| i.and_then(|v| body.initializers.get(&v)))
                .collect(),
            out_shape: out_ty.static_shape().unwrap_or_default(),
            out_dtype: out_ty.dtype,
            bufs: vec![None; n.inputs.len()],
            out: String::new(),
            epilogue: None,
            prologue: None,
            weight_row_blocks: 0,
        };
        env.insert(n.outputs[0], scalar_expr(&inner, &args)?);
    }
    env.remove(&target)
        .ok_or_else(|| cx.err("the body's output is not computed"))
}

/// Reductions that can join a fused body (their data computed in registers before them,
/// their epilogue applied at their store): every reduction over `axes`.
pub fn is_sink(op: OpKind) -> bool {
    op.is_reduction()
}

/// A load of fused input `i` broadcast to coordinates `coords` of a value of rank `rank`.
fn bcast_load(cx: &NodeCx, i: usize, coords: &[IExpr], rank: usize) -> VExpr {
    let s = cx.shape(i);
    let st = strides_of(s);
    let off = rank - s.len().min(rank);
    let idx = s
        .iter()
        .enumerate()
        .fold(IExpr::c(0), |acc, (d, &n)| match coords.get(off + d) {
            Some(c) if n != 1 => acc.plus(c.clone().times(st[d] as i64)),
            _ => acc,
        });
    VExpr::load(cx.buf(i), idx)
}

/// A fused body ending in a reduction: the reduction's lowering with the rest of the body as
/// its prologue.
fn reduction_sink(
    cx: &NodeCx,
    b: &mut Builder,
    body: &Graph,
    views: &BodyViews,
    order: &[tessera_ir::NodeIndex],
    sink: tessera_ir::NodeIndex,
) -> Result<Vec<Stmt>, PassError> {
    let rn = body.node(sink);
    let data = rn.inputs[0].ok_or_else(|| cx.err("a reduction without data"))?;
    let dty = body
        .ty(data)
        .cloned()
        .ok_or_else(|| cx.err("untyped reduction input"))?;
    let ds = dty
        .static_shape()
        .ok_or_else(|| cx.err("symbolic reduction input"))?;
    let rank = ds.len();
    let prologue = |coords: &[IExpr]| -> VExpr {
        let mut env = read_env(cx, body, views, coords, rank);
        compose_to(cx, body, order, &mut env, Some(sink), data)
            .unwrap_or_else(|_| VExpr::lit(f64::NAN, dty.dtype))
    };
    // Checked once here, at the first element, so the closure above cannot fail.
    let mut env = read_env(cx, body, views, &vec![IExpr::c(0); rank], rank);
    compose_to(cx, body, order, &mut env, Some(sink), data)?;
    // Elementwise ops after the reduction: its epilogue, at the output coordinates.
    let out_rank = cx.out_shape.len();
    let has_epilogue = rn.outputs[0] != body.outputs[0];
    let epilogue = |value: VExpr, coords: &[IExpr]| -> VExpr {
        // Inputs of a higher rank feed only the prologue.
        let mut env = read_env(cx, body, views, coords, out_rank);
        env.insert(rn.outputs[0], value);
        compose(cx, body, order, env, Some(sink))
            .unwrap_or_else(|_| VExpr::lit(f64::NAN, cx.out_dtype))
    };
    if has_epilogue {
        // Checked once here, on the same inputs, so the closure above cannot fail.
        let mut env = read_env(cx, body, views, &vec![IExpr::c(0); out_rank], out_rank);
        env.insert(rn.outputs[0], VExpr::lit(0.0, cx.out_dtype));
        compose(cx, body, order, env, Some(sink))?;
    }
    let axes = rn.inputs.get(1).copied().flatten();
    let rcx = NodeCx {
        node: rn,
        in_shapes: vec![
            Some(ds),
            axes.and_then(|a| body.ty(a)).and_then(|t| t.static_shape()),
        ],
        in_dtypes: vec![
            Some(dty.dtype),
            axes.and_then(|a| body.ty(a)).map(|t| t.dtype),
        ],
        consts: vec![None, axes.and_then(|a| body.initializers.get(&a))],
        out_shape: cx.out_shape.clone(),
        out_dtype: cx.out_dtype,
        bufs: vec![Some(String::new()), axes.map(|_| String::new())],
        out: cx.out.clone(),
        epilogue: has_epilogue.then_some(&epilogue as &super::Epilogue),
        prologue: Some(&prologue),
        weight_row_blocks: 0,
    };
    super::nn::reduce_op(&rcx, b)
}
