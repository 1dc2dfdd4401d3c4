//! Graph simplification before lowering: constant folding and dead-code elimination.
//!
//! A node whose inputs are all initializers (and `Shape` of a statically shaped value) is
//! evaluated with the reference interpreter and replaced by an initializer. This is what turns
//! exporter-generated shape arithmetic (`Shape → Gather → Concat → Reshape`) into constants.

use std::collections::BTreeMap;
use tessera_ir::interp::eval_node;
use tessera_ir::{Graph, IrError, OpKind, Tensor};

/// Largest constant a fold may create; bigger results stay as runtime computation.
const MAX_FOLDED_BYTES: usize = 64 << 20;

/// How [`infer_and_fold`] treats a node whose type cannot be inferred yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inference {
    /// Every node must get a type (the graph is specialised).
    Strict,
    /// A node whose inputs are untyped, or whose shape depends on a value that is not a
    /// constant yet (e.g. Reshape fed by `Shape` of a symbolic tensor), is left untyped.
    Lenient,
}

/// Infers types in topological order and, on the way, folds every node whose inputs are all
/// constants (and `Shape` of a statically shaped value) into an initializer, so shape
/// arithmetic feeding a Reshape is known before the Reshape is reached. Removes dead nodes.
/// Returns the number of folded nodes.
pub fn infer_and_fold(g: &mut Graph, mode: Inference) -> Result<usize, IrError> {
    let mut folded = 0;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        let node_err = |msg: String| IrError::Node {
            node: n.name.clone(),
            op: n.op.name().into(),
            msg,
        };
        let static_input = |g: &Graph, i: usize| {
            n.inputs
                .get(i)
                .copied()
                .flatten()
                .and_then(|v| g.ty(v))
                .and_then(|t| t.static_shape())
        };
        let all_const = n
            .inputs
            .iter()
            .flatten()
            .all(|v| g.initializers.contains_key(v));
        let shape_of_static =
            matches!(n.op, OpKind::Shape | OpKind::Size) && static_input(g, 0).is_some();
        // A constant too large to fold stays a node (lowered to a kernel); knowing its size
        // before evaluating it keeps hostile shapes from allocating.
        let fits = |g: &Graph| {
            let tys: Vec<_> = n
                .inputs
                .iter()
                .map(|i| i.and_then(|v| g.ty(v).cloned()))
                .collect();
            let consts: Vec<_> = n
                .inputs
                .iter()
                .map(|i| i.and_then(|v| g.initializers.get(&v)))
                .collect();
            match tessera_ir::infer::infer(&n, &tys, &consts) {
                Ok(out) => out.iter().all(|t| {
                    t.static_shape().is_some_and(|s| {
                        tessera_ir::tensor::numel(&s) * t.dtype.size() <= MAX_FOLDED_BYTES
                    })
                }),
                Err(_) => true, // evaluation reports the same error with the node's name
            }
        };
        if (all_const || shape_of_static) && fits(g) {
            let outs = if shape_of_static && n.op == OpKind::Size {
                let numel = tessera_ir::tensor::numel(&static_input(g, 0).unwrap_or_default());
                vec![Tensor::from_i64(
                    tessera_ir::DType::I64,
                    vec![],
                    &[numel as i64],
                )]
            } else if shape_of_static {
                let shape = static_input(g, 0).unwrap_or_default();
                let (start, end) =
                    tessera_ir::infer::shape_range(&n, shape.len() as i64).map_err(node_err)?;
                let dims: Vec<i64> = shape[start as usize..end.max(start) as usize]
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                vec![Tensor::from_i64(
                    tessera_ir::DType::I64,
                    vec![dims.len()],
                    &dims,
                )]
            } else {
                let args: Vec<Option<&Tensor>> = n
                    .inputs
                    .iter()
                    .map(|i| i.and_then(|v| g.initializers.get(&v)))
                    .collect();
                eval_node(&n, &args).map_err(node_err)?
            };
            g.remove_node(ix);
            for (v, t) in n.outputs.iter().zip(outs) {
                let name = g.name_of(*v).to_string();
                g.add_initializer(&name, t);
            }
            folded += 1;
            continue;
        }
        let mut tys = Vec::new();
        let mut consts = Vec::new();
        let mut untyped = false;
        for inp in &n.inputs {
            tys.push(inp.and_then(|v| g.ty(v).cloned()));
            consts.push(inp.and_then(|v| g.initializers.get(&v)));
            untyped |= inp.is_some() && tys.last().unwrap().is_none();
        }
        if untyped && mode == Inference::Lenient {
            continue;
        }
        match tessera_ir::infer::infer(&n, &tys, &consts) {
            Ok(out) => {
                for (v, t) in n.outputs.iter().zip(out) {
                    g.set_ty(*v, t);
                }
            }
            Err(_)
                if mode == Inference::Lenient && (untyped || !n.op.value_inputs().is_empty()) => {}
            Err(msg) => return Err(node_err(msg)),
        }
    }
    Ok(folded)
}

/// Specialises symbolic dimensions, infers types, folds constants, legalises (see
/// [`crate::legalize`]) and verifies: the graph that lowering expects (every shape static, shape arithmetic folded).
/// Legalised for the CPU's products; [`prepare_for`] says for which.
pub fn prepare(g: &Graph, bindings: &BTreeMap<String, usize>) -> Result<Graph, IrError> {
    prepare_for(g, bindings, &crate::legalize::LegalizeConfig::cpu())
}

/// [`prepare`], legalised for the products of a target (`cfg`).
pub fn prepare_for(
    g: &Graph,
    bindings: &BTreeMap<String, usize>,
    cfg: &crate::legalize::LegalizeConfig,
) -> Result<Graph, IrError> {
    let mut s = g.specialize(bindings);
    infer_and_fold(&mut s, Inference::Strict)?;
    crate::legalize::legalize(&mut s, cfg)?;
    s.eliminate_dead_code();
    materialize_outputs(&mut s);
    s.infer_types()?;
    s.verify()?;
    for &v in s.inputs.iter().chain(&s.outputs) {
        if s.ty_of(v)?.static_shape().is_none() {
            return Err(IrError::Shape(format!(
                "value `{}` has symbolic shape {} after specialisation; bind its symbols",
                s.name_of(v),
                s.ty_of(v)?
            )));
        }
    }
    Ok(s)
}

/// Makes every graph output the output of its own node, inserting `Identity` copies for
/// outputs that are graph inputs, initializers, or repeated — so each output buffer is
/// written by exactly one kernel.
pub fn materialize_outputs(g: &mut Graph) {
    let mut seen = std::collections::HashSet::new();
    for i in 0..g.outputs.len() {
        let v = g.outputs[i];
        let needs_copy = g.producer(v).is_none() || !seen.insert(v);
        if needs_copy {
            let name = format!("{}_out{i}", g.name_of(v));
            let out = g.fresh_value(&name);
            g.add_node(tessera_ir::Node {
                name,
                op: OpKind::Identity,
                attrs: Default::default(),
                inputs: vec![Some(v)],
                outputs: vec![out],
            });
            g.outputs[i] = out;
            seen.insert(out);
        }
    }
}
