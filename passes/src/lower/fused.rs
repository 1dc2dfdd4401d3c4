//! A `Fused` node — a graph of elementwise ops over the node's inputs — as one kernel: one
//! loop nest over the output, each element computed by composing the body's scalar
//! expressions ([`super::elementwise::scalar_expr`]) on broadcast loads of the inputs.
//! Intermediate values of the body live in registers, never in memory.

use super::elementwise::{bcast, scalar_expr};
use super::{Builder, NodeCx, store_nest};
use crate::error::PassError;
use std::collections::HashMap;
use tessera_ir::loops::{Stmt, VExpr};
use tessera_ir::{AttrsExt, ValueId};

pub(crate) fn fused(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let body = cx.node.attrs.graph("body").map_err(|e| cx.err(e))?;
    let shapes: Vec<Vec<usize>> = (0..cx.bufs.len()).map(|i| cx.shape(i).to_vec()).collect();
    let bc = bcast(b, &cx.out_shape, &shapes);
    let mut env: HashMap<ValueId, VExpr> = HashMap::new();
    for (i, &v) in body.inputs.iter().enumerate() {
        env.insert(v, VExpr::load(cx.buf(i), bc.loads[i].clone()));
    }
    for (&v, t) in &body.initializers {
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
    let order = body.topo_order().map_err(|e| cx.err(e.to_string()))?;
    for ix in order {
        let n = body.node(ix);
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
        };
        if !n.op.is_elementwise() {
            return Err(cx.err(format!("{} in a fused body is not elementwise", n.op)));
        }
        env.insert(n.outputs[0], scalar_expr(&inner, &args)?);
    }
    let value = env
        .remove(&body.outputs[0])
        .ok_or_else(|| cx.err("the body's output is not computed"))?;
    Ok(store_nest(cx, &bc.dims, bc.out_index, value))
}
