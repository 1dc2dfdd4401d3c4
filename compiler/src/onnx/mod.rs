//! The ONNX front end: protobuf bytes → [`Graph`].
//!
//! Supports the default domain at opsets 9–21. Older op forms are upgraded to the opset-21
//! form the graph IR uses (e.g. `axes` attributes become constant inputs, `Clip`'s min/max
//! attributes become inputs, pre-13 `Softmax` becomes Flatten → Softmax → Reshape). Anything
//! unsupported is an [`OnnxError`] naming the node, its op type and the opset; malformed bytes
//! are an error, never a panic.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tessera_ir::{Attr, Attrs, DType, Dim, Graph, Node, OpKind, Tensor, ValueType};
use thiserror::Error;

/// Types generated from `onnx.proto` by prost.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

mod composed;
mod control;
mod decompose;
mod einsum;
mod recurrent;

use proto::{
    ModelProto, TensorProto, attribute_proto::AttributeType, tensor_proto::DataLocation, type_proto,
};

#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("malformed ONNX protobuf: {0}")]
    Decode(String),
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("node `{node}` ({op}, opset {opset}): {msg}")]
    Node {
        node: String,
        op: String,
        opset: i64,
        msg: String,
    },
    #[error("initializer `{name}`: {msg}")]
    Initializer { name: String, msg: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Opsets of the default domain we import.
pub const MIN_OPSET: i64 = 1;
pub const MAX_OPSET: i64 = 21;

/// Largest number of nodes, initializers or tensor elements accepted (guards hostile files).
const MAX_NODES: usize = 1 << 20;

/// Imports a model from bytes; external tensor data is not available (use [`import_file`]).
pub fn import(bytes: &[u8]) -> Result<Graph, OnnxError> {
    import_with_base(bytes, None)
}

/// Imports a model file; external tensor data is read relative to its folder.
pub fn import_file(path: &Path) -> Result<Graph, OnnxError> {
    let bytes = std::fs::read(path)?;
    import_with_base(
        &bytes,
        Some(path.parent().unwrap_or(Path::new(".")).to_path_buf()),
    )
}

pub fn import_with_base(bytes: &[u8], base: Option<PathBuf>) -> Result<Graph, OnnxError> {
    use prost::Message;
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| {
            o.domain.as_deref().unwrap_or("").is_empty() || o.domain.as_deref() == Some("ai.onnx")
        })
        .and_then(|o| o.version)
        .ok_or_else(|| OnnxError::Invalid("no opset for the default ONNX domain".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(OnnxError::Invalid(format!(
            "opset {opset} is outside the supported range {MIN_OPSET}..={MAX_OPSET}"
        )));
    }
    let gp = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Invalid("the model has no graph".into()))?;
    if gp.node.len() > MAX_NODES || gp.initializer.len() > MAX_NODES {
        return Err(OnnxError::Invalid("too many nodes or initializers".into()));
    }
    let mut im = Importer {
        g: Graph::new(gp.name.clone().unwrap_or_else(|| "model".into())),
        opset,
        base,
        names: HashSet::new(),
    };
    im.g.opset = opset;
    for t in &gp.initializer {
        let name = t.name.clone().unwrap_or_default();
        let tensor = im.tensor(t).map_err(|msg| OnnxError::Initializer {
            name: name.clone(),
            msg,
        })?;
        im.g.add_initializer(&name, tensor);
    }
    for vi in &gp.input {
        let name = vi.name.clone().unwrap_or_default();
        if im
            .g
            .lookup(&name)
            .is_some_and(|v| im.g.initializers.contains_key(&v))
        {
            continue; // old models list initializers among the inputs
        }
        let ty =
            value_type(vi).map_err(|msg| OnnxError::Invalid(format!("input `{name}`: {msg}")))?;
        im.g.add_input(&name, ty);
    }
    for (i, np) in gp.node.iter().enumerate() {
        im.node(np, i)?;
    }
    for vi in &gp.output {
        let name = vi.name.clone().unwrap_or_default();
        let v = im.g.lookup(&name).ok_or_else(|| {
            OnnxError::Invalid(format!("graph output `{name}` is never produced"))
        })?;
        im.g.outputs.push(v);
    }
    // IR errors naming a node keep the node; others describe the model.
    let named = |e: tessera_ir::IrError| match e {
        tessera_ir::IrError::Node { node, op, msg } => OnnxError::Node {
            node,
            op,
            opset,
            msg,
        },
        other => OnnxError::Invalid(other.to_string()),
    };
    im.g.verify().map_err(named)?;
    tessera_passes::fold::infer_and_fold(&mut im.g, tessera_passes::fold::Inference::Lenient)
        .map_err(named)?;
    Ok(im.g)
}

