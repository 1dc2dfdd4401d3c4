//! Differential tests for the ops of exported models beyond the core set (`ops.rs`):
//! activations and shape ops, trilu and cumsum, argmax / argmin, resize, transposed and 1-D
//! convolutions, depth-to-space — the graph interpreter vs the loop interpreter (lowered, and
//! scheduled) vs JIT-compiled code, on random inputs (never zeros) at odd sizes, with outputs
//! poisoned before every run and named tolerances.

use tessera_ir::{Attr, DType, OpKind, Tensor};
use tessera_tests::{attrs as a, check_random as run, *};

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
