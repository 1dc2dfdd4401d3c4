//! Differential tests for the ops added for ONNX conformance (bitwise and comparison ops,
//! Mod, IsNaN/IsInf, Sign, Round, Shrink, LogSoftmax, more reductions, gather/scatter, DFT,
//! STFT, Col2Im, AffineGrid, every Resize mode, value specialisation): the graph interpreter
//! vs the loop interpreter (lowered and scheduled) vs JIT code, on random inputs (never
//! zeros), outputs poisoned, named tolerances — beyond the node suite's fixed data.

use tessera_ir::{Attr, DType, OpKind, Rng, Tensor};
use tessera_tests::*;

fn a(pairs: &[(&str, Attr)]) -> tessera_ir::Attrs {
    attrs(pairs)
}

fn run(name: &str, g: tessera_ir::Graph, tol: Tolerance) {
    let inputs = random_inputs(&g, 5);
    check_graph(name, &g, &inputs, tol);
}

/// Signed integers in `[-9, 9]` without zero (divisors stay valid).
fn signed_ints(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let v: Vec<i64> = (0..shape.iter().product::<usize>())
        .map(|_| {
            let m = rng.below(9) as i64 + 1;
            if rng.next_u64() & 1 == 0 { m } else { -m }
        })
        .collect();
    Tensor::from_i64(dtype, shape.to_vec(), &v)
}

#[test]
fn new_unary_ops() {
    use OpKind::*;
    for (op, attrs) in [
        (Sign, vec![]),
        (Round, vec![]),
        (Softsign, vec![]),
        (ThresholdedRelu, vec![("alpha", Attr::Float(0.4))]),
        (
            Shrink,
            vec![("bias", Attr::Float(0.2)), ("lambd", Attr::Float(0.5))],
        ),
    ] {
        for n in [1, 17, 67] {
            let g = OneOp::new(op, a(&attrs)).input(DType::F32, &[3, n]).build();
            run(&format!("{op}[{n}]"), g, ARITH);
        }
    }
    // Round half to even, and IsNaN / IsInf on special values.
    let special = Tensor::from_f64(
        DType::F32,
        vec![8],
        &[
            0.5,
            1.5,
            -2.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.3,
            7.0,
        ],
    );
    for (op, attrs) in [
        (Round, vec![]),
        (IsNaN, vec![]),
        (IsInf, vec![]),
        (IsInf, vec![("detect_negative", Attr::Int(0))]),
        (IsInf, vec![("detect_positive", Attr::Int(0))]),
    ] {
        let g = OneOp::new(op, a(&attrs)).input(DType::F32, &[8]).build();
        check_graph(
            &format!("{op} special"),
            &g,
            std::slice::from_ref(&special),
            Tolerance::Exact,
        );
    }
    for dt in [DType::I32, DType::U8, DType::I64] {
        let g = OneOp::new(BitwiseNot, a(&[])).input(dt, &[33]).build();
        run(&format!("BitwiseNot {dt}"), g, Tolerance::Exact);
    }
    let g = OneOp::new(Sign, a(&[])).input(DType::I32, &[33]).build();
    check_graph(
        "Sign i32",
        &g,
        &[signed_ints(DType::I32, &[33], 3)],
        Tolerance::Exact,
    );
}