fn value_type(vi: &proto::ValueInfoProto) -> Result<ValueType, String> {
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => tt,
        _ => return Err("only tensor types are supported".into()),
    };
    let code = tt.elem_type.unwrap_or(0);
    let dtype = DType::from_onnx_code(code)
        .ok_or_else(|| format!("unsupported element type code {code}"))?;
    let mut shape = Vec::new();
    if let Some(s) = &tt.shape {
        for (i, d) in s.dim.iter().enumerate() {
            use proto::tensor_shape_proto::dimension::Value;
            shape.push(match &d.value {
                Some(Value::DimValue(n)) if *n >= 0 && (*n as u64) < (1 << 40) => {
                    Dim::Known(*n as usize)
                }
                Some(Value::DimValue(n)) => return Err(format!("dimension {i} is {n}")),
                Some(Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Sym(format!("{}_d{i}", vi.name.as_deref().unwrap_or("x"))),
            });
        }
    }
    Ok(ValueType { dtype, shape })
}

struct Importer {
    g: Graph,
    opset: i64,
    base: Option<PathBuf>,
    names: HashSet<String>,
}

impl Importer {
    fn tensor(&self, t: &TensorProto) -> Result<Tensor, String> {
        tensor_from_proto(t, self.base.as_deref())
    }
}

/// Converts a TensorProto (inline data, or external data relative to `base`) into a tensor.
pub fn tensor_from_proto(t: &TensorProto, base: Option<&Path>) -> Result<Tensor, String> {
    let code = t.data_type.unwrap_or(0);
    let dtype =
        DType::from_onnx_code(code).ok_or_else(|| format!("unsupported data type code {code}"))?;
    if t.dims.iter().any(|&d| d < 0) {
        return Err(format!("negative dimension in {:?}", t.dims));
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let n = tessera_ir::tensor::checked_numel(&shape)
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let raw: Option<Vec<u8>> = if t.data_location == Some(DataLocation::External as i32) {
        Some(external(t, base)?)
    } else {
        t.raw_data.clone()
    };
    if let Some(raw) = raw {
        return Tensor::from_bytes(dtype, shape, raw).map_err(|e| e.to_string());
    }
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!("has {len} values for {n} elements"))
        }
    };
    Ok(match dtype {
        DType::F32 => {
            check(t.float_data.len())?;
            Tensor::from_f64(
                dtype,
                shape,
                &t.float_data.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            )
        }
        DType::F64 => {
            check(t.double_data.len())?;
            Tensor::from_f64(dtype, shape, &t.double_data)
        }
        DType::I64 => {
            check(t.int64_data.len())?;
            Tensor::from_i64(dtype, shape, &t.int64_data)
        }
        DType::F16 | DType::BF16 => {
            check(t.int32_data.len())?;
            let bytes: Vec<u8> = t
                .int32_data
                .iter()
                .flat_map(|&x| (x as u16).to_le_bytes())
                .collect();
            Tensor::from_bytes(dtype, shape, bytes).map_err(|e| e.to_string())?
        }
        _ => {
            check(t.int32_data.len())?;
            Tensor::from_i64(
                dtype,
                shape,
                &t.int32_data.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            )
        }
    })
}

fn external(t: &TensorProto, base: Option<&Path>) -> Result<Vec<u8>, String> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
    };
    let loc = get("location").ok_or("external data without a location")?;
    let base = base.ok_or("external data needs the model's folder (import the file by path)")?;
    let rel = Path::new(&loc);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "external data location `{loc}` leaves the model's folder"
        ));
    }
    let bytes = std::fs::read(base.join(rel))
        .map_err(|e| format!("cannot read external data `{loc}`: {e}"))?;
    let off: usize = get("offset")
        .map(|s| s.parse().map_err(|_| format!("bad offset `{s}`")))
        .transpose()?
        .unwrap_or(0);
    let len: usize = match get("length") {
        Some(s) => s.parse().map_err(|_| format!("bad length `{s}`"))?,
        None => bytes.len().saturating_sub(off),
    };
    bytes
        .get(off..off.checked_add(len).ok_or("offset + length overflows")?)
        .map(|b| b.to_vec())
        .ok_or_else(|| format!("external data `{loc}` is shorter than offset {off} + length {len}"))
}

