//! The TMA epilogue of a warp-specialised tensor-core product
//! ([`MmaEpilogue::TensorStore`](super::MmaEpilogue::TensorStore)): each consumer warpgroup
//! writes its finished sums into its own region of a shared tile — 64-column atoms of
//! 128-byte rows under the 128-byte swizzle, so that a warp's writes (8 rows × 16 bytes per
//! instruction) hit 32 different banks — fences them for the copy engine and arrives on its
//! "written" mbarrier; once that phase completes its first thread stores the region by TMA,
//! one box per atom, and the warpgroup goes on with the next tile while the copy engine
//! reads.
//!
//! Before a warpgroup writes its region again (its next round), the first thread waits for
//! its last stores' reads (`bulk_wait_read pending(0)`) and arrives on the warpgroup's "read"
//! mbarrier, which every thread of the warpgroup waits for: so the stores' reads overlap a
//! whole round of multiplying. Per consumer warpgroup `g` (in the block), after the
//! pipeline's mbarriers: `written[g]` (128 arrivals a phase) and `read[g]` (one), both in
//! phase `j` in the warpgroup's team's round `j`:
//!
//! ```text
//!   (j > 0)  t % 128 = 0: bulk_wait_read pending(0); arrive read[g]
//!            wait read[g] (phase j − 1)
//!   tile[g's region, swizzled] = finish(sums);  fence_proxy_async;  arrive written[g]
//!   wait written[g] (phase j)
//!   t % 128 = 0: tensor_store per 64 columns
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
        let (mt, _) = t.fragments();
        let rows = mt * t.step_tile().0;
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

/// Where accumulator `slot` of consumer thread `tt` lies in its warpgroup's region of the
/// shared tile (atoms at `atom_at(atom)`): `swizzle_128(atom start + row · 64 + column % 64)`
/// written so that it is a thread base plus constants and one of 8 `xor`s per thread — the
/// swizzle's row is the lane's quad (`row % 8`), the column's 16-byte chunk a constant of
/// the slot (the lane's part of the column stays inside the chunk) — instead of one long
/// expression per element (the epilogue would spill).
fn swizzled_place(
    tt: &IExpr,
    slot: i64,
    t: GpuMmaTiling,
    atom_at: impl Fn(IExpr) -> IExpr,
) -> IExpr {
    let (_, nt) = t.fragments();
    let (step_rows, step_cols) = t.step_tile();
    let per_lane = t.shape().acc_per_lane();
    let (e, mi, ni) = (slot % per_lane, slot / per_lane / nt, slot / per_lane % nt);
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
    let column = ni * step_cols + 8 * (e / 4);
    let chunk = IExpr::c(column % SWIZZLE_ROW / 8).xor(quad);
    atom_at(IExpr::c(column / SWIZZLE_ROW))
        .plus(row.times(SWIZZLE_ROW))
        .plus(chunk.times(8))
        .plus(lane.modulo(4).times(2))
        .plus(IExpr::c(e % 2))
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
    /// tile at `at`, in its team's round `j`: through the shared tile by TMA (see the module
    /// docs).
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
        let (mt, nt) = t.fragments();
        let (step_rows, step_cols) = t.step_tile();
        let (rows, cols) = (mt * step_rows, nt * step_cols);
        let region = group.clone().times(rows * cols);
        let atom_at = |atom: IExpr| region.clone().plus(atom.times(rows * SWIZZLE_ROW));
        let mut out = vec![Stmt::If {
            cond: VExpr::ICmp(CmpOp::Gt, j.clone(), IExpr::c(0)),
            then: vec![
                Stmt::If {
                    cond: lead.clone(),
                    then: vec![
                        Stmt::AsyncProxy(AsyncProxy::WaitRead { pending: 0 }),
                        self.mbarrier(self.epilogue_barrier(&group, true), MbarrierOp::Arrive),
                    ],
                },
                self.mbarrier(
                    self.epilogue_barrier(&group, true),
                    MbarrierOp::Wait {
                        parity: j.clone().plus(IExpr::c(-1)).modulo(2),
                    },
                ),
            ],
        }];
        for f in self.fragments(tt) {
            let (i, jj) = (at.i0.clone().plus(f.row), at.j0.clone().plus(f.col));
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
        let written = self.epilogue_barrier(&group, false);
        out.push(self.mbarrier(written.clone(), MbarrierOp::Arrive));
        // The whole warpgroup waits (as CUTLASS's epilogue synchronises all its threads), so
        // that the first thread's issue is a predicated block, not a branch its warp would
        // leave it spinning in before the next `wgmma`s.
        out.push(self.mbarrier(
            written,
            MbarrierOp::Wait {
                parity: j.clone().modulo(2),
            },
        ));
        let (wr, wc) = self.warp_origin(tt);
        let mut issue = Vec::new();
        for atom in 0..cols / SWIZZLE_ROW {
            let col = at
                .j0
                .clone()
                .plus(wc.clone())
                .plus(IExpr::c(atom * SWIZZLE_ROW));
            let row = at.i0.clone().plus(wr.clone());
            issue.push(Stmt::TensorStore(TensorStore {
                map: e.map.clone(),
                src: e.tile.clone(),
                src_at: atom_at(IExpr::c(atom)),
                coords: Self::coords(&e.map, col, row, &at.b),
            }));
        }
        out.push(Stmt::If {
            cond: lead,
            then: issue,
        });
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
