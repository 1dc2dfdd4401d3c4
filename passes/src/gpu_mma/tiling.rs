//! The knobs of the tensor-core schedule ([`GpuMmaTiling`]) as data: their domains (the
//! search space), the defaults, what a tiling costs (threads, shared memory, registers) and
//! which tilings are valid.

use super::{ROW_PAD, VECTOR, tma};
use crate::error::PassError;
use crate::gpu_product::sample_valid;
use crate::product::ProductSpec;
use tessera_ir::DType;
use tessera_ir::loops::gpu::MAX_THREADS_PER_BLOCK;
use tessera_ir::loops::mma::{
    CORE, MMA_K, MMA_M, MMA_N, MmaShape, SWIZZLE_ROW, WARPGROUP, WGMMA_M, WGMMA_MAX_N,
};
use tessera_ir::loops::tma::MBARRIER_DTYPE;
use tessera_ir::loops::{MAX_LOCAL_BYTES, MAX_SHARED_BYTES};

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
    ///
    /// `persistent_blocks`: 0 launches one block per output tile; `P > 0` launches a
    /// persistent grid of `P` blocks (at most one per tile), block `b` computing tiles
    /// `b, b + P, …` one after another with one pipeline whose phases run on across them —
    /// the producer copies the next tile's operands while the consumers store the last
    /// one's sums. `P` the GPU's multiprocessors ([`HOPPER_SMS`]) keeps one block resident
    /// on each.
    ///
    /// `consumers`: how the consumer warpgroups share the output tiles (see
    /// [`Consumers`]).
    WarpSpecialized {
        stages: i64,
        #[serde(default)]
        persistent_blocks: i64,
        #[serde(default)]
        consumers: Consumers,
    },
}

/// How a warp-specialised pipeline's consumers share its output tiles.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Consumers {
    /// One team of `warps_m × warps_n` warpgroups computes each tile together. (What
    /// tilings recorded before the choice existed use.)
    #[default]
    Cooperative,
    /// Two such teams take the rounds of a persistent grid in turns (CUTLASS's
    /// "ping-pong"): one multiplies its tile while the other stores its last one, so the
    /// tensor cores do not wait for the stores. The teams multiply one after the other — a
    /// team starts its `k` loop once the other's last step is done ("turn" mbarriers) —
    /// which also keeps each team's waits within a phase of the pipeline's mbarriers.
    /// Needs a persistent grid (`persistent_blocks > 0`); twice the consumer threads.
    PingPong,
}

impl Consumers {
    /// Teams of consumer warpgroups: each computes whole output tiles.
    pub fn teams(self) -> i64 {
        match self {
            Consumers::Cooperative => 1,
            Consumers::PingPong => 2,
        }
    }
}

/// The most blocks of a persistent grid: a few per multiprocessor of the largest GPUs.
pub const MAX_PERSISTENT_BLOCKS: i64 = 4 * HOPPER_SMS;

/// Multiprocessors of an H100 SXM and of an H200: the persistent grid of one resident
/// block each (an H100 PCIe has 114; the tuner measures either grid).
pub const HOPPER_SMS: i64 = 132;

/// Tile sides `(bm, bn)` for `spec` from `(bm, bn)`: the longer side (rows on a tie) halved,
/// neither below `least` (nor below what it was where it started smaller), while the grid
/// has fewer blocks than [`HOPPER_SMS`] — a grid of a dozen blocks leaves nine in ten
/// multiprocessors idle, where smaller tiles (more steps per byte staged, but all the
/// multiprocessors) finish sooner. (A product that fills the GPU keeps its tiles.)
pub fn fill_the_gpu(spec: &ProductSpec, bm: i64, bn: i64, least: i64) -> (i64, i64) {
    let blocks = |bm: i64, bn: i64| spec.batch * ceil_div(spec.m, bm) * ceil_div(spec.n, bn);
    let (mut bm, mut bn) = (bm, bn);
    while blocks(bm, bn) < HOPPER_SMS {
        let (m_halves, n_halves) = (bm / 2 >= least, bn / 2 >= least);
        match (m_halves, n_halves) {
            (true, true) if bm >= bn => bm /= 2,
            (_, true) => bn /= 2,
            (true, false) => bm /= 2,
            (false, false) => break,
        }
    }
    (bm, bn)
}

