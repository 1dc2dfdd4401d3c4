//! The scalar meaning of the elementwise ops — unary functions with their attribute
//! parameters, binary arithmetic, comparisons and logic, `Mod` — and numpy broadcasting.

use super::R;
use crate::dtype::DType;
use crate::graph::Node;
use crate::infer;
use crate::op::{AttrsExt, OpKind};
use crate::tensor::{Tensor, numel, strides};

/// Attribute values of the parameterised unary ops, with each op's ONNX defaults.
#[derive(Clone, Debug)]
pub struct UnaryParams {
    pub alpha: f64,
    pub beta: f64,
    /// Selu's scale.
    pub gamma: f64,
    pub approximate: String,
}

impl UnaryParams {
    pub fn of(n: &Node) -> R<UnaryParams> {
        if n.op == OpKind::Shrink {
            // Shrink's bias travels as beta and its lambd as gamma.
            return Ok(UnaryParams {
                alpha: 0.0,
                beta: n.attrs.float("bias", 0.0)?,
                gamma: n.attrs.float("lambd", 0.5)?,
                approximate: String::new(),
            });
        }
        let (da, db) = match n.op {
            OpKind::HardSigmoid => (0.2, 0.5),
            OpKind::Elu | OpKind::Celu | OpKind::ThresholdedRelu => (1.0, 0.0),
            OpKind::Selu => (1.673_263_192_176_818_8, 0.0),
            _ => (0.01, 0.0),
        };
        Ok(UnaryParams {
            alpha: n.attrs.float("alpha", da)?,
            gamma: n.attrs.float("gamma", 1.050_701_022_148_132_3)?,
            beta: n.attrs.float("beta", db)?,
            approximate: n.attrs.string("approximate", "none")?,
        })
    }
}

