//! The tensor-core GPU schedule of half-precision matrix products (f16 / bf16 elements, f32
//! sums): warps of `mma.m16n8k16` steps over tiles staged in shared memory.
//!
//! Built from the product's [`ProductSpec`] and a [`GpuMmaTiling`] (the knobs):
//!
//! ```text
//! block(x) over (batch, bm-row tile, bn-column tile):
//!   thread(x) t:  acc[mt][nt][4] = init                 (local: the thread's fragments)
//!   thread(x) t:  buffer 0 = k tile 0                   (shared: As[bm][bk+8], Bs[bk][bn+8])
//!   for kt in k tiles of bk:                            (uniform; a barrier after each step)
//!     thread(x) t:  next = k tile kt+1                  (local: prefetched into registers)
//!                   for ks, mi, ni:  mma acc[mi][ni] += As[kt % 2][warp rows mi, ks]
//!                                                      * Bs[kt % 2][ks, warp cols ni]
//!     thread(x) t:  buffer (kt+1) % 2 = next
//!   (the k tail, if bk does not divide k: one more tile, zero beyond k, in steps of 16)
//!   thread(x) t:  C[the lane's fragment positions] = finish(acc)   (guarded at the edges)
//! ```
//!
//! The block's `warps_m × warps_n` warps each own a `bm/warps_m × bn/warps_n` region of the
//! tile: `mt × nt` fragments of 16×8. Both operands are staged as they are stored, row-major,
//! rows padded by 8 elements (16 bytes): a thread copies runs of 8 elements, one 16-byte load
//! and store where the arguments' alignment allows (consecutive threads take consecutive runs:
//! coalesced reads, conflict-free shared stores), and the fragment loads fall in distinct
//! banks: every fragment row is 16 contiguous, 16-byte-aligned bytes, which the CUDA backend
//! loads with `ldmatrix` — `A`'s rows along `k` as they are, `B`'s (rows along the columns)
//! transposed by `.trans` (staging `B` transposed instead would make every store of a warp hit
//! one bank). Elements outside the matrix stage as zeros and are never stored.
//!
//! The sums are f32 (the tensor core's accumulators); they start from the product's initial
//! value (zero or a bias) and go back to the element dtype when stored, as in the plain nest
//! — but the tensor core adds 16 products at a time in its own order: results agree with
//! the plain nest within the float tolerance, not to the bit.

use crate::error::PassError;
use crate::gpu_product::{GridTile, and, edge_guard, fresh_buffer, lt, rebuild, sample_valid};
use crate::product::{ProductSpec, convert};
use tessera_ir::DType;
use tessera_ir::loops::async_copy::AsyncCopy;
use tessera_ir::loops::gpu::MAX_THREADS_PER_BLOCK;
use tessera_ir::loops::mma::{
    MMA_ACC_PER_LANE, MMA_K, MMA_M, MMA_N, Mma, MmaOperand, WARP, acc_position,
};
use tessera_ir::loops::{
    BufRole, GpuAxis, IExpr, Lit, Loop, LoopKind, LoopProgram, MAX_LOCAL_BYTES, MAX_SHARED_BYTES,
    Stmt, VExpr,
};

/// Elements each staged row is padded by (16 bytes of f16 / bf16).
const ROW_PAD: i64 = 8;

/// Elements a thread stages as one run (16 bytes of f16 / bf16): tiles are multiples of 8
/// along `k` (16) and the columns (8).
const VECTOR: i64 = 8;

/// The most 16×8 fragments one warp accumulates: 64 f32 registers per thread, with the
/// operand fragments beside them well under the 255-register limit (more would spill).
pub const MAX_FRAGMENTS_PER_WARP: i64 = 16;

