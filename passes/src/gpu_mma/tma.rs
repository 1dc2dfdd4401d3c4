//! The tensor-core schedule staged by the tensor memory accelerator
//! ([`MmaStaging::Tma`](super::MmaStaging::Tma)): per `k` tile, one thread announces the
//! tile's bytes on the mbarrier of its buffer and issues one tensor copy per 64-column atom
//! of each operand (`A`: 64 of `k` × the block's rows, `B`: 64 columns × the tile's `k`),
//! 128-byte swizzled — the layout the swizzled warpgroup steps read — and zero-filled
//! beyond the matrix by the copy itself; every thread waits for the mbarrier's phase before
//! the step that multiplies the tile. The pipeline's shape is the async-copy one
//! ([`Gen::copy_pipeline`]): tile `n` in buffer `n % stages`, copied `ahead` steps before
//! it is multiplied; its mbarrier is `n % stages`, in phase `n / stages`.

use super::staging::tile_buffer;
use super::{Consumers, Gen, MmaEngine, MmaLayout, thread_loop};
use crate::gpu_product::{At, and, for_, lt};
use crate::product::ProductSpec;
use tessera_ir::loops::mma::{MMA_K, SWIZZLE_ROW, WARPGROUP};
use tessera_ir::loops::regs::{RegisterChange, SetMaxNReg, claimable, entry_registers};
use tessera_ir::loops::tma::{GLOBAL_ALIGNMENT, Mbarrier, MbarrierOp, TensorCopy, TensorMap};
use tessera_ir::loops::{BufRole, CmpOp, IExpr, LoopKind, LoopProgram, Stmt, VExpr};

/// Registers per thread a warp-specialised pipeline's producer warpgroup keeps (its one
/// copying thread's addresses and loop counters; CUTLASS's figure).
const PRODUCER_REGISTERS: i64 = 40;

/// How the operands lie in their buffers, for tensor maps: `A` as `[batch][M][K]` rows along
/// `k`, `B` as `[batch][K][N]` rows along the columns (each with its own strides).
#[derive(Clone, Debug)]
pub(super) struct TmaOperands {
    a: TensorMap,
    b: TensorMap,
}

/// The affine layout of `operand` in the spec's variables: its buffer, the element at
/// index 0 of every variable, and each variable's coefficient (batch, row, column, `k`);
/// `None` when it is not a load at an affine index.
pub(super) fn affine(spec: &ProductSpec, operand: &VExpr) -> Option<(String, i64, [i64; 4])> {
    let VExpr::Load { buf, index } = operand else {
        return None;
    };
    let extents = [spec.batch, spec.m, spec.n, spec.k];
    let extent = |v: &str| {
        let at = spec.vars.iter().position(|x| x == v)?;
        Some(extents[at])
    };
    let index = &without_idle_remainders(index, &extent);
    let mut coeffs = [0; 4];
    let mut origin = index.clone();
    for (c, v) in coeffs.iter_mut().zip(&spec.vars) {
        *c = index.coeff(v)?;
        origin = origin.subst(v, &IExpr::c(0));
    }
    match origin.simplify() {
        IExpr::Const(o) => Some((buf.clone(), o, coeffs)),
        _ => None,
    }
}

/// `e` with each remainder `x % n` whose `x` stays in `0..n` replaced by `x` (a broadcast
/// operand's batch index, `b % batch`): affine where it looked not.
fn without_idle_remainders(e: &IExpr, extent: &dyn Fn(&str) -> Option<i64>) -> IExpr {
    let e = e.map_children(&|c| without_idle_remainders(c, extent), &|v| v.clone());
    match &e {
        IExpr::Mod(x, n) => match (x.range(extent), n.as_ref()) {
            (Some((lo, hi)), IExpr::Const(n)) if lo >= 0 && hi < *n => (**x).clone(),
            _ => e,
        },
        _ => e,
    }
}

