//! Sliding windows over an NCHW plane with their taps unrolled: the output loops and the
//! per-tap bounds checks shared by the direct convolution (short channel reductions) and
//! pooling.
//!
//! Every tap `(ky, kx)` of a window is known at compile time, and so is the range of outputs
//! along each axis whose read of that tap lies inside the input (the rest read padding). An
//! output coordinate is a [`Span`]: a constant or a loop over a range of outputs. A tap that
//! reads padding for every output of the span is dropped, one inside for every output is read
//! unchecked, and only the others carry a check, `select(inside, load, identity)`. `select` is
//! lazy (see `tessera_ir::loops::VExpr::Select`), so the load's address is the tap's own,
//! never clamped: vectorized, a checked tap is one masked load.
//!
//! Output rows are split ([`split_border_rows`](super::LowerConfig::split_border_rows))
//! into the border rows — written out one by one when a side has at most
//! [`MAX_FIXED_EDGE`], each with only its valid taps — and an interior where no tap row needs
//! a check. Each row is one loop over all its columns: the column checks of the few taps that
//! reach the padding become masked lanes, where a split into edge columns would leave scalar
//! code at both ends of every row.

use super::{Builder, clamp, in_range, serial_for};
use crate::product::valid_outputs;
use tessera_ir::loops::{BinOp, CmpOp, IExpr, Stmt, VExpr};
use tessera_ir::planted::{Bug, active};

/// One spatial axis of a window: input and output sizes and where each tap reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    /// Input size.
    pub size: usize,
    /// Output size.
    pub out: usize,
    pub kernel: usize,
    pub stride: i64,
    pub dilation: i64,
    /// Padding before the first input element.
    pub pad: i64,
}

impl Axis {
    /// The input coordinate tap `k` of output `o` reads.
    fn input(&self, o: &IExpr, k: i64) -> IExpr {
        o.clone()
            .times(self.stride)
            .plus(IExpr::c(k * self.dilation - self.pad))
    }

    /// The outputs `lo..hi` whose tap `k` reads inside the input.
    pub fn valid(&self, k: i64) -> (i64, i64) {
        valid_outputs(
            k * self.dilation - self.pad,
            self.stride,
            self.size,
            self.out,
        )
    }

    /// The outputs `lo..hi` where every tap reads inside the input.
    fn interior(&self) -> (i64, i64) {
        let taps = (0..self.kernel as i64).map(|k| self.valid(k));
        let (lo, hi) = taps.fold((0, self.out as i64), |(lo, hi), (l, h)| {
            (lo.max(l), hi.min(h))
        });
        (lo, hi.max(lo))
    }
}

/// A 2-D window: its rows and columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window2 {
    pub rows: Axis,
    pub cols: Axis,
}

/// A tap that reads inside the input for some output of the spans it was made for.
pub(crate) struct Tap {
    pub ky: i64,
    pub kx: i64,
    /// Input row and column it reads (possibly outside the input where `inside` is false).
    pub iy: IExpr,
    pub ix: IExpr,
    /// Whether the read lies inside the input; `None` when it does for every output.
    pub inside: Option<VExpr>,
}

impl Tap {
    /// `value` where the tap reads inside the input, `outside` elsewhere.
    pub fn guard(&self, value: VExpr, outside: VExpr) -> VExpr {
        match &self.inside {
            Some(c) => VExpr::select(c.clone(), value, outside),
            None => value,
        }
    }
}