/// How the next `k` tile reaches shared memory while the current one is multiplied.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum MmaStaging {
    /// Loaded into registers (the thread's prefetch buffer) during the step, stored into the
    /// other shared buffer after a barrier: two barriers per step. (What tilings recorded
    /// before the choice existed did.)
    #[default]
    Registers,
    /// Copied by `async_copy` (`cp.async`) straight into the other shared buffer during the
    /// step, landing at its one barrier — where both operands are runs of kernel inputs
    /// (else as `Registers`).
    AsyncCopy,
}

/// The knobs of the tensor-core product schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GpuMmaTiling {
    /// Rows and columns of the output tile one block computes.
    pub bm: i64,
    pub bn: i64,
    /// Length of the `k` tile staged per step (a multiple of 16).
    pub bk: i64,
    /// Warps along the tile's rows and columns.
    pub warps_m: i64,
    pub warps_n: i64,
    /// How the next `k` tile is staged.
    #[serde(default)]
    pub staging: MmaStaging,
}

impl GpuMmaTiling {
    /// The knobs' domains (the search space): block tile sides, `k` tile depths, warps per
    /// side.
    pub const TILES: [i64; 5] = [16, 32, 64, 128, 256];
    pub const DEPTHS: [i64; 3] = [16, 32, 64];
    pub const WARPS: [i64; 3] = [1, 2, 4];
    pub const STAGINGS: [MmaStaging; 2] = [MmaStaging::AsyncCopy, MmaStaging::Registers];

    /// The default for `spec`: per side a tile of the extent rounded up to a power of two,
    /// 16 to 128; up to 2 × 4 warps, each with a 64 × 32 region (4 × 4 fragments) at full
    /// size; 32 deep; staged by asynchronous copies. A big product gets 128 × 128 tiles: 256
    /// threads, 37 KB of shared memory, 64 f32 accumulators per thread.
    pub fn default_for(spec: &ProductSpec) -> GpuMmaTiling {
        let side = |extent: i64| (extent.max(1) as u64).next_power_of_two().clamp(16, 128) as i64;
        let (bm, bn) = (side(spec.m), side(spec.n));
        GpuMmaTiling {
            bm,
            bn,
            bk: 32,
            warps_m: (bm / 64).max(1),
            warps_n: (bn / 32).max(1),
            staging: MmaStaging::AsyncCopy,
        }
    }

    /// A random tiling from the knobs' domains that `validate` accepts (the search space as
    /// data, for fuzzing and search).
    pub fn sample(spec: &ProductSpec, rng: &mut tessera_ir::Rng) -> GpuMmaTiling {
        sample_valid(
            rng,
            |pick| GpuMmaTiling {
                bm: pick(&Self::TILES),
                bn: pick(&Self::TILES),
                bk: pick(&Self::DEPTHS),
                warps_m: pick(&Self::WARPS),
                warps_n: pick(&Self::WARPS),
                staging: Self::STAGINGS[pick(&[0, 1]) as usize],
            },
            |t| t.validate(spec).is_ok(),
        )
    }

    pub fn threads(&self) -> i64 {
        WARP * self.warps_m * self.warps_n
    }

    /// Fragments per warp along the rows and the columns.
    fn fragments(&self) -> (i64, i64) {
        (
            self.bm / self.warps_m / MMA_M,
            self.bn / self.warps_n / MMA_N,
        )
    }

    /// Elements per staged row of `A` (`k` and the padding).
    fn row(&self) -> i64 {
        self.bk + ROW_PAD
    }

    /// Elements one thread prefetches of a whole `k` tile: its runs of `A` and of `B`.
    fn prefetched(&self) -> i64 {
        let rounds = |runs: i64| (runs + self.threads() - 1) / self.threads();
        (rounds(self.bm * self.bk / VECTOR) + rounds(self.bk * self.bn / VECTOR)) * VECTOR
    }

    /// Elements per staged row of `B` (the columns and the padding).
    fn b_row(&self) -> i64 {
        self.bn + ROW_PAD
    }

