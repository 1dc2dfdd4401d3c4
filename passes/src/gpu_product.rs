//! The GPU schedule of matrix products: block tiles staged through shared memory, register
//! tiles per thread.
//!
//! Built from the product's [`ProductSpec`] (as the CPU's tiled product is) and a
//! [`GpuProductTiling`], the knobs a GPU search would tune:
//!
//! ```text
//! block(x) over (batch, bm-row tile, bn-column tile):
//!   thread(x) t:  acc[tm][tn] = init                     (local: the thread's registers)
//!   for each k tile of bk:                               (uniform: every thread, a barrier
//!     thread(x) t:  As[bk][bm+1], Bs[bk][bn] = tiles       after each step)
//!     thread(x) t:  for kk: acc[r][c] += As[kk][row r] * Bs[kk][col c]
//!   (the k tail, if bk does not divide k: the same with a shorter tile)
//!   thread(x) t:  C[rows, cols] = finish(acc)             (guarded at the matrix edges)
//! ```
//!
//! Thread `t` owns rows `ty + r·(bm/tm)` and columns `tx + c·(bn/tn)` of the tile (`ty`, `tx`
//! its coordinates in a `bm/tm × bn/tn` grid): consecutive threads read consecutive `Bs`
//! elements (no bank conflicts) and store consecutive output columns (coalesced); `As` rows
//! are padded by one element so that the transposing store into it does not conflict. Each
//! staged element is read from global memory once per block instead of once per thread.
//!
//! The sum over `k` runs in ascending order from the initial value, one accumulator per output
//! element, as in the plain nest: results are bit-identical to it wherever no fused
//! multiply-add is formed. Out-of-range rows and columns of edge tiles stage zeros and are
//! never stored.

use crate::error::PassError;
use crate::product::{ProductSpec, convert, unused_name};
use std::cell::Cell;
use tessera_ir::loops::gpu::{MAX_THREADS_PER_BLOCK, launch};
use tessera_ir::loops::{
    BinOp, BufRole, Buffer, CmpOp, GpuAxis, IExpr, Loop, LoopKind, LoopProgram, MAX_LOCAL_BYTES,
    MAX_SHARED_BYTES, Stmt, VExpr,
};

/// The knobs of the GPU product schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GpuProductTiling {
    /// Rows and columns of the output tile one block computes.
    pub bm: i64,
    pub bn: i64,
    /// Length of the `k` tile staged in shared memory per step.
    pub bk: i64,
    /// Rows and columns of the register tile one thread computes.
    pub tm: i64,
    pub tn: i64,
}

impl GpuProductTiling {
    /// The knobs' domains (the search space): block tile sides, `k` tile depths, register
    /// tile sides.
    pub const TILES: [i64; 4] = [8, 16, 32, 64];
    pub const DEPTHS: [i64; 5] = [1, 3, 8, 16, 32];
    pub const PER_THREAD: [i64; 3] = [1, 2, 4];

    /// The default for `spec`: per side, a tile of the side's extent rounded up to a power of
    /// two, between 8 and 64, with up to 16 threads along it (4 rows or columns each at 64);
    /// 16 deep. A big product gets 64×64 tiles of 4×4 per thread: 256 threads, 8.3 KB of
    /// shared memory in f32; a thin one smaller tiles rather than idle threads.
    pub fn default_for(spec: &ProductSpec) -> GpuProductTiling {
        let side = |extent: i64| {
            let tile = (extent.max(1) as u64).next_power_of_two().clamp(8, 64) as i64;
            (tile, (tile / 16).max(1))
        };
        let ((bm, tm), (bn, tn)) = (side(spec.m), side(spec.n));
        GpuProductTiling {
            bm,
            bn,
            bk: 16,
            tm,
            tn,
        }
    }

