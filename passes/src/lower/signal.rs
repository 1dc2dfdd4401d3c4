//! DFT and STFT as direct sums: one f64 reduction per output element over the input entries along the
//! transform axis, with the twiddle factors computed in the kernel from `(o·s) mod n`
//! (see `tessera_ir::signal` for the meaning and the coefficients).

use super::{Builder, NodeCx, idx, nest, strides_of};
use crate::error::PassError;
use tessera_ir::DType::F64;
use tessera_ir::loops::{BinOp, CmpOp, IExpr, Reduce, ReduceOp, Stmt, UnOp, VExpr};

pub(crate) fn dft(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0).to_vec();
    let p = tessera_ir::signal::dft_plan(
        cx.node,
        &s,
        cx.consts.get(1).copied().flatten(),
        cx.consts.get(2).copied().flatten(),
    )
    .map_err(|e| cx.err(e))?;
    let r = s.len();
    // Input coordinates: the output's, with the axis replaced by the summed index.
    let input = |oi: &[IExpr], sv: &str, part: i64| {
        let mut c = oi.to_vec();
        c[p.axis] = IExpr::var(sv);
        c[r - 1] = IExpr::c(part);
        VExpr::Cast(
            F64,
            Box::new(VExpr::load(cx.buf(0), IExpr::linear(&c, &strides_of(&s)))),
        )
    };
    Ok(transform(cx, b, &p, p.axis, &input))
}

/// STFT: output `[batch, frame, bin, 2]`, each frame a forward DFT of `window · x[frame·step …]`.
pub(crate) fn stft(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let s = cx.shape(0).to_vec();
    let window = cx.has(2).then(|| cx.shape(2)[0]);
    let p = tessera_ir::signal::stft_plan(
        cx.node,
        &s,
        cx.consts.get(1).copied().flatten(),
        window,
        cx.consts.get(3).copied().flatten(),
    )
    .map_err(|e| cx.err(e))?;
    let input = |oi: &[IExpr], sv: &str, part: i64| {
        let t = oi[1].clone().times(p.step as i64).plus(IExpr::var(sv));
        let at = IExpr::linear(&[oi[0].clone(), t, IExpr::c(part)], &strides_of(&s));
        let x = VExpr::Cast(F64, Box::new(VExpr::load(cx.buf(0), at)));
        match window {
            Some(_) => {
                let w = VExpr::load(cx.buf(2), IExpr::var(sv));
                VExpr::bin(BinOp::Mul, x, VExpr::Cast(F64, Box::new(w)))
            }
            None => x,
        }
    };
    Ok(transform(cx, b, &p.dft, 2, &input))
}

/// The DFT sum over the output: `input(output coords, summed var, part)` reads the (f64) real
/// or imaginary part of the summed entry; `o_axis` is the output axis of the frequency index.
fn transform(
    cx: &NodeCx,
    b: &mut Builder,
    p: &tessera_ir::signal::DftPlan,
    o_axis: usize,
    input: &dyn Fn(&[IExpr], &str, i64) -> VExpr,
) -> Vec<Stmt> {
    let r = cx.out_shape.len();
    let dims = b.dims(&cx.out_shape);
    let oi = idx(&dims);
    let sv = b.var();
    let xr = input(&oi, &sv, 0);
    let xi = if p.complex_in {
        input(&oi, &sv, 1)
    } else {
        VExpr::f(0.0, F64)
    };
    let n = p.n as i64;
    let k = oi[o_axis].clone();
    let phase = IExpr::Mod(
        Box::new(IExpr::Mul(Box::new(k), Box::new(IExpr::var(&sv)))),
        Box::new(IExpr::c(n)),
    );
    let theta = VExpr::bin(
        BinOp::Mul,
        VExpr::Index(phase, F64),
        VExpr::f(2.0 * std::f64::consts::PI / p.n as f64, F64),
    );
    let (c, sn) = (
        VExpr::un(UnOp::Cos, theta.clone()),
        VExpr::un(UnOp::Sin, theta),
    );
    let mul = |a: VExpr, b: VExpr| VExpr::bin(BinOp::Mul, a, b);
    let add = |a: VExpr, b: VExpr| VExpr::bin(BinOp::Add, a, b);
    let sub = |a: VExpr, b: VExpr| VExpr::bin(BinOp::Sub, a, b);
    let (re, im) = if p.inverse {
        (
            sub(mul(xr.clone(), c.clone()), mul(xi.clone(), sn.clone())),
            add(mul(xi, c), mul(xr, sn)),
        )
    } else {
        (
            add(mul(xr.clone(), c.clone()), mul(xi.clone(), sn.clone())),
            sub(mul(xi, c), mul(xr, sn)),
        )
    };
    let term = if p.irfft {
        // Bins other than DC and Nyquist stand for their conjugate twin too.
        let single = |v: i64| VExpr::ICmp(CmpOp::Eq, IExpr::var(&sv), IExpr::c(v));
        let nyquist = if p.n.is_multiple_of(2) {
            p.n as i64 / 2
        } else {
            -1
        };
        let once = VExpr::bin(BinOp::Or, single(0), single(nyquist));
        let weight = VExpr::select(once, VExpr::f(1.0, F64), VExpr::f(2.0, F64));
        mul(re, weight)
    } else {
        let is_re = VExpr::ICmp(CmpOp::Eq, oi[r - 1].clone(), IExpr::c(0));
        VExpr::select(is_re, re, im)
    };
    let scale = if p.inverse { 1.0 / p.n as f64 } else { 1.0 };
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index: IExpr::linear(&oi, &strides_of(&cx.out_shape)),
        value: VExpr::Cast(
            cx.out_dtype,
            Box::new(mul(VExpr::Acc("dft".into(), F64), VExpr::f(scale, F64))),
        ),
    };
    let red = Stmt::Reduce(Reduce {
        acc: "dft".into(),
        dtype: F64,
        op: ReduceOp::Sum,
        init: VExpr::f(0.0, F64),
        axes: vec![(sv, p.terms as i64)],
        value: term,
        body: vec![store],
        vectorize: None,
    });
    nest(&dims, vec![red])
}