    pub fn validate(&self, spec: &ProductSpec) -> Result<(), PassError> {
        let bad = |m: String| Err(PassError::Schedule(format!("GPU mma tiling: {m}")));
        let t = self;
        if !matches!(spec.dtype, DType::F16 | DType::BF16) {
            return bad(format!(
                "{} elements (tensor cores take f16 or bf16)",
                spec.dtype
            ));
        }
        if [t.bm, t.bn, t.bk, t.warps_m, t.warps_n]
            .iter()
            .any(|&k| k < 1)
        {
            return bad(format!("non-positive knob in {t:?}"));
        }
        if t.bm % (t.warps_m * MMA_M) != 0 || t.bn % (t.warps_n * MMA_N) != 0 {
            return bad(format!(
                "a {}x{} tile does not split into {}x{} warps of 16x8 fragments",
                t.bm, t.bn, t.warps_m, t.warps_n
            ));
        }
        if t.bk % MMA_K != 0 {
            return bad(format!("k tile {} is not a multiple of 16", t.bk));
        }
        if t.threads() as u64 > MAX_THREADS_PER_BLOCK {
            return bad(format!("{} threads per block", t.threads()));
        }
        // Two buffers of each tile (double buffering).
        let shared = 2 * (t.bm * t.row() + t.bk * t.b_row()) * spec.dtype.size() as i64;
        if shared as usize > MAX_SHARED_BYTES {
            return bad(format!("{shared} bytes of shared memory"));
        }
        let (mt, nt) = t.fragments();
        if mt * nt > MAX_FRAGMENTS_PER_WARP {
            return bad(format!(
                "{mt}x{nt} fragments per warp (at most {MAX_FRAGMENTS_PER_WARP}: registers)"
            ));
        }
        // With the prefetch registers, which async staging falls back to.
        let local = mt * nt * MMA_ACC_PER_LANE * 4 + t.prefetched() * spec.dtype.size() as i64;
        if local as usize > MAX_LOCAL_BYTES {
            return bad(format!("{local} bytes of accumulators per thread"));
        }
        Ok(())
    }
}

/// Whether the tensor-core schedule applies: half-precision elements and a product of at
/// least one fragment each way.
pub fn worth_mma(spec: &ProductSpec) -> bool {
    matches!(spec.dtype, DType::F16 | DType::BF16)
        && spec.m >= MMA_M
        && spec.n >= MMA_M
        && spec.k >= MMA_K
}

/// Rebuilds `prog` (whose body computes `spec`) as the tensor-core product.
pub fn tile_mma(
    prog: &LoopProgram,
    spec: &ProductSpec,
    t: &GpuMmaTiling,
) -> Result<LoopProgram, PassError> {
    t.validate(spec)?;
    let fresh = |base: &str| fresh_buffer(prog, spec, base);
    let g = Gen {
        spec,
        t: *t,
        grid: GridTile::new(spec, t.bm, t.bn),
        a_tile: fresh("as"),
        b_tile: fresh("bs"),
        acc: fresh("acc"),
        regs: fresh("next"),
        async_copies: t.staging == MmaStaging::AsyncCopy && copyable(prog, spec),
    };
    let (mt, nt) = t.fragments();
    let mut added = vec![
        (&g.a_tile, 2 * t.bm * t.row(), BufRole::Shared, spec.dtype),
        (&g.b_tile, 2 * t.bk * t.b_row(), BufRole::Shared, spec.dtype),
        (
            &g.acc,
            mt * nt * MMA_ACC_PER_LANE,
            BufRole::Local,
            DType::F32,
        ),
    ];
    if !g.async_copies {
        added.push((&g.regs, t.prefetched(), BufRole::Local, spec.dtype));
    }
    rebuild(prog, &added, g.program(), "tile-gpu-mma")
}

/// The name of the `k` a staged run starts at, while [`copyable`] looks at the operands.
const RUN_K: &str = "$run_k";

