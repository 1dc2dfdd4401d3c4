//! Convolutions as tiled products: their geometry, and column panels of whole output rows
//! packed row by row (im2col without per-element index arithmetic).

use super::{Gen, KBlock, Origin};
use tessera_ir::loops::simplify::simplify_value;
use tessera_ir::loops::{CmpOp, IExpr, LoopKind, Stmt, VExpr};

/// A convolution seen as a product, as geometry: `k = (c, ky, kx)` (channel within the
/// group, tap row, tap column, in that order), `j = (oy, ox)` (output pixel, row-major) and
/// `B(b, k, j) = x(b, c, oy·sy + ky·dy - py, ox·sx + kx·dx - px)`, zero outside the image.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeometry {
    /// Output rows and columns.
    pub oh: i64,
    pub ow: i64,
    /// Input rows and columns.
    pub h: i64,
    pub w: i64,
    /// Kernel rows and columns.
    pub kh: i64,
    pub kw: i64,
    /// Stride, dilation and leading padding, `[y, x]`.
    pub stride: [i64; 2],
    pub dilation: [i64; 2],
    pub pad: [i64; 2],
    /// The free index variables of `x`: batch (as in the product), channel within the
    /// group, input row, input column.
    pub vars: [String; 4],
    /// The input at those coordinates, read only where they lie in the image.
    pub x: VExpr,
}

/// The outputs `lo..hi` (of `out`) whose input `o·stride + offset` lies inside `0..size`,
/// for one tap at `offset` (its dilated position minus the leading pad); `hi <= lo` when none.
pub fn valid_outputs(offset: i64, stride: i64, size: usize, out: usize) -> (i64, i64) {
    let (size, out) = (size as i64, out as i64);
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + stride - 1) / stride
    };
    let last = size - 1 - offset;
    let hi = if last < 0 { 0 } else { last / stride + 1 };
    (lo.min(out), hi.min(out))
}

impl ConvGeometry {
    /// Taps per channel: the `k` extent of one channel.
    pub fn taps(&self) -> i64 {
        self.kh * self.kw
    }

    /// Whether `B` is `x` itself, read contiguously along the pixels (a 1×1 convolution
    /// with unit stride and no padding): the flat panels copy it with vector loads already.
    pub fn is_pointwise(&self) -> bool {
        self.taps() == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// The output columns `lo..hi` whose input column lies in the image for tap column
    /// `kx` (empty when `hi <= lo`).
    pub(super) fn valid_columns(&self, kx: i64) -> (i64, i64) {
        let offset = kx * self.dilation[1] - self.pad[1];
        valid_outputs(offset, self.stride[1], self.w as usize, self.ow as usize)
    }

    /// Whether some output reads an input outside the image along `axis` (0: rows, 1:
    /// columns): there is padding, or the last window overhangs the end.
    pub fn can_leave(&self, axis: usize) -> bool {
        let (out, size, kernel) = match axis {
            0 => (self.oh, self.h, self.kh),
            _ => (self.ow, self.w, self.kw),
        };
        let last = (out - 1) * self.stride[axis] + (kernel - 1) * self.dilation[axis];
        self.pad[axis] > 0 || last - self.pad[axis] > size - 1
    }

    /// `kc` rounded down to whole channels (at least one): a row panel's `k` block.
    pub fn whole_channels(&self, kc: i64) -> i64 {
        (kc / self.taps()).max(1) * self.taps()
    }

    /// The pixels of a panel of `rows` output rows, each split into `segments` (≥ 1).
    pub fn panel_pixels(&self, rows: i64, segments: i64) -> i64 {
        rows * self.ow / segments.max(1)
    }
}

/// Output rows per column panel for a convolution, 0 for flat panels. Per panel, the
/// micro-kernels cost `vectors · m · k / 2` cycles of FMAs (wasted lanes included) and stream
/// all of `A` once, about `m · k / 2` more cycles (4 bytes per element at ~8 bytes a cycle:
/// the weights of a late ResNet layer, 9 MB, do not stay in cache); so the rows minimise
/// `panels · (vectors + 1)`, with at most 7 vectors of 32 registers (3 tile rows of them fit
/// beside them), 3 of 16. Measured: ResNet-50's 3×3 convolutions 512→512 at 7×7 output took
/// 1.87 ms in 4 panels of one vector and 1.25 ms in one panel of four. A 1×1 convolution at
/// unit stride keeps flat panels (its flat packing is a contiguous copy already), and so
/// does an image too wide for one row to fit.
pub(super) fn conv_panel_rows(conv: &ConvGeometry, lanes: i64, registers: i64) -> (i64, i64) {
    let max_vectors = if registers >= 32 { 7 } else { 3 };
    if conv.is_pointwise() {
        return (0, 1);
    }
    let vectors = |pixels: i64| (pixels + lanes - 1) / lanes;
    let mut best = (i64::MAX, (0, 1));
    for rows in 1..=conv.oh {
        if vectors(rows * conv.ow) > max_vectors {
            break;
        }
        let panels = (conv.oh + rows - 1) / rows;
        let cost = panels * (vectors(rows * conv.ow) + 1);
        if cost < best.0 {
            best = (cost, (rows, 1));
        }
    }
    // A row too wide: the fewest equal segments that fit.
    if best.1.0 == 0 {
        let fits = (2..=conv.ow).find(|&s| conv.ow % s == 0 && vectors(conv.ow / s) <= max_vectors);
        if let Some(segments) = fits {
            best.1 = (1, segments);
        }
    }
    best.1
}

impl Gen<'_> {
    /// Packs a panel of whole output rows of a convolution (im2col): per channel, tap row,
    /// output row and tap column, the output columns whose input column lies in the image are
    /// one contiguous (at stride 1) vector copy of an input row, the others zeros — no
    /// per-element division, test or gather. A tap row outside the image (padding) is a
    /// uniform select.
    ///
    /// A row split into segments (an image too wide for one row to fit the register tile)
    /// packs one segment per panel; each segment's code is under a test of the panel's
    /// segment, so that its valid column ranges stay static.
    pub(super) fn pack_conv_rows(
        &mut self,
        conv: &ConvGeometry,
        o: &Origin,
        w: i64,
        block: &KBlock,
    ) -> Vec<Stmt> {
        let segments = self.t.conv_segments.max(1);
        if segments == 1 {
            return vec![self.pack_conv_segment(conv, o, w / conv.ow, 0, conv.ow, block)];
        }
        let cw = conv.ow / segments;
        (0..segments)
            .flat_map(|s| {
                let pack = self.pack_conv_segment(conv, o, 1, s * cw, cw, block);
                super::guarded(o.seg.clone(), CmpOp::Eq, s, vec![pack])
            })
            .collect()
    }

