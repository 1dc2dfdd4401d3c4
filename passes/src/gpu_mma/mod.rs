//! The tensor-core GPU schedule of half-precision matrix products (f16 / bf16 elements, f32
//! sums): warps of `mma.m16n8k16` steps over tiles staged in shared memory.
//!
//! Built from the product's [`ProductSpec`] and a [`GpuMmaTiling`] (the knobs). Staged by
//! async copies ([`MmaStaging::AsyncCopy`], `S` buffers of each tile, the default `S = 2`):
//!
//! ```text
//! block(x) over (batch, bm-row tile, bn-column tile):
//!   thread(x) t:  acc[mt][nt][4] = init;  copy k tile 0 → buffer 0   (lands S−1 barriers later)
//!   thread(x) t:  copy k tile n → buffer n                       (prologue, n = 1..S−1)
//!   for kt in k tiles of bk:                            (uniform; a barrier after each step)
//!     thread(x) t:  copy k tile kt+S−1 → buffer (kt+S−1) % S    (As[bm][bk+8], Bs[bk][bn+8])
//!                   for ks, mi, ni:  mma acc[mi][ni] += As[kt % S][warp rows mi, ks]
//!                                                      * Bs[kt % S][ks, warp cols ni]
//!   (the k tail, if bk does not divide k: the last tile, zero beyond k, in steps of 16)
//!   thread(x) t:  C[the lane's fragment positions] = finish(acc)   (guarded at the edges)
//! ```
//!
//! Staged through registers ([`MmaStaging::Registers`]; also where an operand is not a run of
//! a kernel input — a transposed view, a fused producer, an implicit GEMM's windows — which
//! an async copy cannot read), two buffers:
//!
//! ```text
//!   thread(x) t:  acc = init
//!   thread(x) t:  buffer 0 = k tile 0
//!   for kt in k tiles of bk:
//!     thread(x) t:  next = k tile kt+1                  (local: prefetched into registers)
//!                   mma steps on buffer kt % 2
//!     thread(x) t:  buffer (kt+1) % 2 = next
//!   (the k tail: staged into buffer 0, then multiplied)
//! ```
//!
//! The block's `warps_m × warps_n` warps each own a `bm/warps_m × bn/warps_n` region of the
//! tile: `mt × nt` fragments of 16×8. Both operands are staged as they are stored, row-major,
//! rows padded by 8 elements (16 bytes): a thread copies runs of 8 elements, one 16-byte
//! `cp.async` (or load and store) where the arguments' alignment allows (consecutive threads
//! take consecutive runs: coalesced reads, conflict-free shared stores), and the fragment
//! loads fall in distinct
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
mod staging;

use crate::gpu_product::{GridTile, and, fresh_buffer, lt, rebuild, sample_valid};
use crate::product::{ProductSpec, convert};
use staging::copyable;
use tessera_ir::DType;
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

/// How the next `k` tiles reach shared memory while the current one is multiplied.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum MmaStaging {
    /// Two buffers; the next tile is loaded into registers (the thread's prefetch buffer)
    /// during the step and stored into the other buffer after a barrier: two barriers per
    /// step. (What tilings recorded before the choice existed did.)
    #[default]
    Registers,
    /// `stages` buffers (2 to 4), a pipeline: tiles are copied by `async_copy` (`cp.async`)
    /// straight into shared memory, `stages − 1` steps ahead of the step that multiplies
    /// them, so that `stages − 1` tiles are in flight during each step; one barrier per
    /// step — where both operands are runs of kernel inputs (else as `Registers`).
    AsyncCopy { stages: i64 },
}

impl MmaStaging {
    /// Shared buffers of each operand's tile.
    pub fn buffers(self) -> i64 {
        match self {
            MmaStaging::Registers => 2,
            MmaStaging::AsyncCopy { stages } => stages,
        }
    }
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
    pub const STAGINGS: [MmaStaging; 4] = [
        MmaStaging::AsyncCopy { stages: 2 },
        MmaStaging::AsyncCopy { stages: 3 },
        MmaStaging::AsyncCopy { stages: 4 },
        MmaStaging::Registers,
    ];

    /// The default for `spec`: per side a tile of the extent rounded up to a power of two,
    /// 16 to 128; up to 2 × 4 warps, each with a 64 × 32 region (4 × 4 fragments) at full
    /// size; 32 deep; staged by asynchronous copies two buffers deep. A big product gets
    /// 128 × 128 tiles: 256 threads, 37 KB of shared memory, 64 f32 accumulators per thread.
    pub fn default_for(spec: &ProductSpec) -> GpuMmaTiling {
        let side = |extent: i64| (extent.max(1) as u64).next_power_of_two().clamp(16, 128) as i64;
        let (bm, bn) = (side(spec.m), side(spec.n));
        GpuMmaTiling {
            bm,
            bn,
            bk: 32,
            warps_m: (bm / 64).max(1),
            warps_n: (bn / 32).max(1),
            staging: MmaStaging::AsyncCopy { stages: 2 },
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
                staging: Self::STAGINGS
                    [pick(&(0..Self::STAGINGS.len() as i64).collect::<Vec<_>>()) as usize],
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
        if let MmaStaging::AsyncCopy { stages } = t.staging
            && !(2..=4).contains(&stages)
        {
            return bad(format!("{stages} pipeline stages (2 to 4)"));
        }
        let shared =
            t.staging.buffers() * (t.bm * t.row() + t.bk * t.b_row()) * spec.dtype.size() as i64;
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
        stages: match t.staging {
            MmaStaging::AsyncCopy { stages } if copyable(prog, spec) => Some(stages),
            _ => None,
        },
    };
    let (mt, nt) = t.fragments();
    let buffers = g.stages.unwrap_or(2);
    let mut added = vec![
        (
            &g.a_tile,
            buffers * t.bm * t.row(),
            BufRole::Shared,
            spec.dtype,
        ),
        (
            &g.b_tile,
            buffers * t.bk * t.b_row(),
            BufRole::Shared,
            spec.dtype,
        ),
        (
            &g.acc,
            mt * nt * MMA_ACC_PER_LANE,
            BufRole::Local,
            DType::F32,
        ),
    ];
    if g.stages.is_none() {
        added.push((&g.regs, t.prefetched(), BufRole::Local, spec.dtype));
    }
    rebuild(prog, &added, g.program(), "tile-gpu-mma")
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
    /// The pipeline's depth where tiles are staged by `async_copy` (see
    /// [`MmaStaging::AsyncCopy`]); `None` for register staging.
    stages: Option<i64>,
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
        let init: Vec<Stmt> = {
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
        };
        let mut body = Vec::new();
        match self.stages {
            Some(stages) => self.copy_pipeline(&at, init, stages, &mut body),
            None => {
                body.push(thread_loop("mt0", threads, init));
                self.register_pipeline(&at, &mut body);
            }
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
