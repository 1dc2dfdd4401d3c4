//! The tensor-core GPU schedule of half-precision matrix products (f16 / bf16 elements, f32
//! sums): warps of `mma.m16n8k16` steps over tiles staged in shared memory — or, on sm_90,
//! warpgroups of `wgmma` steps ([`MmaEngine::Warpgroup`], see below).
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
//! Warpgroups ([`MmaEngine::Warpgroup`]): four warps together run `m64nNk16` steps whose
//! operands the tensor core reads from shared memory itself, so the tiles are staged as it
//! reads them — 8×8 *core matrices* of 128 contiguous bytes (`A` K-major, `B` N-major, no
//! padding); a thread's 16-byte runs go down a core matrix's rows first, so that 8
//! consecutive threads fill one core matrix (conflict-free stores, still whole 32-byte
//! sectors read per warp) — or ([`MmaLayout::Swizzled`]) as 128-byte rows under the 128-byte
//! swizzle (CUTLASS's Hopper layout, the one TMA writes), consecutive threads along a row.
//! Each warpgroup owns `bm / warps_m` rows (a column of 64-row steps) × `bn / warps_n`
//! columns (one step wide). Swizzled tiles may instead be staged by the tensor memory
//! accelerator ([`MmaStaging::Tma`], see `tma.rs`): thread 0 issues one tensor copy per
//! 64-column atom of each operand on the buffer's mbarrier, every thread waits for its phase
//! before multiplying the tile — the same pipeline, no thread copying. With three or more buffers one `k`
//! step's steps stay in flight through the next (`retires(2)`), and copies run
//! `stages − 2` steps ahead instead of `stages − 1`.
//!
//! The sums are f32 (the tensor core's accumulators); they start from the product's initial
//! value (zero or a bias) and go back to the element dtype when stored, as in the plain nest
//! — but the tensor core adds 16 products at a time in its own order: results agree with
//! the plain nest within the float tolerance, not to the bit.

use crate::error::PassError;
mod staging;
mod tma;

use crate::gpu_product::{GridTile, and, fresh_buffer, lt, rebuild, sample_valid};
use crate::product::{ProductSpec, convert};
use staging::copyable;
use tessera_ir::DType;
use tessera_ir::loops::gpu::MAX_THREADS_PER_BLOCK;
use tessera_ir::loops::mma::{
    CORE, MMA_K, MMA_M, MMA_N, Mma, MmaOperand, MmaShape, SWIZZLE_ROW, WARPGROUP, WGMMA_M,
    WGMMA_MAX_N,
};
use tessera_ir::loops::tma::MBARRIER_DTYPE;
use tessera_ir::loops::{
    BufRole, GpuAxis, IExpr, Lit, Loop, LoopKind, LoopProgram, MAX_LOCAL_BYTES, MAX_SHARED_BYTES,
    Stmt, VExpr,
};

/// Elements each staged row is padded by (16 bytes of f16 / bf16).
const ROW_PAD: i64 = 8;

/// Elements a thread stages as one run (16 bytes of f16 / bf16): tiles are multiples of 8
/// along `k` (16) and the columns (8).
const VECTOR: i64 = 8;

/// The most 16×8 fragments one warp accumulates: a 64×64 warp tile (CUTLASS's for Ampere),
/// 128 f32 registers per thread, with the operand fragments beside them under the
/// 255-register limit (ptxas: no spills at 128×256 tiles of 2×4 warps).
pub const MAX_FRAGMENTS_PER_WARP: i64 = 32;

/// The most buffers of an async-copy pipeline ([`MmaStaging::AsyncCopy`]): 7 tiles in flight,
/// what Hopper's 227 KB of shared memory holds of 128 × 128 × 32 tiles with room to spare.
pub const MAX_STAGES: i64 = 8;

/// The most f32 sums a thread of a warpgroup holds (a 64×256 region, as CUTLASS's widest
/// Hopper tiles): its operands stay in shared memory, so no fragment registers beside them.
pub const MAX_WARPGROUP_ACCUMULATORS: i64 = 128;

