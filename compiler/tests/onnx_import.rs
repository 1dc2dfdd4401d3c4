//! The ONNX front end on bad input: typed errors naming the node, op and opset; never a panic.

mod common;

use tessera::onnx::proto::{
    self, AttributeProto, GraphProto, NodeProto, TensorProto, ValueInfoProto,
};
use tessera::onnx::{OnnxError, import};

fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    common::vi(name, common::FLOAT, Some(&dims))
}

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, opset: i64, inits: Vec<TensorProto>) -> Vec<u8> {
    let g = GraphProto {
        name: Some("g".into()),
        node: nodes,
        input: vec![vi("x", &[2, 3])],
        output: vec![vi("y", &[2, 3])],
        initializer: inits,
        ..Default::default()
    };
    common::model_bytes(g, opset)
}

#[test]
fn a_valid_model_imports() {
    let g = import(&model(vec![node("Relu", "r", &["x"], &["y"])], 17, vec![])).unwrap();
    assert_eq!(g.node_count(), 1);
}

#[test]
fn unsupported_op_names_node_op_and_opset() {
    let err = import(&model(
        vec![node("Frobnicate", "my_node", &["x"], &["y"])],
        17,
        vec![],
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OnnxError::Node { .. }), "{msg}");
    assert!(
        msg.contains("my_node") && msg.contains("Frobnicate") && msg.contains("opset 17"),
        "{msg}"
    );
}

/// The compiler's own ops (fused kernels, Winograd steps) are no ONNX operators.
#[test]
fn internal_ops_are_refused_by_name() {
    for op in ["Fused", "WinogradInput", "WinogradOutput"] {
        let err = import(&model(vec![node(op, "sneaky", &["x"], &["y"])], 17, vec![]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sneaky") && err.contains(op) && err.contains("not an ONNX"),
            "{err}"
        );
    }
}

#[test]
fn unknown_attribute_names_node_op_and_opset() {
    let mut n = node("Relu", "relu_1", &["x"], &["y"]);
    n.attribute.push(AttributeProto {
        name: Some("flavour".into()),
        r#type: Some(2),
        i: Some(3),
        ..Default::default()
    });
    let msg = import(&model(vec![n], 13, vec![])).unwrap_err().to_string();
    assert!(
        msg.contains("relu_1")
            && msg.contains("Relu")
            && msg.contains("opset 13")
            && msg.contains("flavour"),
        "{msg}"
    );
}

#[test]
fn bad_shapes_are_errors() {
    // MatMul of [2,3] by [4,5]: inner dimensions differ.
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![4, 5],
        data_type: Some(1),
        float_data: vec![0.5; 20],
        ..Default::default()
    };
    let msg = import(&model(
        vec![node("MatMul", "mm", &["x", "w"], &["y"])],
        17,
        vec![w],
    ))
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("mm") && msg.contains("inner dimensions"),
        "{msg}"
    );
}

#[test]
fn huge_and_inconsistent_initializers_are_errors() {
    let huge = TensorProto {
        name: Some("w".into()),
        dims: vec![1 << 40, 1 << 40],
        data_type: Some(1),
        ..Default::default()
    };
    let msg = import(&model(
        vec![node("Add", "a", &["x", "w"], &["y"])],
        17,
        vec![huge],
    ))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("`w`") && msg.contains("too large"), "{msg}");
    let short = TensorProto {
        name: Some("w".into()),
        dims: vec![3],
        data_type: Some(1),
        float_data: vec![1.0],
        ..Default::default()
    };
    let msg = import(&model(
        vec![node("Add", "a", &["x", "w"], &["y"])],
        17,
        vec![short],
    ))
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("`w`") && msg.contains("1 values for 3"),
        "{msg}"
    );
    let neg = TensorProto {
        name: Some("w".into()),
        dims: vec![-3],
        data_type: Some(1),
        ..Default::default()
    };
    assert!(
        import(&model(
            vec![node("Add", "a", &["x", "w"], &["y"])],
            17,
            vec![neg]
        ))
        .is_err()
    );
}