/// Whether both operands of `spec` are elements of kernel inputs of the product's dtype,
/// contiguous along the staged runs (`A` along `k`, `B` along the columns): what an
/// `async_copy` can stage (a fused producer, a cast or a transposed view cannot).
fn copyable(prog: &LoopProgram, spec: &ProductSpec) -> bool {
    let run = |operand: &VExpr, along: &str| match operand {
        VExpr::Load { buf, index } => {
            prog.buffer(buf)
                .is_some_and(|b| b.role == BufRole::Input && b.dtype == spec.dtype)
                && index.coeff(along) == Some(1)
        }
        _ => false,
    };
    let [vb, vi, vj, vk] = &spec.vars;
    let (b, i, j) = (IExpr::var(vb), IExpr::var(vi), IExpr::var(vj));
    let a = spec.at(&spec.a, &b, &i, &j, &IExpr::var(RUN_K));
    let bb = spec.at(&spec.b, &b, &i, &j, &IExpr::var(vk));
    run(&a, RUN_K) && run(&bb, vj)
}

struct Gen<'a> {
    spec: &'a ProductSpec,
    t: GpuMmaTiling,
    grid: GridTile,
    a_tile: String,
    b_tile: String,
    acc: String,
    /// The next `k` tile's elements, prefetched into registers (without async copies).
    regs: String,
    /// Whether tiles are staged by `async_copy` (see [`MmaStaging::AsyncCopy`]).
    async_copies: bool,
}

