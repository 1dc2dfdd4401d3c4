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
//! becomes, with `T` threads per block (a power of two, at most 256 by default, at most `n`):
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
//! With 16-byte runs ([`RowReduction::vector_runs`], where every reduction and loop over the
//! row is a multiple of `V` elements long and at least 32 runs, `V` = 16 bytes of the
//! elements read and written contiguously), thread `t` takes runs `t, t + T, …` of `V`
//! consecutive elements instead of single ones; each run's contiguous loads go into
//! registers first, in an unrolled loop of their own (LLVM merges them into one 16-byte
//! load; a libdevice call between them would keep them apart), then its values are folded
//! (loops over the row: loads, values, stores in loops of their own). Broadcast reads of the
//! row (`scale[j % n]` over `j < n`) are unwrapped first so that they count as contiguous.
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

/// The knobs of the row-reduction schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowReduction {
    /// The most threads of a row's block (a power of two, 32 to [`MAX_ROW_BLOCK`]).
    pub max_threads: i64,
    /// Each thread takes runs of 16 bytes of the row (see [`row_run`]) where the row allows.
    pub vector_runs: bool,
}

impl RowReduction {
    /// The default: [`DEFAULT_ROW_THREADS`] threads, 16-byte runs.
    pub const DEFAULT: RowReduction = RowReduction {
        max_threads: DEFAULT_ROW_THREADS,
        vector_runs: true,
    };
}