#[test]
fn new_binary_ops() {
    use OpKind::*;
    for op in [GreaterOrEqual, LessOrEqual] {
        let g = OneOp::new(op, a(&[]))
            .input(DType::F32, &[4, 1, 17])
            .input(DType::F32, &[3, 1])
            .build();
        run(&format!("{op}"), g, Tolerance::Exact);
    }
    let g = OneOp::new(Xor, a(&[]))
        .input(DType::Bool, &[5, 33])
        .input(DType::Bool, &[33])
        .build();
    run("Xor", g, Tolerance::Exact);
    for op in [BitwiseAnd, BitwiseOr, BitwiseXor] {
        for dt in [DType::I32, DType::U8] {
            let g = OneOp::new(op, a(&[]))
                .input(dt, &[2, 19])
                .input(dt, &[19])
                .build();
            run(&format!("{op} {dt}"), g, Tolerance::Exact);
        }
    }
    for fmod in [0, 1] {
        for dt in [DType::I32, DType::I64] {
            let g = OneOp::new(Mod, a(&[("fmod", Attr::Int(fmod))]))
                .input(dt, &[3, 21])
                .input(dt, &[21])
                .build();
            let inputs = [signed_ints(dt, &[3, 21], 1), signed_ints(dt, &[21], 2)];
            check_graph(
                &format!("Mod fmod={fmod} {dt}"),
                &g,
                &inputs,
                Tolerance::Exact,
            );
        }
    }
    let g = OneOp::new(Mod, a(&[("fmod", Attr::Int(1))]))
        .input(DType::F32, &[40])
        .input(DType::F32, &[40])
        .build();
    run("Mod fmod f32", g, ARITH);
    // Integer Pow goes through f64.
    let g = OneOp::new(Pow, a(&[]))
        .input(DType::I64, &[12])
        .input(DType::I64, &[12])
        .build();
    run("Pow i64", g, Tolerance::Exact);
}

#[test]
fn log_softmax_and_reductions() {
    use OpKind::*;
    for axis in [-1, 0, 1] {
        let g = OneOp::new(LogSoftmax, a(&[("axis", Attr::Int(axis))]))
            .input(DType::F32, &[3, 37, 5])
            .build();
        run(&format!("LogSoftmax axis {axis}"), g, REDUCTION);
    }
    for op in [ReduceProd, ReduceL1, ReduceLogSumExp] {
        for (axes, keep) in [(vec![1], 1), (vec![0, 2], 0), (vec![], 1)] {
            let g = OneOp::new(op, a(&[("keepdims", Attr::Int(keep))]))
                .input(DType::F32, &[3, 7, 5])
                .ints(&axes)
                .build();
            run(&format!("{op} {axes:?} keep {keep}"), g, REDUCTION);
        }
    }
    let g = OneOp::new(ReduceProd, a(&[]))
        .input(DType::I32, &[3, 4])
        .ints(&[1])
        .build();
    run("ReduceProd i32", g, Tolerance::Exact);
    // ReduceLogSum needs positive data: |x| + 0.1 from the random input.
    let g = OneOp::new(ReduceLogSum, a(&[]))
        .input(DType::F32, &[6, 9])
        .ints(&[1])
        .build();
    let x = random_inputs(&g, 9).remove(0);
    let pos = Tensor::from_f64(
        DType::F32,
        x.shape().to_vec(),
        &x.to_f64_vec()
            .iter()
            .map(|v| v.abs() + 0.1)
            .collect::<Vec<_>>(),
    );
    check_graph("ReduceLogSum", &g, &[pos], REDUCTION);
    // Reductions over an empty axis store the identity.
    for op in [ReduceSum, ReduceProd, ReduceMax, ReduceLogSumExp] {
        let g = OneOp::new(op, a(&[]))
            .input(DType::F32, &[2, 0, 3])
            .ints(&[1])
            .build();
        run(&format!("{op} over an empty axis"), g, Tolerance::Exact);
    }
}

