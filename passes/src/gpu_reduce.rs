//! The GPU schedule of row reductions (softmax, layer norm, means, …): one thread block per
//! row, its threads splitting every reduction and every loop over the row.
//!
//! The default schedule binds the rows to threads, so one thread walks a whole row, and
//! consecutive threads read addresses a row apart (uncoalesced). Here a kernel of the shape
//!
//! ```text
//! for rows (independent) {
//!   $m = reduce max(j in 0..n) of x[row, j] {          // reductions over the row …
//!     $s = reduce sum(j in 0..n) of exp(x[row, j] - $m) {
//!       for j in 0..n { y[row, j] = exp(x[row, j] - $m) / $s }   // … and loops over it
//! }}}
//! ```
//!
//! becomes, with `T` threads per block (a power of two, at most 256, at most `n`):
//!
//! ```text
//! block(x) row:
//!   thread(x) t: part = value(t); for j = t + T, t + 2T, … < n: part = op(part, value(j))
//!                red_m[t] = part                         (shared: one partial per thread)
//!   thread(x) t: warp_fold the warp's 32 partials; lane 0: warp_m[t / 32] = it
//!   thread(x) t < 32: warp_fold warp_m[0 .. T/32]; t = 0: total_m[0] = it
//!   … the same for $s, reading $m as op(init, total_m[0]) …
//!   thread(x) t: for j = t, t + T, … < n: y[row, j] = …          (coalesced)
//! ```
//!
//! Applies when the reductions read the row contiguously (the reduction index has stride 1 in
//! every load that uses it, so that consecutive threads read consecutive addresses) and the
//! row is at least 32 long; the per-row statements must be reductions, loops whose iterations
//! write disjoint elements, or single stores (done by one thread). Partial results combine in
//! a tree, so sums are reassociated (the tolerance of reductions, not bit-exact): through
//! register shuffles (`warp_fold`, two barriers) for f32 and i32, through a shared-memory
//! tree (a barrier per halving) for other dtypes.

use crate::error::PassError;
use crate::gpu_product::lt;
use crate::gpu_schedule::{bindable, disjoint_stores, outer_chain};
use std::cell::{Cell, RefCell};
use tessera_ir::DType;
use tessera_ir::loops::mma::WARP;
use tessera_ir::loops::shuffle::WarpFold;
use tessera_ir::loops::{
    BinOp, BufRole, Buffer, CmpOp, GpuAxis, IExpr, Loop, LoopKind, LoopProgram, ReduceOp, Stmt,
    VExpr, carries_dependence,
};

/// The most threads of a row's block in the default schedule (a tuned one may take up to
/// 1024, [`MAX_ROW_BLOCK`]).
pub const DEFAULT_ROW_THREADS: i64 = 256;
/// The most threads a row's block may have: 32 warps, whose partials one warp folds.
pub const MAX_ROW_BLOCK: i64 = 1024;
/// The shortest row worth a block of threads.
const MIN_ROW: i64 = 32;

/// `prog` rebuilt with one block per row of at most `max_threads` threads (a power of two,
/// 32 to [`MAX_ROW_BLOCK`]; see the module docs), or `None` when it does not have that shape.
pub fn row_reduction(
    prog: &LoopProgram,
    max_threads: i64,
) -> Result<Option<LoopProgram>, PassError> {
    if !(WARP..=MAX_ROW_BLOCK).contains(&max_threads) || max_threads.count_ones() != 1 {
        return Err(PassError::Schedule(format!(
            "row reduction of `{}`: {max_threads} threads per row (a power of two in \
             {WARP}..={MAX_ROW_BLOCK})",
            prog.name
        )));
    }
    let chain = outer_chain(&prog.body);
    // Every row loop must be independent; none (a single row) is fine too.
    let rows: Vec<&Loop> = match (1..=chain.len())
        .rev()
        .map(|n| &chain[..n])
        .find(|prefix| bindable(prog, prefix))
    {
        Some(prefix) => prefix.to_vec(),
        None if chain.is_empty() => vec![],
        None => return Ok(None),
    };
    let body = rows
        .last()
        .map_or(prog.body.as_slice(), |l| l.body.as_slice());
    let Some(Stmt::Reduce(first)) = body.first() else {
        return Ok(None);
    };
    let n: i64 = first.axes.iter().map(|(_, e)| e).product();
    if n < MIN_ROW || !contiguous(first) {
        return Ok(None);
    }
    let threads = prev_power_of_two(n.min(max_threads));
    let b = Builder {
        prog,
        rows: &rows,
        threads,
        next: Cell::new(0),
        buffers: RefCell::new(vec![]),
    };
    let mut out = Vec::new();
    if b.convert(body, &mut out).is_none() {
        return Ok(None);
    }
    // The block index stands for the fused row loops.
    let row_count: i64 = rows.iter().map(|l| l.extent).product();
    let mut stride = row_count;
    for (i, l) in rows.iter().enumerate() {
        stride /= l.extent;
        let mut row = IExpr::var("rb").floordiv(stride);
        if i > 0 {
            row = row.modulo(l.extent);
        }
        out = out.iter().map(|s| s.subst(&l.var, &row)).collect();
    }
    let mut buffers: Vec<Buffer> = prog.params().cloned().collect();
    buffers.extend(b.buffers.into_inner());
    let body = if rows.is_empty() {
        out
    } else {
        vec![Stmt::For(Loop {
            var: "rb".into(),
            extent: row_count,
            kind: LoopKind::Block(GpuAxis::X),
            body: out,
        })]
    };
    let scheduled = LoopProgram {
        name: prog.name.clone(),
        buffers,
        body,
    };
    crate::verify_after("gpu row reduction", &scheduled)?;
    Ok(Some(scheduled))
}

