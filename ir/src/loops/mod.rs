//! The loop IR: one kernel as nested loops over flat buffers.
//!
//! A [`LoopProgram`] names its buffers (each a flat array of one dtype; inputs and outputs,
//! in call order) and a body of statements: loops with an annotation ([`LoopKind`]), stores,
//! guarded blocks, and reductions that bind an accumulator for the statements inside them.
//! Index arithmetic ([`IExpr`]) is kept apart from value arithmetic ([`VExpr`]).
//!
//! **Invariant:** a `parallel` loop can only be the single outermost statement of a program;
//! its iterations must be independent (the runtime splits its range across threads).
//! A `vectorize(w)` loop contains no other loop (reductions inside it fold one vector
//! accumulator per lane group).

pub mod async_copy;
pub mod gpu;
pub mod interleave;
pub mod interp;
pub mod mma;
pub mod parse;
pub mod print;
pub mod range;
pub mod shuffle;
pub mod simplify;
pub mod verify;

use crate::dtype::DType;

#[derive(Clone, Debug, PartialEq)]
pub struct LoopProgram {
    pub name: String,
    pub buffers: Vec<Buffer>,
    pub body: Vec<Stmt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufRole {
    Input,
    Output,
    /// Kernel-local working memory (e.g. a packed operand panel): not an argument; each call
    /// of the kernel (each thread's share of the parallel loop) gets its own, uninitialised.
    Scratch,
    /// GPU shared memory: one copy per thread block, seen by all its threads, uninitialised
    /// when the block starts (see [`gpu`] for when writes become visible).
    Shared,
    /// GPU thread-private memory (registers): one copy per thread of a block, kept across the
    /// block's thread loops (a thread's accumulators), uninitialised when the block starts.
    Local,
}

impl BufRole {
    /// Passed by the caller (inputs and outputs), as opposed to kernel-local memory.
    pub fn is_param(self) -> bool {
        matches!(self, BufRole::Input | BufRole::Output)
    }

    /// One of the GPU memory spaces, only meaningful in a kernel with bound loops.
    pub fn is_gpu_memory(self) -> bool {
        matches!(self, BufRole::Shared | BufRole::Local)
    }

    /// The name used in the text format.
    pub fn name(self) -> &'static str {
        match self {
            BufRole::Input => "in",
            BufRole::Output => "out",
            BufRole::Scratch => "scratch",
            BufRole::Shared => "shared",
            BufRole::Local => "local",
        }
    }

    pub const ALL: [BufRole; 5] = [
        BufRole::Input,
        BufRole::Output,
        BufRole::Scratch,
        BufRole::Shared,
        BufRole::Local,
    ];
}

/// The most shared memory a kernel may declare statically (every NVIDIA GPU's limit); a
/// kernel with more is given it as *dynamic* shared memory at launch (see
/// [`gpu::shared_layout`]).
pub const MAX_STATIC_SHARED_BYTES: usize = 48 * 1024;
/// The most shared memory one kernel may declare: what one block may have on any GPU
/// (sm_90: 227 KB). GPUs with less ([`gpu::max_shared_bytes`]: sm_80 163 KB) refuse more at
/// code generation, and their tuning spaces leave such tiles out.
pub const MAX_SHARED_BYTES: usize = 227 * 1024;
/// The most thread-private memory one kernel may declare per thread (beyond a few hundred
/// bytes it leaves registers for slow local memory).
pub const MAX_LOCAL_BYTES: usize = 1024;

/// The most scratch memory one kernel may declare: it lives on the calling thread's stack.
pub const MAX_SCRATCH_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
    pub role: BufRole,
}

pub use gpu::GpuAxis;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopKind {
    Serial,
    Parallel,
    Vectorize(u32),
    Unroll(u32),
    /// One iteration per GPU thread block along an axis (`blockIdx`); see [`gpu`].
    Block(GpuAxis),
    /// One iteration per GPU thread of a block along an axis (`threadIdx`); see [`gpu`].
    Thread(GpuAxis),
}

