//! The TMA epilogue of a warp-specialised tensor-core product
//! ([`MmaEpilogue::TensorStore`](super::MmaEpilogue::TensorStore) and
//! [`TensorStoreSubTiles`](super::MmaEpilogue::TensorStoreSubTiles)): each consumer
//! warpgroup writes its finished sums into its own buffers in shared memory — 64-column
//! atoms of 128-byte rows under the 128-byte swizzle, so that a warp's writes (8 rows × 16
//! bytes per instruction) hit 32 different banks —, fences them for the copy engine and
//! arrives on its "written" mbarrier; once that phase completes its first thread stores
//! them by TMA, one box per atom, and the warpgroup goes on while the copy engine reads.
//!
//! A warpgroup has `buffers` atoms of shared memory and writes `batch` atoms between two
//! synchronisations (`GpuMmaTiling::epilogue_atoms`): its whole tile at once
//! (`buffers = batch =` its atoms: one batch a round), or sub-tiles (`buffers = 2`,
//! `batch = 1`: the warpgroup writes one atom while the other's store reads). Before a
//! batch overwrites buffers an earlier batch wrote, the first thread waits until at most
//! `buffers − batch` stores still read (`bulk_wait_read`; those of the batches since) and
//! arrives on the warpgroup's "read" mbarrier, which every thread waits for. Per consumer
//! warpgroup `g` (in the block), after the pipeline's mbarriers: `written[g]` (128 arrivals
//! a phase) and `read[g]` (one); the warpgroup's batch `u` (`u = j · batches + q` in its
//! team's round `j`) completes phase `u` of `written[g]` and phase `u − sets` of `read[g]`
//! (`sets = buffers / batch`):
//!
//! ```text
//!   (u >= sets) t % 128 = 0: bulk_wait_read pending(buffers − batch); arrive read[g]
//!               wait read[g] (phase u − sets)
//!   buffer set u % sets, swizzled = finish(the batch's sums); fence_proxy_async; arrive written[g]
//!   wait written[g] (phase u)
//!   t % 128 = 0: tensor_store per atom of the batch
//! ```
//!
//! and after the last round the first thread waits for its stores' reads (the block's shared
//! memory ends with it).

use super::{Gen, GpuMmaTiling};
use crate::gpu_product::At;
use crate::product::ProductSpec;
use tessera_ir::loops::mma::{SWIZZLE_ROW, WARPGROUP};
use tessera_ir::loops::tma::{AsyncProxy, GLOBAL_ALIGNMENT, MbarrierOp, TensorMap, TensorStore};
use tessera_ir::loops::{BufRole, CmpOp, IExpr, LoopProgram, Stmt, VExpr};

/// Where a TMA epilogue stores: the output as a tensor map (boxes of 64 columns × a
/// warpgroup's rows) and the shared tile it stores from.
#[derive(Clone, Debug)]
pub(super) struct EpilogueStore {
    map: TensorMap,
    pub(super) tile: String,
}

impl EpilogueStore {
    /// The epilogue of `spec` under tiling `t` through shared buffer `tile`, or `None` where
    /// TMA cannot store it (the stores then stay direct): an output that is not an output
    /// buffer of the elements' dtype at an affine, row-major index with 16-byte-aligned
    /// rows and start, or tiles that do not divide the matrix (a box would store the edge
    /// tiles' sums from beyond it, computed from elements beyond the operands).
    pub(super) fn of(
        prog: &LoopProgram,
        spec: &ProductSpec,
        t: &GpuMmaTiling,
        tile: String,
    ) -> Option<EpilogueStore> {
        if !t.stores_by_tma() || spec.m % t.bm != 0 || spec.n % t.bn != 0 {
            return None;
        }
        let output = VExpr::load(&spec.out, spec.c_index.clone());
        let (buf, origin, [batch, row, col, k]) = super::tma::affine(spec, &output)?;
        let elem = spec.dtype.size() as i64;
        let aligned = |x: i64| x >= 0 && (x * elem) % GLOBAL_ALIGNMENT == 0;
        let out = prog.buffer(&buf)?;
        if out.role != BufRole::Output
            || out.dtype != spec.dtype
            || col != 1
            || k != 0
            || row < spec.n
            || !aligned(row)
            || !aligned(origin)
        {
            return None;
        }
        let (rows, cols) = t.warp_region();
        let (buffers, per_sync) = t.epilogue_atoms();
        let atoms = cols / SWIZZLE_ROW;
        // Whole atoms, and batches of a round that the buffer sets take in turns.
        if cols % SWIZZLE_ROW != 0
            || atoms % per_sync != 0
            || (atoms / per_sync) % (buffers / per_sync) != 0
        {
            return None;
        }
        let mut map = TensorMap {
            src: buf,
            dtype: spec.dtype,
            origin,
            extents: vec![spec.n, spec.m],
            strides: vec![row],
            box_dims: vec![SWIZZLE_ROW, rows],
            swizzle: true,
        };
        if spec.batch > 1 {
            if !aligned(batch) || batch < 1 {
                return None;
            }
            map.extents.push(spec.batch);
            map.strides.push(batch);
            map.box_dims.push(1);
        }
        Some(EpilogueStore { map, tile })
    }
}

