//! Which loop bodies become vector loops: the analysis behind [`vectorizable`] and
//! [`maskable`] (integer division must not run on a masked-off lane's zero).

use tessera_ir::DType;
use tessera_ir::loops::{BinOp, IExpr, LoopProgram, Stmt, VExpr};

/// Whether a value divides integers (which could trap on a masked-off lane's zero).
pub(super) fn int_division(prog: &LoopProgram, e: &VExpr) -> bool {
    let dt = |b: &str| prog.buffer(b).map(|x| x.dtype);
    let div = |x: &VExpr| int_division(prog, x);
    match e {
        VExpr::Binary(BinOp::Div | BinOp::Rem, a, b) => {
            !e.dtype(&dt).is_some_and(|d| d.is_float()) || div(a) || div(b)
        }
        VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => div(a) || div(b),
        VExpr::Unary(_, a) | VExpr::Cast(_, a) => div(a),
        VExpr::Select(c, a, b) => div(c) || div(a) || div(b),
        _ => false,
    }
}

/// Whether a vector body may run on masked-off lanes: integer division could trap on the zero
/// that a masked load leaves in an inactive lane, so such bodies get a scalar tail instead.
pub(super) fn maskable(prog: &LoopProgram, body: &[Stmt]) -> bool {
    let int_div = int_division;
    body.iter().all(|s| match s {
        Stmt::Store { value, .. } => !int_div(prog, value),
        Stmt::Reduce(r) => {
            !int_div(prog, &r.init) && !int_div(prog, &r.value) && maskable(prog, &r.body)
        }
        _ => false,
    })
}

/// Whether an index expression can be computed one lane per vector element (everything but
/// indices read from memory).
fn lane_wise(e: &IExpr) -> bool {
    match e.operands() {
        Some((a, b)) => lane_wise(a) && lane_wise(b),
        None => !matches!(e, IExpr::Of(_)),
    }
}

/// Whether a value can be computed for `w` consecutive values of `var` at once: every load
/// contiguous, invariant or a small positive stride (shuffled out of one load) — any other
/// index computed lane by lane and gathered —, index comparisons computable lane by lane,
/// index-valued expressions invariant, and no bool buffers.
pub(super) fn lane_value_ok(prog: &LoopProgram, e: &VExpr, var: &str) -> bool {
    if !e.mentions(var) {
        return true;
    }
    let ok = |x: &VExpr| lane_value_ok(prog, x, var);
    match e {
        VExpr::Const(..) | VExpr::Acc(..) => true,
        VExpr::Load { buf, index } => {
            (matches!(index.coeff(var), Some(0..=4)) || lane_wise(index))
                && prog.buffer(buf).is_some_and(|b| b.dtype != DType::Bool)
        }
        VExpr::ICmp(_, a, b) => lane_wise(a) && lane_wise(b),
        VExpr::Index(..) => false,
        VExpr::Unary(_, a) => ok(a),
        VExpr::Cast(to, a) => *to != DType::Bool && ok(a),
        VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => ok(a) && ok(b),
        // A guarded branch's masked-off lanes read zero: they must not divide by it.
        VExpr::Select(c, a, b) => {
            let divides_loaded = |x: &VExpr| x.has_load() && int_division(prog, x);
            ok(c) && ok(a) && ok(b) && !divides_loaded(a) && !divides_loaded(b)
        }
    }
}

/// Whether a loop body over `var` can be emitted as a vector loop: only stores, each store
/// contiguous in `var`, every load contiguous, strided by at most 4 or invariant (or else
/// gathered at an index computed lane by lane), index comparisons computable lane by lane,
/// index-valued expressions invariant, and no bool buffers.
///
/// Stores `f` apart (`f` = 2 or 4) qualify where they come in complete interleaved groups
/// ([`tessera_ir::loops::interleave`]): their vectors are interleaved and stored as one run.
pub fn vectorizable(prog: &LoopProgram, body: &[Stmt], var: &str) -> bool {
    if tessera_ir::loops::carries_dependence(body) {
        return false;
    }
    if tessera_ir::loops::interleave::store_groups(body, var).is_none() {
        return false;
    }
    contiguous_body(prog, body, var, false)
}

/// [`vectorizable`] for a body whose top-level stores are grouped already (`nested`: a
/// reduction's body, whose stores must be contiguous).
fn contiguous_body(prog: &LoopProgram, body: &[Stmt], var: &str, nested: bool) -> bool {
    let value_ok = lane_value_ok;
    body.iter().all(|s| match s {
        Stmt::Store { buf, index, value } => {
            (!nested || index.coeff(var) == Some(1))
                && prog.buffer(buf).is_some_and(|b| b.dtype != DType::Bool)
                && value_ok(prog, value, var)
        }
        // A reduction folds one vector accumulator; its own loops stay scalar.
        Stmt::Reduce(r) => {
            r.dtype != DType::Bool
                && r.axes.iter().all(|(v, _)| v != var)
                && value_ok(prog, &r.init, var)
                && value_ok(prog, &r.value, var)
                && !tessera_ir::loops::carries_dependence(&r.body)
                && contiguous_body(prog, &r.body, var, true)
        }
        _ => false,
    })
}