    /// A random tiling from the knobs' domains that `validate` accepts for `spec` (the search
    /// space as data, for fuzzing and search).
    pub fn sample(spec: &ProductSpec, rng: &mut tessera_ir::Rng) -> GpuProductTiling {
        // Most draws are valid (only too few threads are not): this ends quickly.
        sample_valid(
            rng,
            |pick| GpuProductTiling {
                bm: pick(&Self::TILES),
                bn: pick(&Self::TILES),
                bk: pick(&Self::DEPTHS),
                tm: pick(&Self::PER_THREAD),
                tn: pick(&Self::PER_THREAD),
            },
            |t| t.validate(spec).is_ok(),
        )
    }

    pub fn threads(&self) -> i64 {
        (self.bm / self.tm.max(1)) * (self.bn / self.tn.max(1))
    }

    /// Checks the knobs against each other and the dtype's sizes.
    pub fn validate(&self, spec: &ProductSpec) -> Result<(), PassError> {
        let bad = |m: String| Err(PassError::Schedule(format!("GPU product tiling: {m}")));
        let t = self;
        if [t.bm, t.bn, t.bk, t.tm, t.tn].iter().any(|&k| k < 1) {
            return bad(format!("non-positive knob in {t:?}"));
        }
        if t.bm % t.tm != 0 || t.bn % t.tn != 0 {
            return bad(format!(
                "register tile {}x{} does not divide block tile {}x{}",
                t.tm, t.tn, t.bm, t.bn
            ));
        }
        let threads = t.threads();
        if threads % 32 != 0 || threads as u64 > MAX_THREADS_PER_BLOCK {
            return bad(format!(
                "{threads} threads per block (a multiple of 32, at most {MAX_THREADS_PER_BLOCK})"
            ));
        }
        let size = spec.dtype.size() as i64;
        let shared = (t.bk * (t.bm + 1) + t.bk * t.bn) * size;
        if shared as usize > MAX_SHARED_BYTES {
            return bad(format!("{shared} bytes of shared memory"));
        }
        let local = t.tm * t.tn * spec.acc_dtype().size() as i64;
        if local as usize > MAX_LOCAL_BYTES {
            return bad(format!("{local} bytes of registers per thread"));
        }
        Ok(())
    }
}

/// Knobs drawn by `draw` — handed a picker of one value from a knob's domain — until
/// `valid` accepts them (the GPU tilings' `sample`).
pub(crate) fn sample_valid<T>(
    rng: &mut tessera_ir::Rng,
    draw: impl Fn(&mut dyn FnMut(&[i64]) -> i64) -> T,
    valid: impl Fn(&T) -> bool,
) -> T {
    let mut pick = |from: &[i64]| from[rng.below(from.len() as u64) as usize];
    loop {
        let t = draw(&mut pick);
        if valid(&t) {
            return t;
        }
    }
}

/// Whether the tiled GPU product pays off: at least 8 rows and columns, so that staged
/// elements are shared by several threads (a matrix-vector product keeps the default
/// schedule, one output per thread), and a reduction worth staging.
pub fn worth_gpu_tiling(spec: &ProductSpec) -> bool {
    spec.m >= 8 && spec.n >= 8 && spec.k >= 4
}

/// Rebuilds `prog` (whose body computes `spec`) as the tiled GPU product; the program keeps
/// its parameters and gains the shared tiles and the accumulators.
pub fn tile_gpu(
    prog: &LoopProgram,
    spec: &ProductSpec,
    t: &GpuProductTiling,
) -> Result<LoopProgram, PassError> {
    t.validate(spec)?;
    let fresh = |base: &str| fresh_buffer(prog, spec, base);
    let g = Gen {
        spec,
        t: *t,
        a_tile: fresh("as"),
        b_tile: fresh("bs"),
        acc: fresh("acc"),
        next: Cell::new(0),
    };
    let added = [
        (&g.a_tile, t.bk * (t.bm + 1), BufRole::Shared, spec.dtype),
        (&g.b_tile, t.bk * t.bn, BufRole::Shared, spec.dtype),
        (&g.acc, t.tm * t.tn, BufRole::Local, spec.acc_dtype()),
    ];
    rebuild(prog, &added, g.program(), "tile-gpu-product")
}