impl Importer {
    fn fresh_name(&mut self, base: &str) -> String {
        let mut n = base.to_string();
        let mut i = 0;
        while !self.names.insert(n.clone()) {
            i += 1;
            n = format!("{base}_{i}");
        }
        n
    }

    fn const_input(&mut self, node: &str, what: &str, t: Tensor) -> tessera_ir::ValueId {
        let v = self.g.fresh_value(&format!("{node}_{what}"));
        let name = self.g.name_of(v).to_string();
        self.g.add_initializer(&name, t)
    }

    fn push(
        &mut self,
        name: String,
        op: OpKind,
        attrs: Attrs,
        inputs: Vec<Option<tessera_ir::ValueId>>,
        outputs: Vec<tessera_ir::ValueId>,
    ) {
        self.g.add_node(Node {
            name,
            op,
            attrs,
            inputs,
            outputs,
        });
    }

    fn node(&mut self, np: &proto::NodeProto, index: usize) -> Result<(), OnnxError> {
        let op_type = np.op_type.clone().unwrap_or_default();
        let raw_name = np
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{op_type}_{index}"));
        let name = self.fresh_name(&raw_name);
        let opset = self.opset;
        let err = |msg: String| OnnxError::Node {
            node: name.clone(),
            op: op_type.clone(),
            opset,
            msg,
        };
        let domain = np.domain.clone().unwrap_or_default();
        if !domain.is_empty() && domain != "ai.onnx" {
            return Err(err(format!("domain `{domain}` is not supported")));
        }
        match op_type.as_str() {
            "If" => return self.if_node(np, &name),
            "Scan" => return self.scan_node(np, &name),
            _ => {}
        }
        let mut attrs = Attrs::new();
        for a in &np.attribute {
            let an = a.name.clone().unwrap_or_default();
            let ty = a.r#type.and_then(|t| AttributeType::try_from(t).ok());
            let val = match ty {
                Some(AttributeType::Float) => Attr::Float(a.f.unwrap_or(0.0) as f64),
                Some(AttributeType::Int) => Attr::Int(a.i.unwrap_or(0)),
                Some(AttributeType::String) => {
                    Attr::Str(String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[])).into_owned())
                }
                Some(AttributeType::Floats) => {
                    Attr::Floats(a.floats.iter().map(|&x| x as f64).collect())
                }
                Some(AttributeType::Ints) => Attr::Ints(a.ints.clone()),
                // A list of strings (an RNN's `activations`) joined by commas: no op reads
                // one as anything but a name list.
                Some(AttributeType::Strings) => Attr::Str(
                    a.strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Some(AttributeType::Tensor) => Attr::Tensor(
                    self.tensor(
                        a.t.as_ref()
                            .ok_or_else(|| err(format!("attribute `{an}` has no tensor")))?,
                    )
                    .map_err(|m| err(format!("attribute `{an}`: {m}")))?,
                ),
                Some(AttributeType::Graph | AttributeType::Graphs) => {
                    return Err(err(format!(
                        "attribute `{an}` is a subgraph: control flow (If, Loop, Scan) is not \
                         supported yet"
                    )));
                }
                other => {
                    return Err(err(format!(
                        "attribute `{an}` has unsupported type {other:?}"
                    )));
                }
            };
            attrs.insert(an, val);
        }
        let mut inputs = Vec::new();
        for i in &np.input {
            if i.is_empty() {
                inputs.push(None);
            } else {
                inputs.push(Some(self.g.lookup(i).ok_or_else(|| {
                    err(format!("input `{i}` is not defined before this node"))
                })?));
            }
        }
        let outputs: Vec<tessera_ir::ValueId> = np.output.iter().map(|o| self.g.value(o)).collect();
        if outputs.is_empty() {
            return Err(err("node has no outputs".into()));
        }
        let take = |attrs: &mut Attrs, k: &str| attrs.remove(k);
        let ints_tensor = |v: &[i64]| Tensor::from_i64(DType::I64, vec![v.len()], v);