/// Whether the reduction has one axis and every load in its value uses it with stride 0 or
/// 1, some load with 1.
fn contiguous(r: &tessera_ir::loops::Reduce) -> bool {
    // One axis only: a multi-axis row would need flattening, which `Builder::reduce` refuses.
    let [(axis, _)] = r.axes.as_slice() else {
        return false;
    };
    let (mut ok, mut any) = (true, false);
    r.value.visit_loads(&mut |_, index| {
        let c = index.coeff(axis);
        any |= c == Some(1);
        ok &= matches!(c, Some(0 | 1));
    });
    ok && any
}

fn prev_power_of_two(x: i64) -> i64 {
    1 << (63 - (x.max(1) as u64).leading_zeros())
}

struct Builder<'a> {
    prog: &'a LoopProgram,
    /// The row loops (their variables stay free in the statements converted).
    rows: &'a [&'a Loop],
    threads: i64,
    next: Cell<usize>,
    /// The shared partials and local accumulators added, in order.
    buffers: RefCell<Vec<Buffer>>,
}

impl Builder<'_> {
    fn fresh(&self, base: &str) -> String {
        loop {
            self.next.set(self.next.get() + 1);
            let name = format!("{base}{}", self.next.get());
            if self.prog.buffer(&name).is_none() {
                return name;
            }
        }
    }

    fn buffer(&self, base: &str, dtype: DType, len: i64, role: BufRole) -> String {
        let name = self.fresh(base);
        self.buffers.borrow_mut().push(Buffer {
            name: name.clone(),
            dtype,
            len: len as usize,
            role,
        });
        name
    }

    fn thread_loop(&self, extent: i64, body: impl FnOnce(&IExpr) -> Vec<Stmt>) -> Stmt {
        let v = self.fresh("rt");
        let inner = body(&IExpr::var(&v));
        Stmt::For(Loop {
            var: v,
            extent,
            kind: LoopKind::Thread(GpuAxis::X),
            body: inner,
        })
    }

    /// `for j = t, t + T, … < n { f(j) }` within one thread: the first `skip` steps left out.
    fn strided(&self, t: &IExpr, n: i64, skip: i64, f: impl Fn(&IExpr) -> Vec<Stmt>) -> Vec<Stmt> {
        let steps = (n + self.threads - 1) / self.threads - skip;
        if steps <= 0 {
            return vec![];
        }
        let v = self.fresh("rj");
        let j = IExpr::var(&v)
            .plus(IExpr::c(skip))
            .times(self.threads)
            .plus(t.clone());
        let mut body = f(&j);
        if n % self.threads != 0 {
            body = vec![Stmt::If {
                cond: lt(j, n),
                then: body,
            }];
        }
        vec![Stmt::For(Loop {
            var: v,
            extent: steps,
            kind: LoopKind::Serial,
            body,
        })]
    }

    /// The block-level statements computing `stmts` for one row; `None` for a statement
    /// this schedule does not handle.
    fn convert(&self, stmts: &[Stmt], out: &mut Vec<Stmt>) -> Option<()> {
        for s in stmts {
            match s {
                Stmt::Reduce(r) => {
                    let combined = self.reduce(r, out)?;
                    let body: Vec<Stmt> = r
                        .body
                        .iter()
                        .map(|s| s.replace_acc(&r.acc, &combined))
                        .collect();
                    self.convert(&body, out)?;
                }
                // A loop over the row whose iterations, over all rows, write disjoint
                // elements and do not read each other's.
                Stmt::For(l)
                    if l.kind == LoopKind::Serial
                        && !carries_dependence(&l.body)
                        && disjoint_stores(self.prog, &[self.rows, &[l]].concat(), &l.body) =>
                {
                    out.push(self.thread_loop(self.threads, |t| {
                        self.strided(t, l.extent, 0, |j| {
                            l.body.iter().map(|s| s.subst(&l.var, j)).collect()
                        })
                    }));
                }
                Stmt::Store { .. } => out.push(self.thread_loop(1, |_| vec![s.clone()])),
                _ => return None,
            }
        }
        Some(())
    }

    /// Emits the partial sums and the tree of `r` over the block; returns the expression of
    /// its result (valid in the following thread loops).
    fn reduce(&self, r: &tessera_ir::loops::Reduce, out: &mut Vec<Stmt>) -> Option<VExpr> {
        let op = match (r.op, r.dtype) {
            (_, DType::Bool) => return None,
            (ReduceOp::Sum, _) => BinOp::Add,
            (ReduceOp::Max, _) => BinOp::Max,
            (ReduceOp::Min, _) => BinOp::Min,
            (ReduceOp::Prod, _) => BinOp::Mul,
        };
        let n: i64 = r.axes.iter().map(|(_, e)| e).product();
        // Every thread gets at least one element, so partials need no identity value.
        if n < self.threads {
            return None;
        }
        let (axis, _) = r.axes.last().expect("a reduction has axes");
        if r.axes.len() != 1 {
            return None;
        }
        let value = |j: &IExpr| r.value.subst(axis, j);
        let part = self.buffer("rpart", r.dtype, 1, BufRole::Local);
        let red = self.buffer("rred", r.dtype, self.threads, BufRole::Shared);
        let at = |buf: &str, i: IExpr| VExpr::load(buf, i);
        let store = |buf: &str, i: IExpr, v: VExpr| Stmt::Store {
            buf: buf.into(),
            index: i,
            value: v,
        };
        out.push(self.thread_loop(self.threads, |t| {
            let mut body = vec![store(&part, IExpr::c(0), value(t))];
            body.extend(self.strided(t, n, 1, |j| {
                vec![store(
                    &part,
                    IExpr::c(0),
                    VExpr::bin(op, at(&part, IExpr::c(0)), value(j)),
                )]
            }));
            body.push(store(&red, t.clone(), at(&part, IExpr::c(0))));
            body
        }));
        if let Some(result) = self.warp_folds(op, r.dtype, &red, out) {
            return Some(VExpr::bin(
                op,
                r.init.clone(),
                VExpr::load(&result, IExpr::c(0)),
            ));
        }
        let mut half = self.threads / 2;
        while half >= 1 {
            out.push(self.thread_loop(half, |t| {
                let other = t.clone().plus(IExpr::c(half));
                vec![store(
                    &red,
                    t.clone(),
                    VExpr::bin(op, at(&red, t.clone()), at(&red, other)),
                )]
            }));
            half /= 2;
        }
        Some(VExpr::bin(op, r.init.clone(), at(&red, IExpr::c(0))))
    }

    /// Combines the threads' partials in `red` with warp shuffles — each warp folds its 32,
    /// lane 0 keeps the warp's result, one warp folds those — for a 32-bit `dtype` (what one
    /// shuffle moves) and a block of whole warps; returns the shared buffer whose element 0
    /// is the result (valid in the following thread loops). Two barriers, where the
    /// shared-memory tree takes one per halving.
    fn warp_folds(
        &self,
        op: BinOp,
        dtype: DType,
        red: &str,
        out: &mut Vec<Stmt>,
    ) -> Option<String> {
        if !matches!(dtype, DType::F32 | DType::I32) || self.threads % WARP != 0 {
            return None;
        }
        let warps = self.threads / WARP;
        let mine = self.buffer("rlane", dtype, 1, BufRole::Local);
        let per_warp = self.buffer("rwarp", dtype, warps, BufRole::Shared);
        let fold = |t: &IExpr, width: i64, src: &str, base: IExpr| {
            Stmt::WarpFold(WarpFold {
                op,
                width,
                lane: t.clone().modulo(WARP),
                src: src.into(),
                base,
                dst: mine.clone(),
                at: IExpr::c(0),
            })
        };
        let first_lane = |t: &IExpr, buf: &str, index: IExpr| Stmt::If {
            cond: VExpr::ICmp(CmpOp::Eq, t.clone().modulo(WARP), IExpr::c(0)),
            then: vec![Stmt::Store {
                buf: buf.into(),
                index,
                value: VExpr::load(&mine, IExpr::c(0)),
            }],
        };
        out.push(self.thread_loop(self.threads, |t| {
            let warp = t.clone().floordiv(WARP);
            vec![
                fold(t, WARP, red, warp.clone().times(WARP)),
                first_lane(t, &per_warp, warp),
            ]
        }));
        if warps == 1 {
            return Some(per_warp);
        }
        let total = self.buffer("rtotal", dtype, 1, BufRole::Shared);
        out.push(self.thread_loop(WARP, |t| {
            vec![
                fold(t, warps, &per_warp, IExpr::c(0)),
                first_lane(t, &total, IExpr::c(0)),
            ]
        }));
        Some(total)
    }
}