/// A fresh buffer name for `spec`'s product: `<out>_<base>`, unused in `prog`.
pub(crate) fn fresh_buffer(prog: &LoopProgram, spec: &ProductSpec, base: &str) -> String {
    unused_name(prog, format!("{}_{base}", spec.out), &[])
}

/// `value` (an operand element at `coord` along a side of `extent`) where `coord < extent` —
/// always, when the tile divides the extent —, else zero: edge tiles stage zeros.
pub(crate) fn edge_guard(
    spec: &ProductSpec,
    coord: IExpr,
    extent: i64,
    tile: i64,
    value: VExpr,
) -> VExpr {
    if extent % tile == 0 {
        return value;
    }
    VExpr::select(lt(coord, extent), value, VExpr::lit(0.0, spec.dtype))
}

/// `prog`'s parameters and the `added` buffers (name, length, role, dtype) around `body`,
/// verified and checked to be launchable (`pass` names the rebuild in errors).
pub(crate) fn rebuild(
    prog: &LoopProgram,
    added: &[(&String, i64, BufRole, tessera_ir::DType)],
    body: Stmt,
    pass: &str,
) -> Result<LoopProgram, PassError> {
    let mut buffers: Vec<Buffer> = prog.params().cloned().collect();
    buffers.extend(added.iter().map(|&(name, len, role, dtype)| Buffer {
        name: name.clone(),
        dtype,
        len: len as usize,
        role,
    }));
    let tiled = LoopProgram {
        name: prog.name.clone(),
        buffers,
        body: vec![body],
    };
    crate::verify_after(pass, &tiled)?;
    launch(&tiled).map_err(|e| PassError::Verify {
        pass: pass.into(),
        msg: e.to_string(),
    })?;
    Ok(tiled)
}

struct Gen<'a> {
    spec: &'a ProductSpec,
    t: GpuProductTiling,
    a_tile: String,
    b_tile: String,
    acc: String,
    /// Counter for fresh loop variables (names are unique within a program).
    next: Cell<usize>,
}

/// Where a block works: its batch index, first row and first column.
pub(crate) struct At {
    pub b: IExpr,
    pub i0: IExpr,
    pub j0: IExpr,
}

/// The grid of a tiled GPU product: one block per (batch, row tile, column tile), bound to
/// the block variable `gb` (shared with the tensor-core schedule).
pub(crate) struct GridTile {
    batch: i64,
    /// Tiles along the rows and the columns, and the tile's size.
    mb: i64,
    nb: i64,
    bm: i64,
    bn: i64,
    /// Rows of tiles per group in the order tiles are numbered (see
    /// [`GridTile::grouped`]): 1, row after row.
    group_rows: i64,
}

impl GridTile {
    const VAR: &'static str = "gb";

    pub fn new(spec: &ProductSpec, bm: i64, bn: i64) -> GridTile {
        GridTile {
            batch: spec.batch,
            mb: (spec.m + bm - 1) / bm,
            nb: (spec.n + bn - 1) / bn,
            bm,
            bn,
            group_rows: 1,
        }
    }

    /// The grid with its tiles numbered in groups of `rows` rows of tiles (the greatest
    /// common divisor with the rows of tiles: whole groups), down each group's column
    /// before the next — so that the blocks running at once share fewer rows of `A` and
    /// columns of `B` than a few whole rows of tiles would (L2 reuse; Triton's `GROUP_M`,
    /// CUTLASS's swizzle). 1: row after row.
    pub fn grouped(self, rows: i64) -> GridTile {
        GridTile {
            group_rows: gcd(rows.max(1), self.mb),
            ..self
        }
    }

    /// Output tiles: one block each, unless the grid is persistent.
    pub fn tiles(&self) -> i64 {
        self.batch * self.mb * self.nb
    }

    /// The block variable.
    pub fn block(&self) -> IExpr {
        IExpr::var(Self::VAR)
    }

    /// The running block's batch index, first row and first column.
    pub fn origin(&self) -> At {
        self.origin_of(self.block())
    }

