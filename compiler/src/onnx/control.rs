//! Control flow at import: `If` and `Scan` become plain dataflow, since the graph IR has no
//! subgraphs.
//!
//! - `If` whose condition folds to a constant (e.g. computed from static shapes, as ONNX
//!   function bodies do) inlines the chosen branch. A run-time condition inlines both branches
//!   and selects with `Where`, which needs both to produce the same types (shapes may differ
//!   by size-1 dimensions; the select takes the broadcast shape).
//! - `Scan` with a static sequence length is unrolled: each step inlines the body on the step's
//!   slices, the states thread through, and the per-step outputs are stacked.
//!
//! `Loop` is not expanded (its trip count is usually a run-time value) and stays an error.

use super::{Importer, OnnxError, proto};
use std::collections::HashMap;
use tessera_ir::{Attr, Attrs, DType, OpKind, Tensor, ValueId};

type Res<T> = Result<T, OnnxError>;

impl Importer {
    /// Imports `body`'s nodes with its inputs bound to `inputs` (outer-scope names stay as
    /// they are) and every name it defines prefixed; returns the values of its outputs.
    pub(super) fn inline_graph(
        &mut self,
        body: &proto::GraphProto,
        inputs: &[ValueId],
        prefix: &str,
    ) -> Res<Vec<ValueId>> {
        let mut names: HashMap<String, String> = HashMap::new();
        for (vi, &v) in body.input.iter().zip(inputs) {
            names.insert(
                vi.name.clone().unwrap_or_default(),
                self.g.name_of(v).to_string(),
            );
        }
        for t in &body.initializer {
            let name = t.name.clone().unwrap_or_default();
            let tensor = self.tensor(t).map_err(|msg| OnnxError::Initializer {
                name: name.clone(),
                msg,
            })?;
            let v = self.g.fresh_value(&format!("{prefix}/{name}"));
            let fresh = self.g.name_of(v).to_string();
            self.g.add_initializer(&fresh, tensor);
            names.insert(name, fresh);
        }
        for (i, np) in body.node.iter().enumerate() {
            let mut n = np.clone();
            rename_refs(&mut n, &names);
            for out in &mut n.output {
                if out.is_empty() {
                    continue;
                }
                let v = self.g.fresh_value(&format!("{prefix}/{out}"));
                let fresh = self.g.name_of(v).to_string();
                names.insert(std::mem::replace(out, fresh.clone()), fresh);
            }
            let base = n
                .name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("{}_{i}", n.op_type.as_deref().unwrap_or("node")));
            n.name = Some(format!("{prefix}/{base}"));
            self.node(&n, i)?;
        }
        body.output
            .iter()
            .map(|o| {
                let name = o.name.clone().unwrap_or_default();
                let mapped = names.get(&name).cloned().unwrap_or(name.clone());
                self.g.lookup(&mapped).ok_or_else(|| {
                    OnnxError::Invalid(format!("subgraph output `{name}` is never produced"))
                })
            })
            .collect()
    }

    /// Binds `outputs` (the names an ONNX node declares) to `values` through Identity nodes.
    fn bind_outputs(&mut self, node: &str, outputs: &[String], values: &[ValueId]) {
        for (k, (o, &v)) in outputs.iter().zip(values).enumerate() {
            if o.is_empty() {
                continue;
            }
            let out = self.g.value(o);
            self.push(
                format!("{node}_out{k}"),
                OpKind::Identity,
                Attrs::new(),
                vec![Some(v)],
                vec![out],
            );
        }
    }

    pub(super) fn if_node(&mut self, np: &proto::NodeProto, name: &str) -> Res<()> {
        let opset = self.opset;
        let err = |msg: String| node_error(name, "If", opset, msg);
        let cond_name = np.input.first().cloned().unwrap_or_default();
        let cond = self
            .g
            .lookup(&cond_name)
            .ok_or_else(|| err(format!("condition `{cond_name}` is not defined")))?;
        let branch = |k: &str| -> Res<&proto::GraphProto> {
            np.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(k))
                .and_then(|a| a.g.as_ref())
                .ok_or_else(|| err(format!("missing subgraph `{k}`")))
        };
        let (then_g, else_g) = (branch("then_branch")?, branch("else_branch")?);
        self.settle_types(name, "If")?;
        let outputs = np.output.clone();
        if let Some(c) = self.g.initializers.get(&cond) {
            let taken = if c.get_i64(0) != 0 { then_g } else { else_g };
            let values = self.inline_graph(taken, &[], name)?;
            self.bind_outputs(name, &outputs, &values);
            return Ok(());
        }
        // A run-time condition: both branches, then a select per output.
        let t = self.inline_graph(then_g, &[], &format!("{name}/then"))?;
        let e = self.inline_graph(else_g, &[], &format!("{name}/else"))?;
        self.settle_types(name, "If")?;
        let mut picked = Vec::new();
        for (k, (&a, &b)) in t.iter().zip(&e).enumerate() {
            let (ta, tb) = (self.g.ty(a).cloned(), self.g.ty(b).cloned());
            // Types must agree; shapes may differ by size-1 dimensions only (e.g. a scalar and
            // a one-element vector), and the select then takes the broadcast shape.
            let agree = match (&ta, &tb) {
                (Some(x), Some(y)) => {
                    let ones = |t: &tessera_ir::ValueType| -> Vec<tessera_ir::Dim> {
                        t.shape
                            .iter()
                            .filter(|d| d.known() != Some(1))
                            .cloned()
                            .collect()
                    };
                    x.dtype == y.dtype && ones(x) == ones(y)
                }
                _ => false,
            };
            if !agree {
                return Err(err(format!(
                    "output {k}: branches of a run-time condition must agree in type ({} vs {})",
                    ta.map_or("?".into(), |t| t.to_string()),
                    tb.map_or("?".into(), |t| t.to_string())
                )));
            }
            let v = self.g.fresh_value(&format!("{name}_select{k}"));
            self.push(
                format!("{name}_where{k}"),
                OpKind::Where,
                Attrs::new(),
                vec![Some(cond), Some(a), Some(b)],
                vec![v],
            );
            picked.push(v);
        }
        self.bind_outputs(name, &outputs, &picked);
        Ok(())
    }

    /// Scan (opsets 8–21), unrolled over its static sequence length.
    pub(super) fn scan_node(&mut self, np: &proto::NodeProto, name: &str) -> Res<()> {
        let opset = self.opset;
        let err = |msg: String| node_error(name, "Scan", opset, msg);
        let ints = |k: &str| -> Option<Vec<i64>> {
            np.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(k))
                .map(|a| {
                    if a.ints.is_empty() {
                        vec![a.i.unwrap_or(0)]
                    } else {
                        a.ints.clone()
                    }
                })
        };
        let body = np
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some("body"))
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| err("missing subgraph `body`".into()))?
            .clone();
        let m = ints("num_scan_inputs")
            .and_then(|v| v.first().copied())
            .ok_or_else(|| err("missing `num_scan_inputs`".into()))? as usize;
        let mut inputs: Vec<Option<ValueId>> = Vec::new();
        for i in &np.input {
            inputs.push(if i.is_empty() {
                None
            } else {
                Some(
                    self.g
                        .lookup(i)
                        .ok_or_else(|| err(format!("input `{i}` is not defined")))?,
                )
            });
        }
        // Opset 8 has a leading sequence_lens input and a batch axis 0 on everything.
        let batched = self.opset < 9;
        if batched {
            if inputs.first().copied().flatten().is_some() {
                return Err(err("Scan with sequence_lens is not supported".into()));
            }
            inputs.remove(0);
        }
        let inputs: Vec<ValueId> = inputs
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| err("Scan inputs may not be omitted".into()))?;
        if inputs.len() < m {
            return Err(err(format!("{} inputs for {m} scan inputs", inputs.len())));
        }
        let n_states = inputs.len() - m;
        let k_out = body.output.len().saturating_sub(n_states);
        let axis_list = |k: &str, count: usize| -> Vec<i64> {
            let v = ints(k).unwrap_or_default();
            (0..count).map(|i| v.get(i).copied().unwrap_or(0)).collect()
        };
        let (in_axes, in_dirs, out_axes, out_dirs) = if batched {
            let dirs = axis_list("directions", m);
            (vec![0; m], dirs, vec![0; k_out], vec![0; k_out])
        } else {
            (
                axis_list("scan_input_axes", m),
                axis_list("scan_input_directions", m),
                axis_list("scan_output_axes", k_out),
                axis_list("scan_output_directions", k_out),
            )
        };
        self.settle_types(name, "Scan")?;
        let spec = ScanSpec {
            body,
            n_states,
            in_axes,
            in_dirs,
            out_axes,
            out_dirs,
        };
        let results = if batched {
            // One unrolled scan per batch entry, restacked along axis 0.
            let batch = self.known_dim(inputs[0], 0).map_err(&err)?;
            let mut per_batch: Vec<Vec<ValueId>> = Vec::new();
            for b in 0..batch {
                let sliced: Vec<ValueId> = inputs
                    .iter()
                    .map(|&v| self.take_index(name, v, 0, b as i64))
                    .collect();
                per_batch.push(self.unroll_scan(name, &spec, &sliced, &format!("{name}/b{b}"))?);
            }
            (0..n_states + k_out)
                .map(|j| {
                    let parts: Vec<ValueId> = per_batch.iter().map(|r| r[j]).collect();
                    self.stack(name, &parts, 0)
                })
                .collect()
        } else {
            self.unroll_scan(name, &spec, &inputs, name)?
        };
        self.bind_outputs(name, &np.output, &results);
        Ok(())
    }

    fn unroll_scan(
        &mut self,
        name: &str,
        spec: &ScanSpec,
        inputs: &[ValueId],
        prefix: &str,
    ) -> Res<Vec<ValueId>> {
        let opset = self.opset;
        let err = |msg: String| node_error(name, "Scan", opset, msg);
        self.settle_types(name, "Scan")?;
        let n = spec.n_states;
        let scans = &inputs[n..];
        let mut steps = None;
        let mut axes = Vec::new();
        for (i, &v) in scans.iter().enumerate() {
            let rank = self.rank_of(v).map_err(&err)?;
            let ax = tessera_ir::infer::norm_axis(spec.in_axes[i], rank).map_err(&err)?;
            let len = self.known_dim(v, ax).map_err(&err)?;
            if steps.is_some_and(|s| s != len) {
                return Err(err("scan inputs differ in sequence length".into()));
            }
            steps = Some(len);
            axes.push(ax);
        }
        let steps = steps.ok_or_else(|| err("Scan needs at least one scan input".into()))?;
        let mut states: Vec<ValueId> = inputs[..n].to_vec();
        let mut per_step: Vec<Vec<ValueId>> = Vec::new();
        for t in 0..steps {
            let mut args = states.clone();
            for (i, &v) in scans.iter().enumerate() {
                let at = if spec.in_dirs[i] != 0 {
                    steps - 1 - t
                } else {
                    t
                };
                args.push(self.take_index(name, v, axes[i], at as i64));
            }
            let outs = self.inline_graph(&spec.body, &args, &format!("{prefix}/t{t}"))?;
            states = outs[..n].to_vec();
            per_step.push(outs[n..].to_vec());
        }
        self.settle_types(name, "Scan")?;
        let mut results = states;
        for j in 0..spec.out_axes.len() {
            let mut parts: Vec<ValueId> = per_step.iter().map(|o| o[j]).collect();
            if spec.out_dirs[j] != 0 {
                parts.reverse();
            }
            let rank = self.rank_of(parts[0]).map_err(&err)? + 1;
            let ax = tessera_ir::infer::norm_axis(spec.out_axes[j], rank).map_err(&err)?;
            results.push(self.stack(name, &parts, ax));
        }
        Ok(results)
    }

    /// `Gather(v, index, axis)` with a scalar index: the slice at `index`, axis removed.
    fn take_index(&mut self, node: &str, v: ValueId, axis: usize, index: i64) -> ValueId {
        let i = self.const_input(
            node,
            "index",
            Tensor::from_i64(DType::I64, vec![], &[index]),
        );
        let out = self.g.fresh_value(&format!("{node}_slice"));
        let at = self.g.name_of(out).to_string();
        self.push(
            format!("{node}_{at}"),
            OpKind::Gather,
            [("axis".to_string(), Attr::Int(axis as i64))].into(),
            vec![Some(v), Some(i)],
            vec![out],
        );
        out
    }

    /// Stacks values along a new `axis` (Unsqueeze each, then Concat).
    fn stack(&mut self, node: &str, parts: &[ValueId], axis: usize) -> ValueId {
        let ax = self.const_input(
            node,
            "stack_axis",
            Tensor::from_i64(DType::I64, vec![1], &[axis as i64]),
        );
        let mut lifted = Vec::new();
        for &p in parts {
            let u = self.g.fresh_value(&format!("{node}_lift"));
            let un = self.g.name_of(u).to_string();
            self.push(
                format!("{node}_{un}"),
                OpKind::Unsqueeze,
                Attrs::new(),
                vec![Some(p), Some(ax)],
                vec![u],
            );
            lifted.push(Some(u));
        }
        let out = self.g.fresh_value(&format!("{node}_stacked"));
        let on = self.g.name_of(out).to_string();
        self.push(
            format!("{node}_{on}"),
            OpKind::Concat,
            [("axis".to_string(), Attr::Int(axis as i64))].into(),
            lifted,
            vec![out],
        );
        out
    }

    /// Runs lenient inference so values defined so far get their types (and folds constants).
    fn settle_types(&mut self, node: &str, op: &str) -> Res<()> {
        tessera_passes::fold::infer_and_fold(&mut self.g, tessera_passes::fold::Inference::Lenient)
            .map(|_| ())
            .map_err(|e| node_error(node, op, self.opset, e.to_string()))
    }

    fn rank_of(&mut self, v: ValueId) -> Result<usize, String> {
        self.g
            .ty(v)
            .map(|t| t.rank())
            .ok_or_else(|| format!("the type of `{}` is unknown here", self.g.name_of(v)))
    }

    fn known_dim(&mut self, v: ValueId, axis: usize) -> Result<usize, String> {
        let ty = self
            .g
            .ty(v)
            .ok_or_else(|| format!("the type of `{}` is unknown here", self.g.name_of(v)))?;
        ty.shape
            .get(axis)
            .and_then(|d| d.known())
            .ok_or_else(|| format!("Scan needs a static size for axis {axis} of {ty}"))
    }
}

fn node_error(node: &str, op: &str, opset: i64, msg: String) -> OnnxError {
    OnnxError::Node {
        node: node.to_string(),
        op: op.to_string(),
        opset,
        msg,
    }
}

/// Renames the values a node reads — including, inside its subgraphs, references to the
/// enclosing scope — by `names` (ONNX names are unique, so no shadowing to respect).
fn rename_refs(n: &mut proto::NodeProto, names: &HashMap<String, String>) {
    for inp in &mut n.input {
        if let Some(m) = names.get(inp.as_str()) {
            *inp = m.clone();
        }
    }
    for a in &mut n.attribute {
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            for inner in &mut g.node {
                rename_refs(inner, names);
            }
        }
    }
}

/// What one Scan does per step.
struct ScanSpec {
    body: proto::GraphProto,
    n_states: usize,
    in_axes: Vec<i64>,
    in_dirs: Vec<i64>,
    out_axes: Vec<i64>,
    out_dirs: Vec<i64>,
}
