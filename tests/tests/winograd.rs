//! Winograd convolutions (`tessera_passes::winograd`): 3×3 stride-1 convolutions with a
//! constant weight, rewritten after the optimizer, against the graph interpreter's direct
//! convolution — alone and with a fused epilogue, at output sizes that leave partial tiles,
//! with asymmetric and no padding, and two images; and the ones that must stay direct.

use tessera_ir::{Attr, DType, Graph, OpKind};
use tessera_passes::winograd::WinogradConfig;
use tessera_tests::*;

/// `Conv(x[n, c, h, w], W[k, c, kh, kw] constant, bias?)` with `attrs`.
fn conv(x: [usize; 4], k: usize, kernel: usize, bias: bool, at: &[(&str, Attr)]) -> Graph {
    let mut b = OneOp::new(OpKind::Conv, attrs(at))
        .input(DType::F32, &x)
        .constant(spread_values(&[k, x[1], kernel, kernel], 3));
    if bias {
        b = b.constant(spread_values(&[k], 5));
    }
    b.build()
}

/// The ops of the graph the compiler lowers.
fn lowered_ops(g: &Graph, cfg: Option<WinogradConfig>) -> Vec<OpKind> {
    let config = tessera::CompileConfig {
        winograd: cfg,
        ..Default::default()
    };
    let stages = tessera::Compiler::new(tessera::Target::host())
        .with_config(config)
        .stages(g, &Default::default())
        .expect("pipeline");
    stages.optimized.nodes().map(|(_, n)| n.op).collect()
}

fn pads(p: [i64; 4]) -> (&'static str, Attr) {
    ("pads", Attr::Ints(p.to_vec()))
}

#[test]
fn winograd_convolutions_match_the_direct_convolution() {
    let cases: [([usize; 4], usize, [i64; 4], bool); 5] = [
        // Odd output sizes: a partial last tile row and column.
        ([1, 16, 9, 7], 16, [1, 1, 1, 1], true),
        // No padding, two images, more output than input channels.
        ([2, 17, 11, 10], 24, [0, 0, 0, 0], false),
        // Asymmetric padding.
        ([1, 16, 8, 9], 16, [0, 1, 2, 0], true),
        // Wide rows: several vectors of tiles per row, with a tail.
        ([1, 16, 6, 70], 32, [1, 1, 1, 1], true),
        // Padding wider than a tap reach on one side.
        ([1, 20, 10, 10], 16, [2, 2, 0, 0], false),
    ];
    for (x, k, p, bias) in cases {
        let name = format!("Winograd conv x{x:?} k{k} pads{p:?} bias {bias}");
        let g = conv(x, k, 3, bias, &[pads(p)]);
        let ops = lowered_ops(&g, None);
        assert!(
            ops.contains(&OpKind::WinogradOutput) && !ops.contains(&OpKind::Conv),
            "{name}: {ops:?}"
        );
        check_graph(&name, &g, &random_inputs(&g, 7), REDUCTION);
    }
}

/// Bias, a residual add and a ReLU after the convolution: one fused kernel anchored on the
/// Conv before the rewrite, on `WinogradOutput` after it.
#[test]
fn winograd_output_anchors_the_fused_epilogue() {
    let mut g = conv([1, 16, 9, 11], 16, 3, true, &[pads([1, 1, 1, 1])]);
    let y = g.outputs[0];
    let skip = g.add_input(
        "skip",
        tessera_ir::ValueType::new(DType::F32, &[1, 16, 9, 11]),
    );
    let sum = g.op(OpKind::Add, &[y, skip], Default::default());
    let relu = g.op(OpKind::Relu, &[sum], Default::default());
    g.outputs = vec![relu];
    let config = tessera::CompileConfig::default();
    let stages = tessera::Compiler::new(tessera::Target::host())
        .with_config(config)
        .stages(&g, &Default::default())
        .expect("pipeline");
    let anchored = stages.optimized.nodes().any(|(_, n)| {
        n.op == OpKind::Fused
            && n.attrs
                .get("body")
                .is_some_and(|b| matches!(b, Attr::Graph(b) if b.0.nodes().any(|(_, m)| m.op == OpKind::WinogradOutput)))
    });
    assert!(
        anchored,
        "{}",
        tessera_ir::text::print_graph(&stages.optimized)
    );
    assert_eq!(
        stages.kernels.len(),
        3,
        "input transform, product, output + epilogue"
    );
    check_graph(
        "Winograd conv + bias + residual + ReLU",
        &g,
        &random_inputs(&g, 9),
        REDUCTION,
    );
}