/// Tiles of side `d` over an extent `x` (at least one).
fn ceil_div(x: i64, d: i64) -> i64 {
    (x.max(1) + d - 1) / d
}

impl MmaStaging {
    /// Mbarriers of a warp-specialised pipeline: a "full" and an "empty" one per buffer, and
    /// ping-pong consumers' two "turn" ones (see [`Consumers`]); a TMA pipeline's: one per
    /// buffer.
    pub fn mbarriers(self) -> i64 {
        match self {
            MmaStaging::WarpSpecialized {
                stages, consumers, ..
            } => {
                2 * stages
                    + match consumers {
                        Consumers::Cooperative => 0,
                        Consumers::PingPong => 2,
                    }
            }
            MmaStaging::Tma { stages } => stages,
            _ => 0,
        }
    }

    /// Shared buffers of each operand's tile.
    pub fn buffers(self) -> i64 {
        match self {
            MmaStaging::Registers => 2,
            MmaStaging::AsyncCopy { stages }
            | MmaStaging::Tma { stages }
            | MmaStaging::WarpSpecialized { stages, .. } => stages,
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
    /// Rows of output tiles per group in the order the blocks take them (1: row after row;
    /// `G`: `G` rows down each column, then the next — see `GridTile::grouped`), for L2
    /// reuse between the blocks running at once. (What tilings recorded before the choice
    /// existed use: 1.)
    #[serde(default = "row_after_row")]
    pub group_rows: i64,
    /// How the consumers store the output tiles. (What tilings recorded before the choice
    /// existed use: direct stores.)
    #[serde(default)]
    pub epilogue: MmaEpilogue,
}

/// How a tensor-core product's threads store their sums.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum MmaEpilogue {
    /// Each thread stores its own sums to global memory (two elements per `st.global`).
    #[default]
    Direct,
    /// A warp-specialised pipeline's consumer warpgroups write their tile, swizzled, to
    /// shared memory, and one thread of each stores it by TMA (`tensor_store`, one box per
    /// 64 columns; CUTLASS's TMA epilogue): no scattered stores, and the store runs on
    /// while the warpgroup multiplies its next tile. Needs
    /// [`MmaStaging::WarpSpecialized`]; where the output is not an output buffer with
    /// 16-byte-aligned rows, or the tiles do not divide the matrix, the stores stay direct.
    /// Costs a tile of shared memory per team.
    TensorStore,
    /// A TMA epilogue through two sub-tiles per consumer warpgroup (64 columns of its rows
    /// each, CUTLASS's epilogue sub-tiles) written and stored in turn: the warpgroup writes
    /// one while the copy engine reads the other. Half a 128×256 cooperative tile's shared
    /// memory (32 KiB instead of 64), so such a pipeline keeps four buffers; a warpgroup
    /// synchronises once per 64 columns instead of once per tile. Needs what
    /// [`MmaEpilogue::TensorStore`] needs.
    TensorStoreSubTiles,
}

impl MmaEpilogue {
    /// Whether the consumers store through shared memory by TMA.
    pub fn by_tma(self) -> bool {
        self != MmaEpilogue::Direct
    }
}

/// Output tiles row after row: [`GpuMmaTiling::group_rows`] of tilings recorded before the
/// choice existed.
fn row_after_row() -> i64 {
    1
}

/// The most rows of tiles per group: more than the row tiles of the blocks running at once
/// on the largest GPUs is no group.
pub const MAX_GROUP_ROWS: i64 = 64;

impl GpuMmaTiling {
    /// The knobs' domains (the search space): block tile sides, `k` tile depths, warps per
    /// side.
    pub const TILES: [i64; 5] = [16, 32, 64, 128, 256];
    pub const DEPTHS: [i64; 3] = [16, 32, 64];
    pub const WARPS: [i64; 3] = [1, 2, 4];
    /// The epilogues the tuner chooses from (the `mma_epilogue` knob: a position here).
    pub const EPILOGUES: [MmaEpilogue; 3] = [
        MmaEpilogue::Direct,
        MmaEpilogue::TensorStore,
        MmaEpilogue::TensorStoreSubTiles,
    ];
    /// (The deep pipelines, then TMA, then warp specialisation, then on a persistent grid,
    /// then with ping-pong consumers, last: a tuning record names a staging by its position
    /// here.)
    pub const STAGINGS: [MmaStaging; 14] = [
        MmaStaging::AsyncCopy { stages: 2 },
        MmaStaging::AsyncCopy { stages: 3 },
        MmaStaging::AsyncCopy { stages: 4 },
        MmaStaging::Registers,
        MmaStaging::AsyncCopy { stages: 6 },
        MmaStaging::AsyncCopy { stages: MAX_STAGES },
        MmaStaging::Tma { stages: 3 },
        MmaStaging::Tma { stages: 4 },
        MmaStaging::WarpSpecialized {
            stages: 4,
            persistent_blocks: 0,
            consumers: Consumers::Cooperative,
        },
        MmaStaging::WarpSpecialized {
            stages: 6,
            persistent_blocks: 0,
            consumers: Consumers::Cooperative,
        },
        MmaStaging::WarpSpecialized {
            stages: 4,
            persistent_blocks: HOPPER_SMS,
            consumers: Consumers::Cooperative,
        },
        MmaStaging::WarpSpecialized {
            stages: 6,
            persistent_blocks: HOPPER_SMS,
            consumers: Consumers::Cooperative,
        },
        MmaStaging::WarpSpecialized {
            stages: 4,
            persistent_blocks: HOPPER_SMS,
            consumers: Consumers::PingPong,
        },
        MmaStaging::WarpSpecialized {
            stages: 6,
            persistent_blocks: HOPPER_SMS,
            consumers: Consumers::PingPong,
        },
    ];
    pub const ENGINES: [MmaEngine; 2] = [MmaEngine::Warp, MmaEngine::Warpgroup];
    /// Row after row, or groups of 8 rows of tiles (Triton's `GROUP_M`).
    pub const GROUP_ROWS: [i64; 2] = [1, 8];
    pub const LAYOUTS: [MmaLayout; 2] = [MmaLayout::Plain, MmaLayout::Swizzled];

