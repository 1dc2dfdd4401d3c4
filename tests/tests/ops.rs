//! Differential tests for every op: the graph interpreter vs the loop interpreter (lowered, and
//! scheduled) vs JIT-compiled code, on random inputs (never zeros) at odd sizes, with outputs
//! poisoned before every run and named tolerances.

use tessera_ir::{Attr, DType, OpKind, Rng, Tensor};
use tessera_tests::*;

const SIZES: [usize; 4] = [1, 3, 17, 127];

fn a(pairs: &[(&str, Attr)]) -> tessera_ir::Attrs {
    attrs(pairs)
}

fn run(name: &str, g: tessera_ir::Graph, tol: Tolerance) {
    let inputs = random_inputs(&g, 7);
    check_graph(name, &g, &inputs, tol);
}

/// Positive inputs (for Log, Sqrt, Pow bases).
fn run_positive(name: &str, g: tessera_ir::Graph, tol: Tolerance) {
    let inputs: Vec<Tensor> = random_inputs(&g, 11)
        .into_iter()
        .map(|t| {
            let v: Vec<f64> = t.to_f64_vec().iter().map(|x| x.abs() + 0.05).collect();
            Tensor::from_f64(t.dtype(), t.shape().to_vec(), &v)
        })
        .collect();
    check_graph(name, &g, &inputs, tol);
}

#[test]
fn unary_float_ops() {
    use OpKind::*;
    for op in [
        Relu, Sigmoid, Tanh, Erf, Gelu, Exp, Reciprocal, Neg, Abs, Floor, Ceil, LeakyRelu, Identity,
    ] {
        for n in SIZES {
            let tol = if matches!(op, Relu | Neg | Abs | Floor | Ceil | Identity) {
                Tolerance::Exact
            } else {
                REDUCTION
            };
            run(
                &format!("{op}[{n}]"),
                OneOp::new(op, a(&[])).input(DType::F32, &[2, n, 3]).build(),
                tol,
            );
        }
    }
    for op in [Log, Sqrt] {
        for n in SIZES {
            run_positive(
                &format!("{op}[{n}]"),
                OneOp::new(op, a(&[])).input(DType::F32, &[n, 5]).build(),
                REDUCTION,
            );
        }
    }
    let g = OneOp::new(Gelu, a(&[("approximate", Attr::Str("tanh".into()))]))
        .input(DType::F32, &[17, 3])
        .build();
    run("Gelu tanh", g, REDUCTION);
    let g = OneOp::new(LeakyRelu, a(&[("alpha", Attr::Float(0.3))]))
        .input(DType::F32, &[17])
        .build();
    run("LeakyRelu alpha", g, ARITH);
    for dt in [DType::F64, DType::F16] {
        run(
            &format!("Exp {dt}"),
            OneOp::new(Exp, a(&[])).input(dt, &[17]).build(),
            Tolerance::Close {
                rtol: 2e-3,
                atol: 1e-3,
            },
        );
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    use OpKind::*;
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[17], &[17]),
        (&[3, 17], &[17]),
        (&[17, 1], &[1, 5]),
        (&[2, 3, 127], &[2, 1, 127]),
        (&[1], &[3, 1, 2]),
    ];
    for op in [Add, Sub, Mul, Div, Max, Min] {
        for (sa, sb) in shapes {
            run(
                &format!("{op}{sa:?}{sb:?}"),
                OneOp::new(op, a(&[]))
                    .input(DType::F32, sa)
                    .input(DType::F32, sb)
                    .build(),
                ARITH,
            );
        }
    }
    for (sa, sb) in shapes {
        run_positive(
            &format!("Pow{sa:?}{sb:?}"),
            OneOp::new(Pow, a(&[]))
                .input(DType::F32, sa)
                .input(DType::F32, sb)
                .build(),
            REDUCTION,
        );
    }
    for op in [Equal, Less, Greater] {
        run(
            &format!("{op}"),
            OneOp::new(op, a(&[]))
                .input(DType::F32, &[3, 17])
                .input(DType::F32, &[17])
                .build(),
            Tolerance::Exact,
        );
    }
    for op in [And, Or] {
        run(
            &format!("{op}"),
            OneOp::new(op, a(&[]))
                .input(DType::Bool, &[3, 17])
                .input(DType::Bool, &[3, 1])
                .build(),
            Tolerance::Exact,
        );
    }
    run(
        "Not",
        OneOp::new(Not, a(&[])).input(DType::Bool, &[17]).build(),
        Tolerance::Exact,
    );
    run(
        "Sum3",
        OneOp::new(Sum, a(&[]))
            .input(DType::F32, &[3, 17])
            .input(DType::F32, &[17])
            .input(DType::F32, &[3, 1])
            .build(),
        ARITH,
    );
    run(
        "Where",
        OneOp::new(Where, a(&[]))
            .input(DType::Bool, &[3, 17])
            .input(DType::F32, &[17])
            .input(DType::F32, &[3, 1])
            .build(),
        Tolerance::Exact,
    );
    for dt in [DType::I64, DType::I32, DType::U8, DType::I8] {
        for op in [Add, Sub, Mul, Max, Min] {
            run(
                &format!("{op} {dt}"),
                OneOp::new(op, a(&[]))
                    .input(dt, &[3, 17])
                    .input(dt, &[17])
                    .build(),
                Tolerance::Exact,
            );
        }
        run(
            &format!("Div {dt}"),
            OneOp::new(Div, a(&[]))
                .input(dt, &[3, 17])
                .input(dt, &[17])
                .build(),
            Tolerance::Exact,
        );
    }
    run(
        "Abs i64",
        OneOp::new(Abs, a(&[])).input(DType::I64, &[17]).build(),
        Tolerance::Exact,
    );
    run(
        "Neg i32",
        OneOp::new(Neg, a(&[])).input(DType::I32, &[17]).build(),
        Tolerance::Exact,
    );
    run(
        "Add f64",
        OneOp::new(Add, a(&[]))
            .input(DType::F64, &[17])
            .input(DType::F64, &[1])
            .build(),
        Tolerance::Exact,
    );
}

