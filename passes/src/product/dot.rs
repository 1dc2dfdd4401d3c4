//! Products with a few rows whose `B` is contiguous along `k` and not along the columns — a
//! transposed weight read in place, as in a classifier's `Gemm(transB=1)` on one image or a
//! decoder's matrix-vector products: the columns' dot products vectorized along `k`.
//!
//! The flat register tile vectorizes the columns, which here would gather `B` (one element
//! per column, a row of `B` apart) on every `k` step. Instead each accumulator is a vector of
//! partial sums along `k` for one (row, column): per `k` step of `lanes`, `A`'s row and each
//! column of `B` are contiguous vector loads; at the end each column sums its vector (a
//! scalar reduction over the lanes) into `init`, and stores the epilogue of that.
//!
//! This reassociates the sum over `k` (lane partial sums), within the reduction tolerance.

use super::{Gen, Origin, ProductSpec};
use tessera_ir::loops::{BinOp, IExpr, LoopKind, Reduce, ReduceOp, Stmt, VExpr};

/// Whether the dot-product form suits `spec`: every read of `B` is contiguous along `k` and
/// not along the columns (of which a one-column product has none to be contiguous along),
/// and every read of `A` contiguous along `k` or independent of it.
pub fn suits(spec: &ProductSpec) -> bool {
    let [_, _, vj, vk] = &spec.vars;
    let mut b_ok = true;
    let mut b_reads = 0;
    spec.b.visit_loads(&mut |_, index| {
        b_reads += 1;
        b_ok &= index.coeff(vk) == Some(1) && (spec.n == 1 || index.coeff(vj) != Some(1));
    });
    let mut a_ok = true;
    spec.a.visit_loads(&mut |_, index| {
        a_ok &= matches!(index.coeff(vk), Some(0 | 1));
    });
    b_ok && b_reads > 0 && a_ok
}

/// The name of the lane-sum accumulator of a column's final reduction.
const SUM: &str = "dot";

impl Gen<'_> {
    /// One task of the dot-product form: `rows` rows and `w` columns from `o`, in register
    /// tiles of `mr` rows by `w` columns (`w <= nr / lanes`).
    pub(super) fn dot_task(&mut self, o: &Origin, w: i64, rows: i64) -> Vec<Stmt> {
        let mr = self.t.mr;
        let finish = self.finish_of(&VExpr::Acc(SUM.into(), self.spec.dtype));
        let mut out = self.row_tiles(rows, mr, &|g, first_row, mr| {
            g.dot_tile(o, first_row, mr, w, finish.as_ref())
        });
        // An epilogue that reads C elsewhere runs as a pass once the sums are stored.
        if let (Some(fin), None) = (&self.spec.finish, &finish) {
            out.push(self.store_rows(o, w, rows, fin));
        }
        out
    }

    /// Rows `first_row ..+ mr`, columns `0 ..w` of the task: zero the vector accumulators,
    /// accumulate over `k` in steps of `lanes` (and a masked tail), then reduce each and
    /// store it, or `finish` of it (the epilogue reading the sum as [`SUM`]).
    fn dot_tile(
        &mut self,
        o: &Origin,
        first_row: IExpr,
        mr: i64,
        w: i64,
        finish: Option<&VExpr>,
    ) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let lanes = t.lanes;
        let acc = self.acc.clone();
        let vector = LoopKind::Vectorize(lanes as u32);
        // Accumulator (r, c) is `lanes` elements at `(r * w + c) * lanes`.
        let slot = move |r: &IExpr, c: &IExpr, l: IExpr| {
            r.clone().times(w).plus(c.clone()).times(lanes).plus(l)
        };
        let row = |r: &IExpr| o.i0.clone().plus(first_row.clone()).plus(r.clone());
        let col = |c: &IExpr| o.j0.clone().plus(c.clone());
        let each = |g: &mut Gen, body: &dyn Fn(&mut Gen, &IExpr, &IExpr) -> Vec<Stmt>| {
            g.for_(mr, LoopKind::Unroll(mr as u32), |g, r| {
                vec![g.for_(w, LoopKind::Unroll(w as u32), |g, c| body(g, &r, &c))]
            })
        };
        let zero = each(self, &|g, r, c| {
            vec![g.for_(lanes, vector, |_, l| {
                vec![Stmt::Store {
                    buf: acc.clone(),
                    index: slot(r, c, l),
                    value: VExpr::lit(0.0, s.dtype),
                }]
            })]
        });
        let step = |g: &mut Gen, k0: IExpr, len: i64| {
            each(g, &|g, r, c| {
                vec![g.for_(len, vector, |g, l| {
                    let k = k0.clone().plus(l.clone());
                    let a = g.at(&s.a, &o.b, &row(r), &IExpr::c(0), &k);
                    let b = g.at(&s.b, &o.b, &IExpr::c(0), &col(c), &k);
                    let at = slot(r, c, l);
                    vec![Stmt::Store {
                        buf: acc.clone(),
                        index: at.clone(),
                        value: VExpr::bin(
                            BinOp::Add,
                            VExpr::load(&acc, at),
                            VExpr::bin(BinOp::Mul, a, b),
                        ),
                    }]
                })]
            })
        };
        let mut out = vec![zero];
        let steps = s.k / lanes;
        if steps > 0 {
            out.push(self.for_(steps, LoopKind::Serial, |g, ks| {
                vec![step(g, ks.times(lanes), lanes)]
            }));
        }
        if s.k % lanes != 0 {
            out.push(step(self, IExpr::c(steps * lanes), s.k % lanes));
        }
        let reduce = each(self, &|g, r, c| {
            let lane = g.var();
            let (i, j) = (row(r), col(c));
            let value = match finish {
                Some(f) => g.at(f, &o.b, &i, &j, &IExpr::c(0)),
                None => VExpr::Acc(SUM.into(), s.dtype),
            };
            vec![Stmt::Reduce(Reduce {
                acc: SUM.into(),
                dtype: s.dtype,
                op: ReduceOp::Sum,
                init: g.at(&s.init, &o.b, &i, &j, &IExpr::c(0)),
                axes: vec![(lane.clone(), lanes)],
                value: VExpr::load(&acc, slot(r, c, IExpr::var(&lane))),
                body: vec![Stmt::Store {
                    buf: s.out.clone(),
                    index: g.spec.c_at(&o.b, &i, &j),
                    value,
                }],
                vectorize: None,
            })]
        });
        out.push(reduce);
        out
    }
}
