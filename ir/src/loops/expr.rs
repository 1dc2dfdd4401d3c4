//! The loop IR's expressions: integer index arithmetic ([`IExpr`], division and modulo
//! rounding toward negative infinity) apart from value arithmetic ([`VExpr`]: literals, loads,
//! unary, binary and comparison ops, selects, casts), with their builders, evaluation of
//! constant indices, and the walks the passes share.

use crate::dtype::DType;

/// Integer index arithmetic. Division and modulo round toward negative infinity.
#[derive(Clone, Debug, PartialEq)]
pub enum IExpr {
    Const(i64),
    Var(String),
    Add(Box<IExpr>, Box<IExpr>),
    Sub(Box<IExpr>, Box<IExpr>),
    Mul(Box<IExpr>, Box<IExpr>),
    FloorDiv(Box<IExpr>, Box<IExpr>),
    Mod(Box<IExpr>, Box<IExpr>),
    Min(Box<IExpr>, Box<IExpr>),
    Max(Box<IExpr>, Box<IExpr>),
    /// Bitwise exclusive or of two non-negative values (a shared-memory swizzle,
    /// [`swizzle_128`](super::mma::swizzle_128)).
    Xor(Box<IExpr>, Box<IExpr>),
    /// An integer value used as an index (e.g. Gather's indices).
    Of(Box<VExpr>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    F(f64),
    I(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Erf,
    Floor,
    Ceil,
    Not,
    Sin,
    Cos,
    /// Round half to even.
    Round,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// Bitwise on integers, logical on bools (as are `And` and `Or`).
    And,
    Or,
    Xor,
    /// Remainder with the dividend's sign (C `fmod`, `%` on integers).
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Value arithmetic; every expression has one dtype (see [`VExpr::dtype`]).
#[derive(Clone, Debug, PartialEq)]
pub enum VExpr {
    Const(Lit, DType),
    Load {
        buf: String,
        index: IExpr,
    },
    /// A reduction accumulator bound by an enclosing [`Reduce`].
    Acc(String, DType),
    Unary(UnOp, Box<VExpr>),
    Binary(BinOp, Box<VExpr>, Box<VExpr>),
    Cmp(CmpOp, Box<VExpr>, Box<VExpr>),
    ICmp(CmpOp, IExpr, IExpr),
    /// Lazy: only the chosen branch is evaluated (a guarded load may be out of bounds otherwise).
    Select(Box<VExpr>, Box<VExpr>, Box<VExpr>),
    Cast(DType, Box<VExpr>),
    /// An index expression converted to a value.
    Index(IExpr, DType),
}

/// The greatest common divisor of two positive numbers.
fn gcd(a: i64, b: i64) -> i64 {
    match b {
        0 => a,
        _ => gcd(b, a % b),
    }
}

// Small constructors keep lowering code readable.
impl IExpr {
    pub fn var(v: &str) -> IExpr {
        IExpr::Var(v.to_string())
    }
    pub fn c(v: i64) -> IExpr {
        IExpr::Const(v)
    }
    /// `self * k + e`, folding trivial terms.
    pub fn plus(self, o: IExpr) -> IExpr {
        match (&self, &o) {
            (IExpr::Const(0), _) => o,
            (_, IExpr::Const(0)) => self,
            (IExpr::Const(a), IExpr::Const(b)) => IExpr::Const(a + b),
            _ => IExpr::Add(Box::new(self), Box::new(o)),
        }
    }
    pub fn minus(self, o: IExpr) -> IExpr {
        match (&self, &o) {
            (_, IExpr::Const(0)) => self,
            (IExpr::Const(a), IExpr::Const(b)) => IExpr::Const(a - b),
            _ => IExpr::Sub(Box::new(self), Box::new(o)),
        }
    }
    /// `self · o`, folding factors of one.
    pub fn product(self, o: IExpr) -> IExpr {
        match (&self, &o) {
            (IExpr::Const(k), _) => o.times(*k),
            (_, IExpr::Const(k)) => self.times(*k),
            _ => IExpr::Mul(Box::new(self), Box::new(o)),
        }
    }
    /// `self ^ o` (both non-negative), folding constants.
    pub fn xor(self, o: IExpr) -> IExpr {
        match (&self, &o) {
            (IExpr::Const(a), IExpr::Const(b)) => IExpr::Const(a ^ b),
            (_, IExpr::Const(0)) => self,
            (IExpr::Const(0), _) => o,
            _ => IExpr::Xor(Box::new(self), Box::new(o)),
        }
    }
    /// `self` clamped to `lo..=hi`.
    pub fn clamp(self, lo: i64, hi: i64) -> IExpr {
        IExpr::Min(
            Box::new(IExpr::Max(Box::new(self), Box::new(IExpr::c(lo)))),
            Box::new(IExpr::c(hi)),
        )
    }
    pub fn times(self, k: i64) -> IExpr {
        match (&self, k) {
            (_, 0) => IExpr::Const(0),
            (_, 1) => self,
            (IExpr::Const(a), _) => IExpr::Const(a * k),
            _ => IExpr::Mul(Box::new(self), Box::new(IExpr::Const(k))),
        }
    }
    pub fn floordiv(self, k: i64) -> IExpr {
        match self {
            _ if k == 1 => self,
            // `(x % a) // k` is 0 where `a ≤ k`: the remainder stays in `0..a`.
            IExpr::Mod(_, a) if matches!(*a, IExpr::Const(a) if 0 < a && a <= k) => IExpr::Const(0),
            _ => IExpr::FloorDiv(Box::new(self), Box::new(IExpr::Const(k))),
        }
    }
    pub fn modulo(self, k: i64) -> IExpr {
        match self {
            _ if k == 1 => IExpr::Const(0),
            // `(x % a) % k` is `x % k` where `k` divides `a` (floored remainders): a
            // thread's lane in its warpgroup from its place in a team of warpgroups.
            IExpr::Mod(x, a) if k > 0 && matches!(*a, IExpr::Const(a) if a > 0 && a % k == 0) => {
                IExpr::Mod(x, Box::new(IExpr::Const(k)))
            }
            _ => IExpr::Mod(Box::new(self), Box::new(IExpr::Const(k))),
        }
    }

    /// Row-major flat offset of coordinates `idx` in a tensor with `strides`.
    pub fn linear(idx: &[IExpr], strides: &[usize]) -> IExpr {
        idx.iter().zip(strides).fold(IExpr::c(0), |acc, (i, &s)| {
            acc.plus(i.clone().times(s as i64))
        })
    }

    /// Replaces variable `v` by `e` everywhere.
    pub fn subst(&self, v: &str, e: &IExpr) -> IExpr {
        match self {
            IExpr::Var(n) if n == v => e.clone(),
            _ => self.map_children(&|x| x.subst(v, e), &|x| x.subst(v, e)),
        }
    }

    /// This expression with each child index expression `c` replaced by `index(c)` and the
    /// value inside an [`IExpr::Of`] by `value(…)`: the one place that knows the children.
    pub fn map_children(
        &self,
        index: &dyn Fn(&IExpr) -> IExpr,
        value: &dyn Fn(&VExpr) -> VExpr,
    ) -> IExpr {
        let b = |x: &IExpr| Box::new(index(x));
        match self {
            IExpr::Const(_) | IExpr::Var(_) => self.clone(),
            IExpr::Add(a, c) => IExpr::Add(b(a), b(c)),
            IExpr::Sub(a, c) => IExpr::Sub(b(a), b(c)),
            IExpr::Mul(a, c) => IExpr::Mul(b(a), b(c)),
            IExpr::FloorDiv(a, c) => IExpr::FloorDiv(b(a), b(c)),
            IExpr::Mod(a, c) => IExpr::Mod(b(a), b(c)),
            IExpr::Min(a, c) => IExpr::Min(b(a), b(c)),
            IExpr::Max(a, c) => IExpr::Max(b(a), b(c)),
            IExpr::Xor(a, c) => IExpr::Xor(b(a), b(c)),
            IExpr::Of(x) => IExpr::Of(Box::new(value(x))),
        }
    }

    /// Every value of this expression modulo `n` (> 0), when its shape shows one: constants,
    /// sums and differences of known residues, products by a constant `k` of what is known
    /// modulo `n / gcd(n, k)` (`x·64` modulo 512 from `x` modulo 8), other products of known
    /// residues, the smaller or larger of two with the same residue, a remainder modulo a multiple of
    /// `n` of a known residue, an exclusive or of known residues modulo a power of two.
    /// Variables are not known.
    pub fn residue(&self, n: i64) -> Option<i64> {
        let r = |e: &IExpr| e.residue(n);
        match self {
            IExpr::Const(c) => Some(c.rem_euclid(n)),
            IExpr::Add(a, b) => Some((r(a)? + r(b)?).rem_euclid(n)),
            IExpr::Sub(a, b) => Some((r(a)? - r(b)?).rem_euclid(n)),
            IExpr::Mul(a, b) => match (a.as_ref(), b.as_ref()) {
                // `x·k` mod `n` needs only `x` mod `n / gcd(n, k)`: `(x + j·n/g)·k` differs
                // from `x·k` by `j·n·(k/g)`.
                (IExpr::Const(k), x) | (x, IExpr::Const(k)) if *k != 0 => {
                    let m = n / gcd(k.abs(), n);
                    let rx = if m == 1 { 0 } else { x.residue(m)? };
                    Some((rx * k).rem_euclid(n))
                }
                _ => match (r(a), r(b)) {
                    (Some(0), _) | (_, Some(0)) => Some(0),
                    (ra, rb) => Some((ra? * rb?).rem_euclid(n)),
                },
            },
            IExpr::Min(a, b) | IExpr::Max(a, b) => r(a).filter(|&ra| r(b) == Some(ra)),
            // The low bits of an exclusive or are those of its operands'.
            IExpr::Xor(a, b) if n.count_ones() == 1 => Some(r(a)? ^ r(b)?),
            IExpr::Xor(..) => None,
            // `a mod c` differs from `a` by a multiple of `c`: of `n` too where `n` divides `c`.
            IExpr::Mod(a, c) if matches!(c.as_ref(), IExpr::Const(c) if *c > 0 && c % n == 0) => {
                r(a)
            }
            IExpr::Var(_) | IExpr::FloorDiv(..) | IExpr::Mod(..) | IExpr::Of(_) => None,
        }
    }

    /// Whether every value of this expression is a multiple of `n` (> 0), as far as its
    /// shape shows (see [`IExpr::residue`]).
    pub fn is_multiple_of(&self, n: i64) -> bool {
        self.residue(n) == Some(0)
    }

    /// The coefficient of `v` if this expression is affine in `v` (`None` if not affine).
    /// The value of this expression, its leaves (variables and loaded indices) valued by
    /// `leaf`: wrapping arithmetic, division and remainder rounding down (as the
    /// interpreter and the compiled code compute them), `division_by_zero()` for a zero
    /// divisor. The one evaluator of index expressions.
    pub fn evaluate<E>(
        &self,
        leaf: &dyn Fn(&IExpr) -> Result<i64, E>,
        division_by_zero: &dyn Fn() -> E,
    ) -> Result<i64, E> {
        let v = |x: &IExpr| x.evaluate(leaf, division_by_zero);
        Ok(match self {
            IExpr::Const(c) => *c,
            IExpr::Var(_) | IExpr::Of(_) => leaf(self)?,
            IExpr::Add(x, y) => v(x)?.wrapping_add(v(y)?),
            IExpr::Sub(x, y) => v(x)?.wrapping_sub(v(y)?),
            IExpr::Mul(x, y) => v(x)?.wrapping_mul(v(y)?),
            IExpr::FloorDiv(x, y) | IExpr::Mod(x, y) => {
                let (a, d) = (v(x)?, v(y)?);
                if d == 0 {
                    return Err(division_by_zero());
                }
                let q = crate::loops::interp::floor_div(a, d);
                match self {
                    IExpr::FloorDiv(..) => q,
                    _ => a.wrapping_sub(d.wrapping_mul(q)),
                }
            }
            IExpr::Min(x, y) => v(x)?.min(v(y)?),
            IExpr::Max(x, y) => v(x)?.max(v(y)?),
            IExpr::Xor(x, y) => v(x)? ^ v(y)?,
        })
    }

    /// [`IExpr::evaluate`] with variables valued by `var`: `None` for an unknown variable, a
    /// loaded index or a zero divisor.
    pub fn value(&self, var: &dyn Fn(&str) -> Option<i64>) -> Option<i64> {
        self.evaluate(
            &|leaf| match leaf {
                IExpr::Var(v) => var(v).ok_or(()),
                _ => Err(()),
            },
            &|| (),
        )
        .ok()
    }

    pub fn coeff(&self, v: &str) -> Option<i64> {
        match self {
            IExpr::Const(_) => Some(0),
            IExpr::Var(n) => Some((n == v) as i64),
            IExpr::Add(a, b) => Some(a.coeff(v)? + b.coeff(v)?),
            IExpr::Sub(a, b) => Some(a.coeff(v)? - b.coeff(v)?),
            IExpr::Mul(a, b) => match (a.as_ref(), b.as_ref()) {
                (IExpr::Const(k), e) | (e, IExpr::Const(k)) => Some(k * e.coeff(v)?),
                (x, y) => (x.coeff(v)? == 0 && y.coeff(v)? == 0).then_some(0),
            },
            IExpr::FloorDiv(a, b)
            | IExpr::Mod(a, b)
            | IExpr::Min(a, b)
            | IExpr::Max(a, b)
            | IExpr::Xor(a, b) => (a.coeff(v)? == 0 && b.coeff(v)? == 0).then_some(0),
            IExpr::Of(x) => (!x.mentions(v)).then_some(0),
        }
    }
}

impl VExpr {
    pub fn f(v: f64, dtype: DType) -> VExpr {
        VExpr::Const(Lit::F(v), dtype)
    }
    pub fn i(v: i64, dtype: DType) -> VExpr {
        VExpr::Const(Lit::I(v), dtype)
    }
    /// A constant of `dtype` holding `v` (float or integer as the dtype needs).
    pub fn lit(v: f64, dtype: DType) -> VExpr {
        if dtype.is_float() {
            VExpr::f(v, dtype)
        } else {
            VExpr::i(v as i64, dtype)
        }
    }
    pub fn load(buf: &str, index: IExpr) -> VExpr {
        VExpr::Load {
            buf: buf.to_string(),
            index,
        }
    }
    pub fn un(op: UnOp, a: VExpr) -> VExpr {
        VExpr::Unary(op, Box::new(a))
    }
    pub fn bin(op: BinOp, a: VExpr, b: VExpr) -> VExpr {
        VExpr::Binary(op, Box::new(a), Box::new(b))
    }
    pub fn select(c: VExpr, a: VExpr, b: VExpr) -> VExpr {
        VExpr::Select(Box::new(c), Box::new(a), Box::new(b))
    }

    /// Whether index variable `v` occurs anywhere inside.
    pub fn mentions(&self, v: &str) -> bool {
        let mut found = false;
        self.visit_iexprs(&mut |e| found |= e.coeff(v) != Some(0));
        found
    }

    /// Calls `f` on every top-level index expression inside this value expression.
    pub fn visit_iexprs(&self, f: &mut dyn FnMut(&IExpr)) {
        match self {
            VExpr::Const(..) | VExpr::Acc(..) => {}
            VExpr::Load { index, .. } => f(index),
            VExpr::Index(e, _) => f(e),
            VExpr::ICmp(_, a, b) => {
                f(a);
                f(b)
            }
            VExpr::Unary(_, a) | VExpr::Cast(_, a) => a.visit_iexprs(f),
            VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => {
                a.visit_iexprs(f);
                b.visit_iexprs(f)
            }
            VExpr::Select(c, a, b) => {
                c.visit_iexprs(f);
                a.visit_iexprs(f);
                b.visit_iexprs(f)
            }
        }
    }

    /// Replaces index variable `v` by `e` everywhere.
    pub fn subst(&self, v: &str, e: &IExpr) -> VExpr {
        self.map_children(&|x| x.subst(v, e), &|i| i.subst(v, e))
    }

    /// This expression with each child value expression `c` replaced by `value(c)` and each
    /// index expression (of a load, an index value, a comparison) by `index(…)`: the one
    /// place that knows the children.
    pub fn map_children(
        &self,
        value: &dyn Fn(&VExpr) -> VExpr,
        index: &dyn Fn(&IExpr) -> IExpr,
    ) -> VExpr {
        let b = |x: &VExpr| Box::new(value(x));
        match self {
            VExpr::Const(..) | VExpr::Acc(..) => self.clone(),
            VExpr::Load { buf, index: i } => VExpr::Load {
                buf: buf.clone(),
                index: index(i),
            },
            VExpr::Index(i, d) => VExpr::Index(index(i), *d),
            VExpr::ICmp(op, a, c) => VExpr::ICmp(*op, index(a), index(c)),
            VExpr::Unary(op, a) => VExpr::Unary(*op, b(a)),
            VExpr::Cast(d, a) => VExpr::Cast(*d, b(a)),
            VExpr::Binary(op, a, c) => VExpr::Binary(*op, b(a), b(c)),
            VExpr::Cmp(op, a, c) => VExpr::Cmp(*op, b(a), b(c)),
            VExpr::Select(c, a, d) => VExpr::Select(b(c), b(a), b(d)),
        }
    }

    /// Replaces every load of exactly `buf[index]` by `with` (e.g. a product's epilogue,
    /// which reads the finished sum from the output, reading it from an accumulator).
    pub fn replace_load(&self, buf: &str, index: &IExpr, with: &VExpr) -> VExpr {
        match self {
            VExpr::Load { buf: b, index: i } if b == buf && i == index => with.clone(),
            _ => self.map_children(&|x| x.replace_load(buf, index, with), &|i| i.clone()),
        }
    }

    /// Replaces the accumulator `name` by `with` everywhere (when a reduction's result is
    /// computed elsewhere, e.g. across the threads of a block).
    pub fn replace_acc(&self, name: &str, with: &VExpr) -> VExpr {
        match self {
            VExpr::Acc(n, _) if n == name => with.clone(),
            _ => self.map_children(&|x| x.replace_acc(name, with), &|i| {
                i.replace_acc(name, with)
            }),
        }
    }

    /// Whether any load occurs inside.
    pub fn has_load(&self) -> bool {
        match self {
            VExpr::Load { .. } => true,
            VExpr::Const(..) | VExpr::Acc(..) | VExpr::Index(..) | VExpr::ICmp(..) => false,
            VExpr::Unary(_, a) | VExpr::Cast(_, a) => a.has_load(),
            VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => a.has_load() || b.has_load(),
            VExpr::Select(c, a, b) => c.has_load() || a.has_load() || b.has_load(),
        }
    }

    /// The dtype of this expression given the buffers' dtypes.
    pub fn dtype(&self, buf_dtype: &dyn Fn(&str) -> Option<DType>) -> Option<DType> {
        Some(match self {
            VExpr::Const(_, d) | VExpr::Acc(_, d) | VExpr::Cast(d, _) | VExpr::Index(_, d) => *d,
            VExpr::Load { buf, .. } => buf_dtype(buf)?,
            VExpr::Unary(UnOp::Not, _) | VExpr::Cmp(..) | VExpr::ICmp(..) => DType::Bool,
            VExpr::Unary(_, a) => a.dtype(buf_dtype)?,
            VExpr::Binary(_, a, _) => a.dtype(buf_dtype)?,
            VExpr::Select(_, a, _) => a.dtype(buf_dtype)?,
        })
    }
}

impl VExpr {
    /// Calls `f(buffer, index)` on every load inside, also loads nested in indices.
    pub fn visit_loads(&self, f: &mut dyn FnMut(&str, &IExpr)) {
        let (v, i) = (VExpr::visit_loads, IExpr::visit_loads);
        match self {
            VExpr::Load { buf, index } => {
                f(buf, index);
                i(index, f)
            }
            VExpr::Const(..) | VExpr::Acc(..) => {}
            VExpr::Index(x, _) => i(x, f),
            VExpr::ICmp(_, a, b) => {
                i(a, f);
                i(b, f)
            }
            VExpr::Unary(_, a) | VExpr::Cast(_, a) => v(a, f),
            VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => {
                v(a, f);
                v(b, f)
            }
            VExpr::Select(c, a, b) => {
                v(c, f);
                v(a, f);
                v(b, f)
            }
        }
    }
}

impl IExpr {
    /// [`VExpr::replace_acc`] inside data-dependent indices.
    pub fn replace_acc(&self, name: &str, with: &VExpr) -> IExpr {
        self.map_children(&|x| x.replace_acc(name, with), &|x| {
            x.replace_acc(name, with)
        })
    }

    /// The two operands of a binary form; `None` for constants, variables and `Of`.
    pub fn operands(&self) -> Option<(&IExpr, &IExpr)> {
        match self {
            IExpr::Add(a, b)
            | IExpr::Sub(a, b)
            | IExpr::Mul(a, b)
            | IExpr::FloorDiv(a, b)
            | IExpr::Mod(a, b)
            | IExpr::Min(a, b)
            | IExpr::Max(a, b)
            | IExpr::Xor(a, b) => Some((a, b)),
            IExpr::Const(_) | IExpr::Var(_) | IExpr::Of(_) => None,
        }
    }

    /// Calls `f(buffer, index)` on every load inside (data-dependent indices).
    pub fn visit_loads(&self, f: &mut dyn FnMut(&str, &IExpr)) {
        if let IExpr::Of(x) = self {
            x.visit_loads(f)
        } else if let Some((a, b)) = self.operands() {
            a.visit_loads(f);
            b.visit_loads(f)
        }
    }
}