impl Window2 {
    /// The taps that read inside the input for some output of `oy` × `ox`, each with the
    /// check it needs there.
    pub fn taps(&self, oy: &Span, ox: &Span) -> Vec<Tap> {
        // Planted bug: rows above the input count as inside (the first row read again).
        let planted = active(Bug::PoolPadBound);
        let mut taps = Vec::new();
        for ky in 0..self.rows.kernel as i64 {
            let mut valid = self.rows.valid(ky);
            let mut iy = self.rows.input(&oy.at, ky);
            if planted {
                valid.0 = 0;
                iy = clamp(iy, self.rows.size);
            }
            let Some(check_y) = oy.tap_check(valid) else {
                continue;
            };
            for kx in 0..self.cols.kernel as i64 {
                let Some(check_x) = ox.tap_check(self.cols.valid(kx)) else {
                    continue;
                };
                let ix = self.cols.input(&ox.at, kx);
                let row_ok = || match planted {
                    true => VExpr::ICmp(CmpOp::Lt, iy.clone(), IExpr::c(self.rows.size as i64)),
                    false => in_range(iy.clone(), self.rows.size),
                };
                let inside = match (check_y, check_x) {
                    (true, true) => Some(VExpr::bin(
                        BinOp::And,
                        row_ok(),
                        in_range(ix.clone(), self.cols.size),
                    )),
                    (true, false) => Some(row_ok()),
                    (false, true) => Some(in_range(ix.clone(), self.cols.size)),
                    (false, false) => None,
                };
                taps.push(Tap {
                    ky,
                    kx,
                    iy: iy.clone(),
                    ix,
                    inside,
                });
            }
        }
        taps
    }

    /// The loops over the output plane, rows then columns; `element(b, rows, ox, pass)`
    /// builds the statements of the outputs at `ox` in each of `rows`, for the column loop
    /// of each [`RowPass`] (a pass with no statements has no loop). The interior rows go
    /// `rows_per_step` at a time (split rows only; the rest one by one), so that one column
    /// loop computes several output rows and the input rows they share are loaded once.
    pub fn plane(
        &self,
        b: &mut Builder,
        rows_per_step: usize,
        element: &mut RowElement,
    ) -> Vec<Stmt> {
        let (out_h, out_w) = (self.rows.out as i64, self.cols.out as i64);
        let mut row = |b: &mut Builder, oys: &[Span]| {
            let mut loops = Vec::new();
            for pass in [RowPass::Compute, RowPass::Finish] {
                let j = b.var();
                let ox = Span::of_loop(&j, 0, out_w);
                let body = element(b, oys, &ox, pass);
                if !body.is_empty() {
                    loops.push(serial_for(&j, out_w as usize, body));
                }
            }
            loops
        };
        if !b.cfg.split_border_rows {
            let i = b.var();
            let body = row(b, &[Span::of_loop(&i, 0, out_h)]);
            return vec![serial_for(&i, out_h as usize, body)];
        }
        let (lo, hi) = self.rows.interior();
        let step = (rows_per_step.max(1) as i64).min((hi - lo).max(1));
        let steps = (hi - lo) / step;
        let mut out = Vec::new();
        for (lo, hi, border) in [(0, lo, true), (lo, hi, false), (hi, out_h, true)] {
            if border && hi - lo <= MAX_FIXED_EDGE {
                out.extend((lo..hi).flat_map(|c| row(b, &[Span::constant(c)])));
            } else if border {
                let i = b.var();
                let body = row(b, &[Span::of_loop(&i, lo, hi)]);
                out.push(serial_for(&i, (hi - lo) as usize, body));
            } else if steps > 0 {
                // Every interior row reads all its taps inside: each span covers the interior.
                let i = b.var();
                let oys: Vec<Span> = (0..step)
                    .map(|r| Span {
                        at: IExpr::var(&i).times(step).plus(IExpr::c(lo + r)),
                        lo,
                        hi,
                    })
                    .collect();
                let body = row(b, &oys);
                out.push(serial_for(&i, steps as usize, body));
                let rest = lo + steps * step;
                out.extend((rest..hi).flat_map(|c| row(b, &[Span::constant(c)])));
            }
        }
        out
    }
}

/// Builds the statements of one column loop: `(builder, rows, column, pass)`.
pub(crate) type RowElement<'a> = dyn FnMut(&mut Builder, &[Span], &Span, RowPass) -> Vec<Stmt> + 'a;

/// The column loops of one step of rows: the outputs computed, then (where a lowering needs
/// it) finished in place — an epilogue applied to rows computed together, while they are in
/// cache, so that its code does not crowd the taps' registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowPass {
    Compute,
    Finish,
}

/// Border rows written out one by one, with only their valid taps, when a side has at most
/// this many; more stay one loop whose taps are checked.
const MAX_FIXED_EDGE: i64 = 4;

/// An output coordinate of one axis and the outputs `lo..hi` it spans: a constant (one
/// output) or a loop variable plus `lo`.
pub(crate) struct Span {
    pub at: IExpr,
    lo: i64,
    hi: i64,
}