#[test]
fn opsets_outside_the_range_are_errors() {
    let msg = import(&model(vec![node("Relu", "r", &["x"], &["y"])], 0, vec![]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("opset 0"), "{msg}");
    let msg = import(&model(vec![node("Relu", "r", &["x"], &["y"])], 99, vec![]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("opset 99"), "{msg}");
}

#[test]
fn dangling_inputs_and_missing_outputs_are_errors() {
    let msg = import(&model(
        vec![node("Relu", "r", &["nope"], &["y"])],
        17,
        vec![],
    ))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("nope") && msg.contains("`r`"), "{msg}");
    let msg = import(&model(vec![node("Relu", "r", &["x"], &["z"])], 17, vec![]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`y`"), "{msg}");
}

#[test]
fn malformed_bytes_never_panic() {
    let good = model(
        vec![
            node("Relu", "r", &["x"], &["y"]),
            node("Softmax", "s", &["y"], &["z"]),
        ],
        17,
        vec![],
    );
    assert!(matches!(
        import(b"definitely not protobuf \xff\xff\xff"),
        Err(OnnxError::Decode(_))
    ));
    assert!(import(&[]).is_err());
    // Every truncation and many single-byte corruptions: an Ok or an Err, never a panic.
    for cut in 0..good.len() {
        let _ = import(&good[..cut]);
    }
    let mut rng = tessera_ir::Rng::new(9);
    for _ in 0..2000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] = rng.next_u64() as u8;
        }
        let _ = import(&b);
    }
}

#[test]
fn legacy_forms_are_upgraded() {
    // Opset 11 ReduceMean with `axes` as an attribute; opset 9 Clip with min/max attributes.
    let mut r = node("ReduceMean", "rm", &["x"], &["y"]);
    r.attribute.push(AttributeProto {
        name: Some("axes".into()),
        r#type: Some(7),
        ints: vec![1],
        ..Default::default()
    });
    r.attribute.push(AttributeProto {
        name: Some("keepdims".into()),
        r#type: Some(2),
        i: Some(1),
        ..Default::default()
    });
    let g = import(&model(vec![r], 11, vec![])).unwrap();
    let y = g.outputs[0];
    assert_eq!(g.ty(y).unwrap().to_string(), "f32[2,1]");
    let mut c = node("Clip", "c", &["x"], &["y"]);
    c.attribute.push(AttributeProto {
        name: Some("min".into()),
        r#type: Some(1),
        f: Some(-0.5),
        ..Default::default()
    });
    let g = import(&model(vec![c], 9, vec![])).unwrap();
    let x = tessera_ir::Tensor::from_f64(
        tessera_ir::DType::F32,
        vec![2, 3],
        &[-1.0, 0.0, 1.0, -0.7, 0.2, -0.4],
    );
    let y = tessera_ir::interp::run_graph(&g, &[x]).unwrap();
    assert_eq!(
        y[0].to_f64_vec(),
        vec![-0.5, 0.0, 1.0, -0.5, 0.2f32 as f64, -0.4f32 as f64]
    );
}