    /// Tile `p`'s batch index, first row and first column (tiles numbered along the
    /// columns first, then the rows, then the batch; grouped: `G` rows of tiles down a
    /// column, then the next column, a group after another).
    pub fn origin_of(&self, p: IExpr) -> At {
        let b = if self.batch > 1 {
            p.clone().floordiv(self.mb * self.nb)
        } else {
            IExpr::c(0)
        };
        let (g, nb) = (self.group_rows, self.nb);
        let (row, col) = match g {
            1 => (p.clone().floordiv(nb).modulo(self.mb), p.modulo(nb)),
            // Group `q / (G · nb)` of the batch's tile `q`; the batch's tiles are a
            // multiple of `G · nb` (`G` divides the rows of tiles).
            _ => (
                p.clone()
                    .floordiv(g * nb)
                    .modulo(self.mb / g)
                    .times(g)
                    .plus(p.clone().modulo(g)),
                p.floordiv(g).modulo(nb),
            ),
        };
        At {
            b,
            i0: row.times(self.bm),
            j0: col.times(self.bn),
        }
    }

    /// The block loop around `body`: one block per tile.
    pub fn block_loop(&self, body: Vec<Stmt>) -> Stmt {
        self.blocks_loop(self.tiles(), body)
    }

    /// The block loop of a grid of `blocks` blocks around `body`.
    pub fn blocks_loop(&self, blocks: i64, body: Vec<Stmt>) -> Stmt {
        for_(Self::VAR, blocks, LoopKind::Block(GpuAxis::X), body)
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    match b {
        0 => a,
        _ => gcd(b, a % b),
    }
}

/// The loop of `var` over `0..extent`, of kind `kind`, around `body`.
pub(crate) fn for_(var: &str, extent: i64, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::For(Loop {
        var: var.into(),
        extent,
        kind,
        body,
    })
}

pub(crate) fn lt(e: IExpr, bound: i64) -> VExpr {
    VExpr::ICmp(CmpOp::Lt, e, IExpr::c(bound))
}

pub(crate) fn and(a: VExpr, b: VExpr) -> VExpr {
    VExpr::bin(BinOp::And, a, b)
}

impl Gen<'_> {
    fn program(&self) -> Stmt {
        let (s, t) = (self.spec, self.t);
        let grid = GridTile::new(s, t.bm, t.bn);
        let at = grid.origin();
        let mut body = vec![self.threads(|th| {
            self.tile_stores(&at, th, |g, r, c, b, i, j| {
                // The initial value (a bias may be read): only where the element exists.
                let init = VExpr::select(
                    and(lt(i.clone(), s.m), lt(j.clone(), s.n)),
                    s.at(&s.init, b, i, j, &IExpr::c(0)),
                    VExpr::lit(0.0, s.dtype),
                );
                Some(Stmt::Store {
                    buf: g.acc.clone(),
                    index: IExpr::c(r * t.tn + c),
                    value: g.widen(init),
                })
            })
        })];
        let full = s.k / t.bk;
        if full > 0 {
            let kt = self.var("gk");
            let k0 = IExpr::var(&kt).times(t.bk);
            body.push(for_(
                &kt,
                full,
                LoopKind::Serial,
                vec![self.stage(&at, &k0, t.bk), self.multiply(t.bk)],
            ));
        }
        if s.k % t.bk != 0 {
            let k0 = IExpr::c(full * t.bk);
            body.push(self.stage(&at, &k0, s.k % t.bk));
            body.push(self.multiply(s.k % t.bk));
        }
        body.push(self.threads(|th| {
            self.tile_stores(&at, th, |g, r, c, b, i, j| {
                let sum = g.narrow(VExpr::load(&g.acc, IExpr::c(r * t.tn + c)));
                let store = s.store_finished(b, i, j, sum);
                Some(Stmt::If {
                    cond: and(lt(i.clone(), s.m), lt(j.clone(), s.n)),
                    then: vec![store],
                })
            })
        }));
        grid.block_loop(body)
    }