impl Span {
    fn constant(c: i64) -> Span {
        Span {
            at: IExpr::c(c),
            lo: c,
            hi: c + 1,
        }
    }

    fn of_loop(var: &str, lo: i64, hi: i64) -> Span {
        Span {
            at: IExpr::var(var).plus(IExpr::c(lo)),
            lo,
            hi,
        }
    }

    /// For a tap that reads inside the input for outputs `valid`: `None` when it reads
    /// padding for every output of the span (the tap is dropped), else whether the read
    /// needs a check (some output of the span reads padding).
    fn tap_check(&self, (valid_lo, valid_hi): (i64, i64)) -> Option<bool> {
        if valid_hi.min(self.hi) <= valid_lo.max(self.lo) {
            return None;
        }
        Some(valid_lo > self.lo || valid_hi < self.hi)
    }
}

/// `terms` combined by `op` in [`CHAINS`] interleaved chains, joined at the end; `None` for
/// no terms. A window's taps are one expression per output, and one left-deep chain of 25
/// multiply-adds (a 5×5 window) is a dependence chain long enough to stall the loop once an
/// epilogue (SiLU's exp) lengthens each iteration; a balanced tree would cut the depth
/// further but turns half of a convolution's multiply-adds into separate multiplies and
/// adds. The interpreters evaluate the same expression.
pub(crate) fn chained(terms: Vec<VExpr>, op: BinOp) -> Option<VExpr> {
    let mut chains: Vec<VExpr> = Vec::with_capacity(CHAINS);
    for (i, t) in terms.into_iter().enumerate() {
        match chains.get_mut(i % CHAINS) {
            Some(c) => *c = VExpr::bin(op, c.clone(), t),
            None => chains.push(t),
        }
    }
    let mut it = chains.into_iter();
    let first = it.next()?;
    Some(it.fold(first, |a, b| VExpr::bin(op, a, b)))
}

/// Independent chains of [`chained`].
const CHAINS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(size: usize, kernel: usize, stride: i64, pad: i64) -> Axis {
        let out = ((size as i64 + 2 * pad - kernel as i64) / stride + 1) as usize;
        Axis {
            size,
            out,
            kernel,
            stride,
            dilation: 1,
            pad,
        }
    }

    #[test]
    fn taps_are_dropped_checked_or_read_unchecked_by_span() {
        // 3 taps, pad 1, 28 wide: tap 0 reads padding at output 0, tap 2 at output 27.
        let a = axis(28, 3, 1, 1);
        assert_eq!(a.interior(), (1, 27));
        let whole = Span::of_loop("j", 0, 28);
        assert_eq!(whole.tap_check(a.valid(0)), Some(true));
        assert_eq!(whole.tap_check(a.valid(1)), Some(false));
        assert_eq!(whole.tap_check(a.valid(2)), Some(true));
        let first = Span::constant(0);
        assert_eq!(first.tap_check(a.valid(0)), None);
        assert_eq!(first.tap_check(a.valid(2)), Some(false));
        let inner = Span::of_loop("j", 1, 27);
        assert_eq!(inner.tap_check(a.valid(0)), Some(false));
    }

    #[test]
    fn ceil_mode_edges_and_strides() {
        // 3 taps, stride 2, no padding, 112 wide, ceil mode: 56 outputs, the last one's
        // third tap at 112 is outside.
        let a = Axis {
            out: 56,
            ..axis(112, 3, 2, 0)
        };
        assert_eq!(a.valid(2), (0, 55));
        assert_eq!(a.interior(), (0, 55));
        assert_eq!(Span::constant(55).tap_check(a.valid(2)), None);
    }

    #[test]
    fn chains_interleave_and_join() {
        let t = |i: i64| VExpr::i(i, tessera_ir::DType::I32);
        assert_eq!(chained(vec![], BinOp::Add), None);
        let e = chained((0..6).map(t).collect(), BinOp::Max).unwrap();
        // ((max(0, 4) max max(1, 5)) max 2) max 3
        let m = |a, b| VExpr::bin(BinOp::Max, a, b);
        let want = m(m(m(m(t(0), t(4)), m(t(1), t(5))), t(2)), t(3));
        assert_eq!(e, want);
    }
}
