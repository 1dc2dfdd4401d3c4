//! ONNX models of one node, built in code for the import tests.

#![allow(dead_code)] // each test file uses part of it

use prost::Message;
use tessera::onnx::proto::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TypeProto, ValueInfoProto,
};

/// ONNX element types used here.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

/// A value of element type `elem` and, if given, static shape `dims`.
pub fn vi(name: &str, elem: i32, dims: Option<&[usize]>) -> ValueInfoProto {
    use proto::tensor_shape_proto::{Dimension, dimension::Value};
    let shape = dims.map(|d| proto::TensorShapeProto {
        dim: d
            .iter()
            .map(|&n| Dimension {
                value: Some(Value::DimValue(n as i64)),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(elem),
                    shape,
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An int, ints, float or string attribute.
pub enum A<'a> {
    Int(i64),
    Str(&'a str),
}

pub fn attr(name: &str, value: A) -> AttributeProto {
    let mut a = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    match value {
        A::Int(i) => {
            a.r#type = Some(2);
            a.i = Some(i);
        }
        A::Str(s) => {
            a.r#type = Some(3);
            a.s = Some(s.as_bytes().to_vec());
        }
    }
    a
}

/// An int64 initializer.
pub fn ints(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(INT64),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A float initializer.
pub fn floats(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// `y = op_type(inputs…, initializers…)` (node `<op_type>_1`), the graph inputs `inputs`
/// (name, element type, shape), output `y` of element type float and unknown shape.
pub fn one_node(
    op_type: &str,
    attributes: Vec<AttributeProto>,
    inputs: &[(&str, i32, &[usize])],
    initializers: Vec<TensorProto>,
    opset: i64,
) -> Vec<u8> {
    one_node_outputs(
        op_type,
        attributes,
        inputs,
        initializers,
        opset,
        &[("y", FLOAT)],
    )
}

/// [`one_node`] with the outputs `outputs` (name, element type).
pub fn one_node_outputs(
    op_type: &str,
    attributes: Vec<AttributeProto>,
    inputs: &[(&str, i32, &[usize])],
    initializers: Vec<TensorProto>,
    opset: i64,
    outputs: &[(&str, i32)],
) -> Vec<u8> {
    let mut names: Vec<String> = inputs.iter().map(|(n, _, _)| n.to_string()).collect();
    names.extend(
        initializers
            .iter()
            .map(|t| t.name.clone().unwrap_or_default()),
    );
    let node = NodeProto {
        op_type: Some(op_type.into()),
        name: Some(format!("{}_1", op_type.to_lowercase())),
        input: names,
        output: outputs.iter().map(|(n, _)| n.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    };
    model_bytes(
        GraphProto {
            name: Some("g".into()),
            node: vec![node],
            input: inputs.iter().map(|(n, e, s)| vi(n, *e, Some(s))).collect(),
            output: outputs.iter().map(|(n, e)| vi(n, *e, None)).collect(),
            initializer: initializers,
            ..Default::default()
        },
        opset,
    )
}

/// The bytes of a model holding `graph`, importing the default domain at `opset`.
pub fn model_bytes(graph: GraphProto, opset: i64) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}