    /// An element-dtype value in the accumulators' dtype (see [`ProductSpec::acc_dtype`]).
    fn widen(&self, v: VExpr) -> VExpr {
        convert(v, self.spec.dtype, self.spec.acc_dtype())
    }

    /// An accumulated sum back in the elements' dtype.
    fn narrow(&self, v: VExpr) -> VExpr {
        convert(v, self.spec.acc_dtype(), self.spec.dtype)
    }

    fn var(&self, base: &str) -> String {
        self.next.set(self.next.get() + 1);
        format!("{base}{}", self.next.get())
    }

    /// One thread loop over the block's threads; `body` gets the thread's index.
    fn threads(&self, body: impl FnOnce(&IExpr) -> Vec<Stmt>) -> Stmt {
        let v = self.var("gt");
        let inner = body(&IExpr::var(&v));
        for_(&v, self.t.threads(), LoopKind::Thread(GpuAxis::X), inner)
    }

    /// The running thread's register tile, unrolled: `f(r, c, batch, row, column)` per
    /// element.
    fn tile_stores(
        &self,
        at: &At,
        th: &IExpr,
        f: impl Fn(&Self, i64, i64, &IExpr, &IExpr, &IExpr) -> Option<Stmt>,
    ) -> Vec<Stmt> {
        let t = self.t;
        let (rows, cols) = (t.bm / t.tm, t.bn / t.tn);
        let (ty, tx) = (th.clone().floordiv(cols), th.clone().modulo(cols));
        let mut out = Vec::new();
        for r in 0..t.tm {
            for c in 0..t.tn {
                let i = at.i0.clone().plus(IExpr::c(r * rows)).plus(ty.clone());
                let j = at.j0.clone().plus(IExpr::c(c * cols)).plus(tx.clone());
                out.extend(f(self, r, c, &at.b, &i, &j));
            }
        }
        out
    }

    /// Stages `A[rows, k0..k0+kc]` and `B[k0..k0+kc, cols]` in shared memory: each thread
    /// copies every `threads`-th element, consecutive threads along `k` of `A` and along the
    /// columns of `B` (the contiguous directions of row-major operands).
    fn stage(&self, at: &At, k0: &IExpr, kc: i64) -> Stmt {
        self.threads(|th| self.stage_body(at, th, k0, kc))
    }

