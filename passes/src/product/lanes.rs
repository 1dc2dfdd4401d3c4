//! The tiled product with its rows along the vector lanes ([`ProductTiling::row_lanes`]).
//!
//! The column form puts a panel's pixels along the lanes. An output of 7×7 pixels fills 49
//! of 64 lanes, one of 14×14 98 of 112: a quarter or an eighth of every multiply-add is
//! wasted. Output channels come in multiples of 16, so here the register tile is `row_lanes`
//! rows (vectors of output channels) by `mr` columns (pixels): per `k` step it loads `A`'s
//! column as vectors — each one contiguous load from `A`'s copy in blocks of `lanes` rows
//! ([`ProductSpec::a_blocks`], a convolution's weights rearranged at compile time) — and
//! broadcasts `mr` values of the packed panel (the same im2col panel as the column form).
//!
//! ```text
//! per task (rows i0.., columns j0..):
//!   for each k block:
//!     pack B's panel
//!     for each tile of row_lanes rows, for each group of mr columns:
//!       acc[c][v] = first block ? init(i, j) : sums[j][i]
//!       for k in block: acc[c][v] += bp[k][c] * A[i + v, k]       (mr x row_lanes/lanes)
//!       sums[j][i] = acc
//!   C[i, j] = finish(sums[j][i])                                   (row by row, j vectorized)
//! ```
//!
//! The partial sums are kept transposed in scratch between `k` blocks, so the register tile
//! loads and stores them as whole vectors; the last pass reads them back with a stride
//! (gathers, about one per 16 outputs against `k` multiply-adds each) and stores `C` row by
//! row with the fused epilogue, contiguous as in the column form.
//!
//! The order of the sum over `k` is the plain nest's, as in the column form.

use super::{Gen, KBlock, Origin, ProductSpec, ProductTiling};
use tessera_ir::loops::{BinOp, IExpr, LoopKind, Stmt, VExpr};

/// Whether `spec`'s `A` is stored in blocks of `lanes` rows ([`ProductSpec::a_blocks`]).
pub fn suits(spec: &ProductSpec, lanes: i64) -> bool {
    spec.a_blocks.as_ref().is_some_and(|b| b.rows == lanes)
}