/// Where accumulator `slot` of consumer thread `tt` lies in its warpgroup's buffers (the
/// atom of columns `64a..64a + 64` at `atom_at(a)`): `swizzle_128(atom start + row · 64 +
/// column % 64)` written so that it is a thread base plus constants and one of 8 `xor`s
/// per thread — the swizzle's row is the lane's quad (`row % 8`), the column's 16-byte
/// chunk a constant of the slot (the lane's part of the column stays inside the chunk) —
/// instead of one long expression per element (the epilogue would spill).
fn swizzled_place(tt: &IExpr, slot: i64, t: GpuMmaTiling, atom_at: impl Fn(i64) -> IExpr) -> IExpr {
    let (_, nt) = t.fragments();
    let step_rows = t.step_tile().0;
    let per_lane = t.shape().acc_per_lane();
    let (e, mi) = (slot % per_lane, slot / per_lane / nt);
    // The warpgroup accumulator layout (`MmaShape::acc_position`): warp `w` of the group
    // holds rows `16w..16w + 16`, lane `l` rows `l / 4` and `l / 4 + 8`, columns
    // `8c + 2(l % 4) + {0, 1}`.
    let lane = tt.clone().modulo(tessera_ir::loops::mma::WARP);
    let quad = lane.clone().floordiv(4);
    let warp = tt
        .clone()
        .modulo(WARPGROUP)
        .floordiv(tessera_ir::loops::mma::WARP);
    let row = warp
        .times(16)
        .plus(quad.clone())
        .plus(IExpr::c(mi * step_rows + 8 * (e % 4 / 2)));
    let column = slot_column(slot, t);
    let chunk = IExpr::c(column % SWIZZLE_ROW / 8).xor(quad);
    atom_at(column / SWIZZLE_ROW)
        .plus(row.times(SWIZZLE_ROW))
        .plus(chunk.times(8))
        .plus(lane.modulo(4).times(2))
        .plus(IExpr::c(e % 2))
}

/// The column (in its warpgroup's tile) of the first of the 8-column group that accumulator
/// `slot` of every consumer thread lies in (`MmaShape::acc_position`).
fn slot_column(slot: i64, t: GpuMmaTiling) -> i64 {
    let (_, nt) = t.fragments();
    let per_lane = t.shape().acc_per_lane();
    slot / per_lane % nt * t.step_tile().1 + 8 * (slot % per_lane / 4)
}

/// The parity of an mbarrier's phase `j · per_round + c` (`c` may be negative where `j` is
/// positive): written without the product, for `j`'s sake.
fn phase_parity(j: &IExpr, per_round: i64, c: i64) -> IExpr {
    match per_round % 2 {
        0 => IExpr::c(c.rem_euclid(2)),
        _ => j.clone().plus(IExpr::c(c.rem_euclid(2))).modulo(2),
    }
}