/// The scalar meaning of each unary float op.
pub fn unary(op: OpKind, v: f64, p: &UnaryParams) -> f64 {
    use OpKind::*;
    let (alpha, approximate) = (p.alpha, p.approximate.as_str());
    match op {
        Sin => v.sin(),
        Cos => v.cos(),
        // Stable form: exp never overflows.
        Softplus => v.max(0.0) + (-v.abs()).exp().ln_1p(),
        HardSigmoid => (p.alpha * v + p.beta).clamp(0.0, 1.0),
        HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
        Elu => {
            if v >= 0.0 {
                v
            } else {
                alpha * (v.exp() - 1.0)
            }
        }
        Selu => p.gamma * if v > 0.0 { v } else { alpha * (v.exp() - 1.0) },
        Celu => v.max(0.0) + (alpha * ((v / alpha).exp() - 1.0)).min(0.0),
        Relu => v.max(0.0),
        Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Tanh => v.tanh(),
        Erf => erf(v),
        Gelu if approximate == "tanh" => {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
        }
        Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        Exp => v.exp(),
        Log => v.ln(),
        Sqrt => v.sqrt(),
        Reciprocal => 1.0 / v,
        Neg => -v,
        Abs => v.abs(),
        Floor => v.floor(),
        Ceil => v.ceil(),
        LeakyRelu => {
            if v >= 0.0 {
                v
            } else {
                alpha * v
            }
        }
        Sign => {
            if v.is_nan() {
                v
            } else if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Round => v.round_ties_even(),
        Softsign => v / (1.0 + v.abs()),
        ThresholdedRelu => {
            if v > alpha {
                v
            } else {
                0.0
            }
        }
        Shrink => {
            let (bias, lambd) = (p.beta, p.gamma);
            if v < -lambd {
                v + bias
            } else if v > lambd {
                v - bias
            } else {
                0.0
            }
        }
        _ => f64::NAN,
    }
}

/// erf to double precision (Abramowitz–Stegun 7.1.26 is too coarse; this uses the
/// complementary-error-function continued expansion from W. J. Cody's rational fits).
pub fn erf(x: f64) -> f64 {
    // Numerical Recipes' erfc with Chebyshev fit: relative error < 1.2e-7 everywhere,
    // refined by one Newton step on erf' = 2/sqrt(pi) exp(-x^2) via a series for small |x|.
    if x.abs() < 2.0 {
        // Maclaurin series: converges fast for |x| < 2 (terms shrink below 1e-17 by n = 40).
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..60 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // Continued fraction for erfc, accurate for |x| >= 2.
    let ax = x.abs();
    let mut f = 0.0;
    for k in (1..=60).rev() {
        f = (k as f64 / 2.0) / (ax + f);
    }
    let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
    if x > 0.0 { 1.0 - erfc } else { erfc - 1.0 }
}

/// For each element of `out_shape`, the flat index of the broadcast element of `in_shape`.
pub fn bcast_index(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let r = out_shape.len();
    let off = r - in_shape.len();
    let is = strides(in_shape);
    let n = numel(out_shape);
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let mut f = 0;
        for k in off..r {
            if in_shape[k - off] != 1 {
                f += idx[k] * is[k - off];
            }
        }
        res.push(f);
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    res
}

pub(super) fn binary(op: OpKind, a: &Tensor, b: &Tensor) -> R<Tensor> {
    binary_mod(op, a, b, false)
}

/// [`binary`] with Mod's `fmod` flag.
pub(super) fn binary_mod(op: OpKind, a: &Tensor, b: &Tensor, fmod: bool) -> R<Tensor> {
    use OpKind::*;
    let shape = infer::broadcast_static(&[a.shape(), b.shape()])?;
    let (ai, bi) = (
        bcast_index(a.shape(), &shape),
        bcast_index(b.shape(), &shape),
    );
    let n = numel(&shape);
    let cmp = matches!(
        op,
        Equal | Less | Greater | And | Or | GreaterOrEqual | LessOrEqual | Xor
    );
    if a.dtype().is_float() {
        let f = |x: f64, y: f64| match op {
            Add | Sum => x + y,
            Sub => x - y,
            Mul => x * y,
            Div => x / y,
            Pow => x.powf(y),
            Max => {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.max(y)
                }
            }
            Min => {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.min(y)
                }
            }
            Equal => (x == y) as i64 as f64,
            Less => (x < y) as i64 as f64,
            Greater => (x > y) as i64 as f64,
            GreaterOrEqual => (x >= y) as i64 as f64,
            LessOrEqual => (x <= y) as i64 as f64,
            // fmod: the remainder has the dividend's sign (C fmod).
            Mod => x % y,
            _ => f64::NAN,
        };
        let v: Vec<f64> = (0..n)
            .map(|i| f(a.get_f64(ai[i]), b.get_f64(bi[i])))
            .collect();
        Ok(Tensor::from_f64(
            if cmp { DType::Bool } else { a.dtype() },
            shape,
            &v,
        ))
    } else {
        let f = |x: i64, y: i64| -> R<i64> {
            Ok(match op {
                Add | Sum => x.wrapping_add(y),
                Sub => x.wrapping_sub(y),
                Mul => x.wrapping_mul(y),
                Div => {
                    if y == 0 {
                        return Err("integer division by zero".into());
                    }
                    x.wrapping_div(y)
                }
                Pow => (x as f64).powf(y as f64) as i64,
                Max => x.max(y),
                Min => x.min(y),
                Equal => (x == y) as i64,
                Less => (x < y) as i64,
                Greater => (x > y) as i64,
                GreaterOrEqual => (x >= y) as i64,
                LessOrEqual => (x <= y) as i64,
                // Bitwise on integers; on bools the same as the logical ops.
                And | BitwiseAnd => x & y,
                Or | BitwiseOr => x | y,
                Xor | BitwiseXor => x ^ y,
                Mod if y == 0 => return Err("integer modulo by zero".into()),
                Mod if fmod => x.wrapping_rem(y),
                // The remainder takes the divisor's sign (Python's %).
                Mod => {
                    let r = x.wrapping_rem(y);
                    if r != 0 && ((r < 0) != (y < 0)) {
                        r + y
                    } else {
                        r
                    }
                }
                _ => 0,
            })
        };
        let v: Vec<i64> = (0..n)
            .map(|i| f(a.get_i64(ai[i]), b.get_i64(bi[i])))
            .collect::<R<_>>()?;
        Ok(Tensor::from_i64(
            if cmp { DType::Bool } else { a.dtype() },
            shape,
            &v,
        ))
    }
}