impl LoopKind {
    /// Bound to a GPU block or thread index.
    pub fn is_gpu(self) -> bool {
        matches!(self, LoopKind::Block(_) | LoopKind::Thread(_))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    pub var: String,
    pub extent: i64,
    pub kind: LoopKind,
    pub body: Vec<Stmt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    Prod,
}

/// `acc = fold(op, init, value over axes)`, then `body` runs with `acc` bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduce {
    pub acc: String,
    pub dtype: DType,
    pub op: ReduceOp,
    pub init: VExpr,
    pub axes: Vec<(String, i64)>,
    pub value: VExpr,
    pub body: Vec<Stmt>,
    /// A schedule annotation (`vectorize(w)` after the axes): native code folds the innermost
    /// axis `w` values at a time into per-lane partial results, combined once at the end.
    /// The fold's order changes (a float sum rounds differently, within the oracle's
    /// reduction tolerance), never its meaning; the interpreters ignore it.
    pub vectorize: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    For(Loop),
    Store {
        buf: String,
        index: IExpr,
        value: VExpr,
    },
    /// Runs `then` when `cond` (a bool expression) holds; used for split tails and guards.
    If {
        cond: VExpr,
        then: Vec<Stmt>,
    },
    Reduce(Reduce),
    /// A warp's tensor-core step (see [`mma`]): defined per thread, only in thread loops.
    Mma(mma::Mma),
    /// A warp's fold of shared elements through shuffles (see [`shuffle`]): defined per
    /// thread, only in thread loops.
    WarpFold(shuffle::WarpFold),
    /// A thread's copy of a run of input elements into shared memory, complete at the next
    /// barrier (see [`async_copy`]): only in thread loops.
    AsyncCopy(async_copy::AsyncCopy),
}

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
        if k == 1 {
            self
        } else {
            IExpr::FloorDiv(Box::new(self), Box::new(IExpr::Const(k)))
        }
    }
    pub fn modulo(self, k: i64) -> IExpr {
        if k == 1 {
            IExpr::Const(0)
        } else {
            IExpr::Mod(Box::new(self), Box::new(IExpr::Const(k)))
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
            IExpr::Of(x) => IExpr::Of(Box::new(value(x))),
        }
    }

    /// Every value of this expression modulo `n` (> 0), when its shape shows one: constants,
    /// sums and differences of known residues, products with a multiple of `n` or of known
    /// residues, the smaller or larger of two with the same residue, a remainder modulo a multiple of
    /// `n` of a known residue. Variables are not known.
    pub fn residue(&self, n: i64) -> Option<i64> {
        let r = |e: &IExpr| e.residue(n);
        match self {
            IExpr::Const(c) => Some(c.rem_euclid(n)),
            IExpr::Add(a, b) => Some((r(a)? + r(b)?).rem_euclid(n)),
            IExpr::Sub(a, b) => Some((r(a)? - r(b)?).rem_euclid(n)),
            IExpr::Mul(a, b) => match (r(a), r(b)) {
                (Some(0), _) | (_, Some(0)) => Some(0),
                (ra, rb) => Some((ra? * rb?).rem_euclid(n)),
            },
            IExpr::Min(a, b) | IExpr::Max(a, b) => r(a).filter(|&ra| r(b) == Some(ra)),
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
            IExpr::FloorDiv(a, b) | IExpr::Mod(a, b) | IExpr::Min(a, b) | IExpr::Max(a, b) => {
                (a.coeff(v)? == 0 && b.coeff(v)? == 0).then_some(0)
            }
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
            | IExpr::Max(a, b) => Some((a, b)),
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

impl Stmt {
    /// The per-thread meaning, as ordinary statements, of a statement defined by one: a
    /// warp-collective one (see [`mma`], [`shuffle`]) or an asynchronous copy (see
    /// [`async_copy`]); nothing for any other statement.
    pub fn expansion(&self) -> Vec<Stmt> {
        match self {
            Stmt::Mma(m) => m.expand(),
            Stmt::WarpFold(w) => w.expand(),
            Stmt::AsyncCopy(c) => c.expand(),
            _ => vec![],
        }
    }

    /// Calls `f(buffer, index)` on every load anywhere inside (values, guards, reduction
    /// inits, and loads nested in index expressions).
    pub fn visit_loads(&self, f: &mut dyn FnMut(&str, &IExpr)) {
        let (v, i) = (VExpr::visit_loads, IExpr::visit_loads);
        match self {
            Stmt::For(l) => l.body.iter().for_each(|s| s.visit_loads(f)),
            Stmt::Store { index, value, .. } => {
                i(index, f);
                v(value, f)
            }
            Stmt::If { cond, then } => {
                v(cond, f);
                then.iter().for_each(|s| s.visit_loads(f))
            }
            Stmt::Reduce(r) => {
                v(&r.init, f);
                v(&r.value, f);
                r.body.iter().for_each(|s| s.visit_loads(f))
            }
            s @ (Stmt::Mma(_) | Stmt::WarpFold(_) | Stmt::AsyncCopy(_)) => {
                s.expansion().iter().for_each(|s| s.visit_loads(f))
            }
        }
    }

    /// [`VExpr::replace_acc`] in every expression inside.
    pub fn replace_acc(&self, name: &str, with: &VExpr) -> Stmt {
        self.map_exprs(&|x| x.replace_acc(name, with), &|i| {
            i.replace_acc(name, with)
        })
    }

    /// Replaces index variable `v` by `e` in every expression (loop variables that shadow
    /// `v` are not expected: names are unique within a program).
    pub fn subst(&self, v: &str, e: &IExpr) -> Stmt {
        self.map_exprs(&|x| x.subst(v, e), &|i| i.subst(v, e))
    }

    /// This statement with every value expression `x` in it (also nested) replaced by
    /// `value(x)` and every store index `i` by `index(i)`.
    pub fn map_exprs(
        &self,
        value: &dyn Fn(&VExpr) -> VExpr,
        index: &dyn Fn(&IExpr) -> IExpr,
    ) -> Stmt {
        let sub = |b: &[Stmt]| b.iter().map(|s| s.map_exprs(value, index)).collect();
        match self {
            Stmt::For(l) => Stmt::For(Loop {
                body: sub(&l.body),
                ..l.clone()
            }),
            Stmt::Store {
                buf,
                index: i,
                value: v,
            } => Stmt::Store {
                buf: buf.clone(),
                index: index(i),
                value: value(v),
            },
            Stmt::If { cond, then } => Stmt::If {
                cond: value(cond),
                then: sub(then),
            },
            Stmt::Reduce(r) => Stmt::Reduce(Reduce {
                init: value(&r.init),
                value: value(&r.value),
                body: sub(&r.body),
                ..r.clone()
            }),
            Stmt::Mma(m) => Stmt::Mma(m.map_iexprs(index)),
            Stmt::WarpFold(w) => Stmt::WarpFold(w.map_iexprs(index)),
            Stmt::AsyncCopy(c) => Stmt::AsyncCopy(c.map_iexprs(index)),
        }
    }
}

/// Whether iterations of a loop with this body may depend on each other through memory:
/// some load reads a buffer the body also stores to, at an index that is not syntactically
/// one of the store indices — up to renaming variables bound inside the body to ranges of
/// the same length, so that a softmax row read back by a reduction (`y[r*128 + k2]`) after
/// a loop wrote it (`y[r*128 + k1]`, both over 0..128) stays independent per row
/// (conservative: `y[i] = y[i] + ...` is independent per `i`, a scan reading `y[k - 1]` is
/// not; nor is a scatter, storing at an index read from memory). Such loops are neither
/// parallelised nor vectorized.
pub fn carries_dependence(body: &[Stmt]) -> bool {
    fn vars_in_order(e: &IExpr, out: &mut Vec<String>) {
        match e {
            IExpr::Var(v) if !out.contains(v) => out.push(v.clone()),
            IExpr::Var(_) | IExpr::Const(_) | IExpr::Of(_) => {}
            _ => {
                if let Some((a, b)) = e.operands() {
                    vars_in_order(a, out);
                    vars_in_order(b, out);
                }
            }
        }
    }
    let inner = range::body_extents(body);
    // Bound variables renamed by order of appearance and extent: equal canonical indices
    // range over the same elements.
    let canonical = |e: &IExpr| -> IExpr {
        let mut order = Vec::new();
        vars_in_order(e, &mut order);
        let mut out = e.clone();
        for (n, v) in order.iter().enumerate() {
            if let Some(extent) = inner.get(v) {
                out = out.subst(v, &IExpr::Var(format!("$bound{n}:{extent}")));
            }
        }
        out
    };
    fn stores(body: &[Stmt], out: &mut Vec<(String, IExpr)>) {
        for s in body {
            match s {
                Stmt::For(l) => stores(&l.body, out),
                Stmt::Store { buf, index, .. } => out.push((buf.clone(), index.clone())),
                Stmt::If { then, .. } => stores(then, out),
                Stmt::Reduce(r) => stores(&r.body, out),
                s @ (Stmt::Mma(_) | Stmt::WarpFold(_) | Stmt::AsyncCopy(_)) => {
                    stores(&s.expansion(), out)
                }
            }
        }
    }
    fn loads(body: &[Stmt], out: &mut Vec<(String, IExpr)>) {
        for s in body {
            s.visit_loads(&mut |buf, index| out.push((buf.to_string(), index.clone())));
        }
    }
    let (mut st, mut ld) = (Vec::new(), Vec::new());
    stores(body, &mut st);
    loads(body, &mut ld);
    // A store at a data-dependent index (a scatter) may hit the same place twice.
    let mut scatter = false;
    for (_, i) in &st {
        i.visit_loads(&mut |_, _| scatter = true);
    }
    if scatter {
        return true;
    }
    let st: Vec<(String, IExpr)> = st.iter().map(|(b, i)| (b.clone(), canonical(i))).collect();
    ld.iter().any(|(b, i)| {
        let i = canonical(i);
        st.iter().any(|(sb, _)| sb == b) && !st.iter().any(|(sb, si)| sb == b && *si == i)
    })
}

impl LoopProgram {
    pub fn buffer(&self, name: &str) -> Option<&Buffer> {
        self.buffers.iter().find(|b| b.name == name)
    }

    /// The buffers passed by the caller (inputs and outputs, in call order); the verifier
    /// keeps kernel-local buffers (scratch, shared, local) after them.
    pub fn params(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(|b| b.role.is_param())
    }

    /// Kernel-local scratch buffers.
    pub fn scratch(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(|b| b.role == BufRole::Scratch)
    }

    /// Estimated work: how many times stores and reduction steps execute in one run.
    pub fn work(&self) -> u64 {
        fn block(body: &[Stmt], mult: u64) -> u64 {
            body.iter()
                .map(|s| match s {
                    Stmt::For(l) => block(&l.body, mult.saturating_mul(l.extent.max(0) as u64)),
                    Stmt::Store { .. } => mult,
                    Stmt::If { then, .. } => block(then, mult),
                    Stmt::Reduce(r) => {
                        let steps = r
                            .axes
                            .iter()
                            .fold(mult, |m, (_, e)| m.saturating_mul((*e).max(0) as u64));
                        steps.saturating_add(block(&r.body, mult))
                    }
                    s @ (Stmt::Mma(_) | Stmt::WarpFold(_) | Stmt::AsyncCopy(_)) => {
                        block(&s.expansion(), mult)
                    }
                })
                .fold(0u64, u64::saturating_add)
        }
        block(&self.body, 1)
    }

    /// The extent of the parallel outermost loop, or 1 if the program has none. The runtime
    /// calls the compiled kernel with sub-ranges of `0..parallel_extent()`.
    pub fn parallel_extent(&self) -> i64 {
        match self.body.as_slice() {
            [Stmt::For(l)] if l.kind == LoopKind::Parallel => l.extent,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IExpr;

    #[test]
    fn multiples_are_known_by_their_shape() {
        let v = || IExpr::var("t");
        // A tile base: a buffer's offset, rows of 40 elements, a 16-element step.
        let base = v()
            .times(2560)
            .plus(v().floordiv(4).times(40))
            .plus(IExpr::c(16));
        assert!(base.is_multiple_of(8));
        assert!(
            !base.is_multiple_of(16),
            "40-element rows are not 16-aligned"
        );
        assert!(!v().is_multiple_of(8), "a variable may be anything");
        assert!(!v().plus(IExpr::c(8)).is_multiple_of(8));
        assert!(!v().modulo(32).times(3).is_multiple_of(8));
        let b = Box::new;
        assert!(IExpr::Mul(b(IExpr::c(4)), b(IExpr::c(2))).is_multiple_of(8));
        assert!(IExpr::Mul(b(v()), b(IExpr::c(16))).is_multiple_of(8));
        assert!(IExpr::Min(b(IExpr::c(16)), b(IExpr::c(8))).is_multiple_of(8));
        assert!(!IExpr::Min(b(v()), b(IExpr::c(8))).is_multiple_of(8));
        // The odd one of two neighbouring 8-column fragments: 8 past a multiple of 16.
        let odd = v().times(32).plus(IExpr::c(24)).plus(IExpr::c(16 * 40));
        assert_eq!(odd.residue(16), Some(8));
        assert_eq!(base.residue(8), Some(0));
        assert_eq!(v().plus(IExpr::c(8)).residue(16), None);
        // A remainder keeps the residue modulo a divisor of its modulus, not of others.
        let rem = IExpr::Mod(b(v().times(64).plus(IExpr::c(3))), b(IExpr::c(16)));
        assert_eq!(rem.residue(8), Some(3));
        assert_eq!(rem.residue(32), None);
        assert!(!v().modulo(16).is_multiple_of(8));
    }
}