/// `prog` rebuilt with one block per row (see the module docs) as `shape` says, or `None`
/// when it does not have that shape.
pub fn row_reduction(
    prog: &LoopProgram,
    shape: &RowReduction,
) -> Result<Option<LoopProgram>, PassError> {
    let max_threads = shape.max_threads;
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
    let run = match shape.vector_runs {
        true => row_run(prog, body),
        false => 1,
    };
    let threads = prev_power_of_two((n / run).min(max_threads));
    let b = Builder {
        prog,
        rows: &rows,
        threads,
        run,
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

/// The run of consecutive elements each thread takes at a time: 16 bytes of the elements
/// that the row's reductions and loops read contiguously — loaded together (LLVM merges
/// loads from registers staged in one basic block into 16-byte accesses) — where all of
/// those have one size, every reduction and loop over the row is a multiple of the run long
/// and at least a warp of runs; else 1. Sums are reassociated either way.
fn row_run(prog: &LoopProgram, body: &[Stmt]) -> i64 {
    // Element sizes of the contiguous accesses, extents of the reductions and loops.
    fn collect(prog: &LoopProgram, s: &Stmt, sizes: &mut Vec<usize>, lengths: &mut Vec<i64>) {
        let size = |buf: &str| prog.buffer(buf).map_or(0, |b| b.dtype.size());
        let loads = |e: &VExpr, var: &str, sizes: &mut Vec<usize>| {
            let found = crate::gpu_runs::run_loads(e, var);
            sizes.extend(found.iter().map(|(buf, _)| size(buf)));
        };
        match s {
            Stmt::Reduce(r) => {
                for (axis, extent) in &r.axes {
                    lengths.push(*extent);
                    loads(&r.value, axis, sizes);
                }
                for b in &r.body {
                    collect(prog, b, sizes, lengths);
                }
            }
            Stmt::For(l) => {
                lengths.push(l.extent);
                for b in &l.body {
                    if let Stmt::Store { buf, index, value } = b {
                        loads(value, &l.var, sizes);
                        if index.coeff(&l.var) == Some(1) {
                            sizes.push(size(buf));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let (mut sizes, mut lengths) = (Vec::new(), Vec::new());
    for s in body {
        collect(prog, s, &mut sizes, &mut lengths);
    }
    let Some(&size) = sizes.first() else {
        return 1;
    };
    if size == 0 || sizes.iter().any(|&s| s != size) {
        return 1;
    }
    let run = (16 / size as i64).max(1);
    match lengths.iter().all(|&n| n % run == 0 && n / run >= WARP) {
        true => run,
        false => 1,
    }
}

fn prev_power_of_two(x: i64) -> i64 {
    1 << (63 - (x.max(1) as u64).leading_zeros())
}

struct Builder<'a> {
    prog: &'a LoopProgram,
    /// The row loops (their variables stay free in the statements converted).
    rows: &'a [&'a Loop],
    threads: i64,
    /// Consecutive elements a thread takes at a time ([`row_run`]).
    run: i64,
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

    /// `for j = t, t + T, … < n { f(j) }` within one thread, in runs: `f(j)` for the first
    /// element `j` of each of the thread's runs of [`Builder::run`] elements (runs `t`,
    /// `t + T`, … of `n / run`); the first `skip` runs left out.
    fn strided(&self, t: &IExpr, n: i64, skip: i64, f: impl Fn(&IExpr) -> Vec<Stmt>) -> Vec<Stmt> {
        let runs = n / self.run;
        let steps = (runs + self.threads - 1) / self.threads - skip;
        if steps <= 0 {
            return vec![];
        }
        let v = self.fresh("rj");
        let q = IExpr::var(&v)
            .plus(IExpr::c(skip))
            .times(self.threads)
            .plus(t.clone());
        let mut body = f(&q.clone().times(self.run));
        if runs % self.threads != 0 {
            body = vec![Stmt::If {
                cond: lt(q, runs),
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

    /// An unrolled loop of `count` steps: `body(u)` for each step `u`.
    fn unrolled(&self, count: i64, body: impl Fn(&IExpr) -> Vec<Stmt>) -> Stmt {
        let u = self.fresh("ru");
        Stmt::For(Loop {
            body: body(&IExpr::var(&u)),
            var: u,
            extent: count,
            kind: LoopKind::Unroll(count as u32),
        })
    }

    /// The loop `l` over the row for the run from `first`: its body per element, loads,
    /// values and stores each in a loop of their own (so that LLVM merges them into 16-byte
    /// accesses) where they can be.
    fn loop_run(&self, l: &Loop, first: &IExpr) -> Vec<Stmt> {
        if self.run == 1 {
            return l.body.iter().map(|s| s.subst(&l.var, first)).collect();
        }
        let mut name = |base: &str| self.fresh(&format!("r{base}_"));
        let (body, registers) = crate::gpu_runs::unrolled_run(
            self.prog,
            (&l.var, &l.body),
            first,
            (self.run, self.fresh("ru")),
            &mut name,
        );
        self.buffers.borrow_mut().extend(registers);
        body
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
                    let over_row = |v: &str| (v == l.var).then_some(l.extent);
                    let l = Loop {
                        body: l
                            .body
                            .iter()
                            .map(|s| {
                                s.map_exprs(&|x| x.unwrap_in_range(&over_row), &|i| {
                                    i.unwrap_in_range(&over_row)
                                })
                            })
                            .collect(),
                        ..l.clone()
                    };
                    out.push(self.thread_loop(self.threads, |t| {
                        self.strided(t, l.extent, 0, |j| self.loop_run(&l, j))
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
        // Every thread gets at least one run, so partials need no identity value.
        if n < self.threads * self.run || n % self.run != 0 {
            return None;
        }
        let [(axis, extent)] = r.axes.as_slice() else {
            return None;
        };
        let over_row = |v: &str| (v == axis).then_some(*extent);
        let row_value = r.value.unwrap_in_range(&over_row);
        // In runs: the contiguous loads of a run first, each into registers of its own.
        let staged: Vec<((String, IExpr), String)> = match self.run {
            1 => vec![],
            run => crate::gpu_runs::run_loads(&row_value, axis)
                .into_iter()
                .map(|(buf, index)| {
                    let dtype = self.prog.buffer(&buf).map_or(r.dtype, |b| b.dtype);
                    let reg = self.buffer("rreg", dtype, run, BufRole::Local);
                    ((buf, index), reg)
                })
                .collect(),
        };
        // The value at element `offset` of the run from `first` (its registers' element).
        let value = |first: &IExpr, offset: &IExpr| {
            staged
                .iter()
                .fold(row_value.clone(), |v, ((buf, index), reg)| {
                    v.replace_load(buf, index, &VExpr::load(reg, offset.clone()))
                })
                .subst(axis, &first.clone().plus(offset.clone()))
        };
        let part = self.buffer("rpart", r.dtype, 1, BufRole::Local);
        let red = self.buffer("rred", r.dtype, self.threads, BufRole::Shared);
        let at = |buf: &str, i: IExpr| VExpr::load(buf, i);
        let store = |buf: &str, i: IExpr, v: VExpr| Stmt::Store {
            buf: buf.into(),
            index: i,
            value: v,
        };
        let fold = |first: &IExpr, offset: &IExpr| {
            let v = value(first, offset);
            vec![store(
                &part,
                IExpr::c(0),
                VExpr::bin(op, at(&part, IExpr::c(0)), v),
            )]
        };
        // The run from `first`: its loads into registers, then its values folded into the
        // partial (`start`: the thread's first run, whose first value starts it).
        let run_body = |first: &IExpr, start: bool| {
            let mut body = Vec::new();
            if !staged.is_empty() {
                body.push(self.unrolled(self.run, |u| {
                    let j = first.clone().plus(u.clone());
                    staged
                        .iter()
                        .map(|((buf, index), reg)| {
                            store(reg, u.clone(), VExpr::load(buf, index.subst(axis, &j)))
                        })
                        .collect()
                }));
            }
            let zero = IExpr::c(0);
            if start {
                body.push(store(&part, IExpr::c(0), value(first, &zero)));
            }
            match (self.run, start) {
                (1, true) => {}
                (1, false) => body.extend(fold(first, &zero)),
                (run, true) => {
                    body.push(self.unrolled(run - 1, |u| fold(first, &u.clone().plus(IExpr::c(1)))))
                }
                (run, false) => body.push(self.unrolled(run, |u| fold(first, u))),
            }
            body
        };
        out.push(self.thread_loop(self.threads, |t| {
            let first = t.clone().times(self.run);
            let mut body = run_body(&first, true);
            body.extend(self.strided(t, n, 1, |j| run_body(j, false)));
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