#[test]
fn clip_and_cast() {
    let lo = Tensor::from_f64(DType::F32, vec![], &[-0.3]);
    let hi = Tensor::from_f64(DType::F32, vec![], &[0.4]);
    run(
        "Clip both",
        OneOp::new(OpKind::Clip, a(&[]))
            .input(DType::F32, &[3, 17])
            .constant(lo.clone())
            .constant(hi.clone())
            .build(),
        Tolerance::Exact,
    );
    run(
        "Clip max only",
        OneOp::new(OpKind::Clip, a(&[]))
            .input(DType::F32, &[17])
            .none()
            .constant(hi)
            .build(),
        Tolerance::Exact,
    );
    run(
        "Clip runtime bounds",
        OneOp::new(OpKind::Clip, a(&[]))
            .input(DType::F32, &[17])
            .input(DType::F32, &[])
            .build(),
        Tolerance::Exact,
    );
    for (from, to) in [
        (DType::F32, DType::I32),
        (DType::F32, DType::I64),
        (DType::I64, DType::F32),
        (DType::F32, DType::Bool),
        (DType::Bool, DType::F32),
        (DType::F32, DType::F16),
        (DType::F16, DType::F32),
        (DType::F32, DType::F64),
        (DType::I32, DType::I8),
        (DType::U8, DType::I64),
        (DType::F32, DType::BF16),
    ] {
        let g = OneOp::new(OpKind::Cast, a(&[("to", Attr::Int(to.onnx_code() as i64))]))
            .input(from, &[3, 17])
            .build();
        run(&format!("Cast {from}->{to}"), g, Tolerance::Exact);
    }
}

#[test]
fn matmul_and_gemm() {
    for m in [1, 3, 17] {
        for k in [1, 3, 127] {
            for n in [1, 5, 17] {
                run(
                    &format!("MatMul {m}x{k}x{n}"),
                    OneOp::new(OpKind::MatMul, a(&[]))
                        .input(DType::F32, &[m, k])
                        .input(DType::F32, &[k, n])
                        .build(),
                    REDUCTION,
                );
            }
        }
    }
    let cases: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 17], &[17, 5]),
        (&[2, 1, 3, 17], &[3, 17, 4]),
        (&[17], &[17, 3]),
        (&[3, 17], &[17]),
        (&[2, 3, 4], &[2, 4, 5]),
    ];
    for (sa, sb) in cases {
        run(
            &format!("MatMul {sa:?}x{sb:?}"),
            OneOp::new(OpKind::MatMul, a(&[]))
                .input(DType::F32, sa)
                .input(DType::F32, sb)
                .build(),
            REDUCTION,
        );
    }
    for ta in [0, 1] {
        for tb in [0, 1] {
            let (sa, sb): (&[usize], &[usize]) = (
                if ta == 1 { &[17, 3] } else { &[3, 17] },
                if tb == 1 { &[5, 17] } else { &[17, 5] },
            );
            let at = a(&[
                ("transA", Attr::Int(ta)),
                ("transB", Attr::Int(tb)),
                ("alpha", Attr::Float(0.7)),
                ("beta", Attr::Float(1.3)),
            ]);
            run(
                &format!("Gemm t{ta}{tb} C[5]"),
                OneOp::new(OpKind::Gemm, at.clone())
                    .input(DType::F32, sa)
                    .input(DType::F32, sb)
                    .input(DType::F32, &[5])
                    .build(),
                REDUCTION,
            );
            run(
                &format!("Gemm t{ta}{tb} C[3,5]"),
                OneOp::new(OpKind::Gemm, at.clone())
                    .input(DType::F32, sa)
                    .input(DType::F32, sb)
                    .input(DType::F32, &[3, 5])
                    .build(),
                REDUCTION,
            );
            run(
                &format!("Gemm t{ta}{tb} no C"),
                OneOp::new(OpKind::Gemm, at)
                    .input(DType::F32, sa)
                    .input(DType::F32, sb)
                    .build(),
                REDUCTION,
            );
        }
    }
}