impl Gen<'_> {
    /// One task of the rows-along-lanes form: `rows` rows and `w` columns from `o` (at least
    /// one `k` block).
    pub(super) fn lanes_task(&mut self, o: &Origin, w: i64, rows: i64) -> Vec<Stmt> {
        let mut out = self.k_blocks(&|g, block, first, _| {
            let mut v = g.pack(o, w, block);
            v.extend(g.lanes_block(o, w, rows, block, first));
            v
        });
        out.extend(self.lanes_store(o, w, rows));
        out
    }

    /// Index of the partial sum of (row `r`, column `c`) of the task in [`Gen::sums`].
    fn sum_at(&self, r: IExpr, c: IExpr) -> IExpr {
        c.times(self.t.task_rows(self.spec)).plus(r)
    }

    /// The register tiles of one `k` block over the task's rows and columns.
    fn lanes_block(
        &mut self,
        o: &Origin,
        w: i64,
        rows: i64,
        block: &KBlock,
        first: bool,
    ) -> Vec<Stmt> {
        let t: ProductTiling = self.t;
        let tile = |g: &mut Gen, r0: IExpr, rl: i64| -> Vec<Stmt> {
            g.row_tiles(w, t.mr, &|g, c0, cw| {
                g.lanes_tile(o, block, first, (r0.clone(), rl), (c0, cw))
            })
        };
        self.row_tiles(rows, t.row_lanes, &tile)
    }

    /// One register tile: rows `r0 ..+ rl` (vectors of `lanes`) by columns `c0 ..+ cw`
    /// (unrolled). `A`'s vector of rows `i ..+ lanes` at `k` is one load from its blocks.
    fn lanes_tile(
        &mut self,
        o: &Origin,
        block: &KBlock,
        first: bool,
        (r0, rl): (IExpr, i64),
        (c0, cw): (IExpr, i64),
    ) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let (acc, sums, panel) = (self.acc.clone(), self.sums.clone(), self.panel.clone());
        let blocks = s
            .a_blocks
            .clone()
            .expect("validated: rows along the lanes read A's blocks");
        // The first block of rows of this tile (rows of a task and of a tile are whole blocks).
        let first_block = o.i0.clone().plus(r0.clone()).floordiv(blocks.rows);
        let lanes = t.lanes;
        // Over the tile: `body(at, row, col, vector)`: the accumulator's element, the task's
        // row and column, and the vector of rows within the tile.
        type Body<'b> = &'b dyn Fn(&mut Gen, &IExpr, &IExpr, &IExpr, &IExpr, &IExpr) -> Stmt;
        let over = |g: &mut Gen, body: Body| {
            g.for_(cw, LoopKind::Unroll(cw as u32), |g, c| {
                vec![g.for_(
                    rl / lanes,
                    LoopKind::Unroll((rl / lanes) as u32),
                    |g, vv| {
                        vec![g.for_(lanes, LoopKind::Vectorize(lanes as u32), |g, l| {
                            let rr = vv.clone().times(lanes).plus(l.clone());
                            let at = c.clone().times(rl).plus(rr.clone());
                            let row = r0.clone().plus(rr);
                            let col = c0.clone().plus(c.clone());
                            vec![body(g, &at, &row, &col, &vv, &l)]
                        })]
                    },
                )]
            })
        };
        let load = over(self, &|g, at, r, col, _, _| Stmt::Store {
            buf: acc.clone(),
            index: at.clone(),
            value: match first {
                true => {
                    let (i, j) = (o.i0.clone().plus(r.clone()), o.j0.clone().plus(col.clone()));
                    g.at(&s.init, &o.b, &i, &j, &IExpr::c(0))
                }
                false => VExpr::load(&sums, g.sum_at(r.clone(), col.clone())),
            },
        });
        let k0 = block.k0.clone();
        let steps = self.for_(block.kc, LoopKind::Serial, |g, kk| {
            vec![over(g, &|_, at, _, col, vv, l| {
                let a = VExpr::load(
                    &blocks.buf,
                    first_block
                        .clone()
                        .plus(vv.clone())
                        .times(s.k * blocks.rows)
                        .plus(k0.clone().plus(kk.clone()).times(blocks.rows))
                        .plus(l.clone()),
                );
                let b = VExpr::load(&panel, kk.clone().times(t.nr).plus(col.clone()));
                Stmt::Store {
                    buf: acc.clone(),
                    index: at.clone(),
                    value: VExpr::bin(
                        BinOp::Add,
                        VExpr::load(&acc, at.clone()),
                        VExpr::bin(BinOp::Mul, b, a),
                    ),
                }
            })]
        });
        let store = over(self, &|g, at, r, col, _, _| Stmt::Store {
            buf: sums.clone(),
            index: g.sum_at(r.clone(), col.clone()),
            value: VExpr::load(&acc, at.clone()),
        });
        vec![load, steps, store]
    }

    /// Stores the task's sums into `C` row by row (columns vectorized), with the epilogue —
    /// or, for an epilogue that reads `C` elsewhere, the sums and then a pass of it.
    fn lanes_store(&mut self, o: &Origin, w: i64, rows: i64) -> Vec<Stmt> {
        let s = self.spec;
        let sums = self.sums.clone();
        let lanes = LoopKind::Vectorize(self.t.lanes as u32);
        let mut in_place = None;
        let store = self.for_(rows, LoopKind::Serial, |g, r| {
            vec![g.for_(w, lanes, |g, c| {
                let sum = VExpr::load(&sums, g.sum_at(r.clone(), c.clone()));
                let (i, j) = (o.i0.clone().plus(r.clone()), o.j0.clone().plus(c));
                let value = match (&s.finish, g.finish_of(&sum)) {
                    (Some(_), Some(f)) => f,
                    (Some(f), None) => {
                        in_place = Some(f.clone());
                        sum
                    }
                    (None, _) => sum,
                };
                vec![Stmt::Store {
                    buf: s.out.clone(),
                    index: g.spec.c_at(&o.b, &i, &j),
                    value: g.at(&value, &o.b, &i, &j, &IExpr::c(0)),
                }]
            })]
        });
        let mut out = vec![store];
        if let Some(fin) = in_place {
            out.push(self.store_rows(o, w, rows, &fin));
        }
        out
    }
}