impl TmaOperands {
    /// The tensor maps of `spec`'s operands for boxes of `bm` rows (`A`) and `bk` rows
    /// (`B`), or `None` where TMA cannot read them: an operand that is not an input's
    /// elements at an affine index, contiguous along `k` (`A`) and the columns (`B`), or a
    /// start or row not 16-byte aligned.
    pub(super) fn of(
        prog: &LoopProgram,
        spec: &ProductSpec,
        bm: i64,
        bk: i64,
    ) -> Option<TmaOperands> {
        let elem = spec.dtype.size() as i64;
        // `inner` the contiguous variable, `outer` the rows', `unused` the other operand's.
        let map =
            |operand: &VExpr, [inner, outer, unused]: [usize; 3], extents: [i64; 2], rows: i64| {
                let (src, origin, c) = affine(spec, operand)?;
                let input = prog.buffer(&src)?;
                let aligned = |x: i64| x > 0 && (x * elem) % GLOBAL_ALIGNMENT == 0;
                if input.role != BufRole::Input
                    || input.dtype != spec.dtype
                    || c[inner] != 1
                    || c[unused] != 0
                    || !aligned(c[outer])
                    || origin < 0
                    || (origin * elem) % GLOBAL_ALIGNMENT != 0
                {
                    return None;
                }
                // The batch as a third dimension where the operand changes with it.
                let batched = spec.batch > 1 && c[0] != 0;
                if batched && !aligned(c[0]) {
                    return None;
                }
                let mut map = TensorMap {
                    src,
                    dtype: spec.dtype,
                    origin,
                    extents: extents.to_vec(),
                    strides: vec![c[outer]],
                    box_dims: vec![SWIZZLE_ROW, rows],
                    swizzle: true,
                };
                if batched {
                    map.extents.push(spec.batch);
                    map.strides.push(c[0]);
                    map.box_dims.push(1);
                }
                Some(map)
            };
        Some(TmaOperands {
            a: map(&spec.a, [3, 1, 2], [spec.k, spec.m], bm)?,
            b: map(&spec.b, [2, 3, 1], [spec.n, spec.k], bk)?,
        })
    }
}

/// Whether tiling `t` stages by TMA where the operands allow: swizzled warpgroup tiles.
pub(super) fn tma_tiling(t: &super::GpuMmaTiling) -> bool {
    t.engine == MmaEngine::Warpgroup && t.layout == MmaLayout::Swizzled
}