/// Which tensor-core instruction the schedule is made of.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum MmaEngine {
    /// `mma.sync.m16n8k16` per warp, operands loaded into registers by `ldmatrix` (sm_80 and
    /// later). What tilings recorded before the choice existed use.
    #[default]
    Warp,
    /// `wgmma.mma_async.m64nNk16` per warpgroup of four warps, operands read by the tensor
    /// core straight from shared memory staged as core matrices (sm_90a: Hopper only).
    /// `warps_m × warps_n` then count warpgroups.
    Warpgroup,
}

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
    /// `stages` buffers (2 to [`MAX_STAGES`]), a pipeline: tiles are copied by `async_copy`
    /// (`cp.async`)
    /// straight into shared memory, `stages − 1` steps ahead of the step that multiplies
    /// them, so that `stages − 1` tiles are in flight during each step; one barrier per
    /// step — where both operands are runs of kernel inputs (else as `Registers`).
    AsyncCopy { stages: i64 },
    /// `stages` buffers (2 to [`MAX_STAGES`]) filled by the tensor memory accelerator (see
    /// [`tma`]): per tile one thread issues a tensor copy per 64-column atom of each
    /// operand, completed on the buffer's mbarrier, which every thread waits for — the
    /// async-copy pipeline without the threads' copies. For swizzled warpgroup tiles
    /// ([`MmaLayout::Swizzled`], sm_90) of operands that are inputs with 16-byte-aligned
    /// rows; elsewhere as `AsyncCopy`.
    Tma { stages: i64 },
    /// `stages` buffers (2 to [`MAX_STAGES`]) filled by TMA in a warp-specialised pipeline
    /// (see [`tma`]): one more warpgroup whose one thread copies tile after tile as soon as
    /// the consumers release its buffer ("empty" mbarriers, one arrival per consumer
    /// warpgroup), while the consumer warpgroups wait for each tile's "full" mbarrier,
    /// multiply it (its steps in flight through the next tile's) and release it — no block
    /// barrier in the `k` loop, the copies as far ahead as the buffers allow. Where TMA
    /// applies; elsewhere as `AsyncCopy`.
    WarpSpecialized { stages: i64 },
}

impl MmaStaging {
    /// Shared buffers of each operand's tile.
    pub fn buffers(self) -> i64 {
        match self {
            MmaStaging::Registers => 2,
            MmaStaging::AsyncCopy { stages }
            | MmaStaging::Tma { stages }
            | MmaStaging::WarpSpecialized { stages } => stages,
        }
    }
}

/// How the staged tiles lie in shared memory.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum MmaLayout {
    /// Warps: rows padded by 16 bytes. Warpgroups: 8×8 core matrices, no swizzle. (What
    /// tilings recorded before the choice existed use.)
    #[default]
    Plain,
    /// Warpgroups: 128-byte rows under the 128-byte swizzle
    /// ([`swizzle_128`](tessera_ir::loops::mma::swizzle_128); `A` K-major, `B` N-major) —
    /// the layout CUTLASS gives Hopper's tensor cores and the one TMA writes. Consecutive
    /// threads copy consecutive 16-byte runs of a row: whole 128-byte lines read, 8
    /// different bank groups written. Needs `bk` and each step's `N` multiples of 64.
    Swizzled,
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
    /// The tensor-core instruction.
    #[serde(default)]
    pub engine: MmaEngine,
    /// How the staged tiles lie in shared memory.
    #[serde(default)]
    pub layout: MmaLayout,
}

