//! How the tensor-core schedule stages its `k` tiles in shared memory: a pipeline of async
//! copies (`cp.async`, [`AsyncCopy`](super::MmaStaging::AsyncCopy)) or a register prefetch
//! ([`Registers`](super::MmaStaging::Registers)); which runs of `A` and `B` each thread
//! copies, and the guards and zeros at the matrix's edges.

use super::{Gen, MmaEngine, VECTOR, thread_loop};
use crate::gpu_product::{At, edge_guard, for_, lt};
use crate::product::ProductSpec;
use tessera_ir::loops::async_copy::AsyncCopy;
use tessera_ir::loops::mma::MMA_K;
use tessera_ir::loops::{BufRole, IExpr, LoopKind, LoopProgram, Stmt, VExpr};

/// Whether both operands of `spec` are elements of kernel inputs of the product's dtype,
/// contiguous along the staged runs (`A` along `k`, `B` along the columns): what an
/// `async_copy` can stage (a fused producer, a cast or a transposed view cannot).
pub(super) fn copyable(prog: &LoopProgram, spec: &ProductSpec) -> bool {
    let run = |operand: &VExpr, along: &str| match operand {
        VExpr::Load { buf, index } => {
            prog.buffer(buf)
                .is_some_and(|b| b.role == BufRole::Input && b.dtype == spec.dtype)
                && index.coeff(along) == Some(1)
        }
        _ => false,
    };
    let [_, _, vj, vk] = &spec.vars;
    run(&spec.a, vk) && run(&spec.b, vj)
}

/// One element a thread stages: into which tile, where in one buffer of it, and its value.
struct Staged {
    b_tile: bool,
    index: IExpr,
    value: VExpr,
}

/// `store(slot, element)` for every element of the rounds of runs a thread stages (`slot`
/// counts them: the element's place among the thread's prefetch registers), each round
/// under its guard.
fn each_staged(
    runs: Vec<(Option<VExpr>, Vec<Staged>)>,
    mut store: impl FnMut(i64, Staged) -> Stmt,
) -> Vec<Stmt> {
    let mut slot = 0;
    runs.into_iter()
        .flat_map(|(guard, elems)| {
            let stores = elems
                .into_iter()
                .map(|e| {
                    slot += 1;
                    store(slot - 1, e)
                })
                .collect();
            guarded(guard, stores)
        })
        .collect()
}

/// Per round of `runs` runs handed out over the block's `threads` threads (consecutive
/// threads take consecutive runs), what thread `th` does with its run `e` (`per_run(e)`),
/// under the guard of a round not every thread has a run in.
fn run_rounds<T>(
    threads: i64,
    runs: i64,
    th: &IExpr,
    mut per_run: impl FnMut(&IExpr) -> Vec<T>,
) -> Vec<(Option<VExpr>, Vec<T>)> {
    (0..(runs + threads - 1) / threads)
        .map(|q| {
            let e = IExpr::c(q * threads).plus(th.clone());
            let guard = ((q + 1) * threads > runs).then(|| lt(e.clone(), runs));
            (guard, per_run(&e))
        })
        .collect()
}

/// The buffer of a `stages`-deep pipeline that tile `n` goes to: `n % stages`, folded for a
/// constant tile (so that its tile bases' residues show).
pub(super) fn tile_buffer(n: &IExpr, stages: i64) -> IExpr {
    match n {
        IExpr::Const(n) => IExpr::c(n % stages),
        n => n.clone().modulo(stages),
    }
}

/// `stmts` under `guard`, if any.
pub(super) fn guarded(guard: Option<VExpr>, stmts: Vec<Stmt>) -> Vec<Stmt> {
    match guard {
        Some(cond) => vec![Stmt::If { cond, then: stmts }],
        None => stmts,
    }
}