/// The thread variable: one thread loop per phase, each binding it afresh (names are unique
/// within a program).
fn thread_loop(var: &str, threads: i64, body: Vec<Stmt>) -> Stmt {
    Stmt::For(Loop {
        var: var.into(),
        extent: threads,
        kind: LoopKind::Thread(GpuAxis::X),
        body,
    })
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

/// `stmts` under `guard`, if any.
fn guarded(guard: Option<VExpr>, stmts: Vec<Stmt>) -> Vec<Stmt> {
    match guard {
        Some(cond) => vec![Stmt::If { cond, then: stmts }],
        None => stmts,
    }
}

/// The lane's fragment of the block tile: accumulator slot, row and column in the tile.
struct Fragment {
    slot: i64,
    row: IExpr,
    col: IExpr,
}

impl Gen<'_> {
    /// The warp's first row and column in the block tile (warp-uniform in `t`).
    fn warp_origin(&self, t: &IExpr) -> (IExpr, IExpr) {
        let (mt, nt) = self.t.fragments();
        let warp = t.clone().floordiv(WARP);
        (
            warp.clone().floordiv(self.t.warps_n).times(mt * MMA_M),
            warp.modulo(self.t.warps_n).times(nt * MMA_N),
        )
    }

    /// Every accumulator element of the thread `t`, with its place in the block tile.
    fn fragments(&self, t: &IExpr) -> Vec<Fragment> {
        let (mt, nt) = self.t.fragments();
        let (wr, wc) = self.warp_origin(t);
        let lane = t.clone().modulo(WARP);
        let mut out = Vec::new();
        for mi in 0..mt {
            for ni in 0..nt {
                for e in 0..MMA_ACC_PER_LANE {
                    let (r, c) = acc_position(&lane, e);
                    out.push(Fragment {
                        slot: (mi * nt + ni) * MMA_ACC_PER_LANE + e,
                        row: wr.clone().plus(IExpr::c(mi * MMA_M)).plus(r),
                        col: wc.clone().plus(IExpr::c(ni * MMA_N)).plus(c),
                    });
                }
            }
        }
        out
    }

    fn program(&self) -> Stmt {
        let (s, t) = (self.spec, self.t);
        let at = self.grid.origin();
        let threads = t.threads();
        let inside = |i: &IExpr, j: &IExpr| and(lt(i.clone(), s.m), lt(j.clone(), s.n));
        let mut body = vec![thread_loop("mt0", threads, {
            let th = IExpr::var("mt0");
            self.fragments(&th)
                .into_iter()
                .map(|f| {
                    let (i, j) = (at.i0.clone().plus(f.row), at.j0.clone().plus(f.col));
                    let init = match &s.init {
                        // Zero (or another constant): no element to guard.
                        VExpr::Const(Lit::F(x), _) => VExpr::lit(*x, DType::F32),
                        init => convert(
                            self.edge_select(
                                inside(&i, &j),
                                s.at(init, &at.b, &i, &j, &IExpr::c(0)),
                            ),
                            s.dtype,
                            DType::F32,
                        ),
                    };
                    Stmt::Store {
                        buf: self.acc.clone(),
                        index: IExpr::c(f.slot),
                        value: init,
                    }
                })
                .collect()
        })];
        let full = s.k / t.bk;
        if full > 0 && self.async_copies {
            // Double-buffered by async copies: tile 0 copied first; then each step copies the
            // next tile into the other buffer while it multiplies this one — the copies land
            // at the step's one barrier, which also frees this buffer for the step after.
            body.push(thread_loop(
                "mt1",
                threads,
                self.copies("mt1", &at, &IExpr::c(0), t.bk, false, &IExpr::c(0)),
            ));
            let next = IExpr::var("mk").plus(IExpr::c(1));
            let mut step = guarded(
                Some(lt(next.clone(), full)),
                self.copies(
                    "mt2",
                    &at,
                    &next.clone().times(t.bk),
                    t.bk,
                    false,
                    &next.modulo(2),
                ),
            );
            step.extend(self.multiply_body("mt2", t.bk / MMA_K, &IExpr::var("mk").modulo(2)));
            body.push(Stmt::For(Loop {
                var: "mk".into(),
                extent: full,
                kind: LoopKind::Serial,
                body: vec![thread_loop("mt2", threads, step)],
            }));
        } else if full > 0 {
            // Double-buffered: tile 0 staged first; then each step prefetches the next tile's
            // runs into registers, multiplies the staged tile, and (after the barrier)
            // stores the prefetched runs into the other buffer — the global loads of one
            // tile overlap the tensor-core work of the one before.
            body.push(self.stage("mt1", &at, &IExpr::c(0), t.bk, false, &IExpr::c(0)));
            let (mk, next) = (IExpr::var("mk"), IExpr::var("mk").plus(IExpr::c(1)));
            let more = lt(next.clone(), full);
            let next_tile = |th: &str| {
                self.staged(&at, &IExpr::var(th), &next.clone().times(t.bk), t.bk, false)
            };
            let prefetch = |th: &str| {
                let stores = each_staged(next_tile(th), |slot, e| Stmt::Store {
                    buf: self.regs.clone(),
                    index: IExpr::c(slot),
                    value: e.value,
                });
                guarded(Some(more.clone()), stores)
            };
            let commit = |th: &str| {
                let buffer = next.clone().modulo(2);
                let stores = each_staged(next_tile(th), |slot, e| {
                    self.shared_store(&e, &buffer, VExpr::load(&self.regs, IExpr::c(slot)))
                });
                guarded(Some(more.clone()), stores)
            };
            let mut step = prefetch("mt2");
            step.extend(self.multiply_body("mt2", t.bk / MMA_K, &mk.clone().modulo(2)));
            body.push(Stmt::For(Loop {
                var: "mk".into(),
                extent: full,
                kind: LoopKind::Serial,
                body: vec![
                    thread_loop("mt2", threads, step),
                    thread_loop("mt6", threads, commit("mt6")),
                ],
            }));
        }
        let tail = s.k % t.bk;
        if tail != 0 {
            // Buffer 0: its last reader, two steps back at the latest, is behind a barrier.
            let steps = (tail + MMA_K - 1) / MMA_K;
            let k0 = IExpr::c(full * t.bk);
            let kc = steps * MMA_K;
            body.push(match self.async_copies {
                true => thread_loop(
                    "mt3",
                    threads,
                    self.copies("mt3", &at, &k0, kc, true, &IExpr::c(0)),
                ),
                false => self.stage("mt3", &at, &k0, kc, true, &IExpr::c(0)),
            });
            body.push(thread_loop(
                "mt4",
                threads,
                self.multiply_body("mt4", steps, &IExpr::c(0)),
            ));
        }
        body.push(thread_loop("mt5", threads, {
            let th = IExpr::var("mt5");
            self.fragments(&th)
                .into_iter()
                .map(|f| {
                    let (i, j) = (at.i0.clone().plus(f.row), at.j0.clone().plus(f.col));
                    let c_index = s.c_at(&at.b, &i, &j);
                    let sum = convert(
                        VExpr::load(&self.acc, IExpr::c(f.slot)),
                        DType::F32,
                        s.dtype,
                    );
                    let value = match &s.finish {
                        Some(fin) => s
                            .at(fin, &at.b, &i, &j, &IExpr::c(0))
                            .replace_load(&s.out, &c_index, &sum),
                        None => sum,
                    };
                    let store = Stmt::Store {
                        buf: s.out.clone(),
                        index: c_index,
                        value,
                    };
                    match s.m % t.bm == 0 && s.n % t.bn == 0 {
                        true => store,
                        false => Stmt::If {
                            cond: inside(&i, &j),
                            then: vec![store],
                        },
                    }
                })
                .collect()
        }));
        self.grid.block_loop(body)
    }

    /// The elements thread `th` stages for `A[rows, k0..k0+kc]` and `B[k0..k0+kc, cols]`, zero
    /// beyond the matrix (past `k` too, for the tail: `k_tail`), in runs of [`VECTOR`]
    /// elements contiguous in the operand and in the staged row — with the arguments'
    /// alignment known, one 16-byte load and store each; consecutive threads take
    /// consecutive runs (coalesced reads, conflict-free stores). Grouped per round of runs
    /// over the block's threads, with the guard of a round not every thread has a run in.
    fn staged(
        &self,
        at: &crate::gpu_product::At,
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
            let (mm, kk) = (
                e.clone().floordiv(k_runs),
                e.clone().modulo(k_runs).times(VECTOR).plus(IExpr::c(u)),
            );
            let (i, k) = (at.i0.clone().plus(mm.clone()), k0.clone().plus(kk.clone()));
            let a = s.at(&s.a, &at.b, &i, &IExpr::c(0), &k);
            Staged {
                b_tile: false,
                index: mm.times(t.row()).plus(kk),
                value: edge_guard(s, i, s.m, t.bm, k_guard(&k, a)),
            }
        });
        let n_runs = t.bn / VECTOR;
        rounds(kc * n_runs, &|e, u| {
            let (kk, jj) = (
                e.clone().floordiv(n_runs),
                e.clone().modulo(n_runs).times(VECTOR).plus(IExpr::c(u)),
            );
            let (j, k) = (at.j0.clone().plus(jj.clone()), k0.clone().plus(kk.clone()));
            let b = s.at(&s.b, &at.b, &IExpr::c(0), &j, &k);
            Staged {
                b_tile: true,
                index: kk.times(t.b_row()).plus(jj),
                value: edge_guard(s, j, s.n, t.bn, k_guard(&k, b)),
            }
        });
        out
    }

    /// The `async_copy`s thread `th` issues to stage `A[rows, k0..k0+kc]` and `B[k0..k0+kc,
    /// cols]` into shared buffer `buffer`: the runs [`Gen::staged`] stages, one copy each,
    /// reading only the elements inside the matrix (and before `k`, for the tail) — the
    /// rest of a run lands as zeros.
    fn copies(
        &self,
        th: &str,
        at: &crate::gpu_product::At,
        k0: &IExpr,
        kc: i64,
        k_tail: bool,
        buffer: &IExpr,
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
                false => (&self.a_tile, t.bm * t.row()),
                true => (&self.b_tile, t.bk * t.b_row()),
            };
            Stmt::AsyncCopy(AsyncCopy {
                dtype: s.dtype,
                len: VECTOR,
                dst: tile.clone(),
                dst_at: buffer.clone().times(size).plus(index),
                src,
                src_at,
                valid,
            })
        };
        let mut rounds = Vec::new();
        let k_runs = kc / VECTOR;
        rounds.extend(run_rounds(t.threads(), t.bm * k_runs, &th, |e| {
            let (mm, kk) = (
                e.clone().floordiv(k_runs),
                e.clone().modulo(k_runs).times(VECTOR),
            );
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
                mm.times(t.row()).plus(kk),
                a,
                rows.product(depth),
            )]
        }));
        let n_runs = t.bn / VECTOR;
        rounds.extend(run_rounds(t.threads(), kc * n_runs, &th, |e| {
            let (kk, jj) = (
                e.clone().floordiv(n_runs),
                e.clone().modulo(n_runs).times(VECTOR),
            );
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
                kk.times(t.b_row()).plus(jj),
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
            false => (&self.a_tile, t.bm * t.row()),
            true => (&self.b_tile, t.bk * t.b_row()),
        };
        Stmt::Store {
            buf: tile.clone(),
            index: buffer.clone().times(size).plus(e.index.clone()),
            value,
        }
    }

    /// A thread loop staging `k0..k0+kc` straight into shared buffer `buffer`.
    fn stage(
        &self,
        var: &str,
        at: &crate::gpu_product::At,
        k0: &IExpr,
        kc: i64,
        k_tail: bool,
        buffer: &IExpr,
    ) -> Stmt {
        let runs = self.staged(at, &IExpr::var(var), k0, kc, k_tail);
        let body = each_staged(runs, |_, e| {
            let value = e.value.clone();
            self.shared_store(&e, buffer, value)
        });
        thread_loop(var, self.t.threads(), body)
    }

    /// `value` where `inside` holds, else zero — unless the tiles divide the matrix.
    fn edge_select(&self, inside: VExpr, value: VExpr) -> VExpr {
        let (s, t) = (self.spec, self.t);
        match s.m % t.bm == 0 && s.n % t.bn == 0 {
            true => value,
            false => VExpr::select(inside, value, VExpr::lit(0.0, s.dtype)),
        }
    }

    /// `steps` tensor-core steps of 16 along the `k` staged in shared buffer `buffer`, over
    /// every fragment of the warp of thread `var`.
    fn multiply_body(&self, var: &str, steps: i64, buffer: &IExpr) -> Vec<Stmt> {
        let (mt, nt) = self.t.fragments();
        let th = IExpr::var(var);
        let (wr, wc) = self.warp_origin(&th);
        let (row, b_row) = (self.t.row(), self.t.b_row());
        let a0 = buffer.clone().times(self.t.bm * row);
        let b0 = buffer.clone().times(self.t.bk * b_row);
        let mut body = Vec::new();
        for ks in 0..steps {
            for mi in 0..mt {
                for ni in 0..nt {
                    let a_row = wr.clone().plus(IExpr::c(mi * MMA_M));
                    let b_col = wc.clone().plus(IExpr::c(ni * MMA_N));
                    body.push(Stmt::Mma(Mma {
                        lane: th.clone().modulo(WARP),
                        acc: self.acc.clone(),
                        at: IExpr::c((mi * nt + ni) * MMA_ACC_PER_LANE),
                        a: MmaOperand {
                            buf: self.a_tile.clone(),
                            base: a0.clone().plus(a_row.times(row)).plus(IExpr::c(ks * MMA_K)),
                            strides: [row, 1],
                        },
                        b: MmaOperand {
                            buf: self.b_tile.clone(),
                            base: b0.clone().plus(b_col).plus(IExpr::c(ks * MMA_K * b_row)),
                            strides: [b_row, 1],
                        },
                    }));
                }
            }
        }
        body
    }
}
