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
//! before multiplying the tile — the same pipeline, no thread copying. With three or more
//! buffers one `k` step's steps stay in flight through the next (`retires(2)`), and copies
//! run `stages − 2` steps ahead instead of `stages − 1`. Or warp-specialised
//! ([`MmaStaging::WarpSpecialized`], see `tma.rs`): a producer warpgroup's thread copies
//! each tile as soon as its buffer is released, the consumer warpgroups wait for it,
//! multiply and release — no block barrier in the `k` loop; the consumers store each output
//! tile's sums themselves, so that on a persistent grid (blocks looping over output tiles)
//! the producer copies the next tile while they do — and with ping-pong consumers
//! ([`Consumers::PingPong`]) two teams of them take the tiles in turns, one storing while
//! the other multiplies.
//!
//! The sums are f32 (the tensor core's accumulators); they start from the product's initial
//! value (zero or a bias) and go back to the element dtype when stored, as in the plain nest
//! — but the tensor core adds 16 products at a time in its own order: results agree with
//! the plain nest within the float tolerance, not to the bit.

use crate::error::PassError;
mod epilogue;
mod staging;
mod tiling;
mod tma;

pub use tiling::*;

use crate::gpu_product::{At, GridTile, and, for_, fresh_buffer, lt, rebuild};
use crate::product::{ProductSpec, convert};
use staging::copyable;
use tessera_ir::DType;
use tessera_ir::loops::mma::{CORE, MMA_K, MMA_M, Mma, MmaOperand, SWIZZLE_ROW};
use tessera_ir::loops::tma::MBARRIER_DTYPE;
use tessera_ir::loops::{BufRole, GpuAxis, IExpr, Lit, LoopKind, LoopProgram, Stmt, VExpr};

/// Elements each staged row is padded by (16 bytes of f16 / bf16).
const ROW_PAD: i64 = 8;

/// Elements a thread stages as one run (16 bytes of f16 / bf16): tiles are multiples of 8
/// along `k` (16) and the columns (8).
const VECTOR: i64 = 8;

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
        grid: GridTile::new(spec, t.bm, t.bn).grouped(t.group_rows),
        a_tile: fresh("as"),
        b_tile: fresh("bs"),
        acc: fresh("acc"),
        regs: fresh("next"),
        stages: match t.staging {
            MmaStaging::AsyncCopy { stages }
            | MmaStaging::Tma { stages }
            | MmaStaging::WarpSpecialized { stages, .. }
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
        epilogue: epilogue::EpilogueStore::of(prog, spec, t, fresh("cs")),
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
            true => t.staging.mbarriers() + g.epilogue_barrier_counts().len() as i64,
            false => buffers,
        };
        added.push((&g.barriers, barriers, BufRole::Shared, MBARRIER_DTYPE));
    }
    if let Some(e) = g.epilogue.as_ref().filter(|_| g.specialized()) {
        added.push((&e.tile, t.epilogue_len(), BufRole::Shared, spec.dtype));
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
    /// Where a warp-specialised pipeline's consumers store by TMA
    /// ([`MmaEpilogue::TensorStore`]).
    epilogue: Option<epilogue::EpilogueStore>,
}

/// The thread variable: one thread loop per phase, each binding it afresh (names are unique
/// within a program).
fn thread_loop(var: &str, threads: i64, body: Vec<Stmt>) -> Stmt {
    for_(var, threads, LoopKind::Thread(GpuAxis::X), body)
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
        if let Some(stages) = self.stages
            && let MmaStaging::WarpSpecialized {
                persistent_blocks,
                consumers,
                ..
            } = self.t.staging
            && self.specialized()
        {
            return self.warp_specialized(stages, persistent_blocks, consumers);
        }
        let threads = self.t.threads();
        let at = self.grid.origin();
        let init = self.init_sums(&at, &IExpr::var("mt0"));
        let mut body = Vec::new();
        match self.stages {
            Some(stages) => self.copy_pipeline(&at, init, stages, &mut body),
            None => {
                body.push(thread_loop("mt0", threads, init));
                self.register_pipeline(&at, &mut body);
            }
        }
        body.push(thread_loop(
            "mt5",
            threads,
            self.store_sums(&at, &IExpr::var("mt5")),
        ));
        self.grid.block_loop(body)
    }

    /// Thread `th`'s accumulators set to the product's initial value (zero, or a bias) for
    /// the output tile at `at`.
    fn init_sums(&self, at: &At, th: &IExpr) -> Vec<Stmt> {
        let s = self.spec;
        self.fragments(th)
            .into_iter()
            .map(|f| {
                let (i, j) = (at.i0.clone().plus(f.row), at.j0.clone().plus(f.col));
                let init = match &s.init {
                    // Zero (or another constant): no element to guard.
                    VExpr::Const(Lit::F(x), _) => VExpr::lit(*x, DType::F32),
                    init => convert(
                        self.edge_select(
                            self.inside(&i, &j),
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
    }

    /// Thread `th`'s sums of the output tile at `at` finished (the product's epilogue) and
    /// stored in the element dtype, those beyond the matrix's edges skipped.
    fn store_sums(&self, at: &At, th: &IExpr) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        self.fragments(th)
            .into_iter()
            .map(|f| {
                let (i, j) = (at.i0.clone().plus(f.row), at.j0.clone().plus(f.col));
                let sum = convert(
                    VExpr::load(&self.acc, IExpr::c(f.slot)),
                    DType::F32,
                    s.dtype,
                );
                let store = s.store_finished(&at.b, &i, &j, sum);
                match s.m % t.bm == 0 && s.n % t.bn == 0 {
                    true => store,
                    false => Stmt::If {
                        cond: self.inside(&i, &j),
                        then: vec![store],
                    },
                }
            })
            .collect()
    }

    /// Whether element `(i, j)` of the output lies inside the matrix.
    fn inside(&self, i: &IExpr, j: &IExpr) -> VExpr {
        and(lt(i.clone(), self.spec.m), lt(j.clone(), self.spec.n))
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
    /// every fragment of the warp (warpgroup) of thread `th` (of its team), retiring `retires` barriers
    /// later (warpgroups; 1 for warps).
    fn multiply_body(&self, th: &IExpr, steps: i64, buffer: &IExpr, retires: i64) -> Vec<Stmt> {
        let t = self.t;
        let (mt, nt) = t.fragments();
        let (rows, cols) = t.step_tile();
        let shape = t.shape();
        let (wr, wc) = self.warp_origin(th);
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
