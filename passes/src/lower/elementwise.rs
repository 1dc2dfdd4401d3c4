//! Elementwise ops with numpy broadcasting, and the scalar meaning of each elementwise op as
//! a loop-IR expression ([`scalar_expr`]), which fusion will reuse.

use super::{Builder, NodeCx, idx, store_nest, strides_of};
use crate::error::PassError;
use tessera_ir::loops::{BinOp, CmpOp, IExpr, Stmt, UnOp, VExpr};
use tessera_ir::{AttrsExt, OpKind};

/// Merges adjacent output dimensions that every operand treats alike (all present or all
/// broadcast), so `[8,16,32] + [8,16,32]` becomes one loop of 4096 and `x + bias[32]` two.
/// Returns the merged output shape and, per operand, its merged shape (1 where broadcast).
pub(crate) fn coalesce(out: &[usize], operands: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let r = out.len();
    let aligned: Vec<Vec<usize>> = operands
        .iter()
        .map(|s| {
            let mut a = vec![1; r - s.len()];
            a.extend_from_slice(s);
            a
        })
        .collect();
    let mut mo: Vec<usize> = Vec::new();
    let mut mi: Vec<Vec<usize>> = vec![Vec::new(); operands.len()];
    let mut last_status: Option<Vec<bool>> = None;
    for k in 0..r {
        if out[k] == 1 {
            continue;
        }
        let status: Vec<bool> = aligned.iter().map(|a| a[k] == out[k]).collect();
        if last_status.as_ref() == Some(&status) {
            *mo.last_mut().unwrap() *= out[k];
            for (j, m) in mi.iter_mut().enumerate() {
                *m.last_mut().unwrap() *= aligned[j][k];
            }
        } else {
            mo.push(out[k]);
            for (j, m) in mi.iter_mut().enumerate() {
                m.push(aligned[j][k]);
            }
            last_status = Some(status);
        }
    }
    (mo, mi)
}

/// Broadcast loads of every operand over `out` (static shapes), plus the loop nest to use.
pub(crate) struct Bcast {
    pub dims: Vec<(Option<String>, usize)>,
    pub out_index: IExpr,
    pub loads: Vec<IExpr>,
}

pub(crate) fn bcast(b: &mut Builder, out: &[usize], operands: &[Vec<usize>]) -> Bcast {
    let (mo, mi) = coalesce(out, operands);
    let dims = b.dims(&mo);
    let ix = idx(&dims);
    let out_index = IExpr::linear(&ix, &strides_of(&mo));
    let loads = mi
        .iter()
        .map(|s| {
            let st = strides_of(s);
            let masked: Vec<IExpr> = ix
                .iter()
                .zip(s)
                .map(|(i, &d)| if d == 1 { IExpr::c(0) } else { i.clone() })
                .collect();
            IExpr::linear(&masked, &st)
        })
        .collect();
    Bcast {
        dims,
        out_index,
        loads,
    }
}

pub(crate) fn elementwise(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    // CastLike reads only the dtype of its second input.
    let present: Vec<usize> = (0..cx.bufs.len())
        .filter(|&i| cx.has(i) && !(cx.node.op == OpKind::CastLike && i == 1))
        .collect();
    let shapes: Vec<Vec<usize>> = present.iter().map(|&i| cx.shape(i).to_vec()).collect();
    let bc = bcast(b, &cx.out_shape, &shapes);
    let mut args: Vec<Option<VExpr>> = vec![None; cx.bufs.len()];
    for (k, &i) in present.iter().enumerate() {
        args[i] = Some(VExpr::load(cx.buf(i), bc.loads[k].clone()));
    }
    let value = scalar_expr(cx, &args)?;
    Ok(store_nest(cx, &bc.dims, bc.out_index, value))
}

pub(crate) fn expand(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let bc = bcast(b, &cx.out_shape, &[cx.shape(0).to_vec()]);
    let value = VExpr::load(cx.buf(0), bc.loads[0].clone());
    Ok(store_nest(cx, &bc.dims, bc.out_index, value))
}

/// Inference BatchNormalization: `(x - mean) / sqrt(var + eps) * scale + bias` per channel.
pub(crate) fn batch_norm(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let eps = cx
        .node
        .attrs
        .float("epsilon", 1e-5)
        .map_err(|e| cx.err(e))?;
    let x = cx.shape(0);
    let c = x[1];
    let mut chan = vec![1; x.len()];
    chan[1] = c;
    let mut shapes = vec![x.to_vec()];
    shapes.extend(std::iter::repeat_n(chan, 4));
    let bc = bcast(b, &cx.out_shape, &shapes);
    let dt = cx.out_dtype;
    let ld = |i: usize| VExpr::load(cx.buf(i), bc.loads[i].clone());
    let denom = VExpr::un(UnOp::Sqrt, VExpr::bin(BinOp::Add, ld(4), VExpr::f(eps, dt)));
    let norm = VExpr::bin(BinOp::Div, VExpr::bin(BinOp::Sub, ld(0), ld(3)), denom);
    let value = VExpr::bin(BinOp::Add, VExpr::bin(BinOp::Mul, norm, ld(1)), ld(2));
    Ok(store_nest(cx, &bc.dims, bc.out_index, value))
}