impl Gen<'_> {
    /// The arrivals of the epilogue's mbarriers, in order after the pipeline's: per consumer
    /// warpgroup its "written" one (every thread) and its "read" one (the first).
    pub(super) fn epilogue_barrier_counts(&self) -> Vec<i64> {
        match self.epilogue {
            Some(_) => (0..self.t.consumer_warpgroups())
                .flat_map(|_| [WARPGROUP, 1])
                .collect(),
            None => vec![],
        }
    }

    /// The mbarrier of consumer warpgroup `group`: its "written" one, or (`read`) its "read"
    /// one.
    fn epilogue_barrier(&self, group: &IExpr, read: bool) -> IExpr {
        let first = self.t.staging.mbarriers() + read as i64;
        group.clone().times(2).plus(IExpr::c(first))
    }

    /// The round's stores of consumer thread `th` (in the block; `tt` in its team) for the
    /// tile at `at`, in its team's round `j`: through the shared tile by TMA, a batch of
    /// atoms at a time (see the module docs).
    pub(super) fn store_tile_by_tma(
        &self,
        at: &At,
        th: &IExpr,
        tt: &IExpr,
        j: &IExpr,
    ) -> Vec<Stmt> {
        let e = self.epilogue.as_ref().expect("a TMA epilogue");
        let (s, t) = (self.spec, self.t);
        let group = th.clone().floordiv(WARPGROUP);
        let lead = VExpr::ICmp(CmpOp::Eq, tt.clone().modulo(WARPGROUP), IExpr::c(0));
        let (rows, cols) = t.warp_region();
        let (buffers, batch) = t.epilogue_atoms();
        let batches = cols / SWIZZLE_ROW / batch;
        let sets = buffers / batch;
        let region = group.clone().times(buffers * rows * SWIZZLE_ROW);
        let read = self.epilogue_barrier(&group, true);
        let written = self.epilogue_barrier(&group, false);
        let fragments = self.fragments(tt);
        let (wr, wc) = self.warp_origin(tt);
        let mut out = Vec::new();
        for q in 0..batches {
            // Batch `u = j · batches + q` of the warpgroup writes buffer set `u % sets` (=
            // `q % sets`: the sets divide the batches of a round), last written by batch
            // `u − sets`, whose stores are the oldest of the `buffers` atoms' stores since.
            let first = (q % sets - q) * batch;
            let atom_at = |atom: i64| {
                region
                    .clone()
                    .plus(IExpr::c((first + atom) * rows * SWIZZLE_ROW))
            };
            let free = vec![
                Stmt::If {
                    cond: lead.clone(),
                    then: vec![
                        Stmt::AsyncProxy(AsyncProxy::WaitRead {
                            pending: buffers - batch,
                        }),
                        self.mbarrier(read.clone(), MbarrierOp::Arrive),
                    ],
                },
                self.mbarrier(
                    read.clone(),
                    MbarrierOp::Wait {
                        parity: phase_parity(j, batches, q - sets),
                    },
                ),
            ];
            match q < sets {
                // The round's first batches reuse the last round's buffers: none before it.
                true => out.push(Stmt::If {
                    cond: VExpr::ICmp(CmpOp::Gt, j.clone(), IExpr::c(0)),
                    then: free,
                }),
                false => out.extend(free),
            }
            let atoms = q * batch..(q + 1) * batch;
            for f in fragments
                .iter()
                .filter(|f| atoms.contains(&(slot_column(f.slot, t) / SWIZZLE_ROW)))
            {
                let (i, jj) = (
                    at.i0.clone().plus(f.row.clone()),
                    at.j0.clone().plus(f.col.clone()),
                );
                let sum = super::convert(
                    VExpr::load(&self.acc, IExpr::c(f.slot)),
                    tessera_ir::DType::F32,
                    s.dtype,
                );
                let Stmt::Store { value, .. } = s.store_finished(&at.b, &i, &jj, sum) else {
                    unreachable!("store_finished is a store");
                };
                out.push(Stmt::Store {
                    buf: e.tile.clone(),
                    index: swizzled_place(tt, f.slot, t, atom_at),
                    value,
                });
            }
            out.push(Stmt::AsyncProxy(AsyncProxy::Fence));
            out.push(self.mbarrier(written.clone(), MbarrierOp::Arrive));
            // The whole warpgroup waits (as CUTLASS's epilogue synchronises all its threads),
            // so that the first thread's issue is a predicated block, not a branch its warp
            // would leave it spinning in before the next `wgmma`s.
            out.push(self.mbarrier(
                written.clone(),
                MbarrierOp::Wait {
                    parity: phase_parity(j, batches, q),
                },
            ));
            let issue = atoms
                .map(|atom| {
                    let col = at
                        .j0
                        .clone()
                        .plus(wc.clone())
                        .plus(IExpr::c(atom * SWIZZLE_ROW));
                    let row = at.i0.clone().plus(wr.clone());
                    Stmt::TensorStore(TensorStore {
                        map: e.map.clone(),
                        src: e.tile.clone(),
                        src_at: atom_at(atom),
                        coords: Self::coords(&e.map, col, row, &at.b),
                    })
                })
                .collect();
            out.push(Stmt::If {
                cond: lead.clone(),
                then: issue,
            });
        }
        out
    }

    /// After the last round: the first thread of each consumer warpgroup waits for its last
    /// stores' reads.
    pub(super) fn finish_tma_stores(&self, tt: &IExpr) -> Vec<Stmt> {
        match self.epilogue {
            Some(_) => vec![Stmt::If {
                cond: VExpr::ICmp(CmpOp::Eq, tt.clone().modulo(WARPGROUP), IExpr::c(0)),
                then: vec![Stmt::AsyncProxy(AsyncProxy::WaitRead { pending: 0 })],
            }],
            None => vec![],
        }
    }
}