impl Gen<'_> {
    /// The `k` loop staged through registers
    /// ([`Registers`](super::MmaStaging::Registers)), after the accumulators' initialisation.
    pub(super) fn register_pipeline(&self, at: &At, body: &mut Vec<Stmt>) {
        let (s, t) = (self.spec, self.t);
        let threads = t.threads();
        let full = s.k / t.bk;
        if full > 0 {
            // Double-buffered: tile 0 staged first; then each step prefetches the next tile's
            // runs into registers, multiplies the staged tile, and (after the barrier)
            // stores the prefetched runs into the other buffer — the global loads of one
            // tile overlap the tensor-core work of the one before. The last step, which has
            // no next tile, is a loop iteration of its own: no branch inside the loop (a
            // conditional prefetch between `wgmma`s makes ptxas serialise them, C7519).
            body.push(self.stage("mt1", at, &IExpr::c(0), t.bk, false, &IExpr::c(0)));
            let next = IExpr::var("mk").plus(IExpr::c(1));
            let next_tile =
                |th: &str| self.staged(at, &IExpr::var(th), &next.clone().times(t.bk), t.bk, false);
            if full > 1 {
                let mut step = each_staged(next_tile("mt2"), |slot, e| Stmt::Store {
                    buf: self.regs.clone(),
                    index: IExpr::c(slot),
                    value: e.value,
                });
                let buffer = IExpr::var("mk").modulo(2);
                step.extend(self.multiply_body(&IExpr::var("mt2"), t.bk / MMA_K, &buffer, 1));
                let commit = each_staged(next_tile("mt6"), |slot, e| {
                    self.shared_store(
                        &e,
                        &next.clone().modulo(2),
                        VExpr::load(&self.regs, IExpr::c(slot)),
                    )
                });
                body.push(for_(
                    "mk",
                    full - 1,
                    LoopKind::Serial,
                    vec![
                        thread_loop("mt2", threads, step),
                        thread_loop("mt6", threads, commit),
                    ],
                ));
            }
            let last = IExpr::c((full - 1) % 2);
            body.push(thread_loop(
                "mt8",
                threads,
                self.multiply_body(&IExpr::var("mt8"), t.bk / MMA_K, &last, 1),
            ));
        }
        let tail = s.k % t.bk;
        if tail != 0 {
            // Buffer 0: its last reader, two steps back at the latest, is behind a barrier.
            let steps = (tail + MMA_K - 1) / MMA_K;
            let k0 = IExpr::c(full * t.bk);
            let kc = steps * MMA_K;
            body.push(self.stage("mt3", at, &k0, kc, true, &IExpr::c(0)));
            body.push(thread_loop(
                "mt4",
                threads,
                self.multiply_body(&IExpr::var("mt4"), steps, &IExpr::c(0), 1),
            ));
        }
    }

    /// The `k` loop as a pipeline of async copies `stages` buffers deep
    /// ([`AsyncCopy`](super::MmaStaging::AsyncCopy)). Tile `n` (the full `k` tiles, then the
    /// tail, if any) goes to buffer `n % stages`; it is copied `ahead` thread loops before the
    /// step that multiplies it — the first `ahead` tiles beside the accumulators'
    /// initialisation and in a prologue, the rest in step `n − ahead` of the `k` loop — and
    /// lands `ahead` barriers later, right before step `n`. So each step has one barrier.
    /// Warps (and warpgroups with two buffers): `ahead = stages − 1`, each step's tensor-core
    /// steps complete within it, and the tile a step overwrites was multiplied in the step
    /// before. Warpgroups with three or more buffers keep one step's `wgmma`s in flight
    /// (`retires(2)`: the next step's start before they complete): `ahead = stages − 2`, and
    /// the tile a step overwrites was multiplied two steps before.
    pub(super) fn copy_pipeline(
        &self,
        at: &At,
        init: Vec<Stmt>,
        stages: i64,
        body: &mut Vec<Stmt>,
    ) {
        let (s, t) = (self.spec, self.t);
        let threads = t.threads();
        let full = s.k / t.bk;
        let tail_steps = (s.k % t.bk + MMA_K - 1) / MMA_K;
        let tiles = full + (tail_steps > 0) as i64;
        let warpgroups = t.engine == MmaEngine::Warpgroup;
        // Never more buffers than tiles ahead of the first step (and the one in flight).
        let stages = stages.min(tiles + 1 + warpgroups as i64);
        let in_flight = (warpgroups && stages >= 3) as i64;
        let ahead = stages - 1 - in_flight;
        let copy = |th: &str, n: &IExpr, tail: bool| {
            let (k0, kc) = match tail {
                false => (n.clone().times(t.bk), t.bk),
                true => (IExpr::c(full * t.bk), tail_steps * MMA_K),
            };
            let buffer = tile_buffer(n, stages);
            match self.tma {
                // A box is a whole tile, zeros past `k`: the tail is no different.
                Some(_) => self.tma_copies(th, at, &k0, &buffer),
                None => self.copies(th, at, (&k0, kc, tail), &buffer, ahead),
            }
        };
        // Tile `n` (a constant) by thread `th`.
        let fixed = |th: &str, n: i64| copy(th, &IExpr::c(n), n == full);
        // The `steps` tensor-core steps of thread `th` on tile `n` (after waiting for its
        // mbarrier's phase, under TMA).
        let multiply = |th: &str, n: &IExpr, steps: i64, retires: i64| {
            let buffer = tile_buffer(n, stages);
            let mut body = match self.tma {
                Some(_) => vec![self.wait_for_tile(n, stages)],
                None => Vec::new(),
            };
            body.extend(self.multiply_body(&IExpr::var(th), steps, &buffer, retires));
            body
        };
        let mut first = init;
        if self.tma.is_some() {
            first.push(self.init_barriers("mt0", &vec![1; stages as usize]));
        }
        first.extend(fixed("mt0", 0));
        body.push(thread_loop("mt0", threads, first));
        for n in 1..ahead {
            let th = format!("mtp{n}");
            body.push(thread_loop(&th, threads, fixed(&th, n)));
        }
        // The steps of the full tiles: a steady loop whose every step copies (no branch in
        // it: a conditional copy between `wgmma`s makes ptxas serialise them, C7519), then
        // the last `ahead` steps — the first of them copying the tail tile, if any — which
        // copy nothing more.
        let steady = (full - ahead).max(0);
        // Each loop binds its own thread variable (the verifier wants every index variable
        // bound once in a program).
        let step_loop = |(var, th): (&str, &str), extent: i64, first: i64, copies: bool| {
            let mk = IExpr::var(var).plus(IExpr::c(first));
            let mut step = match copies {
                true => copy(th, &mk.clone().plus(IExpr::c(ahead)), false),
                false => Vec::new(),
            };
            step.extend(multiply(th, &mk, t.bk / MMA_K, 1 + in_flight));
            for_(
                var,
                extent,
                LoopKind::Serial,
                vec![thread_loop(th, threads, step)],
            )
        };
        if steady > 0 {
            body.push(step_loop(("mk", "mt2"), steady, 0, true));
        }
        let mut drained = steady;
        if tail_steps > 0 && full >= ahead && full > 0 {
            // The tail tile, in the step `ahead` before it.
            let mut step = fixed("mt3", full);
            step.extend(multiply(
                "mt3",
                &IExpr::c(steady),
                t.bk / MMA_K,
                1 + in_flight,
            ));
            body.push(thread_loop("mt3", threads, step));
            drained += 1;
        }
        if drained < full {
            body.push(step_loop(("md", "mt7"), full - drained, drained, false));
        }
        if tail_steps > 0 {
            body.push(thread_loop(
                "mt4",
                threads,
                multiply("mt4", &IExpr::c(full), tail_steps, 1),
            ));
        }
    }

    /// The elements thread `th` stages for `A[rows, k0..k0+kc]` and `B[k0..k0+kc, cols]`, zero
    /// beyond the matrix (past `k` too, for the tail: `k_tail`), in runs of [`VECTOR`]
    /// elements contiguous in the operand and in the staged row — with the arguments'
    /// alignment known, one 16-byte load and store each; consecutive threads take
    /// consecutive runs (coalesced reads, conflict-free stores). Grouped per round of runs
    /// over the block's threads, with the guard of a round not every thread has a run in.
    fn staged(
        &self,
        at: &At,
        th: &IExpr,
        k0: &IExpr,
        kc: i64,
        k_tail: bool,
    ) -> Vec<(Option<VExpr>, Vec<Staged>)> {
        let (s, t) = (self.spec, self.t);
        let threads = t.threads();
        let k_guard = |k: &IExpr, v: VExpr| match k_tail {
            false => v,
            true => VExpr::select(lt(k.clone(), s.k), v, VExpr::lit(0.0, s.dtype)),
        };
        let mut out = Vec::new();
        let mut rounds = |runs: i64, elem: &dyn Fn(&IExpr, i64) -> Staged| {
            out.extend(run_rounds(threads, runs, th, |e| {
                (0..VECTOR).map(|u| elem(e, u)).collect()
            }));
        };
        let k_runs = kc / VECTOR;
        rounds(t.bm * k_runs, &|e, u| {
            let (mm, kk) = self.run_at(e, k_runs);
            let kk = kk.plus(IExpr::c(u));
            let (i, k) = (at.i0.clone().plus(mm.clone()), k0.clone().plus(kk.clone()));
            let a = s.at(&s.a, &at.b, &i, &IExpr::c(0), &k);
            Staged {
                b_tile: false,
                index: self.tile_index(false, mm, kk),
                value: edge_guard(s, i, s.m, t.bm, k_guard(&k, a)),
            }
        });
        let n_runs = t.bn / VECTOR;
        rounds(kc * n_runs, &|e, u| {
            let (kk, jj) = self.run_at(e, n_runs);
            let jj = jj.plus(IExpr::c(u));
            let (j, k) = (at.j0.clone().plus(jj.clone()), k0.clone().plus(kk.clone()));
            let b = s.at(&s.b, &at.b, &IExpr::c(0), &j, &k);
            Staged {
                b_tile: true,
                index: self.tile_index(true, kk, jj),
                value: edge_guard(s, j, s.n, t.bn, k_guard(&k, b)),
            }
        });
        out
    }

    /// The `async_copy`s thread `th` issues to stage `A[rows, k0..k0+kc]` and `B[k0..k0+kc,
    /// cols]` (`k_tail`: the tail, ending at `k`) into shared buffer `buffer`, landing
    /// `lands` barriers later: the runs [`Gen::staged`] stages, one copy each, reading only
    /// the elements inside the matrix (and before `k`) — the rest of a run lands as zeros.
    fn copies(
        &self,
        th: &str,
        at: &At,
        (k0, kc, k_tail): (&IExpr, i64, bool),
        buffer: &IExpr,
        lands: i64,
    ) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let th = IExpr::var(th);
        // Elements `0..len` of a run left of `extent`, from `coord` on: clamp(extent − coord).
        let inside = |coord: &IExpr, extent: i64, len: i64| {
            IExpr::c(extent).minus(coord.clone()).clamp(0, len)
        };
        let source = |operand: &VExpr| match operand {
            VExpr::Load { buf, index } => (buf.clone(), index.clone()),
            _ => unreachable!("`copyable` admits loads only"),
        };
        let copy = |b_tile: bool, index: IExpr, (src, src_at): (String, IExpr), valid: IExpr| {
            let (tile, size) = match b_tile {
                false => (&self.a_tile, t.a_tile_len()),
                true => (&self.b_tile, t.b_tile_len()),
            };
            Stmt::AsyncCopy(AsyncCopy {
                dtype: s.dtype,
                len: VECTOR,
                dst: tile.clone(),
                dst_at: buffer.clone().times(size).plus(index),
                src,
                src_at,
                valid,
                lands,
            })
        };
        let mut rounds = Vec::new();
        let k_runs = kc / VECTOR;
        rounds.extend(run_rounds(t.threads(), t.bm * k_runs, &th, |e| {
            let (mm, kk) = self.run_at(e, k_runs);
            let (i, k) = (at.i0.clone().plus(mm.clone()), k0.clone().plus(kk.clone()));
            let rows = match s.m % t.bm {
                0 => IExpr::c(1),
                _ => inside(&i, s.m, 1),
            };
            let depth = match k_tail {
                false => IExpr::c(VECTOR),
                true => inside(&k, s.k, VECTOR),
            };
            let a = source(&s.at(&s.a, &at.b, &i, &IExpr::c(0), &k));
            vec![copy(
                false,
                self.tile_index(false, mm, kk),
                a,
                rows.product(depth),
            )]
        }));
        let n_runs = t.bn / VECTOR;
        rounds.extend(run_rounds(t.threads(), kc * n_runs, &th, |e| {
            let (kk, jj) = self.run_at(e, n_runs);
            let (j, k) = (at.j0.clone().plus(jj.clone()), k0.clone().plus(kk.clone()));
            let cols = match s.n % t.bn {
                0 => IExpr::c(VECTOR),
                _ => inside(&j, s.n, VECTOR),
            };
            let depth = match k_tail {
                false => IExpr::c(1),
                true => inside(&k, s.k, 1),
            };
            let b = source(&s.at(&s.b, &at.b, &IExpr::c(0), &j, &k));
            vec![copy(
                true,
                self.tile_index(true, kk, jj),
                b,
                cols.product(depth),
            )]
        }));
        rounds
            .into_iter()
            .flat_map(|(guard, copies)| guarded(guard, copies))
            .collect()
    }

    /// `value` into the staged element `e`'s place in shared buffer `buffer` (0 or 1).
    fn shared_store(&self, e: &Staged, buffer: &IExpr, value: VExpr) -> Stmt {
        let t = self.t;
        let (tile, size) = match e.b_tile {
            false => (&self.a_tile, t.a_tile_len()),
            true => (&self.b_tile, t.b_tile_len()),
        };
        Stmt::Store {
            buf: tile.clone(),
            index: buffer.clone().times(size).plus(e.index.clone()),
            value,
        }
    }

    /// A thread loop staging `k0..k0+kc` straight into shared buffer `buffer`.
    fn stage(&self, var: &str, at: &At, k0: &IExpr, kc: i64, k_tail: bool, buffer: &IExpr) -> Stmt {
        let runs = self.staged(at, &IExpr::var(var), k0, kc, k_tail);
        let body = each_staged(runs, |_, e| {
            let value = e.value.clone();
            self.shared_store(&e, buffer, value)
        });
        thread_loop(var, self.t.threads(), body)
    }
}
