//! Half-precision sums kept in f32: every `sum` or `prod` reduction over f16 or bf16 values
//! a lowering wrote is rewritten to fold in f32 (its initial value and each term converted),
//! its result converted back where the body reads it.
//!
//! An f16 sum of a few hundred terms — a layer norm's mean, a softmax's denominator — loses
//! most of its digits to rounding at every step; onnxruntime, PyTorch and cuBLAS all sum half
//! precision in f32, and the reference interpreter sums in f64. Products already lower this
//! way (`accumulation_dtype`); max and min are exact in any precision and stay as they are.
//! On the GPU the widened reductions also combine through warp shuffles (32-bit values).

use crate::product::{accumulation_dtype, convert};
use tessera_ir::loops::{LoopProgram, Reduce, ReduceOp, Stmt, VExpr};

/// Rewrites every half-precision sum or product fold of `prog` to fold in f32.
pub(crate) fn widen_half_sums(prog: &mut LoopProgram) {
    prog.body = prog.body.iter().map(widen).collect();
}

fn widen(s: &Stmt) -> Stmt {
    match s {
        Stmt::For(l) => Stmt::For(tessera_ir::loops::Loop {
            body: l.body.iter().map(widen).collect(),
            ..l.clone()
        }),
        Stmt::If { cond, then } => Stmt::If {
            cond: cond.clone(),
            then: then.iter().map(widen).collect(),
        },
        Stmt::Reduce(r) => {
            let body: Vec<Stmt> = r.body.iter().map(widen).collect();
            let wide = accumulation_dtype(r.dtype);
            if wide == r.dtype || !matches!(r.op, ReduceOp::Sum | ReduceOp::Prod) {
                return Stmt::Reduce(Reduce { body, ..r.clone() });
            }
            let narrow = convert(VExpr::Acc(r.acc.clone(), wide), wide, r.dtype);
            Stmt::Reduce(Reduce {
                dtype: wide,
                init: convert(r.init.clone(), r.dtype, wide),
                value: convert(r.value.clone(), r.dtype, wide),
                body: body
                    .iter()
                    .map(|s| s.replace_acc(&r.acc, &narrow))
                    .collect(),
                ..r.clone()
            })
        }
        Stmt::Store { .. }
        | Stmt::Mma(_)
        | Stmt::WarpFold(_)
        | Stmt::AsyncCopy(_)
        | Stmt::Mbarrier(_)
        | Stmt::SetMaxNReg(_)
        | Stmt::TensorCopy(_)
        | Stmt::TensorStore(_)
        | Stmt::AsyncProxy(_) => s.clone(),
    }
}
