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

/// Folds constants and removes dead nodes until nothing changes. Types must be inferred.
pub fn fold_constants(g: &mut Graph) -> Result<usize, IrError> {
    let mut folded = 0;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        let mut args: Vec<Option<Tensor>> = Vec::new();
        let mut all_const = true;
        for inp in &n.inputs {
            match inp {
                None => args.push(None),
                Some(v) => match g.initializers.get(v) {
                    Some(t) => args.push(Some(t.clone())),
                    // Shape only reads the shape: a zero-element stand-in of the same rank and
                    // an explicit computation below avoid materialising the tensor.
                    None if n.op == OpKind::Shape && g.ty(*v).and_then(|t| t.static_shape()).is_some() => args.push(None),
                    None => {
                        all_const = false;
                        break;
                    }
                },
            }
        }
        if !all_const || (n.op != OpKind::Shape && args.iter().zip(&n.inputs).any(|(a, i)| i.is_some() && a.is_none())) {
            continue;
        }
        let outs = if n.op == OpKind::Shape {
            let shape = g.ty_of(n.inputs[0].expect("Shape has an input"))?.static_shape().unwrap_or_default();
            let (start, end) = tessera_ir::infer::shape_range(&n, shape.len() as i64)
                .map_err(|msg| IrError::Node { node: n.name.clone(), op: n.op.name().into(), msg })?;
            let dims: Vec<i64> = shape[start as usize..end.max(start) as usize].iter().map(|&d| d as i64).collect();
            vec![Tensor::from_i64(tessera_ir::DType::I64, vec![dims.len()], &dims)]
        } else {
            let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_ref()).collect();
            eval_node(&n, &refs).map_err(|msg| IrError::Node { node: n.name.clone(), op: n.op.name().into(), msg })?
        };
        if outs.iter().map(|t| t.bytes().len()).sum::<usize>() > MAX_FOLDED_BYTES {
            continue;
        }
        g.remove_node(ix);
        for (v, t) in n.outputs.iter().zip(outs) {
            let name = g.name_of(*v).to_string();
            g.add_initializer(&name, t);
        }
        folded += 1;
    }
    g.eliminate_dead_code();
    Ok(folded)
}

/// Specialises symbolic dimensions, infers types, folds constants and verifies: the graph that
/// lowering expects (every shape static, shape arithmetic folded).
pub fn prepare(g: &Graph, bindings: &BTreeMap<String, usize>) -> Result<Graph, IrError> {
    let mut s = g.specialize(bindings);
    s.infer_types()?;
    fold_constants(&mut s)?;
    materialize_outputs(&mut s);
    s.infer_types()?;
    s.verify()?;
    for &v in s.inputs.iter().chain(&s.outputs) {
        if s.ty_of(v)?.static_shape().is_none() {
            return Err(IrError::Shape(format!("value `{}` has symbolic shape {} after specialisation; bind its symbols", s.name_of(v), s.ty_of(v)?)));
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
            g.add_node(tessera_ir::Node { name, op: OpKind::Identity, attrs: Default::default(), inputs: vec![Some(v)], outputs: vec![out] });
            g.outputs[i] = out;
            seen.insert(out);
        }
    }
}