/// The value of one output element of an elementwise node, given its operands' values.
pub(crate) fn scalar_expr(cx: &NodeCx, args: &[Option<VExpr>]) -> Result<VExpr, PassError> {
    use OpKind::*;
    let n = cx.node;
    let dt = cx.in_dtypes[0].unwrap_or(cx.out_dtype);
    let a = |i: usize| -> Result<VExpr, PassError> {
        args.get(i)
            .cloned()
            .flatten()
            .ok_or_else(|| cx.err(format!("missing input {i}")))
    };
    let x = a(0)?;
    let float = dt.is_float();
    let need_float = || {
        if float {
            Ok(())
        } else {
            Err(cx.err(format!("{} of {dt} is not supported", n.op)))
        }
    };
    let one = VExpr::lit(1.0, dt);
    let zero = VExpr::lit(0.0, dt);
    let e = match n.op {
        Identity => x,
        Relu => VExpr::bin(BinOp::Max, x, zero),
        Elu | Selu | Celu => {
            need_float()?;
            let p = tessera_ir::interp::UnaryParams::of(n).map_err(|e| cx.err(e))?;
            let alpha = VExpr::f(p.alpha, dt);
            let em1 = |v: VExpr| VExpr::bin(BinOp::Sub, VExpr::un(UnOp::Exp, v), one.clone());
            match n.op {
                // alpha * (exp(min(x, 0)) - 1) + max(x, 0): the exponential never overflows.
                Elu | Selu => {
                    let neg = VExpr::bin(
                        BinOp::Mul,
                        alpha,
                        em1(VExpr::bin(BinOp::Min, x.clone(), zero.clone())),
                    );
                    let op = if n.op == Elu { CmpOp::Ge } else { CmpOp::Gt };
                    let e =
                        VExpr::select(VExpr::Cmp(op, Box::new(x.clone()), Box::new(zero)), x, neg);
                    if n.op == Selu {
                        VExpr::bin(BinOp::Mul, VExpr::f(p.gamma, dt), e)
                    } else {
                        e
                    }
                }
                _ => {
                    let inner = VExpr::bin(
                        BinOp::Div,
                        VExpr::bin(BinOp::Min, x.clone(), zero.clone()),
                        alpha.clone(),
                    );
                    VExpr::bin(
                        BinOp::Add,
                        VExpr::bin(BinOp::Max, x, zero),
                        VExpr::bin(BinOp::Mul, alpha, em1(inner)),
                    )
                }
            }
        }
        Sin | Cos => {
            need_float()?;
            VExpr::un(if n.op == Sin { UnOp::Sin } else { UnOp::Cos }, x)
        }
        Softplus => {
            // max(x, 0) + log(1 + exp(-|x|)): never overflows.
            need_float()?;
            let e = VExpr::un(
                UnOp::Exp,
                VExpr::un(UnOp::Neg, VExpr::un(UnOp::Abs, x.clone())),
            );
            let tail = VExpr::un(UnOp::Log, VExpr::bin(BinOp::Add, one, e));
            VExpr::bin(BinOp::Add, VExpr::bin(BinOp::Max, x, zero), tail)
        }
        HardSigmoid | HardSwish => {
            need_float()?;
            let p = tessera_ir::interp::UnaryParams::of(n).map_err(|e| cx.err(e))?;
            let (alpha, beta) = if n.op == HardSwish {
                (1.0 / 6.0, 0.5)
            } else {
                (p.alpha, p.beta)
            };
            let lin = VExpr::bin(
                BinOp::Add,
                VExpr::bin(BinOp::Mul, VExpr::f(alpha, dt), x.clone()),
                VExpr::f(beta, dt),
            );
            let hs = VExpr::bin(BinOp::Min, VExpr::bin(BinOp::Max, lin, zero), one);
            if n.op == HardSwish {
                VExpr::bin(BinOp::Mul, x, hs)
            } else {
                hs
            }
        }
        PRelu => {
            need_float()?;
            VExpr::select(
                VExpr::Cmp(CmpOp::Lt, Box::new(x.clone()), Box::new(zero)),
                VExpr::bin(BinOp::Mul, a(1)?, x.clone()),
                x,
            )
        }
        Neg => VExpr::un(UnOp::Neg, x),
        Abs => VExpr::un(UnOp::Abs, x),
        Sigmoid => {
            need_float()?;
            VExpr::bin(
                BinOp::Div,
                one.clone(),
                VExpr::bin(
                    BinOp::Add,
                    one,
                    VExpr::un(UnOp::Exp, VExpr::un(UnOp::Neg, x)),
                ),
            )
        }
        Tanh | Erf | Exp | Log | Sqrt | Floor | Ceil => {
            need_float()?;
            let op = match n.op {
                Tanh => UnOp::Tanh,
                Erf => UnOp::Erf,
                Exp => UnOp::Exp,
                Log => UnOp::Log,
                Sqrt => UnOp::Sqrt,
                Floor => UnOp::Floor,
                _ => UnOp::Ceil,
            };
            VExpr::un(op, x)
        }
        Reciprocal => {
            need_float()?;
            VExpr::bin(BinOp::Div, one, x)
        }
        Gelu => {
            need_float()?;
            let half = VExpr::f(0.5, dt);
            let approx = n
                .attrs
                .string("approximate", "none")
                .map_err(|e| cx.err(e))?;
            let inner = if approx == "tanh" {
                let c = VExpr::f((2.0 / std::f64::consts::PI).sqrt(), dt);
                let cube = VExpr::bin(
                    BinOp::Mul,
                    VExpr::bin(BinOp::Mul, x.clone(), x.clone()),
                    x.clone(),
                );
                let t = VExpr::bin(
                    BinOp::Add,
                    x.clone(),
                    VExpr::bin(BinOp::Mul, VExpr::f(0.044715, dt), cube),
                );
                VExpr::un(UnOp::Tanh, VExpr::bin(BinOp::Mul, c, t))
            } else {
                VExpr::un(
                    UnOp::Erf,
                    VExpr::bin(
                        BinOp::Mul,
                        x.clone(),
                        VExpr::f(std::f64::consts::FRAC_1_SQRT_2, dt),
                    ),
                )
            };
            VExpr::bin(
                BinOp::Mul,
                VExpr::bin(BinOp::Mul, half, x),
                VExpr::bin(BinOp::Add, one, inner),
            )
        }
        LeakyRelu => {
            need_float()?;
            let alpha = n.attrs.float("alpha", 0.01).map_err(|e| cx.err(e))?;
            VExpr::select(
                VExpr::Cmp(CmpOp::Ge, Box::new(x.clone()), Box::new(zero)),
                x.clone(),
                VExpr::bin(BinOp::Mul, VExpr::f(alpha, dt), x),
            )
        }
        Clip => {
            let mut v = x;
            if let Some(lo) = args.get(1).cloned().flatten() {
                v = VExpr::bin(BinOp::Max, v, lo);
            }
            if let Some(hi) = args.get(2).cloned().flatten() {
                v = VExpr::bin(BinOp::Min, v, hi);
            }
            v
        }
        Add | Sub | Mul | Div | Max | Min | Sum => {
            let op = match n.op {
                Add | Sum => BinOp::Add,
                Sub => BinOp::Sub,
                Mul => BinOp::Mul,
                Div => BinOp::Div,
                Max => BinOp::Max,
                _ => BinOp::Min,
            };
            let mut v = x;
            for arg in args.iter().skip(1).flatten() {
                v = VExpr::bin(op, v, arg.clone());
            }
            v
        }
        Pow if !float => {
            // Integer bases: through f64, truncated back (as the interpreter does).
            let f64_of = |v: VExpr, d: tessera_ir::DType| {
                if d == tessera_ir::DType::F64 {
                    v
                } else {
                    VExpr::Cast(tessera_ir::DType::F64, Box::new(v))
                }
            };
            let ed = cx.in_dtypes[1].unwrap_or(dt);
            let p = VExpr::bin(BinOp::Pow, f64_of(x, dt), f64_of(a(1)?, ed));
            VExpr::Cast(dt, Box::new(p))
        }
        Pow => {
            let e = a(1)?;
            let ed = cx.in_dtypes[1].unwrap_or(dt);
            let e = if ed != dt {
                VExpr::Cast(dt, Box::new(e))
            } else {
                e
            };
            VExpr::bin(BinOp::Pow, x, e)
        }
        Equal | Less | Greater => {
            let op = match n.op {
                Equal => CmpOp::Eq,
                Less => CmpOp::Lt,
                _ => CmpOp::Gt,
            };
            VExpr::Cmp(op, Box::new(x), Box::new(a(1)?))
        }
        GreaterOrEqual => VExpr::Cmp(CmpOp::Ge, Box::new(x), Box::new(a(1)?)),
        LessOrEqual => VExpr::Cmp(CmpOp::Le, Box::new(x), Box::new(a(1)?)),
        And | BitwiseAnd => VExpr::bin(BinOp::And, x, a(1)?),
        Or | BitwiseOr => VExpr::bin(BinOp::Or, x, a(1)?),
        Xor | BitwiseXor => VExpr::bin(BinOp::Xor, x, a(1)?),
        BitwiseNot => VExpr::bin(BinOp::Xor, x, VExpr::i(-1, dt)),
        Mod => {
            let y = a(1)?;
            let r = VExpr::bin(BinOp::Rem, x, y.clone());
            let fmod = n.attrs.int("fmod", 0).map_err(|e| cx.err(e))? != 0;
            if fmod || float {
                r
            } else {
                // Python's %: a non-zero remainder takes the divisor's sign.
                let lt0 = |v: VExpr| VExpr::Cmp(CmpOp::Lt, Box::new(v), Box::new(zero.clone()));
                let fix = VExpr::bin(
                    BinOp::And,
                    VExpr::Cmp(CmpOp::Ne, Box::new(r.clone()), Box::new(zero.clone())),
                    VExpr::Cmp(
                        CmpOp::Ne,
                        Box::new(lt0(r.clone())),
                        Box::new(lt0(y.clone())),
                    ),
                );
                VExpr::select(fix, VExpr::bin(BinOp::Add, r.clone(), y), r)
            }
        }
        IsNaN => VExpr::Cmp(CmpOp::Ne, Box::new(x.clone()), Box::new(x)),
        IsInf => {
            let (neg, pos) = (
                n.attrs.int("detect_negative", 1).map_err(|e| cx.err(e))? != 0,
                n.attrs.int("detect_positive", 1).map_err(|e| cx.err(e))? != 0,
            );
            let is = |v: f64| VExpr::Cmp(CmpOp::Eq, Box::new(x.clone()), Box::new(VExpr::f(v, dt)));
            match (neg, pos) {
                (true, true) => VExpr::bin(BinOp::Or, is(f64::INFINITY), is(f64::NEG_INFINITY)),
                (false, true) => is(f64::INFINITY),
                (true, false) => is(f64::NEG_INFINITY),
                (false, false) => VExpr::Cmp(CmpOp::Ne, Box::new(zero.clone()), Box::new(zero)),
            }
        }
        Sign => {
            let gt = VExpr::Cmp(CmpOp::Gt, Box::new(x.clone()), Box::new(zero.clone()));
            let lt = VExpr::Cmp(CmpOp::Lt, Box::new(x.clone()), Box::new(zero.clone()));
            // x * 0 keeps NaN (and the sign of zero) for floats.
            let rest = if float {
                VExpr::bin(BinOp::Mul, x, zero)
            } else {
                zero
            };
            VExpr::select(gt, one, VExpr::select(lt, VExpr::lit(-1.0, dt), rest))
        }
        Round => {
            need_float()?;
            VExpr::un(UnOp::Round, x)
        }
        Softsign => {
            need_float()?;
            VExpr::bin(
                BinOp::Div,
                x.clone(),
                VExpr::bin(BinOp::Add, one, VExpr::un(UnOp::Abs, x)),
            )
        }
        ThresholdedRelu => {
            need_float()?;
            let alpha = n.attrs.float("alpha", 1.0).map_err(|e| cx.err(e))?;
            VExpr::select(
                VExpr::Cmp(
                    CmpOp::Gt,
                    Box::new(x.clone()),
                    Box::new(VExpr::f(alpha, dt)),
                ),
                x,
                zero,
            )
        }
        Shrink => {
            let p = tessera_ir::interp::UnaryParams::of(n).map_err(|e| cx.err(e))?;
            let (bias, lambd) = (VExpr::lit(p.beta, dt), VExpr::lit(p.gamma, dt));
            let below = VExpr::Cmp(
                CmpOp::Lt,
                Box::new(x.clone()),
                Box::new(VExpr::un(UnOp::Neg, lambd.clone())),
            );
            let above = VExpr::Cmp(CmpOp::Gt, Box::new(x.clone()), Box::new(lambd));
            VExpr::select(
                below,
                VExpr::bin(BinOp::Add, x.clone(), bias.clone()),
                VExpr::select(above, VExpr::bin(BinOp::Sub, x, bias), zero),
            )
        }
        Not => VExpr::un(UnOp::Not, x),
        Where => VExpr::select(x, a(1)?, a(2)?),
        Cast | CastLike => {
            if cx.out_dtype == dt {
                x
            } else {
                VExpr::Cast(cx.out_dtype, Box::new(x))
            }
        }
        other => return Err(cx.err(format!("{other} is not elementwise"))),
    };
    Ok(e)
}
