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
    check_random(name, g, tol)
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