impl GpuMmaTiling {
    /// The knobs' domains (the search space): block tile sides, `k` tile depths, warps per
    /// side.
    pub const TILES: [i64; 5] = [16, 32, 64, 128, 256];
    pub const DEPTHS: [i64; 3] = [16, 32, 64];
    pub const WARPS: [i64; 3] = [1, 2, 4];
    /// (The deep pipelines, then TMA, then warp specialisation, last: a tuning record names
    /// a staging by its position here.)
    pub const STAGINGS: [MmaStaging; 10] = [
        MmaStaging::AsyncCopy { stages: 2 },
        MmaStaging::AsyncCopy { stages: 3 },
        MmaStaging::AsyncCopy { stages: 4 },
        MmaStaging::Registers,
        MmaStaging::AsyncCopy { stages: 6 },
        MmaStaging::AsyncCopy { stages: MAX_STAGES },
        MmaStaging::Tma { stages: 3 },
        MmaStaging::Tma { stages: 4 },
        MmaStaging::WarpSpecialized { stages: 4 },
        MmaStaging::WarpSpecialized { stages: 6 },
    ];
    pub const ENGINES: [MmaEngine; 2] = [MmaEngine::Warp, MmaEngine::Warpgroup];
    pub const LAYOUTS: [MmaLayout; 2] = [MmaLayout::Plain, MmaLayout::Swizzled];

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
            engine: MmaEngine::Warp,
            layout: MmaLayout::Plain,
        }
    }

    /// The warpgroup ([`MmaEngine::Warpgroup`]) default for `spec`: a tile of the extent
    /// rounded up to a power of two per side, 64 to 128 rows and 16 to 128 columns, a
    /// warpgroup per 64 rows (one `m64nNk16` step across the tile's columns), 64 deep (less
    /// for a shorter `k`), staged by async copies three buffers deep — 96 KB of (dynamic)
    /// shared memory at 128 × 128, so that two blocks share an sm_90 multiprocessor.
    pub fn warpgroup_default_for(spec: &ProductSpec) -> GpuMmaTiling {
        let side = |extent: i64, lo: i64| {
            (extent.max(1) as u64)
                .next_power_of_two()
                .clamp(lo as u64, 128) as i64
        };
        let bm = side(spec.m, WGMMA_M);
        GpuMmaTiling {
            bm,
            bn: side(spec.n, 16),
            bk: (spec.k.max(1) as u64).next_power_of_two().clamp(16, 64) as i64,
            warps_m: bm / WGMMA_M,
            warps_n: 1,
            staging: MmaStaging::AsyncCopy { stages: 3 },
            engine: MmaEngine::Warpgroup,
            layout: MmaLayout::Plain,
        }
    }

    /// [`GpuMmaTiling::warpgroup_default_for`] with its tiles 128-byte swizzled
    /// ([`MmaLayout::Swizzled`]): 64-deep `k` tiles, at least 64 columns — valid where the
    /// product is wide and deep enough (`validate`, `fits`).
    pub fn swizzled_warpgroup_for(spec: &ProductSpec) -> GpuMmaTiling {
        let warpgroup = Self::warpgroup_default_for(spec);
        GpuMmaTiling {
            bn: warpgroup.bn.max(SWIZZLE_ROW),
            bk: SWIZZLE_ROW,
            layout: MmaLayout::Swizzled,
            ..warpgroup
        }
    }

    /// A random tiling from the knobs' domains that `validate` accepts and that fits the
    /// product (the search space as data, for fuzzing and search).
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
                engine: Self::ENGINES[pick(&[0, 1]) as usize],
                layout: Self::LAYOUTS[pick(&[0, 1]) as usize],
            },
            |t| t.validate(spec).is_ok() && t.fits(spec),
        )
    }

    /// Whether no side of the tile is over [`GpuMmaTiling::largest_sides`]: more is padding —
    /// zeros and guards that the GPU, the interpreter and the fuzzers would run for nothing.
    pub fn fits(&self, spec: &ProductSpec) -> bool {
        let [m, n, k] = Self::largest_sides(spec);
        self.bm <= m && self.bn <= n && self.bk <= k
    }

    /// The largest useful tile rows, columns and depth for `spec`: twice the extent rounded
    /// up to a power of two, at least a warpgroup's 64 rows, 16 columns, 16 deep.
    pub fn largest_sides(spec: &ProductSpec) -> [i64; 3] {
        let side = |extent: i64, least: i64| {
            least.max(2 * (extent.max(1) as u64).next_power_of_two() as i64)
        };
        [side(spec.m, WGMMA_M), side(spec.n, 16), side(spec.k, MMA_K)]
    }

    /// Threads of the warps (warpgroups) that multiply: the block's, but for the producer
    /// warpgroup of a warp-specialised pipeline ([`GpuMmaTiling::block_threads`]).
    pub fn threads(&self) -> i64 {
        self.shape().group() * self.warps_m * self.warps_n
    }

    /// Threads of a block: the multiplying ones, and a warp-specialised pipeline's producer
    /// warpgroup (whose one thread issues the copies; a whole warpgroup, so that the
    /// consumers' branch is warpgroup-uniform).
    pub fn block_threads(&self) -> i64 {
        match self.staging {
            MmaStaging::WarpSpecialized { .. } => self.threads() + WARPGROUP,
            _ => self.threads(),
        }
    }

    /// The tensor-core step: a warp's 16×8, or a warpgroup's 64 × its share of the columns.
    pub fn shape(&self) -> MmaShape {
        match self.engine {
            MmaEngine::Warp => MmaShape::Warp,
            MmaEngine::Warpgroup => MmaShape::Warpgroup {
                n: self.bn / self.warps_n.max(1),
            },
        }
    }

    /// Rows and columns of one step's output tile.
    fn step_tile(&self) -> (i64, i64) {
        match self.shape() {
            MmaShape::Warp => (MMA_M, MMA_N),
            MmaShape::Warpgroup { n } => (WGMMA_M, n),
        }
    }

    /// Steps per warp (warpgroup) along the rows and the columns.
    fn fragments(&self) -> (i64, i64) {
        let (rows, cols) = self.step_tile();
        (self.bm / self.warps_m / rows, self.bn / self.warps_n / cols)
    }

    /// Elements per staged row of `A` (`k` and the padding).
    fn row(&self) -> i64 {
        self.bk + ROW_PAD
    }

    /// Elements of one buffer of the staged `A` tile: padded rows, or core matrices.
    fn a_tile_len(&self) -> i64 {
        match self.engine {
            MmaEngine::Warp => self.bm * self.row(),
            MmaEngine::Warpgroup => self.bm * self.bk,
        }
    }

    /// Elements of one buffer of the staged `B` tile.
    fn b_tile_len(&self) -> i64 {
        match self.engine {
            MmaEngine::Warp => self.bk * self.b_row(),
            MmaEngine::Warpgroup => self.bk * self.bn,
        }
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

    /// Bytes of shared memory the staged `dtype` tiles take (all buffers of both operands, and
    /// their mbarriers under TMA): at most
    /// [`MAX_SHARED_BYTES`], and what the GPU allows
    /// ([`max_shared_bytes`](tessera_ir::loops::gpu::max_shared_bytes)).
    pub fn shared_bytes(&self, dtype: DType) -> usize {
        let elements = self.staging.buffers() * (self.a_tile_len() + self.b_tile_len());
        // TMA: one mbarrier per buffer beside the tiles.
        let barriers = match self.staging {
            MmaStaging::Tma { stages } => stages.max(0) as usize * MBARRIER_DTYPE.size(),
            // A "full" and an "empty" one per buffer.
            MmaStaging::WarpSpecialized { stages } => {
                2 * stages.max(0) as usize * MBARRIER_DTYPE.size()
            }
            _ => 0,
        };
        elements.max(0) as usize * dtype.size() + barriers
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
        match t.engine {
            MmaEngine::Warp => {
                if t.bm % (t.warps_m * MMA_M) != 0 || t.bn % (t.warps_n * MMA_N) != 0 {
                    return bad(format!(
                        "a {}x{} tile does not split into {}x{} warps of 16x8 fragments",
                        t.bm, t.bn, t.warps_m, t.warps_n
                    ));
                }
            }
            MmaEngine::Warpgroup => {
                let n = t.bn / t.warps_n;
                if t.bm % (t.warps_m * WGMMA_M) != 0
                    || t.bn % t.warps_n != 0
                    || n % CORE != 0
                    || n > WGMMA_MAX_N
                {
                    return bad(format!(
                        "a {}x{} tile does not split into {}x{} warpgroups of 64xN steps \
                         (N a multiple of 8, at most 256)",
                        t.bm, t.bn, t.warps_m, t.warps_n
                    ));
                }
            }
        }
        if t.bk % MMA_K != 0 {
            return bad(format!("k tile {} is not a multiple of 16", t.bk));
        }
        if t.layout == MmaLayout::Swizzled
            && (t.engine != MmaEngine::Warpgroup
                || t.bk % SWIZZLE_ROW != 0
                || (t.bn / t.warps_n) % SWIZZLE_ROW != 0)
        {
            return bad(format!(
                "swizzled tiles are for warpgroups with a k tile ({}) and steps ({} columns) \
                 of multiples of 64",
                t.bk,
                t.bn / t.warps_n
            ));
        }
        if t.block_threads() as u64 > MAX_THREADS_PER_BLOCK {
            return bad(format!("{} threads per block", t.block_threads()));
        }
        if let MmaStaging::AsyncCopy { stages }
        | MmaStaging::Tma { stages }
        | MmaStaging::WarpSpecialized { stages } = t.staging
            && !(2..=MAX_STAGES).contains(&stages)
        {
            return bad(format!("{stages} pipeline stages (2 to {MAX_STAGES})"));
        }
        if matches!(
            t.staging,
            MmaStaging::Tma { .. } | MmaStaging::WarpSpecialized { .. }
        ) && !tma::tma_tiling(t)
        {
            return bad("TMA stages swizzled warpgroup tiles only".into());
        }
        let shared = t.shared_bytes(spec.dtype);
        if shared > MAX_SHARED_BYTES {
            return bad(format!("{shared} bytes of shared memory"));
        }
        let (mt, nt) = t.fragments();
        let accumulators = mt * nt * t.shape().acc_per_lane();
        match t.engine {
            MmaEngine::Warp if mt * nt > MAX_FRAGMENTS_PER_WARP => {
                return bad(format!(
                    "{mt}x{nt} fragments per warp (at most {MAX_FRAGMENTS_PER_WARP}: registers)"
                ));
            }
            MmaEngine::Warpgroup if accumulators > MAX_WARPGROUP_ACCUMULATORS => {
                return bad(format!(
                    "{accumulators} sums per thread of a warpgroup (at most \
                     {MAX_WARPGROUP_ACCUMULATORS}: registers)"
                ));
            }
            _ => {}
        }
        // With the prefetch registers, which async staging falls back to.
        let local = accumulators * 4 + t.prefetched() * spec.dtype.size() as i64;
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
            MmaStaging::AsyncCopy { stages }
            | MmaStaging::Tma { stages }
            | MmaStaging::WarpSpecialized { stages }
                if copyable(prog, spec) =>
            {
                Some(stages)
            }
            _ => None,
        },
        tma: match t.staging {
            MmaStaging::Tma { .. } | MmaStaging::WarpSpecialized { .. } if tma::tma_tiling(t) => {
                tma::TmaOperands::of(prog, spec, t.bm, t.bk)
            }
            _ => None,
        },
        barriers: fresh("bar"),
    };
    let (mt, nt) = t.fragments();
    let buffers = g.stages.unwrap_or(2);
    let mut added = vec![
        (
            &g.a_tile,
            buffers * t.a_tile_len(),
            BufRole::Shared,
            spec.dtype,
        ),
        (
            &g.b_tile,
            buffers * t.b_tile_len(),
            BufRole::Shared,
            spec.dtype,
        ),
        (
            &g.acc,
            mt * nt * t.shape().acc_per_lane(),
            BufRole::Local,
            DType::F32,
        ),
    ];
    if g.stages.is_none() {
        added.push((&g.regs, t.prefetched(), BufRole::Local, spec.dtype));
    }
    if g.tma.is_some() {
        let barriers = match g.specialized() {
            true => 2 * buffers,
            false => buffers,
        };
        added.push((&g.barriers, barriers, BufRole::Shared, MBARRIER_DTYPE));
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
    /// The operands' tensor maps where TMA stages the tiles ([`MmaStaging::Tma`]).
    tma: Option<tma::TmaOperands>,
    /// The shared buffer of the pipeline's mbarriers (one per buffer) under TMA.
    barriers: String,
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
    /// Whether the tiles are staged by a warp-specialised TMA pipeline.
    fn specialized(&self) -> bool {
        self.tma.is_some() && matches!(self.t.staging, MmaStaging::WarpSpecialized { .. })
    }

    /// The first row and column in the block tile of the warp (warpgroup) of thread `t`
    /// (uniform over the group).
    fn warp_origin(&self, t: &IExpr) -> (IExpr, IExpr) {
        let (mt, nt) = self.t.fragments();
        let (rows, cols) = self.t.step_tile();
        let warp = t.clone().floordiv(self.t.shape().group());
        (
            warp.clone().floordiv(self.t.warps_n).times(mt * rows),
            warp.modulo(self.t.warps_n).times(nt * cols),
        )
    }

    /// Every accumulator element of the thread `t`, with its place in the block tile.
    fn fragments(&self, t: &IExpr) -> Vec<Fragment> {
        let (mt, nt) = self.t.fragments();
        let (rows, cols) = self.t.step_tile();
        let shape = self.t.shape();
        let per_lane = shape.acc_per_lane();
        let (wr, wc) = self.warp_origin(t);
        let lane = t.clone().modulo(shape.group());
        let mut out = Vec::new();
        for mi in 0..mt {
            for ni in 0..nt {
                for e in 0..per_lane {
                    let (r, c) = shape.acc_position(&lane, e);
                    out.push(Fragment {
                        slot: (mi * nt + ni) * per_lane + e,
                        row: wr.clone().plus(IExpr::c(mi * rows)).plus(r),
                        col: wc.clone().plus(IExpr::c(ni * cols)).plus(c),
                    });
                }
            }
        }
        out
    }

    /// One buffer of the staged `A` tile (`B` tile with `b_tile`) as an operand at base 0:
    /// padded rows for warps; for warpgroups, core matrices — 8 × 8 blocks of 128
    /// contiguous bytes, `A`'s rows along `k` (K-major), `B`'s along the columns (N-major),
    /// the blocks of a tile row side by side, the block rows one after another; or
    /// ([`MmaLayout::Swizzled`]) 128-byte rows swizzled, in atoms of 64 columns. The copies
    /// stage by it and the `mma`s read by it: one layout.
    fn staged_tile(&self, b_tile: bool) -> MmaOperand {
        let t = self.t;
        let (buf, width, padded) = match b_tile {
            false => (&self.a_tile, t.bk, t.row()),
            true => (&self.b_tile, t.bn, t.b_row()),
        };
        // Swizzled: `A`'s atoms are its rows × 64 of `k`, `B`'s `k` × 64 of its columns.
        let rows = match b_tile {
            false => t.bm,
            true => t.bk,
        };
        let (strides, blocks, swizzle) = match (t.engine, t.layout) {
            (MmaEngine::Warp, _) => ([padded, 1], None, None),
            (MmaEngine::Warpgroup, MmaLayout::Plain) => {
                ([CORE, 1], Some([width * CORE, CORE * CORE]), None)
            }
            (MmaEngine::Warpgroup, MmaLayout::Swizzled) => {
                ([SWIZZLE_ROW, 1], None, Some(rows * SWIZZLE_ROW))
            }
        };
        MmaOperand {
            buf: buf.clone(),
            base: IExpr::c(0),
            strides,
            blocks,
            swizzle,
        }
    }

    /// Where element `(row, col)` of the `A` tile (`B` tile with `b_tile`) is staged in one
    /// buffer (see [`Gen::staged_tile`]).
    fn tile_index(&self, b_tile: bool, row: IExpr, col: IExpr) -> IExpr {
        self.staged_tile(b_tile).at(row, col)
    }

    /// The tile row and first column of run `e` of a tile `runs_per_row` runs of 8 wide.
    /// Warps and swizzled tiles: consecutive runs along a row (a swizzled row's 8 runs land
    /// in 8 different chunks of its 128 bytes: conflict-free). Warpgroups' core matrices:
    /// down the 8 rows of a core matrix first, so that 8 consecutive runs fill 128
    /// contiguous bytes (conflict-free shared stores), then along the row.
    fn run_at(&self, e: &IExpr, runs_per_row: i64) -> (IExpr, IExpr) {
        match (self.t.engine, self.t.layout) {
            (MmaEngine::Warp, _) | (MmaEngine::Warpgroup, MmaLayout::Swizzled) => (
                e.clone().floordiv(runs_per_row),
                e.clone().modulo(runs_per_row).times(VECTOR),
            ),
            (MmaEngine::Warpgroup, MmaLayout::Plain) => (
                e.clone()
                    .floordiv(CORE * runs_per_row)
                    .times(CORE)
                    .plus(e.clone().modulo(CORE)),
                e.clone().floordiv(CORE).modulo(runs_per_row).times(VECTOR),
            ),
        }
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
            Some(stages) if self.specialized() => {
                self.warp_specialized(&at, init, stages, &mut body)
            }
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
    /// every fragment of the warp (warpgroup) of thread `var`, retiring `retires` barriers
    /// later (warpgroups; 1 for warps).
    fn multiply_body(&self, var: &str, steps: i64, buffer: &IExpr, retires: i64) -> Vec<Stmt> {
        let t = self.t;
        let (mt, nt) = t.fragments();
        let (rows, cols) = t.step_tile();
        let shape = t.shape();
        let th = IExpr::var(var);
        let (wr, wc) = self.warp_origin(&th);
        let a0 = buffer.clone().times(t.a_tile_len());
        let b0 = buffer.clone().times(t.b_tile_len());
        let operand = |b_tile: bool, buffer_start: IExpr, row: IExpr, col: IExpr| {
            let tile = self.staged_tile(b_tile);
            MmaOperand {
                base: buffer_start.plus(tile.offset(row, col)),
                ..tile
            }
        };
        let mut body = Vec::new();
        for ks in 0..steps {
            let k = IExpr::c(ks * MMA_K);
            for mi in 0..mt {
                for ni in 0..nt {
                    let a_row = wr.clone().plus(IExpr::c(mi * rows));
                    let b_col = wc.clone().plus(IExpr::c(ni * cols));
                    body.push(Stmt::Mma(Mma {
                        shape,
                        retires,
                        lane: th.clone().modulo(shape.group()),
                        acc: self.acc.clone(),
                        at: IExpr::c((mi * nt + ni) * shape.acc_per_lane()),
                        a: operand(false, a0.clone(), a_row, k.clone()),
                        b: operand(true, b0.clone(), k.clone(), b_col),
                    }));
                }
            }
        }
        body
    }
}