#[test]
fn external_data_is_read_relative_to_the_model() {
    use tessera::onnx::proto::StringStringEntryProto;
    let dir = std::env::temp_dir().join(format!("tessera-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vals: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
    let mut blob = vec![0u8; 16]; // an offset, as exporters write several tensors per file
    blob.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(dir.join("weights.bin"), &blob).unwrap();
    let kv = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![2, 3],
        data_type: Some(1),
        data_location: Some(proto::tensor_proto::DataLocation::External as i32),
        external_data: vec![
            kv("location", "weights.bin"),
            kv("offset", "16"),
            kv("length", "24"),
        ],
        ..Default::default()
    };
    let bytes = model(
        vec![node("Add", "a", &["x", "w"], &["y"])],
        17,
        vec![w.clone()],
    );
    std::fs::write(dir.join("m.onnx"), &bytes).unwrap();
    let g = tessera::onnx::import_file(&dir.join("m.onnx")).unwrap();
    let wv = g.lookup("w").unwrap();
    assert_eq!(
        g.initializers[&wv].to_f64_vec(),
        vals.iter().map(|&v| v as f64).collect::<Vec<_>>()
    );
    // Without the folder (bytes only) and with an escaping path: typed errors.
    assert!(import(&bytes).unwrap_err().to_string().contains("`w`"));
    let mut evil = w;
    evil.external_data[0] = kv("location", "../../etc/passwd");
    let msg = import_with_dir(
        &model(vec![node("Add", "a", &["x", "w"], &["y"])], 17, vec![evil]),
        &dir,
    );
    assert!(msg.contains("leaves the model's folder"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

fn import_with_dir(bytes: &[u8], dir: &std::path::Path) -> String {
    tessera::onnx::import_with_base(bytes, Some(dir.to_path_buf()))
        .unwrap_err()
        .to_string()
}

#[test]
fn split_becomes_slices() {
    use tessera_ir::{DType, Tensor};
    let mut s = node("Split", "sp", &["x"], &["a", "b", "c"]);
    s.attribute.push(AttributeProto {
        name: Some("axis".into()),
        r#type: Some(2),
        i: Some(1),
        ..Default::default()
    });
    let cat = node("Concat", "cat", &["c", "a", "b"], &["y"]);
    let mut cat = cat;
    cat.attribute.push(AttributeProto {
        name: Some("axis".into()),
        r#type: Some(2),
        i: Some(1),
        ..Default::default()
    });
    let g = import(&model(vec![s, cat], 17, vec![])).unwrap();
    let x = Tensor::from_f64(DType::F32, vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = tessera_ir::interp::run_graph(&g, &[x]).unwrap();
    assert_eq!(y[0].to_f64_vec(), vec![3.0, 1.0, 2.0, 6.0, 4.0, 5.0]);
}

#[test]
fn huge_shapes_are_typed_errors_before_anything_is_allocated() {
    use tessera_ir::DType;
    // ConstantOfShape asking for 10^12 elements: import and compile report it, nothing allocates.
    let mut cos = node("ConstantOfShape", "big", &["shape"], &["c"]);
    cos.attribute.push(AttributeProto {
        name: Some("value".into()),
        r#type: Some(4),
        t: Some(TensorProto {
            dims: vec![1],
            data_type: Some(1),
            float_data: vec![1.0],
            ..Default::default()
        }),
        ..Default::default()
    });
    let shape = TensorProto {
        name: Some("shape".into()),
        dims: vec![2],
        data_type: Some(7),
        int64_data: vec![1_000_000, 1_000_000],
        ..Default::default()
    };
    let err = import(&model(
        vec![cos, node("Add", "a", &["x", "c"], &["y"])],
        17,
        vec![shape],
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("big") && err.contains("elements"), "{err}");
    // A graph input with absurd (but individually legal) dimensions fails at compile time.
    let mut g = tessera_ir::Graph::new("g");
    let x = g.add_input(
        "x",
        tessera_ir::ValueType::new(DType::F32, &[1 << 20, 1 << 20, 1 << 20]),
    );
    let y = g.op(tessera_ir::OpKind::Relu, &[x], Default::default());
    g.outputs.push(y);
    let err = tessera::Compiler::new(tessera::Target::host())
        .compile(&g)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("elements"), "{err}");
}

#[test]
fn recurrent_ops_refuse_what_they_do_not_unroll() {
    let weight = |name: &str, dims: &[i64]| TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(1),
        float_data: vec![0.1; dims.iter().product::<i64>() as usize],
        ..Default::default()
    };
    let lstm = |attr: Option<(&str, i64)>| {
        let mut n = node("LSTM", "lstm_7", &["x", "w", "r"], &["y"]);
        if let Some((k, v)) = attr {
            n.attribute.push(AttributeProto {
                name: Some(k.into()),
                r#type: Some(2),
                i: Some(v),
                ..Default::default()
            });
        }
        model(
            vec![n],
            14,
            vec![weight("w", &[1, 16, 3]), weight("r", &[1, 16, 4])],
        )
    };
    // X is [2, 3]: no batch axis.
    let msg = import(&lstm(None)).unwrap_err().to_string();
    assert!(
        msg.contains("lstm_7") && msg.contains("seq_length"),
        "{msg}"
    );
    let msg = import(&lstm(Some(("layout", 1)))).unwrap_err().to_string();
    assert!(msg.contains("lstm_7") && msg.contains("layout"), "{msg}");
    let msg = import(&lstm(Some(("input_forget", 1))))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("input_forget"), "{msg}");
}