    /// The default for `spec`: per side a tile of the extent rounded up to a power of two,
    /// 16 to 128, halved down to 64 × 64 while the grid has fewer blocks than a GPU has
    /// multiprocessors ([`fill_the_gpu`]); up to 2 × 4 warps, each with a 64 × 32 region (4
    /// × 4 fragments) at full size, at least four where the rows allow; 32 deep; staged by
    /// asynchronous copies two buffers deep. A big product gets 128 × 128 tiles: 256
    /// threads, 37 KB of shared memory, 64 f32 accumulators per thread.
    pub fn default_for(spec: &ProductSpec) -> GpuMmaTiling {
        let side = |extent: i64| (extent.max(1) as u64).next_power_of_two().clamp(16, 128) as i64;
        let (bm, bn) = fill_the_gpu(spec, side(spec.m), side(spec.n), 64);
        let (mut warps_m, warps_n) = ((bm / 64).max(1), (bn / 32).max(1));
        // At least four warps where the rows allow (regions of 32 or 16 rows): a
        // multiprocessor's four tensor cores each serve the warps of one quarter of it, so a
        // block of two warps alone on one (a small product's grid) would leave two idle.
        while warps_m * warps_n < 4 && bm / warps_m >= 32 {
            warps_m *= 2;
        }
        GpuMmaTiling {
            bm,
            bn,
            bk: 32,
            warps_m,
            warps_n,
            staging: MmaStaging::AsyncCopy { stages: 2 },
            engine: MmaEngine::Warp,
            layout: MmaLayout::Plain,
            group_rows: 1,
            epilogue: MmaEpilogue::Direct,
        }
    }

    /// The warpgroup ([`MmaEngine::Warpgroup`]) default for `spec`:
    /// [`GpuMmaTiling::warpgroup_tile_for`], its tile halved down to 64 × 64 while the grid
    /// has fewer blocks than a GPU has multiprocessors ([`fill_the_gpu`]: a 512 × 384
    /// product takes 48 blocks of 64 × 64, not 12 of 128 × 128).
    pub fn warpgroup_default_for(spec: &ProductSpec) -> GpuMmaTiling {
        let largest = Self::warpgroup_tile_for(spec);
        let (bm, bn) = fill_the_gpu(spec, largest.bm, largest.bn, WGMMA_M);
        GpuMmaTiling {
            bm,
            bn,
            warps_m: bm / WGMMA_M,
            ..largest
        }
    }