        let out_opt: Vec<Option<tessera_ir::ValueId>> = np
            .output
            .iter()
            .zip(&outputs)
            .map(|(n, &v)| (!n.is_empty()).then_some(v))
            .collect();
        let input = |i: usize| inputs.get(i).copied().flatten();
        let attr_int = |attrs: &Attrs, k: &str, default: i64| match attrs.get(k) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        };
        // Ops that import as a few graph-IR ops (see `decompose`).
        match op_type.as_str() {
            "Mean" => {
                let xs: Vec<_> = inputs.iter().flatten().copied().collect();
                let mut d = decompose::Decomposer::new(self, &name);
                let dt = d.ty(xs[0]).map_err(err)?.dtype;
                let sum = d.op(OpKind::Sum, &xs, &[]);
                let count = d.scalar("count", dt, xs.len() as f64);
                d.op_to(OpKind::Div, &[Some(sum), Some(count)], &[], outputs[0]);
                return Ok(());
            }
            "Softmax" | "LogSoftmax" | "Hardmax" if opset < 13 => {
                // Before opset 13 these flatten to 2-D at `axis` (default 1) and work on the
                // trailing part.
                let axis = attr_int(&attrs, "axis", 1);
                let x = input(0).ok_or_else(|| err("needs an input".into()))?;
                let mut d = decompose::Decomposer::new(self, &name);
                let flat = d.op(OpKind::Flatten, &[x], &[("axis", Attr::Int(axis))]);
                let soft = d.im.g.fresh_value(&format!("{name}_soft"));
                match op_type.as_str() {
                    "Hardmax" => decompose::hardmax(&mut d, flat, -1, soft).map_err(err)?,
                    other => {
                        let op = OpKind::parse(other).expect("Softmax and LogSoftmax are IR ops");
                        d.op_to(op, &[Some(flat)], &[("axis", Attr::Int(-1))], soft);
                    }
                }
                let shape = d.op(OpKind::Shape, &[x], &[]);
                d.op_to(OpKind::Reshape, &[Some(soft), Some(shape)], &[], outputs[0]);
                return Ok(());
            }
            op if composed::handles(op) => {
                let mut d = decompose::Decomposer::new(self, &name);
                composed::compose(&mut d, op, &inputs, &attrs, &out_opt).map_err(err)?;
                return Ok(());
            }
            "Einsum" => {
                let equation = match attrs.get("equation") {
                    Some(Attr::Str(e)) => e.clone(),
                    _ => return Err(err("Einsum needs its `equation`".into())),
                };
                let operands: Vec<tessera_ir::ValueId> = inputs
                    .iter()
                    .map(|i| i.ok_or_else(|| err("an Einsum operand is missing".into())))
                    .collect::<Result<_, _>>()?;
                if operands.is_empty() {
                    return Err(err("Einsum needs an operand".into()));
                }
                let mut d = decompose::Decomposer::new(self, &name);
                einsum::einsum(&mut d, &equation, &operands, outputs[0]).map_err(err)?;
                return Ok(());
            }
            "LSTM" | "GRU" | "RNN" => {
                let cell = match op_type.as_str() {
                    "LSTM" => recurrent::Cell::Lstm,
                    "GRU" => recurrent::Cell::Gru,
                    _ => recurrent::Cell::Rnn,
                };
                let mut d = decompose::Decomposer::new(self, &name);
                recurrent::recurrent(&mut d, cell, &inputs, &attrs, &out_opt).map_err(err)?;
                return Ok(());
            }
            "Hardmax" => {
                let x = input(0).ok_or_else(|| err("Hardmax needs an input".into()))?;
                let axis = attr_int(&attrs, "axis", -1);
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::hardmax(&mut d, x, axis, outputs[0]).map_err(err)?;
                return Ok(());
            }
            "LayerNormalization" if out_opt.iter().skip(1).any(|o| o.is_some()) => {
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::layer_norm(&mut d, &inputs, &attrs, &out_opt).map_err(err)?;
                return Ok(());
            }
            "MatMulInteger" | "ConvInteger" | "QLinearMatMul" | "QLinearConv" => {
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::quantized_product(&mut d, &op_type, &inputs, &attrs, outputs[0])
                    .map_err(err)?;
                return Ok(());
            }
            "QuantizeLinear" | "DequantizeLinear" => {
                let mut d = decompose::Decomposer::new(self, &name);
                let q = op_type == "QuantizeLinear";
                decompose::quantize_linear(&mut d, q, &inputs, &attrs, outputs[0]).map_err(err)?;
                return Ok(());
            }
            "DynamicQuantizeLinear" => {
                let x = input(0).ok_or_else(|| err("needs an input".into()))?;
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::dynamic_quantize(&mut d, x, &out_opt).map_err(err)?;
                return Ok(());
            }
            "CenterCropPad" => {
                let (x, t) = (
                    input(0).ok_or_else(|| err("needs input and shape".into()))?,
                    input(1).ok_or_else(|| err("needs input and shape".into()))?,
                );
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::center_crop_pad(&mut d, x, t, &attrs, outputs[0]).map_err(err)?;
                return Ok(());
            }
            "MeanVarianceNormalization" => {
                let x = input(0).ok_or_else(|| err("needs an input".into()))?;
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::mean_variance_norm(&mut d, x, &attrs, outputs[0]).map_err(err)?;
                return Ok(());
            }
            "GroupNormalization" => {
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::group_norm(&mut d, &inputs, &attrs, opset, outputs[0]).map_err(err)?;
                return Ok(());
            }
            "BatchNormalization" if attr_int(&attrs, "training_mode", 0) != 0 => {
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::batch_norm_training(&mut d, &inputs, &attrs, &out_opt).map_err(err)?;
                return Ok(());
            }
            "Upsample" => {
                // Upsample is Resize with asymmetric coordinates and floor rounding.
                let x = input(0).ok_or_else(|| err("needs an input".into()))?;
                let mode = match attrs.get("mode") {
                    Some(Attr::Str(m)) if m == "linear" || m == "bilinear" => "linear",
                    _ => "nearest",
                };
                let mut d = decompose::Decomposer::new(self, &name);
                let scales = match (input(1), attrs.get("scales")) {
                    (Some(s), _) => s,
                    (None, Some(Attr::Floats(f))) => {
                        d.constant("scales", Tensor::from_f64(DType::F32, vec![f.len()], f))
                    }
                    _ => return Err(err("Upsample needs scales".into())),
                };
                d.op_to(
                    OpKind::Resize,
                    &[Some(x), None, Some(scales)],
                    &[
                        ("mode", Attr::Str(mode.into())),
                        (
                            "coordinate_transformation_mode",
                            Attr::Str("asymmetric".into()),
                        ),
                        ("nearest_mode", Attr::Str("floor".into())),
                    ],
                    outputs[0],
                );
                return Ok(());
            }
            "NegativeLogLikelihoodLoss" => {
                let (x, t) = (
                    input(0).ok_or_else(|| err("needs input and target".into()))?,
                    input(1).ok_or_else(|| err("needs input and target".into()))?,
                );
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::nll_loss(&mut d, x, t, input(2), &attrs, outputs[0]).map_err(err)?;
                return Ok(());
            }
            "SoftmaxCrossEntropyLoss" => {
                let (x, t) = (
                    input(0).ok_or_else(|| err("needs scores and labels".into()))?,
                    input(1).ok_or_else(|| err("needs scores and labels".into()))?,
                );
                let mut d = decompose::Decomposer::new(self, &name);
                let log_prob = match out_opt.get(1).copied().flatten() {
                    Some(v) => v,
                    None => d.im.g.fresh_value(&format!("{name}_log_prob")),
                };
                d.op_to(
                    OpKind::LogSoftmax,
                    &[Some(x)],
                    &[("axis", Attr::Int(1))],
                    log_prob,
                );
                decompose::nll_loss(&mut d, log_prob, t, input(2), &attrs, outputs[0])
                    .map_err(err)?;
                return Ok(());
            }
            _ => {}
        }
        // Ops that are not graph-IR ops but map onto them.
        match op_type.as_str() {
            "Constant" => {
                let t = if let Some(Attr::Tensor(t)) = attrs.get("value") {
                    t.clone()
                } else if let Some(Attr::Float(f)) = attrs.get("value_float") {
                    Tensor::from_f64(DType::F32, vec![], &[*f])
                } else if let Some(Attr::Int(i)) = attrs.get("value_int") {
                    Tensor::from_i64(DType::I64, vec![], &[*i])
                } else if let Some(Attr::Floats(f)) = attrs.get("value_floats") {
                    Tensor::from_f64(DType::F32, vec![f.len()], f)
                } else if let Some(Attr::Ints(i)) = attrs.get("value_ints") {
                    ints_tensor(i)
                } else {
                    return Err(err("Constant without a supported value attribute".into()));
                };
                let out = self.g.name_of(outputs[0]).to_string();
                self.g.add_initializer(&out, t);
                return Ok(());
            }
            "Split" => {
                let x = input(0).ok_or_else(|| err("Split needs an input".into()))?;
                let axis = attr_int(&attrs, "axis", 0);
                let sizes = match attrs.get("split") {
                    Some(Attr::Ints(v)) => Some(v.clone()),
                    _ => None,
                };
                let mut d = decompose::Decomposer::new(self, &name);
                decompose::split(&mut d, x, axis, input(1), sizes, &outputs).map_err(err)?;
                return Ok(());
            }
            "Dropout" => {
                if inputs.get(2).copied().flatten().is_some() {
                    return Err(err(
                        "Dropout with a training_mode input is not supported".into()
                    ));
                }
                // The mask output is dropped; a node that reads it finds it undefined and the
                // verifier names that node.
                self.push(
                    name.clone(),
                    OpKind::Identity,
                    Attrs::new(),
                    vec![inputs[0]],
                    vec![outputs[0]],
                );
                return Ok(());
            }
            _ => {}
        }
        let op_type = match op_type.as_str() {
            "Scatter" => "ScatterElements".to_string(), // its pre-11 name
            _ => op_type.clone(),
        };
        let op = OpKind::parse(&op_type)
            .filter(|k| *k != OpKind::Constant)
            .ok_or_else(|| err("unsupported operator".into()))?;
        if op.is_internal() {
            return Err(err(
                "an op tessera makes while compiling, not an ONNX operator".into(),
            ));
        }
        // Legacy attributes that carry no meaning at the opsets we accept.
        for k in ["consumed_inputs", "is_test", "spatial", "broadcast"] {
            attrs.remove(k);
        }
        if attrs.contains_key("axis")
            && matches!(op, OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div)
        {
            return Err(err("legacy broadcast with `axis` is not supported".into()));
        }
        // Upgrade attribute forms to inputs (the opset-21 form).
        let axes_became_input_at = match op {
            OpKind::Squeeze | OpKind::Unsqueeze | OpKind::ReduceSum => 13,
            OpKind::ReduceMean
            | OpKind::ReduceProd
            | OpKind::ReduceL1
            | OpKind::ReduceLogSum
            | OpKind::ReduceLogSumExp
            | OpKind::ReduceMax
            | OpKind::ReduceMin
            | OpKind::ReduceL2
            | OpKind::ReduceSumSquare => 18,
            _ => 0,
        };
        let axes_to_input = opset < axes_became_input_at;
        if axes_to_input && let Some(a) = take(&mut attrs, "axes") {
            let Attr::Ints(v) = a else {
                return Err(err("`axes` must be ints".into()));
            };
            let c = self.const_input(&name, "axes", ints_tensor(&v));
            inputs.resize(1, None);
            inputs.push(Some(c));
        }
        if op == OpKind::DFT && opset < 20 {
            // Before opset 20 the axis is an attribute (default 1).
            let axis = match take(&mut attrs, "axis") {
                Some(Attr::Int(a)) => a,
                _ => 1,
            };
            let c = self.const_input(&name, "axis", Tensor::from_i64(DType::I64, vec![], &[axis]));
            inputs.resize(2, None);
            inputs.push(Some(c));
        }
        if op == OpKind::Clip && opset < 11 {
            let lo = take(&mut attrs, "min");
            let hi = take(&mut attrs, "max");
            let dt = self
                .g
                .ty(inputs[0].unwrap())
                .map(|t| t.dtype)
                .unwrap_or(DType::F32);
            for (what, a) in [("min", lo), ("max", hi)] {
                let v = match a {
                    Some(Attr::Float(f)) => {
                        Some(self.const_input(&name, what, Tensor::from_f64(dt, vec![], &[f])))
                    }
                    _ => None,
                };
                inputs.push(v);
            }
        }
        if op == OpKind::Slice && opset < 10 {
            let mut get = |k: &str| match take(&mut attrs, k) {
                Some(Attr::Ints(v)) => Some(v),
                _ => None,
            };
            let (s, e, a) = (get("starts"), get("ends"), get("axes"));
            let (s, e) = (
                s.ok_or_else(|| err("missing `starts`".into()))?,
                e.ok_or_else(|| err("missing `ends`".into()))?,
            );
            let cs = self.const_input(&name, "starts", ints_tensor(&s));
            let ce = self.const_input(&name, "ends", ints_tensor(&e));
            inputs.push(Some(cs));
            inputs.push(Some(ce));
            if let Some(a) = a {
                let ca = self.const_input(&name, "axes", ints_tensor(&a));
                inputs.push(Some(ca));
            }
        }
        // Extra outputs the IR does not model (BatchNorm statistics, MaxPool indices,
        // LayerNorm mean/inv-std) are dropped; a node that reads one finds it undefined and
        // the verifier names that node.
        let keep = op.schema().outputs;
        self.push(
            name,
            op,
            attrs,
            inputs,
            outputs[..keep.min(outputs.len())].to_vec(),
        );
        Ok(())
    }
}