#[test]
fn gather_and_scatter() {
    use OpKind::*;
    let idx = Tensor::from_i64(DType::I64, vec![2, 3], &[0, -1, 2, 1, 1, 0]);
    for axis in [0, 1] {
        let g = OneOp::new(GatherElements, a(&[("axis", Attr::Int(axis))]))
            .input(DType::F32, &[3, 4])
            .constant(idx.clone())
            .build();
        run(&format!("GatherElements axis {axis}"), g, Tolerance::Exact);
    }
    let nd = Tensor::from_i64(DType::I64, vec![3, 2], &[0, 1, 2, -1, 1, 0]);
    let g = OneOp::new(GatherND, a(&[]))
        .input(DType::F32, &[3, 4, 5])
        .constant(nd.clone())
        .build();
    run("GatherND", g, Tolerance::Exact);
    let bnd = Tensor::from_i64(DType::I64, vec![2, 1], &[1, 0]);
    let g = OneOp::new(GatherND, a(&[("batch_dims", Attr::Int(1))]))
        .input(DType::F32, &[2, 3, 4])
        .constant(bnd)
        .build();
    run("GatherND batch_dims 1", g, Tolerance::Exact);
    // Repeated indices: the update order matters for `none`, combines for the others.
    let sidx = Tensor::from_i64(DType::I64, vec![2, 3], &[0, 2, 2, 1, 0, 1]);
    for red in ["none", "add", "mul", "max", "min"] {
        let g = OneOp::new(
            ScatterElements,
            a(&[("axis", Attr::Int(1)), ("reduction", Attr::Str(red.into()))]),
        )
        .input(DType::F32, &[2, 5])
        .constant(sidx.clone())
        .input(DType::F32, &[2, 3])
        .build();
        run(&format!("ScatterElements {red}"), g, ARITH);
        let g = OneOp::new(ScatterND, a(&[("reduction", Attr::Str(red.into()))]))
            .input(DType::F32, &[4, 6])
            .constant(Tensor::from_i64(DType::I64, vec![3, 1], &[1, 3, 1]))
            .input(DType::F32, &[3, 6])
            .build();
        run(&format!("ScatterND {red}"), g, ARITH);
    }
}

#[test]
fn fourier_transforms() {
    use OpKind::*;
    let dft = |inverse: i64, onesided: i64| {
        a(&[
            ("inverse", Attr::Int(inverse)),
            ("onesided", Attr::Int(onesided)),
        ])
    };
    let axis = |v: i64| Tensor::from_i64(DType::I64, vec![], &[v]);
    let tol = Tolerance::Close {
        rtol: 1e-4,
        atol: 1e-5,
    };
    for (shape, inv, one, len) in [
        (vec![2, 12, 1], 0, 0, None),
        (vec![2, 12, 2], 0, 1, None),
        (vec![2, 12, 2], 1, 0, Some(9)),
        (vec![2, 7, 2], 1, 1, None),
        (vec![2, 7, 2], 0, 0, Some(16)),
    ] {
        let mut b = OneOp::new(DFT, dft(inv, one)).input(DType::F32, &shape);
        b = match len {
            Some(l) => b.constant(Tensor::from_i64(DType::I64, vec![], &[l])),
            None => b.none(),
        };
        let g = b.constant(axis(1)).build();
        run(
            &format!("DFT {shape:?} inverse {inv} onesided {one} len {len:?}"),
            g,
            tol,
        );
    }
    let g = OneOp::new(STFT, a(&[]))
        .input(DType::F32, &[2, 64, 1])
        .constant(Tensor::from_i64(DType::I64, vec![], &[8]))
        .input(DType::F32, &[16])
        .build();
    run("STFT with window", g, tol);
}

#[test]
fn col2im_and_affine_grid() {
    use OpKind::*;
    let ints = |v: &[i64]| Tensor::from_i64(DType::I64, vec![v.len()], v);
    // 2 channels, 2x3 blocks over a 6x7 image with stride 2, dilation 1, pads 1.
    let g = OneOp::new(
        Col2Im,
        a(&[
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ]),
    )
    .input(DType::F32, &[1, 12, 16])
    .constant(ints(&[6, 7]))
    .constant(ints(&[2, 3]))
    .build();
    run("Col2Im strided padded", g, ARITH);
    for align in [0, 1] {
        let g = OneOp::new(AffineGrid, a(&[("align_corners", Attr::Int(align))]))
            .input(DType::F32, &[2, 2, 3])
            .constant(ints(&[2, 3, 5, 7]))
            .build();
        run(&format!("AffineGrid 2-D align {align}"), g, ARITH);
        let g = OneOp::new(AffineGrid, a(&[("align_corners", Attr::Int(align))]))
            .input(DType::F32, &[1, 3, 4])
            .constant(ints(&[1, 1, 3, 4, 5]))
            .build();
        run(&format!("AffineGrid 3-D align {align}"), g, ARITH);
    }
}