    /// The largest warpgroup ([`MmaEngine::Warpgroup`]) tile for `spec`: a tile of the
    /// extent rounded up to a power of two per side, 64 to 128 rows and 16 to 128 columns, a
    /// warpgroup per 64 rows (one `m64nNk16` step across the tile's columns), 64 deep (less
    /// for a shorter `k`), staged by async copies three buffers deep — 96 KB of (dynamic)
    /// shared memory at 128 × 128, so that two blocks share an sm_90 multiprocessor.
    pub fn warpgroup_tile_for(spec: &ProductSpec) -> GpuMmaTiling {
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
            group_rows: 1,
            epilogue: MmaEpilogue::Direct,
        }
    }

    /// [`GpuMmaTiling::warpgroup_tile_for`] with its tiles 128-byte swizzled
    /// ([`MmaLayout::Swizzled`]): 64-deep `k` tiles, at least 64 columns — valid where the
    /// product is wide and deep enough (`validate`, `fits`).
    pub fn swizzled_warpgroup_for(spec: &ProductSpec) -> GpuMmaTiling {
        let warpgroup = Self::warpgroup_tile_for(spec);
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
                group_rows: pick(&Self::GROUP_ROWS),
                epilogue: Self::EPILOGUES[pick(&[0, 1, 2]) as usize],
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

    /// Threads of the warps (warpgroups) that multiply a tile: the block's, but for the
    /// producer warpgroup of a warp-specialised pipeline and its second team of ping-pong
    /// consumers ([`GpuMmaTiling::block_threads`]).
    pub fn threads(&self) -> i64 {
        self.shape().group() * self.warps_m * self.warps_n
    }

    /// Threads of a block: the multiplying ones (each team's, see [`Consumers`]), and a
    /// warp-specialised pipeline's producer warpgroup (whose one thread issues the copies;
    /// a whole warpgroup, so that the consumers' branch is warpgroup-uniform).
    pub fn block_threads(&self) -> i64 {
        match self.staging {
            MmaStaging::WarpSpecialized { .. } => self.teams() * self.threads() + WARPGROUP,
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
    pub(super) fn step_tile(&self) -> (i64, i64) {
        match self.shape() {
            MmaShape::Warp => (MMA_M, MMA_N),
            MmaShape::Warpgroup { n } => (WGMMA_M, n),
        }
    }

    /// Steps per warp (warpgroup) along the rows and the columns.
    pub(super) fn fragments(&self) -> (i64, i64) {
        let (rows, cols) = self.step_tile();
        (self.bm / self.warps_m / rows, self.bn / self.warps_n / cols)
    }

    /// Rows and columns of a warp's (warpgroup's) region of the block tile: its steps'.
    pub(super) fn warp_region(&self) -> (i64, i64) {
        let ((mt, nt), (rows, cols)) = (self.fragments(), self.step_tile());
        (mt * rows, nt * cols)
    }

    /// Elements per staged row of `A` (`k` and the padding).
    pub(super) fn row(&self) -> i64 {
        self.bk + ROW_PAD
    }

    /// Elements of one buffer of the staged `A` tile: padded rows, or core matrices.
    pub(super) fn a_tile_len(&self) -> i64 {
        match self.engine {
            MmaEngine::Warp => self.bm * self.row(),
            MmaEngine::Warpgroup => self.bm * self.bk,
        }
    }

    /// Elements of one buffer of the staged `B` tile.
    pub(super) fn b_tile_len(&self) -> i64 {
        match self.engine {
            MmaEngine::Warp => self.bk * self.b_row(),
            MmaEngine::Warpgroup => self.bk * self.bn,
        }
    }

    /// Elements one thread prefetches of a whole `k` tile: its runs of `A` and of `B`.
    pub(super) fn prefetched(&self) -> i64 {
        let rounds = |runs: i64| (runs + self.threads() - 1) / self.threads();
        (rounds(self.bm * self.bk / VECTOR) + rounds(self.bk * self.bn / VECTOR)) * VECTOR
    }

    /// Elements per staged row of `B` (the columns and the padding).
    pub(super) fn b_row(&self) -> i64 {
        self.bn + ROW_PAD
    }

    /// Bytes of shared memory the staged `dtype` tiles take (all buffers of both operands, and
    /// their mbarriers under TMA): at most
    /// [`MAX_SHARED_BYTES`], and what the GPU allows
    /// ([`max_shared_bytes`](tessera_ir::loops::gpu::max_shared_bytes)).
    pub fn shared_bytes(&self, dtype: DType) -> usize {
        let elements =
            self.staging.buffers() * (self.a_tile_len() + self.b_tile_len()) + self.epilogue_len();
        // TMA's mbarriers beside the tiles.
        let barriers = self.mbarriers().max(0) as usize * MBARRIER_DTYPE.size();
        elements.max(0) as usize * dtype.size() + barriers
    }

    /// Whether the consumers store by TMA ([`MmaEpilogue::by_tma`]).
    pub(super) fn stores_by_tma(&self) -> bool {
        self.epilogue.by_tma() && matches!(self.staging, MmaStaging::WarpSpecialized { .. })
    }

    /// Teams of consumer warps (warpgroups), each computing whole output tiles: a
    /// warp-specialised pipeline's ([`Consumers::teams`]), else one.
    fn teams(&self) -> i64 {
        match self.staging {
            MmaStaging::WarpSpecialized { consumers, .. } => consumers.teams(),
            _ => 1,
        }
    }

    /// Consumer warpgroups of a block: each team's.
    pub(super) fn consumer_warpgroups(&self) -> i64 {
        self.teams() * self.warps_m * self.warps_n
    }

    /// Elements of the shared tile a TMA epilogue writes: per consumer warpgroup its
    /// [`GpuMmaTiling::epilogue_atoms`] of 64 columns of its rows.
    pub(super) fn epilogue_len(&self) -> i64 {
        let rows = self.warp_region().0;
        self.consumer_warpgroups() * self.epilogue_atoms().0 * rows * SWIZZLE_ROW
    }

    /// A TMA epilogue's buffers per consumer warpgroup and the atoms (64 columns of its
    /// rows) it writes between two synchronisations: its whole tile at once
    /// ([`MmaEpilogue::TensorStore`]), or two sub-tiles one at a time
    /// ([`MmaEpilogue::TensorStoreSubTiles`]; one where the warpgroup's tile is one atom
    /// wide). None without one.
    pub(super) fn epilogue_atoms(&self) -> (i64, i64) {
        let atoms = self.warp_region().1 / SWIZZLE_ROW;
        match (self.stores_by_tma(), self.epilogue) {
            (false, _) | (_, MmaEpilogue::Direct) => (0, 0),
            (true, MmaEpilogue::TensorStore) => (atoms, atoms),
            (true, MmaEpilogue::TensorStoreSubTiles) => (atoms.min(2), 1),
        }
    }

    /// The block's mbarriers: the pipeline's ([`MmaStaging::mbarriers`]) and, for a TMA
    /// epilogue, two per consumer warpgroup (its tile written; its last store read).
    pub fn mbarriers(&self) -> i64 {
        let epilogue = match self.stores_by_tma() {
            true => 2 * self.consumer_warpgroups(),
            false => 0,
        };
        self.staging.mbarriers() + epilogue
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
        if !(1..=MAX_GROUP_ROWS).contains(&t.group_rows) {
            return bad(format!(
                "{} rows of tiles per group (1 to {MAX_GROUP_ROWS})",
                t.group_rows
            ));
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
        | MmaStaging::WarpSpecialized { stages, .. } = t.staging
            && !(2..=MAX_STAGES).contains(&stages)
        {
            return bad(format!("{stages} pipeline stages (2 to {MAX_STAGES})"));
        }
        if let MmaStaging::WarpSpecialized {
            persistent_blocks, ..
        } = t.staging
            && !(0..=MAX_PERSISTENT_BLOCKS).contains(&persistent_blocks)
        {
            return bad(format!(
                "a persistent grid of {persistent_blocks} blocks (0: one block per tile, \
                 at most {MAX_PERSISTENT_BLOCKS})"
            ));
        }
        if let MmaStaging::WarpSpecialized {
            persistent_blocks: 0,
            consumers: Consumers::PingPong,
            ..
        } = t.staging
        {
            return bad(
                "ping-pong consumers take turns over the rounds of a persistent grid: \
                 persistent_blocks must be positive"
                    .into(),
            );
        }
        if t.epilogue.by_tma() && !t.stores_by_tma() {
            return bad("a TMA epilogue needs a warp-specialised pipeline".into());
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