/// `F(4×4, 3×3)`: its transforms' larger coefficients cost accuracy (about 1e-5 relative
/// here), so it is checked at a looser tolerance, on the JIT only.
#[test]
fn winograd_f4_is_close_to_the_direct_convolution() {
    let g = conv([1, 16, 17, 14], 16, 3, true, &[pads([1, 1, 1, 1])]);
    let f4 = WinogradConfig {
        tile: 4,
        ..WinogradConfig::cpu()
    };
    assert!(lowered_ops(&g, Some(f4)).contains(&OpKind::WinogradOutput));
    let inputs = random_inputs(&g, 3);
    let want = tessera_ir::interp::run_graph(&g, &inputs).unwrap();
    let config = tessera::CompileConfig {
        winograd: Some(f4),
        poison: true,
        ..Default::default()
    };
    let exe = tessera::Compiler::new(tessera::Target::host())
        .with_config(config)
        .compile(&g)
        .unwrap();
    let got = exe.run(&inputs).unwrap();
    let tol = Tolerance::Close {
        rtol: 1e-3,
        atol: 1e-4,
    };
    compare(&got[0], &want[0], tol).unwrap();
}

/// What stays a direct convolution: strided, dilated, grouped, 1×1 and 5×5 kernels, a
/// weight computed at run time, too few channels or tiles, and the rewrite turned off.
#[test]
fn other_convolutions_stay_direct() {
    let direct = |g: &Graph, cfg: Option<WinogradConfig>, what: &str| {
        let ops = lowered_ops(g, cfg);
        assert!(!ops.contains(&OpKind::WinogradOutput), "{what}: {ops:?}");
    };
    let p1 = pads([1, 1, 1, 1]);
    let x = [1, 16, 12, 12];
    let strided = conv(
        x,
        16,
        3,
        false,
        &[p1.clone(), ("strides", Attr::Ints(vec![2, 2]))],
    );
    direct(&strided, None, "stride 2");
    let dilated = conv(
        x,
        16,
        3,
        false,
        &[p1.clone(), ("dilations", Attr::Ints(vec![2, 2]))],
    );
    direct(&dilated, None, "dilation 2");
    direct(&conv(x, 16, 1, false, &[]), None, "1x1");
    direct(&conv(x, 16, 5, false, &[]), None, "5x5");
    direct(
        &conv([1, 8, 12, 12], 8, 3, false, std::slice::from_ref(&p1)),
        None,
        "8 channels",
    );
    direct(&conv([1, 16, 5, 5], 16, 3, false, &[]), None, "9 tiles");
    direct(
        &conv(x, 16, 3, false, std::slice::from_ref(&p1)),
        Some(WinogradConfig::off()),
        "off",
    );
    let grouped = OneOp::new(OpKind::Conv, attrs(&[p1.clone(), ("group", Attr::Int(2))]))
        .input(DType::F32, &[1, 32, 12, 12])
        .constant(spread_values(&[32, 16, 3, 3], 1))
        .build();
    direct(&grouped, None, "2 groups");
    let runtime_weight = OneOp::new(OpKind::Conv, attrs(&[p1]))
        .input(DType::F32, &x)
        .input(DType::F32, &[16, 16, 3, 3])
        .build();
    direct(&runtime_weight, None, "weight an input");
    check_graph(
        "stride 2 stays direct",
        &strided,
        &random_inputs(&strided, 4),
        REDUCTION,
    );
}
