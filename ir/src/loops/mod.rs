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
mod expr;
pub mod gpu;
pub mod interleave;
pub mod interp;
pub mod mma;
pub mod parse;
pub mod print;
pub mod range;
pub mod regs;
pub mod shuffle;
pub mod simplify;
#[cfg(test)]
mod testing;
pub mod tma;
pub mod verify;

use crate::dtype::DType;
pub use expr::{BinOp, CmpOp, IExpr, Lit, UnOp, VExpr};

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
    /// An mbarrier's initialisation, arrival or wait (see [`tma`]): only in thread loops.
    Mbarrier(tma::Mbarrier),
    /// One thread's bulk copy of a box of a tensor into shared memory, complete on an
    /// mbarrier (see [`tma`]): only in thread loops.
    TensorCopy(tma::TensorCopy),
    /// A warpgroup's registers released or claimed (see [`regs`]): warpgroup-collective,
    /// only in thread loops; no value changes.
    SetMaxNReg(regs::SetMaxNReg),
    /// One thread's bulk store of a shared box to a tensor, reading the box until the thread
    /// waits for it (see [`tma::store`]): only in thread loops.
    TensorStore(tma::TensorStore),
    /// A thread's fence of its shared stores for tensor stores, or its wait for its tensor
    /// stores' reads (see [`tma::store`]): only in thread loops; no value changes.
    AsyncProxy(tma::AsyncProxy),
}

impl Stmt {
    /// The per-thread meaning, as ordinary statements, of a statement defined by one: a
    /// warp-collective one (see [`mma`], [`shuffle`]) or an asynchronous copy (see
    /// [`async_copy`], [`tma`]); nothing for any other statement (an mbarrier's has none).
    pub fn expansion(&self) -> Vec<Stmt> {
        match self {
            Stmt::Mma(m) => m.expand(),
            Stmt::WarpFold(w) => w.expand(),
            Stmt::AsyncCopy(c) => c.expand(),
            Stmt::TensorCopy(c) => c.expand(),
            Stmt::TensorStore(c) => c.expand(),
            _ => vec![],
        }
    }

    /// The statements nested directly in this one: a loop's or a reduction's body, a guard's
    /// block; none for any other statement.
    pub fn nested(&self) -> &[Stmt] {
        match self {
            Stmt::For(l) => &l.body,
            Stmt::If { then, .. } => then,
            Stmt::Reduce(r) => &r.body,
            _ => &[],
        }
    }

    /// Whether this is a warpgroup tensor-core step (`wgmma`): a collective of 128 threads,
    /// whose runs the CUDA backend brackets and the interpreter ends with a gathering.
    pub fn is_warpgroup_step(&self) -> bool {
        matches!(self, Stmt::Mma(m) if matches!(m.shape, mma::MmaShape::Warpgroup { .. }))
    }

    /// [`Stmt::nested`], to change: `None` for a statement that nests none.
    pub fn nested_mut(&mut self) -> Option<&mut Vec<Stmt>> {
        match self {
            Stmt::For(l) => Some(&mut l.body),
            Stmt::If { then, .. } => Some(then),
            Stmt::Reduce(r) => Some(&mut r.body),
            _ => None,
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
            s @ (Stmt::Mma(_)
            | Stmt::WarpFold(_)
            | Stmt::AsyncCopy(_)
            | Stmt::Mbarrier(_)
            | Stmt::SetMaxNReg(_)
            | Stmt::TensorCopy(_)
            | Stmt::TensorStore(_)
            | Stmt::AsyncProxy(_)) => s.expansion().iter().for_each(|s| s.visit_loads(f)),
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
            Stmt::Mbarrier(m) => Stmt::Mbarrier(m.map_iexprs(index)),
            Stmt::TensorCopy(c) => Stmt::TensorCopy(c.map_iexprs(index)),
            Stmt::SetMaxNReg(r) => Stmt::SetMaxNReg(r.clone()),
            Stmt::TensorStore(c) => Stmt::TensorStore(c.map_iexprs(index)),
            Stmt::AsyncProxy(a) => Stmt::AsyncProxy(a.clone()),
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
                s @ (Stmt::Mma(_)
                | Stmt::WarpFold(_)
                | Stmt::AsyncCopy(_)
                | Stmt::Mbarrier(_)
                | Stmt::SetMaxNReg(_)
                | Stmt::TensorCopy(_)
                | Stmt::TensorStore(_)
                | Stmt::AsyncProxy(_)) => stores(&s.expansion(), out),
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
                    s @ (Stmt::Mma(_)
                    | Stmt::WarpFold(_)
                    | Stmt::AsyncCopy(_)
                    | Stmt::Mbarrier(_)
                    | Stmt::SetMaxNReg(_)
                    | Stmt::TensorCopy(_)
                    | Stmt::TensorStore(_)
                    | Stmt::AsyncProxy(_)) => block(&s.expansion(), mult),
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

/// Calls `f` on every statement of `body`, nested ones included, in program order.
pub fn each_stmt(body: &[Stmt], f: &mut dyn FnMut(&Stmt)) {
    for s in body {
        f(s);
        each_stmt(s.nested(), f);
    }
}

/// Whether some statement of `body`, nested ones included, satisfies `pred`.
pub fn any_stmt(body: &[Stmt], pred: &dyn Fn(&Stmt) -> bool) -> bool {
    body.iter().any(|s| pred(s) || any_stmt(s.nested(), pred))
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
        // A product by a constant needs its factor only modulo `n / gcd(n, k)`: a warpgroup's
        // 64-row offset in 128-byte rows, `(8·w + 2)·64`, is 128 past a multiple of 512.
        let rows = v().times(8).plus(IExpr::c(2)).times(64);
        assert_eq!(rows.residue(512), Some(128));
        assert_eq!(v().plus(IExpr::c(2)).times(64).residue(512), None);
        assert_eq!(v().times(512).residue(512), Some(0));
    }
}