    /// Packs `rows` output rows, columns `ox0 .. ox0 + cw` of each.
    fn pack_conv_segment(
        &mut self,
        conv: &ConvGeometry,
        o: &Origin,
        rows: i64,
        ox0: i64,
        cw: i64,
        block: &KBlock,
    ) -> Stmt {
        let (t, taps) = (self.t, conv.taps());
        let lanes = LoopKind::Vectorize(t.lanes as u32);
        let panel = self.panel.clone();
        let zero = VExpr::lit(0.0, self.spec.dtype);
        let [vb, vc, vy, vx] = &conv.vars;
        self.for_(block.kc / taps, LoopKind::Serial, |g, cc| {
            vec![g.for_(conv.kh, LoopKind::Serial, |g, ky| {
                vec![g.for_(rows, LoopKind::Serial, |g, rr| {
                    let iy = o
                        .row0
                        .clone()
                        .plus(rr.clone())
                        .times(conv.stride[0])
                        .plus(ky.clone().times(conv.dilation[0]))
                        .plus(IExpr::c(-conv.pad[0]));
                    let guard_rows = conv.can_leave(0);
                    let at_y = match guard_rows {
                        true => crate::lower::clamp(iy.clone(), conv.h as usize),
                        false => iy.clone(),
                    };
                    let channel = block.c0.clone().plus(cc.clone());
                    let mut body = Vec::new();
                    for kx in 0..conv.kw {
                        let kk = cc
                            .clone()
                            .times(taps)
                            .plus(ky.clone().times(conv.kw))
                            .plus(IExpr::c(kx));
                        let row = kk.times(t.nr).plus(rr.clone().times(cw));
                        // The valid columns, relative to the segment.
                        let (lo, hi) = conv.valid_columns(kx);
                        let (lo, hi) = ((lo - ox0).clamp(0, cw), (hi - ox0).clamp(0, cw));
                        let (lo, hi) = if hi <= lo { (0, 0) } else { (lo, hi) };
                        let mut fill =
                            |g: &mut Gen, from: i64, to: i64, value: &dyn Fn(IExpr) -> VExpr| {
                                if to > from {
                                    body.push(g.for_(to - from, lanes, |_, c| {
                                        let local = c.plus(IExpr::c(from));
                                        vec![Stmt::Store {
                                            buf: panel.clone(),
                                            index: row.clone().plus(local.clone()).simplify(),
                                            value: value(local.plus(IExpr::c(ox0))),
                                        }]
                                    }));
                                }
                            };
                        fill(g, 0, lo, &|_| zero.clone());
                        fill(g, lo, hi, &|ox| {
                            let ix = ox
                                .times(conv.stride[1])
                                .plus(IExpr::c(kx * conv.dilation[1] - conv.pad[1]));
                            let x = conv
                                .x
                                .subst(vb, &o.b)
                                .subst(vc, &channel)
                                .subst(vy, &at_y)
                                .subst(vx, &ix);
                            let x = simplify_value(&x);
                            match guard_rows {
                                true => VExpr::select(
                                    crate::lower::in_range(iy.clone(), conv.h as usize),
                                    x,
                                    zero.clone(),
                                ),
                                false => x,
                            }
                        });
                        fill(g, hi.max(lo), cw, &|_| zero.clone());
                    }
                    body
                })]
            })]
        })
    }
}