    fn stage_body(&self, at: &At, th: &IExpr, k0: &IExpr, kc: i64) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let threads = t.threads();
        let mut body = Vec::new();
        let mut copy = |total: i64, elem: &dyn Fn(&IExpr) -> Stmt| {
            for q in 0..(total + threads - 1) / threads {
                let e = IExpr::c(q * threads).plus(th.clone());
                let store = elem(&e);
                if (q + 1) * threads <= total {
                    body.push(store);
                } else {
                    body.push(Stmt::If {
                        cond: lt(e, total),
                        then: vec![store],
                    });
                }
            }
        };
        copy(kc * t.bm, &|e| {
            let (kk, mm) = (e.clone().modulo(kc), e.clone().floordiv(kc));
            let i = at.i0.clone().plus(mm.clone());
            let k = k0.clone().plus(kk.clone());
            let a = s.at(&s.a, &at.b, &i, &IExpr::c(0), &k);
            Stmt::Store {
                buf: self.a_tile.clone(),
                index: kk.times(t.bm + 1).plus(mm),
                value: edge_guard(s, i, s.m, t.bm, a),
            }
        });
        copy(kc * t.bn, &|e| {
            let (kk, jj) = (e.clone().floordiv(t.bn), e.clone().modulo(t.bn));
            let j = at.j0.clone().plus(jj.clone());
            let k = k0.clone().plus(kk.clone());
            let b = s.at(&s.b, &at.b, &IExpr::c(0), &j, &k);
            Stmt::Store {
                buf: self.b_tile.clone(),
                index: kk.times(t.bn).plus(jj),
                value: edge_guard(s, j, s.n, t.bn, b),
            }
        });
        body
    }

    /// `acc[r][c] += As[kk][row r] * Bs[kk][col c]` for the `kc` staged steps.
    fn multiply(&self, kc: i64) -> Stmt {
        self.threads(|th| self.multiply_body(th, kc))
    }

    fn multiply_body(&self, th: &IExpr, kc: i64) -> Vec<Stmt> {
        let t = self.t;
        let (rows, cols) = (t.bm / t.tm, t.bn / t.tn);
        let (ty, tx) = (th.clone().floordiv(cols), th.clone().modulo(cols));
        let kv = self.var("gkk");
        let kk = IExpr::var(&kv);
        let mut steps = Vec::new();
        for r in 0..t.tm {
            for c in 0..t.tn {
                let a = VExpr::load(
                    &self.a_tile,
                    kk.clone()
                        .times(t.bm + 1)
                        .plus(IExpr::c(r * rows))
                        .plus(ty.clone()),
                );
                let b = VExpr::load(
                    &self.b_tile,
                    kk.clone()
                        .times(t.bn)
                        .plus(IExpr::c(c * cols))
                        .plus(tx.clone()),
                );
                let acc = IExpr::c(r * t.tn + c);
                steps.push(Stmt::Store {
                    buf: self.acc.clone(),
                    index: acc.clone(),
                    value: VExpr::bin(
                        BinOp::Add,
                        VExpr::load(&self.acc, acc),
                        VExpr::bin(BinOp::Mul, self.widen(a), self.widen(b)),
                    ),
                });
            }
        }
        // Unrolled: the register tile's shared loads and multiply-adds of several steps in
        // one straight line, for the scheduler to interleave.
        let unroll = kc.min(16) as u32;
        vec![for_(&kv, kc, LoopKind::Unroll(unroll), steps)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid of `batch × mb × nb` tiles of 16 × 8, grouped by `rows`.
    fn grid(batch: i64, mb: i64, nb: i64, rows: i64) -> GridTile {
        GridTile {
            batch,
            mb,
            nb,
            bm: 16,
            bn: 8,
            group_rows: 1,
        }
        .grouped(rows)
    }

    /// Tile `p`'s (batch, row of tiles, column of tiles).
    fn tile(g: &GridTile, p: i64) -> (i64, i64, i64) {
        let at = g.origin_of(IExpr::var("p"));
        let value = |e: &IExpr| e.value(&|_| Some(p)).unwrap();
        (value(&at.b), value(&at.i0) / 16, value(&at.j0) / 8)
    }

    #[test]
    fn grouped_tiles_are_each_numbered_once_down_each_group_column() {
        for (batch, mb, nb, rows, group) in [
            (1, 32, 32, 8, 8),
            (2, 6, 5, 4, 2),
            (3, 5, 7, 8, 1),
            (1, 4, 3, 8, 4),
            (2, 8, 1, 2, 2),
        ] {
            let g = grid(batch, mb, nb, rows);
            assert_eq!(g.group_rows, group);
            let mut seen = std::collections::HashSet::new();
            for p in 0..g.tiles() {
                let (b, r, c) = tile(&g, p);
                assert!(b < batch && r < mb && c < nb, "{p}: {:?}", (b, r, c));
                assert!(seen.insert((b, r, c)), "{p}: {:?} twice", (b, r, c));
                // Down the group's column: the next tile is one row further, or at the
                // top of the group in the next column.
                let q = p % (mb * nb);
                assert_eq!(r, q / (group * nb) * group + q % group, "{p}");
                assert_eq!(c, q / group % nb, "{p}");
            }
        }
        // The first 132 tiles of a 32 × 32 grid (the blocks of an H100 at once) span 8 rows
        // and 17 columns, not 5 rows and all 32 columns.
        let g = grid(1, 32, 32, 8);
        let first: Vec<_> = (0..132).map(|p| tile(&g, p)).collect();
        let rows = first.iter().map(|t| t.1).max().unwrap() + 1;
        let cols = first.iter().map(|t| t.2).max().unwrap() + 1;
        assert_eq!((rows, cols), (8, 17));
    }
}