#[test]
fn resize_modes_through_legalisation() {
    let f = |v: &[f64]| Tensor::from_f64(DType::F32, vec![v.len()], v);
    type Case<'a> = (&'a str, Vec<(&'a str, Attr)>, Tensor);
    let cases: Vec<Case> = vec![
        (
            "cubic up",
            vec![("mode", Attr::Str("cubic".into()))],
            f(&[1.0, 1.0, 1.7, 2.3]),
        ),
        (
            "cubic exclude_outside A=-0.5",
            vec![
                ("mode", Attr::Str("cubic".into())),
                ("exclude_outside", Attr::Int(1)),
                ("cubic_coeff_a", Attr::Float(-0.5)),
            ],
            f(&[1.0, 1.0, 0.6, 0.8]),
        ),
        (
            "linear antialias down",
            vec![
                ("mode", Attr::Str("linear".into())),
                ("antialias", Attr::Int(1)),
            ],
            f(&[1.0, 1.0, 0.45, 0.6]),
        ),
        (
            "linear half_pixel_symmetric",
            vec![
                ("mode", Attr::Str("linear".into())),
                (
                    "coordinate_transformation_mode",
                    Attr::Str("half_pixel_symmetric".into()),
                ),
            ],
            f(&[1.0, 1.0, 1.3, 0.7]),
        ),
    ];
    for (name, attrs, scales) in cases {
        let g = OneOp::new(OpKind::Resize, a(&attrs))
            .input(DType::F32, &[1, 2, 9, 11])
            .none()
            .constant(scales)
            .build();
        run(&format!("Resize {name}"), g, REDUCTION);
    }
    // tf_crop_and_resize with extrapolation outside the region of interest.
    let g = OneOp::new(
        OpKind::Resize,
        a(&[
            ("mode", Attr::Str("linear".into())),
            (
                "coordinate_transformation_mode",
                Attr::Str("tf_crop_and_resize".into()),
            ),
            ("extrapolation_value", Attr::Float(3.5)),
        ]),
    )
    .input(DType::F32, &[1, 1, 8, 8])
    .constant(f(&[0.0, 0.0, -0.2, 0.3, 1.0, 1.0, 0.9, 1.3]))
    .constant(f(&[1.0, 1.0, 0.75, 1.25]))
    .build();
    run("Resize tf_crop_and_resize", g, REDUCTION);
}

/// An input that decides shapes (a run-time `axes`) makes the executable specialise on its
/// value: one compiled executable, two different axes, each correct.
#[test]
fn value_specialisation_compiles_per_value() {
    let g = OneOp::new(OpKind::ReduceSum, a(&[("keepdims", Attr::Int(0))]))
        .input(DType::F32, &[3, 4, 5])
        .input(DType::I64, &[1])
        .build();
    let exe = tessera::Compiler::new(tessera::Target::host())
        .compile(&g)
        .expect("compiles");
    assert!(exe.value_dependent());
    let x = random_inputs(&g, 3).remove(0);
    for axis in [0, 2, -2] {
        let axes = Tensor::from_i64(DType::I64, vec![1], &[axis]);
        let inputs = [x.clone(), axes];
        let got = exe.run(&inputs).expect("runs");
        let want = tessera_ir::interp::run_graph(&g, &inputs).expect("interprets");
        compare(&got[0], &want[0], REDUCTION)
            .unwrap_or_else(|e| panic!("ReduceSum over axis {axis}: {e}"));
    }
    let err = exe
        .compiled_for(&Default::default())
        .err()
        .expect("needs the value");
    assert!(err.to_string().contains("in1"), "{err}");
}
