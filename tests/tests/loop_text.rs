//! The loop-IR text form round-trips: every kernel the lowering and the default schedule
//! produce for a wide set of ops parses back to the identical program.

use std::collections::BTreeMap;
use tessera::{CompileConfig, Compiler, Target};
use tessera_ir::loops::parse::parse_program;
use tessera_ir::{Attr, DType, OpKind, Tensor};
use tessera_tests::*;

fn graphs() -> Vec<tessera_ir::Graph> {
    use OpKind::*;
    let i = |v: &[i64]| Attr::Ints(v.to_vec());
    let mut gs = vec![
        OneOp::new(Add, attrs(&[]))
            .input(DType::F32, &[3, 17])
            .input(DType::F32, &[17])
            .build(),
        OneOp::new(Gelu, attrs(&[]))
            .input(DType::F32, &[5, 9])
            .build(),
        OneOp::new(Where, attrs(&[]))
            .input(DType::Bool, &[4, 3])
            .input(DType::F32, &[3])
            .input(DType::F32, &[4, 1])
            .build(),
        OneOp::new(Cast, attrs(&[("to", Attr::Int(7))]))
            .input(DType::F32, &[9])
            .build(),
        OneOp::new(MatMul, attrs(&[]))
            .input(DType::F32, &[2, 3, 5])
            .input(DType::F32, &[5, 7])
            .build(),
        OneOp::new(
            Gemm,
            attrs(&[("transA", Attr::Int(1)), ("alpha", Attr::Float(0.5))]),
        )
        .input(DType::F32, &[5, 3])
        .input(DType::F32, &[5, 4])
        .input(DType::F32, &[4])
        .build(),
        OneOp::new(
            Conv,
            attrs(&[("pads", i(&[1, 0, 1, 2])), ("strides", i(&[2, 1]))]),
        )
        .input(DType::F32, &[1, 2, 7, 6])
        .input(DType::F32, &[3, 2, 3, 3])
        .build(),
        OneOp::new(
            MaxPool,
            attrs(&[("kernel_shape", i(&[3, 3])), ("pads", i(&[1, 1, 1, 1]))]),
        )
        .input(DType::F32, &[1, 2, 7, 6])
        .build(),
        OneOp::new(AveragePool, attrs(&[("kernel_shape", i(&[2, 2]))]))
            .input(DType::F32, &[1, 2, 7, 6])
            .build(),
        OneOp::new(Softmax, attrs(&[("axis", Attr::Int(1))]))
            .input(DType::F32, &[2, 5, 3])
            .build(),
        OneOp::new(LayerNormalization, attrs(&[]))
            .input(DType::F32, &[4, 6])
            .input(DType::F32, &[6])
            .input(DType::F32, &[6])
            .build(),
        OneOp::new(ReduceMax, attrs(&[]))
            .input(DType::I32, &[4, 6])
            .ints(&[1])
            .build(),
        OneOp::new(Transpose, attrs(&[("perm", i(&[2, 0, 1]))]))
            .input(DType::F32, &[2, 3, 4])
            .build(),
        OneOp::new(Concat, attrs(&[("axis", Attr::Int(1))]))
            .input(DType::F32, &[2, 3])
            .input(DType::F32, &[2, 5])
            .build(),
        OneOp::new(Slice, attrs(&[]))
            .input(DType::F32, &[9, 4])
            .ints(&[-1])
            .ints(&[-10])
            .ints(&[0])
            .ints(&[-2])
            .build(),
        OneOp::new(Gather, attrs(&[("axis", Attr::Int(1))]))
            .input(DType::F32, &[3, 5])
            .input(DType::I64, &[2])
            .build(),
        OneOp::new(Pad, attrs(&[("mode", Attr::Str("reflect".into()))]))
            .input(DType::F32, &[4, 5])
            .ints(&[1, 2, 1, 2])
            .build(),
        OneOp::new(LRN, attrs(&[("size", Attr::Int(3))]))
            .input(DType::F32, &[1, 4, 2, 2])
            .build(),
        OneOp::new(Not, attrs(&[])).input(DType::Bool, &[7]).build(),
        OneOp::new(Tile, attrs(&[]))
            .input(DType::F32, &[2, 3])
            .ints(&[2, 2])
            .build(),
    ];
    gs.push(
        OneOp::new(Clip, attrs(&[]))
            .input(DType::F32, &[5])
            .constant(Tensor::from_f64(DType::F32, vec![], &[-0.5]))
            .none()
            .build(),
    );
    gs
}

#[test]
fn print_parse_is_identity_on_lowered_and_scheduled_kernels() {
    let mut n = 0;
    for g in graphs() {
        for schedule in [false, true] {
            let c = Compiler::new(Target::cpu("x86-64-v3")).with_config(CompileConfig {
                schedule,
                ..Default::default()
            });
            let st = match c.stages(&g, &BTreeMap::new()) {
                Ok(st) => st,
                Err(e) => panic!("{}: {e}", g.name),
            };
            for k in &st.kernels {
                let text = k.program.to_string();
                let back = parse_program(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(
                    back, k.program,
                    "round trip changed the program:\n{text}\n{back}"
                );
                n += 1;
            }
        }
    }
    assert!(n >= 40, "only {n} kernels checked");
}

#[test]
fn parse_errors_name_the_line() {
    let e = parse_program("kernel k(in x: f32[4], out y: f32[4]) {\n  for i in 0..4 {\n    y[i] = frob(x[i])\n  }\n}\n").unwrap_err();
    assert!(
        e.to_string().contains("line 3") && e.to_string().contains("frob"),
        "{e}"
    );
}

/// The outer loop's body of `src` (a kernel whose body is one loop).
fn outer_body(src: &str) -> Vec<tessera_ir::loops::Stmt> {
    let prog = parse_program(src).expect("parses");
    match prog.body.as_slice() {
        [tessera_ir::loops::Stmt::For(l)] => l.body.clone(),
        _ => panic!("one outer loop"),
    }
}

/// Cross-iteration dependence, as the scheduler sees it: a row written by one loop and read
/// back by a reduction over a variable of the same range is the same row (softmax's
/// exponentials summed from the output); a read one element back, or over a longer range, is
/// not.
#[test]
fn dependence_renames_bound_variables_of_equal_range() {
    use tessera_ir::loops::carries_dependence;
    let kernel = |read: &str, extent: i64| {
        format!(
            "kernel k(in x: f32[48], out y: f32[48]) {{\n  for r in 0..4 {{\n    for a in 0..12 {{\n      y[(r*12 + a)] = x[(r*12 + a)]\n    }}\n    $s: f32 = reduce sum(b in 0..{extent}) init 0.0:f32 of y[{read}] {{\n      for c in 0..12 {{\n        y[(r*12 + c)] = (y[(r*12 + c)] / $s)\n      }}\n    }}\n  }}\n}}"
        )
    };
    assert!(!carries_dependence(&outer_body(&kernel("(r*12 + b)", 12))));
    assert!(carries_dependence(&outer_body(&kernel(
        "((r*12 + b) - 1)",
        12
    ))));
    assert!(carries_dependence(&outer_body(&kernel("(r*12 + b)", 11))));
    assert!(carries_dependence(&outer_body(&kernel("(b*4 + r)", 12))));
}