#[test]
fn conv() {
    struct C {
        x: [usize; 4],
        w: [usize; 4],
        attrs: Vec<(&'static str, Attr)>,
        bias: bool,
    }
    let i = |v: &[i64]| Attr::Ints(v.to_vec());
    let cases = vec![
        C {
            x: [1, 3, 17, 17],
            w: [5, 3, 3, 3],
            attrs: vec![],
            bias: true,
        },
        C {
            x: [2, 4, 9, 11],
            w: [6, 2, 3, 3],
            attrs: vec![("group", Attr::Int(2)), ("pads", i(&[1, 1, 1, 1]))],
            bias: true,
        },
        C {
            x: [1, 3, 17, 13],
            w: [4, 3, 3, 5],
            attrs: vec![
                ("strides", i(&[2, 3])),
                ("pads", i(&[1, 2, 0, 1])),
                ("dilations", i(&[2, 1])),
            ],
            bias: false,
        },
        C {
            x: [1, 4, 7, 7],
            w: [4, 1, 3, 3],
            attrs: vec![
                ("group", Attr::Int(4)),
                ("auto_pad", Attr::Str("SAME_UPPER".into())),
            ],
            bias: true,
        },
        C {
            x: [1, 2, 1, 1],
            w: [3, 2, 1, 1],
            attrs: vec![],
            bias: true,
        },
        C {
            x: [1, 8, 5, 5],
            w: [16, 8, 1, 1],
            attrs: vec![("strides", i(&[2, 2]))],
            bias: false,
        },
    ];
    for c in cases {
        let name = format!(
            "Conv x{:?} w{:?} {:?}",
            c.x,
            c.w,
            c.attrs.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        let mut b = OneOp::new(OpKind::Conv, a(&c.attrs))
            .input(DType::F32, &c.x)
            .input(DType::F32, &c.w);
        if c.bias {
            b = b.input(DType::F32, &[c.w[0]]);
        }
        run(&name, b.build(), REDUCTION);
    }
}

#[test]
fn pooling_and_normalization() {
    let i = |v: &[i64]| Attr::Ints(v.to_vec());
    let pools = [
        vec![("kernel_shape", i(&[2, 2])), ("strides", i(&[2, 2]))],
        vec![
            ("kernel_shape", i(&[3, 3])),
            ("strides", i(&[2, 2])),
            ("pads", i(&[1, 1, 1, 1])),
        ],
        vec![
            ("kernel_shape", i(&[3, 2])),
            ("strides", i(&[2, 1])),
            ("ceil_mode", Attr::Int(1)),
        ],
        vec![
            ("kernel_shape", i(&[3, 3])),
            ("pads", i(&[1, 1, 1, 1])),
            ("count_include_pad", Attr::Int(1)),
        ],
        vec![("kernel_shape", i(&[2, 2])), ("dilations", i(&[2, 2]))],
    ];
    for (k, p) in pools.iter().enumerate() {
        for op in [OpKind::MaxPool, OpKind::AveragePool] {
            if op == OpKind::AveragePool && p.iter().any(|x| x.0 == "dilations") {
                continue;
            }
            run(
                &format!("{op} case {k}"),
                OneOp::new(op, a(p))
                    .input(DType::F32, &[2, 3, 17, 11])
                    .build(),
                REDUCTION,
            );
        }
    }
    run(
        "GlobalAveragePool",
        OneOp::new(OpKind::GlobalAveragePool, a(&[]))
            .input(DType::F32, &[2, 3, 17, 5])
            .build(),
        REDUCTION,
    );
    let g = OneOp::new(
        OpKind::BatchNormalization,
        a(&[("epsilon", Attr::Float(1e-3))]),
    )
    .input(DType::F32, &[2, 3, 5, 7])
    .input(DType::F32, &[3])
    .input(DType::F32, &[3])
    .input(DType::F32, &[3])
    .constant(Tensor::from_f64(DType::F32, vec![3], &[0.5, 1.0, 2.0]))
    .build();
    run("BatchNormalization", g, REDUCTION);
    for (axis, shape) in [
        (-1i64, vec![3, 17]),
        (1, vec![2, 3, 17]),
        (-2, vec![2, 5, 127]),
    ] {
        let norm: Vec<usize> = shape[(axis.rem_euclid(shape.len() as i64)) as usize..].to_vec();
        let g = OneOp::new(OpKind::LayerNormalization, a(&[("axis", Attr::Int(axis))]))
            .input(DType::F32, &shape)
            .input(DType::F32, &norm)
            .input(DType::F32, &norm)
            .build();
        run(&format!("LayerNorm axis {axis}"), g, REDUCTION);
    }
    let g = OneOp::new(OpKind::LayerNormalization, a(&[]))
        .input(DType::F32, &[3, 17])
        .input(DType::F32, &[17])
        .build();
    run("LayerNorm no bias", g, REDUCTION);
    for axis in [-1i64, 0, 1] {
        run(
            &format!("Softmax axis {axis}"),
            OneOp::new(OpKind::Softmax, a(&[("axis", Attr::Int(axis))]))
                .input(DType::F32, &[3, 17, 5])
                .build(),
            REDUCTION,
        );
    }
    let lrn = a(&[
        ("size", Attr::Int(3)),
        ("alpha", Attr::Float(0.01)),
        ("beta", Attr::Float(0.75)),
        ("bias", Attr::Float(1.5)),
    ]);
    run(
        "LRN",
        OneOp::new(OpKind::LRN, lrn)
            .input(DType::F32, &[2, 5, 3, 3])
            .build(),
        REDUCTION,
    );
}

#[test]
fn reductions() {
    for op in [OpKind::ReduceSum, OpKind::ReduceMean, OpKind::ReduceMax] {
        for (axes, keep) in [
            (vec![1i64], 1i64),
            (vec![0, 2], 0),
            (vec![-1], 1),
            (vec![], 0),
        ] {
            let mut b =
                OneOp::new(op, a(&[("keepdims", Attr::Int(keep))])).input(DType::F32, &[3, 17, 5]);
            if !axes.is_empty() {
                b = b.ints(&axes);
            }
            run(
                &format!("{op} axes {axes:?} keep {keep}"),
                b.build(),
                REDUCTION,
            );
        }
    }
    let g = OneOp::new(OpKind::ReduceMax, a(&[]))
        .input(DType::I32, &[3, 17])
        .ints(&[1])
        .build();
    run("ReduceMax i32", g, Tolerance::Exact);
    let g = OneOp::new(OpKind::ReduceSum, a(&[]))
        .input(DType::I64, &[3, 17])
        .ints(&[0])
        .build();
    run("ReduceSum i64", g, Tolerance::Exact);
}

#[test]
fn data_movement() {
    use OpKind::*;
    run(
        "Reshape",
        OneOp::new(Reshape, a(&[]))
            .input(DType::F32, &[3, 17, 2])
            .ints(&[0, -1])
            .build(),
        Tolerance::Exact,
    );
    run(
        "Flatten",
        OneOp::new(Flatten, a(&[("axis", Attr::Int(2))]))
            .input(DType::F32, &[3, 17, 2, 5])
            .build(),
        Tolerance::Exact,
    );
    run(
        "Squeeze",
        OneOp::new(Squeeze, a(&[]))
            .input(DType::F32, &[3, 1, 17, 1])
            .ints(&[1, -1])
            .build(),
        Tolerance::Exact,
    );
    run(
        "Squeeze all",
        OneOp::new(Squeeze, a(&[]))
            .input(DType::F32, &[1, 17, 1])
            .build(),
        Tolerance::Exact,
    );
    run(
        "Unsqueeze",
        OneOp::new(Unsqueeze, a(&[]))
            .input(DType::F32, &[3, 17])
            .ints(&[0, 3])
            .build(),
        Tolerance::Exact,
    );
    run(
        "Identity i64",
        OneOp::new(Identity, a(&[]))
            .input(DType::I64, &[17])
            .build(),
        Tolerance::Exact,
    );
    for perm in [vec![1i64, 0, 2], vec![2, 0, 1], vec![0, 2, 1]] {
        run(
            &format!("Transpose {perm:?}"),
            OneOp::new(Transpose, a(&[("perm", Attr::Ints(perm.clone()))]))
                .input(DType::F32, &[3, 17, 5])
                .build(),
            Tolerance::Exact,
        );
    }
    run(
        "Transpose default",
        OneOp::new(Transpose, a(&[]))
            .input(DType::U8, &[3, 17])
            .build(),
        Tolerance::Exact,
    );
    for axis in [0i64, 1, -1] {
        let g = OneOp::new(Concat, a(&[("axis", Attr::Int(axis))]))
            .input(DType::F32, &[3, 17, 5])
            .input(DType::F32, &[3, 17, 5])
            .input(DType::F32, &[3, 17, 5])
            .build();
        run(&format!("Concat axis {axis}"), g, Tolerance::Exact);
    }
    let g = OneOp::new(Concat, a(&[("axis", Attr::Int(1))]))
        .input(DType::F32, &[2, 3])
        .input(DType::F32, &[2, 1])
        .input(DType::F32, &[2, 17])
        .build();
    run("Concat uneven", g, Tolerance::Exact);
    // (starts, ends, axes, steps)
    type SliceCase = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);
    let slices: Vec<SliceCase> = vec![
        (vec![1], vec![16], Some(vec![1]), None),
        (vec![0, 2], vec![3, -1], Some(vec![0, 1]), Some(vec![2, 3])),
        (vec![-1], vec![-100], Some(vec![1]), Some(vec![-2])),
        (vec![2, 1], vec![100, 3], None, None),
    ];
    for (k, (s, e, ax, st)) in slices.into_iter().enumerate() {
        let mut b = OneOp::new(Slice, a(&[]))
            .input(DType::F32, &[3, 17, 5])
            .ints(&s)
            .ints(&e);
        b = match &ax {
            Some(x) => b.ints(x),
            None => b.none(),
        };
        if let Some(st) = &st {
            b = b.ints(st);
        }
        run(&format!("Slice case {k}"), b.build(), Tolerance::Exact);
    }
    let idx = Tensor::from_i64(DType::I64, vec![2, 3], &[0, 2, -1, 1, -3, 2]);
    run(
        "Gather axis 0",
        OneOp::new(Gather, a(&[]))
            .input(DType::F32, &[3, 17])
            .constant(idx.clone())
            .build(),
        Tolerance::Exact,
    );
    run(
        "Gather axis 1",
        OneOp::new(Gather, a(&[("axis", Attr::Int(1))]))
            .input(DType::F32, &[2, 3, 5])
            .constant(idx)
            .build(),
        Tolerance::Exact,
    );
    let emb = OneOp::new(Gather, a(&[]))
        .input(DType::F32, &[17, 5])
        .input(DType::I64, &[4])
        .build();
    let mut rng = Rng::new(3);
    let inputs = vec![
        rng.tensor(DType::F32, vec![17, 5]),
        Tensor::from_i64(DType::I64, vec![4], &[16, 0, -17, 5]),
    ];
    check_graph("Gather runtime indices", &emb, &inputs, Tolerance::Exact);
    run(
        "Expand",
        OneOp::new(Expand, a(&[]))
            .input(DType::F32, &[3, 1])
            .ints(&[2, 3, 17])
            .build(),
        Tolerance::Exact,
    );
}

#[test]
fn constant_producing_ops_fold() {
    use OpKind::*;
    let v = Tensor::from_f64(DType::F32, vec![1], &[2.5]);
    let g = OneOp::new(ConstantOfShape, a(&[("value", Attr::Tensor(v))]))
        .ints(&[3, 17])
        .build();
    check_graph("ConstantOfShape", &g, &[], Tolerance::Exact);
    let g = OneOp::new(Shape, a(&[("start", Attr::Int(1))]))
        .input(DType::F32, &[3, 17, 5])
        .build();
    let inputs = random_inputs(&g, 1);
    check_graph("Shape", &g, &inputs, Tolerance::Exact);
    let c = Tensor::from_f64(DType::F32, vec![2], &[1.0, -2.0]);
    let g = OneOp::new(Constant, a(&[("value", Attr::Tensor(c))])).build();
    check_graph("Constant", &g, &[], Tolerance::Exact);
}

#[test]
fn activation_and_shape_ops_of_exported_models() {
    use OpKind::*;
    for op in [Sin, Cos, Softplus, HardSigmoid, HardSwish] {
        for n in [1, 17, 127] {
            run(
                &format!("{op}[{n}]"),
                OneOp::new(op, a(&[])).input(DType::F32, &[3, n]).build(),
                REDUCTION,
            );
        }
    }
    let g = OneOp::new(
        HardSigmoid,
        a(&[("alpha", Attr::Float(0.3)), ("beta", Attr::Float(0.4))]),
    )
    .input(DType::F32, &[17])
    .build();
    run("HardSigmoid attrs", g, ARITH);
    run(
        "PRelu channel",
        OneOp::new(PRelu, a(&[]))
            .input(DType::F32, &[2, 3, 5])
            .input(DType::F32, &[3, 1])
            .build(),
        ARITH,
    );
    run(
        "PRelu scalar",
        OneOp::new(PRelu, a(&[]))
            .input(DType::F32, &[17])
            .input(DType::F32, &[1])
            .build(),
        ARITH,
    );
    let scalar = |dt: DType, v: f64| Tensor::from_f64(dt, vec![], &[v]);
    for (dt, s, l, d) in [
        (DType::F32, 0.5, 7.3, 0.75),
        (DType::I64, 10.0, -3.0, -4.0),
        (DType::I32, 0.0, 17.0, 1.0),
    ] {
        let g = OneOp::new(Range, a(&[]))
            .constant(scalar(dt, s))
            .constant(scalar(dt, l))
            .constant(scalar(dt, d))
            .build();
        check_graph(&format!("Range {dt}"), &g, &[], Tolerance::Exact);
    }
    for mode in ["constant", "edge", "reflect"] {
        let g = OneOp::new(Pad, a(&[("mode", Attr::Str(mode.into()))]))
            .input(DType::F32, &[3, 17, 5])
            .ints(&[0, 2, 1, 1, 3, 2])
            .constant(scalar(DType::F32, 0.25))
            .build();
        run(&format!("Pad {mode}"), g, Tolerance::Exact);
    }
    let g = OneOp::new(Pad, a(&[]))
        .input(DType::F32, &[3, 17])
        .ints(&[1, 2])
        .none()
        .ints(&[-1])
        .build();
    run("Pad axes", g, Tolerance::Exact);
    let g = OneOp::new(Pad, a(&[]))
        .input(DType::F32, &[3, 17])
        .ints(&[0, -2, 0, -3])
        .build();
    run("Pad negative (crop)", g, Tolerance::Exact);
    run(
        "Tile",
        OneOp::new(Tile, a(&[]))
            .input(DType::F32, &[3, 1, 5])
            .ints(&[2, 17, 1])
            .build(),
        Tolerance::Exact,
    );
}

#[test]
fn more_activations_reductions_and_instance_norm() {
    use OpKind::*;
    for op in [Elu, Selu, Celu] {
        run(
            &format!("{op}"),
            OneOp::new(op, a(&[])).input(DType::F32, &[3, 17]).build(),
            REDUCTION,
        );
    }
    run(
        "Elu alpha",
        OneOp::new(Elu, a(&[("alpha", Attr::Float(0.5))]))
            .input(DType::F32, &[17])
            .build(),
        REDUCTION,
    );
    run(
        "Celu alpha",
        OneOp::new(Celu, a(&[("alpha", Attr::Float(2.0))]))
            .input(DType::F32, &[17])
            .build(),
        REDUCTION,
    );
    for op in [ReduceMin, ReduceL2, ReduceSumSquare] {
        for (axes, keep) in [(vec![1i64], 1i64), (vec![0, 2], 0)] {
            let g = OneOp::new(op, a(&[("keepdims", Attr::Int(keep))]))
                .input(DType::F32, &[3, 17, 5])
                .ints(&axes)
                .build();
            run(&format!("{op} {axes:?}"), g, REDUCTION);
        }
    }
    run(
        "ReduceMin i64",
        OneOp::new(ReduceMin, a(&[]))
            .input(DType::I64, &[3, 17])
            .ints(&[1])
            .build(),
        Tolerance::Exact,
    );
    let g = OneOp::new(InstanceNormalization, a(&[("epsilon", Attr::Float(1e-3))]))
        .input(DType::F32, &[2, 3, 5, 7])
        .input(DType::F32, &[3])
        .input(DType::F32, &[3])
        .build();
    run("InstanceNormalization", g, REDUCTION);
}

#[test]
fn trilu_and_cumsum() {
    use OpKind::*;
    for (upper, k) in [(1i64, 0i64), (0, 0), (1, 2), (0, -1)] {
        let g = OneOp::new(Trilu, a(&[("upper", Attr::Int(upper))]))
            .input(DType::F32, &[2, 5, 17])
            .constant(Tensor::from_i64(DType::I64, vec![], &[k]))
            .build();
        run(&format!("Trilu upper={upper} k={k}"), g, Tolerance::Exact);
    }
    run(
        "Trilu default",
        OneOp::new(Trilu, a(&[])).input(DType::I64, &[4, 4]).build(),
        Tolerance::Exact,
    );
    for axis in [0i64, 1, -1] {
        for (ex, rev) in [(0i64, 0i64), (1, 0), (0, 1), (1, 1)] {
            let g = OneOp::new(
                CumSum,
                a(&[("exclusive", Attr::Int(ex)), ("reverse", Attr::Int(rev))]),
            )
            .input(DType::F32, &[3, 17, 5])
            .constant(Tensor::from_i64(DType::I64, vec![], &[axis]))
            .build();
            run(
                &format!("CumSum axis {axis} exclusive {ex} reverse {rev}"),
                g,
                REDUCTION,
            );
        }
    }
    // Long enough to be split across threads if the scan were (wrongly) parallelised.
    let g = OneOp::new(CumSum, a(&[]))
        .input(DType::I32, &[70_000])
        .constant(Tensor::from_i64(DType::I64, vec![], &[0]))
        .build();
    run(
        "CumSum 1-D i32 (a serial scan, never parallel)",
        g,
        Tolerance::Exact,
    );
}

#[test]
fn argmax_and_argmin() {
    use OpKind::*;
    for op in [ArgMax, ArgMin] {
        for (axis, keep, last) in [(1i64, 1i64, 0i64), (-1, 0, 0), (0, 1, 1)] {
            for dt in [DType::F32, DType::I32] {
                let at = a(&[
                    ("axis", Attr::Int(axis)),
                    ("keepdims", Attr::Int(keep)),
                    ("select_last_index", Attr::Int(last)),
                ]);
                // Integer inputs repeat values, so ties (and select_last_index) matter.
                run(
                    &format!("{op} {dt} axis {axis} keep {keep} last {last}"),
                    OneOp::new(op, at).input(dt, &[3, 17, 5]).build(),
                    Tolerance::Exact,
                );
            }
        }
    }
}

#[test]
fn resize() {
    use OpKind::*;
    let scales = |v: &[f64]| Tensor::from_f64(DType::F32, vec![v.len()], v);
    let sizes = |v: &[i64]| Tensor::from_i64(DType::I64, vec![v.len()], v);
    for mode in ["nearest", "linear"] {
        for coord in [
            "half_pixel",
            "asymmetric",
            "align_corners",
            "pytorch_half_pixel",
        ] {
            for nearest in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"] {
                if mode == "linear" && nearest != "round_prefer_floor" {
                    continue;
                }
                let at = a(&[
                    ("mode", Attr::Str(mode.into())),
                    ("coordinate_transformation_mode", Attr::Str(coord.into())),
                    ("nearest_mode", Attr::Str(nearest.into())),
                ]);
                let up = OneOp::new(Resize, at.clone())
                    .input(DType::F32, &[1, 2, 5, 3])
                    .none()
                    .constant(scales(&[1.0, 1.0, 2.0, 3.0]))
                    .build();
                run(
                    &format!("Resize {mode} {coord} {nearest} x2x3"),
                    up,
                    REDUCTION,
                );
                let odd = OneOp::new(Resize, at)
                    .input(DType::F32, &[2, 3, 17])
                    .none()
                    .none()
                    .constant(sizes(&[2, 3, 7]))
                    .build();
                run(
                    &format!("Resize {mode} {coord} {nearest} to 7"),
                    odd,
                    REDUCTION,
                );
            }
        }
    }
}