impl Gen<'_> {
    /// The box coordinates, innermost first, of a map's element at column `col`, row `row`.
    pub(super) fn coords(map: &TensorMap, col: IExpr, row: IExpr, batch: &IExpr) -> Vec<IExpr> {
        let mut coords = vec![col, row];
        if map.extents.len() == 3 {
            coords.push(batch.clone());
        }
        coords
    }

    /// What thread `th` does to stage `k` tile `n` (its first `k` at `k0`) into buffer
    /// `buffer` by TMA: thread 0 issues the tile ([`Gen::tma_issue`]).
    pub(super) fn tma_copies(&self, th: &str, at: &At, k0: &IExpr, buffer: &IExpr) -> Vec<Stmt> {
        vec![first_thread(th, self.tma_issue(at, k0, buffer))]
    }

    /// The issuing thread's statements for the `k` tile at `k0` into buffer `buffer`: it
    /// announces the tile's bytes on the buffer's mbarrier and copies each 64-column atom of
    /// both operands.
    fn tma_issue(&self, at: &At, k0: &IExpr, buffer: &IExpr) -> Vec<Stmt> {
        let (t, ops) = (self.t, self.tma.as_ref().expect("a TMA schedule"));
        let bar = self.barriers.clone();
        let mut issue = vec![self.mbarrier(
            buffer.clone(),
            MbarrierOp::ExpectTx {
                bytes: (t.bk / SWIZZLE_ROW) * ops.a.box_bytes()
                    + (t.bn / SWIZZLE_ROW) * ops.b.box_bytes(),
            },
        )];
        let copy = |map: &TensorMap, dst: &str, dst_at: IExpr, coords: Vec<IExpr>| {
            Stmt::TensorCopy(TensorCopy {
                map: map.clone(),
                dst: dst.to_string(),
                dst_at,
                coords,
                barrier: bar.clone(),
                barrier_at: buffer.clone(),
            })
        };
        for atom in 0..t.bk / SWIZZLE_ROW {
            let dst_at = buffer
                .clone()
                .times(t.a_tile_len())
                .plus(IExpr::c(atom * t.bm * SWIZZLE_ROW));
            let col = k0.clone().plus(IExpr::c(atom * SWIZZLE_ROW));
            let coords = Self::coords(&ops.a, col, at.i0.clone(), &at.b);
            issue.push(copy(&ops.a, &self.a_tile, dst_at, coords));
        }
        for atom in 0..t.bn / SWIZZLE_ROW {
            let dst_at = buffer
                .clone()
                .times(t.b_tile_len())
                .plus(IExpr::c(atom * t.bk * SWIZZLE_ROW));
            let col = at.j0.clone().plus(IExpr::c(atom * SWIZZLE_ROW));
            let coords = Self::coords(&ops.b, col, k0.clone(), &at.b);
            issue.push(copy(&ops.b, &self.b_tile, dst_at, coords));
        }
        issue
    }

    /// The kernel as a warp-specialised pipeline `stages` buffers deep
    /// ([`WarpSpecialized`](super::MmaStaging::WarpSpecialized)) on a grid of one block per
    /// output tile, or (`persistent_blocks` `P > 0`) of `P` blocks, block `b` computing
    /// tiles `b, b + P, …` in rounds. Mbarriers `0..S` are the buffers' "full" ones (one
    /// arrival a phase: the producer's), `S..2S` their "empty" ones (one arrival per
    /// warpgroup of the consuming team, by its first thread, after the warpgroup's steps on
    /// the tile are done). The block's `k` tiles are numbered on across its output tiles
    /// (`n = round · K + k tile`), and so are the phases: one pipeline per block. One thread
    /// loop of the consumers and a producer warpgroup:
    ///
    /// ```text
    /// thread(x) t < C:  setmaxnreg_inc (the registers the producer frees, see `regs`)
    ///                   per round:  sums = init
    ///                     for each k tile n:  wait full[n % S] (phase n / S)
    ///                                         mma steps on buffer n % S  (in flight until
    ///                                           the end of the next tile's)
    ///                                         (n > 0, t % 128 = 0) arrive empty[(n − 1) % S]
    ///                     C[the tile] = finish(sums)         (after the steps are done)
    /// thread(x) t ≥ C:  setmaxnreg_dec count(40)
    ///   t = C:          per round, for each k tile n:
    ///                     wait empty[n % S] (phase n / S − 1; at once for the first S)
    ///                     TMA tile n → buffer n % S
    /// ```
    ///
    /// So the producer copies a round's first tiles while the consumers still store the
    /// last round's sums. Every tile is a whole `bk` deep: a box zero-fills past `k`, so the
    /// tail multiplies zeros.
    ///
    /// Ping-pong consumers ([`Consumers::PingPong`]): two teams of `C` threads, team `w`
    /// taking rounds `w, w + 2, …`; mbarriers `2S`, `2S + 1` are the teams' "turn" ones (one
    /// arrival a round, by the team's first thread). A team's round (the other's, `w'`):
    ///
    /// ```text
    ///   (round r > 0) wait turn[w'] (phase (r − 1) / 2)   the other team's steps are done
    ///   sums = init
    ///   for each k tile n but the last:  as above, releasing the round's previous tile
    ///   the last k tile:  wait, mma steps (done before going on: retires(1)),
    ///                     release its previous tile and itself; arrive turn[w]
    ///   C[the tile] = finish(sums)                        (while the other team multiplies)
    /// ```
    ///
    /// A team waits for a tile's "full" phase only after every tile before it that shares
    /// its buffer has been waited for (by either team): the turns order the rounds, so no
    /// wait sees a phase of the same parity two phases early.
    pub(super) fn warp_specialized(
        &self,
        stages: i64,
        persistent_blocks: i64,
        consumers: Consumers,
    ) -> Stmt {
        let (s, t) = (self.spec, self.t);
        let team = t.threads();
        let teams = consumers.teams();
        let k_tiles = (s.k + t.bk - 1) / t.bk;
        let tiles = self.grid.tiles();
        let blocks = match persistent_blocks {
            0 => tiles,
            p => p.min(tiles),
        };
        let rounds = (tiles + blocks - 1) / blocks;
        let empty = |n: &IExpr| IExpr::c(stages).plus(tile_buffer(n, stages));
        let turn = |w: IExpr| IExpr::c(2 * stages).plus(w);
        let mut counts = vec![1; stages as usize];
        counts.extend(vec![team / WARPGROUP; stages as usize]);
        counts.extend(vec![1; (t.staging.mbarriers() - 2 * stages) as usize]);
        counts.extend(self.epilogue_barrier_counts());
        let setup = thread_loop("mt0", team, vec![self.init_barriers("mt0", &counts)]);

        // `steps(at, round)` once per round of `teams` taking turns, for team `w`: for the
        // tile at `at`. (No loop for one turn; a guard where the last rounds have fewer
        // tiles than blocks.)
        let per_round =
            |var: &str, (w, teams): (IExpr, i64), steps: &dyn Fn(&At, &IExpr) -> Vec<Stmt>| {
                let turns = (rounds + teams - 1) / teams;
                let j = match turns {
                    1 => IExpr::c(0),
                    _ => IExpr::var(var),
                };
                let r = match teams {
                    1 => j,
                    _ => j.times(teams).plus(w),
                };
                let tile = self.grid.block().plus(r.clone().times(blocks));
                let mut body = steps(&self.grid.origin_of(tile.clone()), &r);
                if turns * teams * blocks > tiles {
                    body = vec![Stmt::If {
                        cond: lt(tile, tiles),
                        then: body,
                    }];
                }
                match turns {
                    1 => body,
                    _ => vec![for_(var, turns, LoopKind::Serial, body)],
                }
            };
        let th = IExpr::var("mtw");
        // The consumer's team and its thread in the team.
        let (w, tt) = match consumers {
            Consumers::Cooperative => (IExpr::c(0), th.clone()),
            Consumers::PingPong => (th.clone().floordiv(team), th.clone().modulo(team)),
        };
        // Of each warpgroup, its first thread: the steps are the whole warpgroup's, done
        // (their reads of the tile too) when any of its threads goes on.
        let lead = VExpr::ICmp(CmpOp::Eq, tt.clone().modulo(WARPGROUP), IExpr::c(0));
        let release = |n: IExpr| self.mbarrier(empty(&n), MbarrierOp::Arrive);
        // Waits for tile `n`, multiplies it (`retires` as in `multiply_body`) and releases
        // tile `n − 1` where `previous` holds.
        let k_step = |n: &IExpr, retires: i64, previous: VExpr| {
            let mut each = vec![self.wait_for_tile(n, stages)];
            each.extend(self.multiply_body(&tt, t.bk / MMA_K, &tile_buffer(n, stages), retires));
            each.push(Stmt::If {
                cond: and(previous, lead.clone()),
                then: vec![release(n.clone().plus(IExpr::c(-1)))],
            });
            each
        };
        let consume = |at: &At, r: &IExpr| {
            let first = r.clone().times(k_tiles);
            let mut round = Vec::new();
            let cooperative = consumers == Consumers::Cooperative;
            if !cooperative {
                let other = IExpr::c(1).minus(w.clone());
                round.push(Stmt::If {
                    cond: VExpr::ICmp(CmpOp::Gt, r.clone(), IExpr::c(0)),
                    then: vec![self.mbarrier(
                        turn(other),
                        MbarrierOp::Wait {
                            parity: r.clone().plus(IExpr::c(-1)).floordiv(2).modulo(2),
                        },
                    )],
                });
            }
            // (The CUDA backend waits for the steps before the sums are read.)
            round.extend(self.init_sums(at, &tt));
            let n = first.clone().plus(IExpr::var("mkc"));
            let since_first = |n: &IExpr| VExpr::ICmp(CmpOp::Gt, n.clone(), IExpr::c(0));
            if cooperative {
                // Each tile's steps stay in flight through the next tile's (`retires(2)`:
                // the end of the next run of steps waits for them), so the tensor cores
                // never drain between tiles; a tile's buffer is released once its steps are
                // done: after the next run — for a round's last tile, the next round's
                // first.
                round.push(for_(
                    "mkc",
                    k_tiles,
                    LoopKind::Serial,
                    k_step(&n, 2, since_first(&n)),
                ));
            } else {
                // The round's tiles but the last as above; the last one's steps done before
                // the team goes on, so that it releases both last tiles and hands the turn
                // over before its stores (the other team's round needs its buffers).
                let within = since_first(&IExpr::var("mkc"));
                if k_tiles > 1 {
                    round.push(for_(
                        "mkc",
                        k_tiles - 1,
                        LoopKind::Serial,
                        k_step(&n, 2, within),
                    ));
                }
                let last = first.plus(IExpr::c(k_tiles - 1));
                round.extend(k_step(
                    &last,
                    1,
                    VExpr::ICmp(CmpOp::Gt, IExpr::c(k_tiles), IExpr::c(1)),
                ));
                round.push(Stmt::If {
                    cond: lead.clone(),
                    then: vec![release(last)],
                });
                round.push(Stmt::If {
                    cond: VExpr::ICmp(CmpOp::Eq, tt.clone(), IExpr::c(0)),
                    then: vec![self.mbarrier(turn(w.clone()), MbarrierOp::Arrive)],
                });
            }
            match self.epilogue {
                Some(_) => {
                    let team_round = r.clone().floordiv(teams);
                    round.extend(self.store_tile_by_tma(at, &th, &tt, &team_round))
                }
                None => round.extend(self.store_sums(at, &tt)),
            }
            round
        };
        let produce = |at: &At, r: &IExpr| {
            let n = r.clone().times(k_tiles).plus(IExpr::var("mkp"));
            let mut each = vec![self.mbarrier(
                empty(&n),
                MbarrierOp::Wait {
                    parity: n.clone().floordiv(stages).plus(IExpr::c(1)).modulo(2),
                },
            )];
            let k0 = IExpr::var("mkp").times(t.bk);
            each.extend(self.tma_issue(at, &k0, &tile_buffer(&n, stages)));
            vec![for_("mkp", k_tiles, LoopKind::Serial, each)]
        };
        // The producer warpgroup gives registers back, the consumers claim them (the sums
        // are theirs): CUTLASS's 40 / 232 at 384 threads.
        let threads = t.block_threads();
        let consumer_threads = teams * team;
        let registers = |change, count| match count == entry_registers(threads) {
            true => None,
            false => Some(Stmt::SetMaxNReg(SetMaxNReg { change, count })),
        };
        let released = PRODUCER_REGISTERS.min(entry_registers(threads));
        let claimed = claimable(threads, consumer_threads, released);
        let consumers_branch = registers(RegisterChange::Claim, claimed)
            .into_iter()
            .chain(per_round("mrc", (w.clone(), teams), &consume))
            .chain(self.finish_tma_stores(&tt))
            .collect();
        let producer_branch = registers(RegisterChange::Release, released)
            .into_iter()
            .chain([Stmt::If {
                cond: VExpr::ICmp(CmpOp::Eq, th.clone(), IExpr::c(consumer_threads)),
                then: per_round("mrp", (IExpr::c(0), 1), &produce),
            }])
            .collect();
        let work = thread_loop(
            "mtw",
            threads,
            vec![
                Stmt::If {
                    cond: VExpr::ICmp(CmpOp::Lt, th.clone(), IExpr::c(consumer_threads)),
                    then: consumers_branch,
                },
                // (The whole producer warpgroup, which reallocates its registers together;
                // its first thread copies.)
                Stmt::If {
                    cond: VExpr::ICmp(CmpOp::Ge, th.clone(), IExpr::c(consumer_threads)),
                    then: producer_branch,
                },
            ],
        );
        self.grid.blocks_loop(blocks, vec![setup, work])
    }

    /// `op` on mbarrier `at` of the pipeline's mbarrier buffer.
    pub(super) fn mbarrier(&self, at: IExpr, op: MbarrierOp) -> Stmt {
        Stmt::Mbarrier(Mbarrier {
            buf: self.barriers.clone(),
            at,
            op,
        })
    }

    /// Thread 0 of `th` initialises mbarrier `i` to wait for `counts[i]` arrivals a phase
    /// (a buffer's "full" one: one, the issuing thread's).
    pub(super) fn init_barriers(&self, th: &str, counts: &[i64]) -> Stmt {
        let init = (0..)
            .zip(counts)
            .map(|(i, &count)| self.mbarrier(IExpr::c(i), MbarrierOp::Init { count }))
            .collect();
        first_thread(th, init)
    }

    /// Every thread's wait for `k` tile `n` in buffer `n % stages`: phase `n / stages` of
    /// its mbarrier.
    pub(super) fn wait_for_tile(&self, n: &IExpr, stages: i64) -> Stmt {
        let parity = match n {
            IExpr::Const(n) => IExpr::c((n / stages) % 2),
            n => n.clone().floordiv(stages).modulo(2),
        };
        self.mbarrier(tile_buffer(n, stages), MbarrierOp::Wait { parity })
    }
}

/// `stmts` run by thread 0 of the thread loop `th` only.
fn first_thread(th: &str, stmts: Vec<Stmt>) -> Stmt {
    Stmt::If {
        cond: VExpr::ICmp(CmpOp::Eq, IExpr::var(th), IExpr::c(0)),
        then: stmts,
    }
}