#[test]
fn conv_transpose() {
    let i = |v: &[i64]| Attr::Ints(v.to_vec());
    // (input shape, weight shape, attributes, with bias)
    type Case = ([usize; 4], [usize; 4], Vec<(&'static str, Attr)>, bool);
    let cases: Vec<Case> = vec![
        ([1, 3, 5, 4], [3, 2, 3, 3], vec![], true),
        (
            [1, 4, 5, 5],
            [4, 3, 3, 3],
            vec![
                ("strides", i(&[2, 2])),
                ("pads", i(&[1, 1, 1, 1])),
                ("output_padding", i(&[1, 1])),
            ],
            false,
        ),
        (
            [2, 4, 3, 6],
            [4, 1, 2, 4],
            vec![
                ("group", Attr::Int(2)),
                ("strides", i(&[3, 2])),
                ("dilations", i(&[2, 1])),
            ],
            true,
        ),
        (
            [1, 2, 4, 4],
            [2, 2, 4, 4],
            vec![("strides", i(&[2, 2])), ("output_shape", i(&[8, 8]))],
            false,
        ),
        (
            [1, 2, 5, 3],
            [2, 3, 3, 3],
            vec![
                ("auto_pad", Attr::Str("SAME_UPPER".into())),
                ("strides", i(&[2, 2])),
            ],
            true,
        ),
    ];
    for (x, w, at, bias) in cases {
        let name = format!(
            "ConvTranspose x{x:?} w{w:?} {:?}",
            at.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        let group = at
            .iter()
            .find(|p| p.0 == "group")
            .map(|p| {
                if let Attr::Int(g) = p.1 {
                    g as usize
                } else {
                    1
                }
            })
            .unwrap_or(1);
        let mut b = OneOp::new(OpKind::ConvTranspose, a(&at))
            .input(DType::F32, &x)
            .input(DType::F32, &w);
        if bias {
            b = b.input(DType::F32, &[w[1] * group]);
        }
        run(&name, b.build(), REDUCTION);
        // A constant weight (one group): legalised into a product and a Col2Im, the bias
        // and a ReLU fused into the Col2Im.
        let mut b = OneOp::new(OpKind::ConvTranspose, a(&at))
            .input(DType::F32, &x)
            .constant(odd_values(&w));
        if bias {
            b = b.input(DType::F32, &[w[1] * group]);
        }
        let mut g = b.build();
        let out = g.outputs[0];
        let relu = g.op(OpKind::Relu, &[out], Default::default());
        g.outputs = vec![relu];
        let prepared = tessera_passes::fold::prepare(&g, &Default::default()).unwrap();
        let ops: Vec<OpKind> = prepared.nodes().map(|(_, n)| n.op).collect();
        assert_eq!(
            ops.contains(&OpKind::ConvTranspose),
            group != 1,
            "{name}: {ops:?}"
        );
        run(&format!("{name}, constant weight, ReLU"), g, REDUCTION);
    }
}

/// [`spread_values`] from the first.
fn odd_values(shape: &[usize]) -> Tensor {
    spread_values(shape, 0)
}

#[test]
fn one_dimensional_windows() {
    let i = |v: &[i64]| Attr::Ints(v.to_vec());
    // (input, weight, attributes): Conv, its weight as an input and as a constant.
    type Case = ([usize; 3], [usize; 3], Vec<(&'static str, Attr)>);
    let convs: Vec<Case> = vec![
        ([1, 5, 37], [7, 5, 3], vec![("pads", i(&[1, 1]))]),
        (
            [2, 4, 40],
            [6, 2, 5],
            vec![
                ("group", Attr::Int(2)),
                ("strides", i(&[2])),
                ("dilations", i(&[2])),
                ("pads", i(&[3, 1])),
            ],
        ),
        (
            [1, 3, 19],
            [3, 1, 4],
            vec![
                ("group", Attr::Int(3)),
                ("auto_pad", Attr::Str("SAME_UPPER".into())),
                ("strides", i(&[3])),
            ],
        ),
    ];
    for (x, w, at) in convs {
        let name = format!(
            "Conv1d x{x:?} w{w:?} {:?}",
            at.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        let g = OneOp::new(OpKind::Conv, a(&at))
            .input(DType::F32, &x)
            .input(DType::F32, &w)
            .input(DType::F32, &[w[0]])
            .build();
        run(&name, g, REDUCTION);
        let g = OneOp::new(OpKind::Conv, a(&at))
            .input(DType::F32, &x)
            .constant(odd_values(&w))
            .build();
        let prepared = tessera_passes::fold::prepare(&g, &Default::default()).unwrap();
        assert!(
            prepared.nodes().all(|(_, n)| n.op != OpKind::Conv
                || prepared.ty(n.inputs[0].unwrap()).unwrap().rank() == 4),
            "{name}: a 1-D Conv is left after legalisation"
        );
        run(&format!("{name}, constant weight"), g, REDUCTION);
    }
    let pools: Vec<(OpKind, Vec<(&'static str, Attr)>)> = vec![
        (
            OpKind::MaxPool,
            vec![
                ("kernel_shape", i(&[3])),
                ("strides", i(&[2])),
                ("pads", i(&[1, 1])),
            ],
        ),
        (
            OpKind::MaxPool,
            vec![
                ("kernel_shape", i(&[2])),
                ("ceil_mode", Attr::Int(1)),
                ("strides", i(&[2])),
            ],
        ),
        (
            OpKind::AveragePool,
            vec![
                ("kernel_shape", i(&[4])),
                ("pads", i(&[2, 1])),
                ("count_include_pad", Attr::Int(1)),
            ],
        ),
        (
            OpKind::AveragePool,
            vec![("kernel_shape", i(&[3])), ("pads", i(&[1, 1]))],
        ),
    ];
    for (op, at) in pools {
        let name = format!(
            "{op:?} 1-D {:?}",
            at.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        let g = OneOp::new(op, a(&at))
            .input(DType::F32, &[2, 3, 29])
            .build();
        run(&name, g, REDUCTION);
    }
}

#[test]
fn depth_to_space_and_back() {
    let block = |b: i64, mode: &str| {
        a(&[
            ("blocksize", Attr::Int(b)),
            ("mode", Attr::Str(mode.into())),
        ])
    };
    for (shape, b, mode) in [([2, 12, 3, 5], 2, "DCR"), ([1, 18, 4, 3], 3, "CRD")] {
        let g = OneOp::new(OpKind::DepthToSpace, block(b, mode))
            .input(DType::F32, &shape)
            .build();
        run(
            &format!("DepthToSpace {mode} {shape:?} by {b}"),
            g,
            Tolerance::Exact,
        );
    }
    let g = OneOp::new(OpKind::SpaceToDepth, a(&[("blocksize", Attr::Int(2))]))
        .input(DType::F32, &[2, 3, 6, 8])
        .build();
    run("SpaceToDepth [2, 3, 6, 8] by 2", g, Tolerance::Exact);
    // The reference itself: SpaceToDepth undoes DepthToSpace in DCR mode; one pixel of 8
    // channels becomes 2 channels of 2×2, channel c's (i, j) read from channel
    // (i·2 + j)·2 + c (DCR) or c·4 + i·2 + j (CRD).
    let x = odd_values(&[1, 8, 2, 3]);
    let d2s = tessera_ir::Node {
        name: "d".into(),
        op: OpKind::DepthToSpace,
        attrs: block(2, "DCR"),
        inputs: vec![None],
        outputs: vec![],
    };
    let s2d = tessera_ir::Node {
        op: OpKind::SpaceToDepth,
        attrs: a(&[("blocksize", Attr::Int(2))]),
        ..d2s.clone()
    };
    let eval = |n: &tessera_ir::Node, t: &Tensor| {
        tessera_ir::interp::eval_node(n, &[Some(t)])
            .unwrap()
            .remove(0)
    };
    let up = eval(&d2s, &x);
    assert_eq!(up.shape(), &[1, 2, 4, 6]);
    assert_eq!(eval(&s2d, &up).to_f64_vec(), x.to_f64_vec());
    let pixel = Tensor::from_f64(
        DType::F32,
        vec![1, 8, 1, 1],
        &[0., 1., 2., 3., 4., 5., 6., 7.],
    );
    assert_eq!(
        eval(&d2s, &pixel).to_f64_vec(),
        vec![0., 2., 4., 6., 1., 3., 5., 7.]
    );
    let crd = tessera_ir::Node {
        attrs: block(2, "CRD"),
        ..d2s
    };
    assert_eq!(
        eval(&crd, &pixel).to_f64_vec(),
        vec![0., 1., 2., 3., 4., 5., 6., 7.]
    );
}
