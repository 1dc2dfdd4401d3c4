//! The knobs of the tiled product schedule ([`ProductTiling`]: register tile, panel, `k`
//! block, row blocks, lanes along rows or `k`, convolution row panels), their defaults and
//! validation, and the heuristics that decide whether and how a product is tiled.

use super::conv::conv_panel_rows;
use super::{ProductSpec, RowBlocks, dot, lanes};
use crate::error::PassError;
use tessera_ir::DType;
use tessera_ir::loops::{MAX_SCRATCH_BYTES, VExpr};

/// The knobs of the tiled product schedule (one point of its search space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProductTiling {
    /// Rows of the register tile (unrolled).
    pub mr: i64,
    /// Columns of the register tile and of a packed panel (vectorized).
    pub nr: i64,
    /// Length of a `k` block (the packed panel holds `kc x nr`).
    pub kc: i64,
    /// Rows per parallel task (a multiple of `mr`); fewer rows mean more tasks.
    pub row_block: i64,
    /// Vector width in elements.
    pub lanes: i64,
    /// Pack `B`'s panel into scratch; without, the register tile reads `B` in place (for
    /// products with a few rows, where packing would only copy `B` once more).
    pub pack_b: bool,
    /// Convolutions only: a column panel is this many whole output rows (`nr` must hold
    /// them), packed row by row and tap by tap with contiguous loads, padding written as
    /// zeros without per-element tests; 0 keeps panels of `nr` flat pixels, whose packing
    /// computes each pixel's row and column (division, gathers). `k` blocks then hold whole
    /// channels (`kc` a multiple of the taps).
    #[serde(default)]
    pub conv_rows: i64,
    /// With one conv row per panel: the row split into this many equal segments, one per
    /// panel (an image too wide for a row to fit the register tile); 0 or 1: whole rows.
    #[serde(default)]
    pub conv_segments: i64,
    /// Vectorize along `k` instead of the columns (no packing): each accumulator a vector of
    /// partial sums of one (row, column), summed at the end; the register tile is `mr` rows
    /// by `nr / lanes` columns, one task's panel. For a few rows times a `B` contiguous
    /// along `k` (a transposed weight read in place), where the column form would gather.
    #[serde(default)]
    pub k_lanes: bool,
    /// Put the rows along the vector lanes instead of the columns (0: off): the register
    /// tile is `row_lanes` rows (a multiple of `lanes`) by `mr` columns, each `k` step
    /// loading `A`'s column as vectors and broadcasting `mr` values of the packed panel.
    /// Needs `A` stored in blocks of `lanes` rows ([`ProductSpec::a_blocks`]: a
    /// convolution's weights rearranged at compile time) and rows in whole vectors; for
    /// outputs whose pixels fill the column vectors badly (49 pixels of a 7×7 image in 64
    /// lanes). Partial sums stay in a transposed
    /// scratch tile between `k` blocks; the last pass stores them, with the epilogue, row by
    /// row (see `lanes.rs`).
    #[serde(default)]
    pub row_lanes: i64,
}

impl ProductTiling {
    /// Checks the knobs against each other and the product; a search proposes blindly and
    /// this rejects what cannot be built.
    pub fn validate(&self, spec: &ProductSpec) -> Result<(), PassError> {
        let bad = |m: String| Err(PassError::Schedule(format!("product tiling: {m}")));
        if self.lanes < 1 || self.mr < 1 || self.nr < 1 || self.kc < 1 {
            return bad(format!("non-positive knob in {self:?}"));
        }
        if self.row_lanes > 0 {
            self.validate_row_lanes(spec)?;
        } else if self.nr % self.lanes != 0 {
            return bad(format!(
                "nr {} is not a multiple of {} lanes",
                self.nr, self.lanes
            ));
        }
        if self.row_lanes == 0 && (self.row_block < self.mr || self.row_block % self.mr != 0) {
            return bad(format!(
                "row block {} is not a multiple of mr {}",
                self.row_block, self.mr
            ));
        }
        if self.row_lanes == 0 && self.mr * (self.nr / self.lanes) > 32 {
            return bad(format!(
                "{}x{} accumulators do not fit in registers",
                self.mr,
                self.nr / self.lanes
            ));
        }
        let scratch = (self.kc * self.nr) as usize * spec.dtype.size();
        if self.pack_b && scratch > MAX_SCRATCH_BYTES {
            return bad(format!("packed panel of {scratch} bytes"));
        }
        if self.conv_rows != 0 {
            let Some(conv) = &spec.conv else {
                return bad(format!(
                    "{} conv rows for a product that is no convolution",
                    self.conv_rows
                ));
            };
            if self.conv_rows < 0 || self.conv_rows > conv.oh {
                return bad(format!("{} conv rows of {}", self.conv_rows, conv.oh));
            }
            let segments = self.conv_segments.max(1);
            if segments > 1 && (self.conv_rows != 1 || conv.ow % segments != 0) {
                return bad(format!(
                    "{segments} segments of {} conv rows of {} pixels",
                    self.conv_rows, conv.ow
                ));
            }
            if conv.panel_pixels(self.conv_rows, segments) > self.nr {
                return bad(format!(
                    "{} rows of {} pixels do not fit a panel of {}",
                    self.conv_rows, conv.ow, self.nr
                ));
            }
            if self.kc.min(spec.k) % conv.taps() != 0 {
                return bad(format!(
                    "kc {} is not a multiple of {} taps",
                    self.kc,
                    conv.taps()
                ));
            }
        }
        if self.k_lanes && (self.pack_b || self.conv_rows != 0) {
            return bad("k lanes read B in place, in flat panels".into());
        }
        Ok(())
    }

    /// The knobs of the rows-along-lanes form ([`ProductTiling::row_lanes`]).
    fn validate_row_lanes(&self, spec: &ProductSpec) -> Result<(), PassError> {
        let bad = |m: String| Err(PassError::Schedule(format!("product tiling: {m}")));
        if !lanes::suits(spec, self.lanes) {
            return bad(format!(
                "rows along the lanes need A in blocks of {} rows",
                self.lanes
            ));
        }
        if !self.pack_b || self.k_lanes {
            return bad("rows along the lanes broadcast from a packed panel".into());
        }
        if self.row_lanes % self.lanes != 0 || spec.m % self.lanes != 0 {
            return bad(format!(
                "{} rows per tile and {} rows in all are not whole vectors of {}",
                self.row_lanes, spec.m, self.lanes
            ));
        }
        if self.row_block % self.lanes != 0 && self.row_block < spec.m {
            return bad(format!(
                "row block {} is not whole vectors of {}",
                self.row_block, self.lanes
            ));
        }
        let vectors = self.row_lanes / self.lanes;
        if self.mr * vectors + vectors + 1 > 32 {
            return bad(format!(
                "{} columns by {vectors} vectors do not fit in registers",
                self.mr
            ));
        }
        let scratch = self.row_lanes_scratch(spec) as usize * spec.dtype.size();
        if scratch > MAX_SCRATCH_BYTES {
            return bad(format!(
                "{scratch} bytes of scratch: panel, register tile and transposed partial sums"
            ));
        }
        Ok(())
    }

    /// Elements of scratch the rows-along-lanes form uses: the packed panel, the register
    /// tile and the transposed partial sums.
    fn row_lanes_scratch(&self, spec: &ProductSpec) -> i64 {
        self.kc.min(spec.k) * self.nr
            + self.mr * self.row_lanes
            + self.panel_columns(spec) * self.task_rows(spec)
    }

    /// Whether this column tiling's panels fill less than 90% of their vectors' lanes while
    /// the rows would fill whole vectors (and the tile is a packed one, 32 registers wide).
    fn wastes_column_lanes(&self, spec: &ProductSpec) -> bool {
        let lanes = self.lanes;
        if !self.pack_b || self.k_lanes || lanes < 16 || spec.m % lanes != 0 {
            return false;
        }
        let cols = self.panel_columns(spec);
        let panels = (spec.n + cols - 1) / cols;
        let last = spec.n - (panels - 1) * cols;
        let used = (panels - 1) * round_up(cols, lanes) + round_up(last, lanes);
        spec.n * 10 < used * 9
    }

    /// The most rows one task holds.
    pub(super) fn task_rows(&self, spec: &ProductSpec) -> i64 {
        self.row_block.min(spec.m)
    }

    /// The columns of one column panel: `conv_rows` whole output rows, `nr / lanes` dot
    /// products, or `nr`.
    pub fn panel_columns(&self, spec: &ProductSpec) -> i64 {
        if self.k_lanes {
            return self.nr / self.lanes;
        }
        match &spec.conv {
            Some(conv) if self.conv_rows > 0 => {
                conv.panel_pixels(self.conv_rows, self.conv_segments)
            }
            _ => self.nr,
        }
    }

    /// The default for a product on a machine with `lanes`-wide vectors, split over
    /// `threads`: a 6-row tile of four vectors (24 accumulators) with 32 vector registers,
    /// two vectors with 16; `k` blocks of 512; rows split into blocks when that balances the
    /// threads' shares ([`balanced_row_block`]). A product with fewer rows than a tile (a
    /// matrix-vector product) reads `B` in place, all its rows in one tile; one with fewer
    /// columns than a vector whose operands run along `k` (`narrow_dots`) takes dot
    /// products along `k`, `NARROW_DOTS` accumulators over its rows. A convolution's
    /// panels are whole output rows (`conv_panel_rows`), as many rows of the tile as the
    /// registers hold beside them.
    pub fn default_for(spec: &ProductSpec, lanes: i64, threads: i64) -> ProductTiling {
        let wide = lanes >= 16;
        let mut nr = lanes * if wide { 4 } else { 2 };
        let narrow = narrow_dots(spec, lanes);
        let in_place = short_k_in_place(spec);
        let pack_b = packs_b(spec.m) && !narrow && !in_place;
        let mut mr = if pack_b || in_place { 6 } else { spec.m.max(1) };
        // 512: measured faster than 256 on every product tried (the panel, 128 KB, lives in
        // L2; fewer passes over C).
        let mut kc = 512;
        let registers = if wide { 32 } else { 16 };
        let (conv_rows, conv_segments) = match &spec.conv {
            Some(conv) if pack_b => conv_panel_rows(conv, lanes, registers),
            _ => (0, 1),
        };
        if let Some(conv) = spec.conv.as_ref().filter(|_| conv_rows > 0) {
            nr = round_up(conv.panel_pixels(conv_rows, conv_segments), lanes);
            let vectors = nr / lanes;
            // The tile's accumulators, a k step's panel vectors and a broadcast of `A` (on a
            // 3x3 convolution, 7 vectors: 3 rows 0.91 ms, 4 rows — 35 registers, spilling —
            // 0.99 ms).
            mr = mr.min((registers - 1 - vectors) / vectors);
            kc = conv.whole_channels(kc);
        }
        // A few rows (or columns) of dot products along k: about 24 accumulators over the
        // rows and columns.
        let k_lanes = !pack_b && spec.k >= lanes && dot::suits(spec);
        if k_lanes && narrow {
            mr = (NARROW_DOTS / spec.n).clamp(1, spec.m.max(1));
            nr = lanes * spec.n;
        } else if k_lanes {
            nr = lanes * (24 / mr).clamp(1, 8);
        }
        let mut t = ProductTiling {
            mr,
            nr,
            kc,
            row_block: round_up(spec.m.max(1), mr),
            lanes,
            pack_b,
            conv_rows,
            conv_segments,
            k_lanes,
            row_lanes: 0,
        };
        t.row_block = balanced_row_block(spec, &t, threads);
        t.along_rows(spec, threads).unwrap_or(t)
    }

    /// This column tiling turned to rows along the lanes ([`ProductTiling::row_lanes`]),
    /// where that pays: the panels fill less than 90% of their column vectors' lanes (a 7×7
    /// image's 49 pixels in 64 lanes, a 14×14 image's 98-pixel panels in 112), the rows
    /// are whole vectors and `A` has blocks of `lanes` rows. Same panels (flat ones of about
    /// 112 pixels), `k` blocks and packing; a tile of 7 columns by 3 vectors where the
    /// panel is 7 columns wide, else the widest of 8..4 columns that divides it; rows split
    /// into blocks when the panels alone do not share evenly between the threads, and so
    /// that a task's transposed partial sums stay within [`ROW_LANES_SUM_BYTES`].
    fn along_rows(&self, spec: &ProductSpec, threads: i64) -> Option<ProductTiling> {
        let lanes = self.lanes;
        if !self.wastes_column_lanes(spec) || !lanes::suits(spec, lanes) {
            return None;
        }
        let mut t = *self;
        if self.conv_rows == 0 {
            // Flat panels of at most 112 pixels, as even as they split.
            let panels = (spec.n + 111) / 112;
            t.nr = (spec.n + panels - 1) / panels;
        }
        let cols = t.panel_columns(spec);
        t.mr = [7, 8, 6, 5, 4]
            .into_iter()
            .find(|c| cols % c == 0)
            .unwrap_or(7);
        let vectors = (31 / (t.mr + 1)).min(4);
        t.row_lanes = (vectors * lanes).min(spec.m);
        let panels = (spec.n + cols - 1) / cols;
        let most_rows = (ROW_LANES_SUM_BYTES / spec.dtype.size()) as i64 / cols / lanes * lanes;
        let mut blocks = match (spec.batch * panels) % threads {
            0 => 1,
            _ => threads,
        };
        t.row_block = loop {
            let rows = round_up((spec.m + blocks - 1) / blocks, lanes);
            if rows <= most_rows || rows == lanes {
                break rows;
            }
            blocks += 1;
        };
        // Shorter k blocks (whole channels for row panels) until the scratch fits.
        let limit = (MAX_SCRATCH_BYTES / spec.dtype.size()) as i64;
        while t.row_lanes_scratch(spec) > limit && t.kc > 1 {
            let shorter = match (&spec.conv, t.conv_rows) {
                (Some(conv), rows) if rows > 0 => conv.whole_channels(t.kc / 2),
                _ => t.kc / 2,
            };
            if shorter == t.kc {
                break;
            }
            t.kc = shorter;
        }
        t.validate(spec).ok().map(|_| t)
    }
}

/// The most bytes of transposed partial sums the default rows-along-lanes tiling keeps per
/// task (rows split into blocks beyond): measured, 512→2048 1×1 at 7×7 0.68 → 0.50–0.65 ms
/// with blocks of 256 rows instead of 1024, 3×3 512→512 at 7×7 0.99–1.19 → 1.00 ms.
const ROW_LANES_SUM_BYTES: usize = 64 * 1024;

/// Whether the default tiling of `spec` (as lowered, `A` in its own layout) would put the
/// rows along the lanes were `A` in blocks of `lanes` rows: the lowering then stores a
/// convolution's weights so ([`crate::lower::LowerConfig::vector_lanes`]). Only there: the
/// column form reads rearranged weights a row tile at a time, a cache line per `k` step for
/// a few of its values (with a k-major copy, ResNet-50's 3×3 128→128 at 28×28 went from
/// 1.11 to 1.29 ms).
pub fn rows_along_lanes_pay(spec: &ProductSpec, lanes: i64) -> bool {
    let blocked = ProductSpec {
        a_blocks: Some(RowBlocks {
            buf: String::new(),
            rows: lanes,
        }),
        ..spec.clone()
    };
    worth_tiling(spec, lanes) && ProductTiling::default_for(&blocked, lanes, 1).row_lanes > 0
}

/// Packing a column panel costs about as much as this many rows of the register tile's
/// multiply-adds over it (a vector load and store per `k` step and vector of the panel).
const PACK_ROW_COST: i64 = 2;

/// Rows per task that minimise the busiest thread's work when the tasks (row blocks outer,
/// column panels inner) are split into `threads` contiguous shares, as the executor's pool
/// splits a parallel loop. Counted in tile rows × column vectors, each task also paying to
/// pack its panel: more row blocks pack every panel again, so they win only where the
/// panels alone divide unevenly (ResNet-50's 3×3 convolutions at 28×28: 7 panels over 2
/// threads; its 1×1 convolutions at 14×14: 3 full panels and a 4-pixel one).
pub fn balanced_row_block(spec: &ProductSpec, t: &ProductTiling, threads: i64) -> i64 {
    let cols = t.panel_columns(spec);
    let panels = (spec.n + cols - 1) / cols;
    let vectors = |panel: i64| {
        let w = cols.min(spec.n - panel * cols);
        match t.k_lanes {
            true => w,
            false => (w + t.lanes - 1) / t.lanes,
        }
    };
    let pack = if t.pack_b { PACK_ROW_COST } else { 0 };
    let busiest = |row_block: i64| {
        let blocks = (spec.m + row_block - 1) / row_block;
        let per_block = spec.batch * panels;
        let tasks = blocks * per_block;
        let cost = |task: i64| {
            let rows = row_block.min(spec.m - (task / per_block) * row_block);
            (rows + pack) * vectors(task % panels)
        };
        let share = tasks / threads;
        let extra = tasks % threads;
        (0..threads.min(tasks))
            .map(|c| {
                let start = c * share + c.min(extra);
                let end = start + share + i64::from(c < extra);
                (start..end).map(cost).sum::<i64>()
            })
            .max()
            .unwrap_or(0)
    };
    let whole = round_up(spec.m.max(1), t.mr);
    let mut best = (busiest(whole), whole);
    for blocks in 2..=(4 * threads).min(whole / t.mr) {
        let row_block = round_up((spec.m + blocks - 1) / blocks, t.mr);
        let work = busiest(row_block);
        if work < best.0 {
            best = (work, row_block);
        }
    }
    best.1
}

pub(super) fn round_up(x: i64, m: i64) -> i64 {
    (x + m - 1) / m * m
}

/// Whether tiling pays off for this product: a big enough product in f32 with at least a
/// vector of columns, or a narrow one that takes dot products (`narrow_dots`) — and, for a
/// convolution, enough output channels per group to pack for (`MIN_PACKED_ROWS`). A depthwise convolution (one output channel per group) would read
/// its input in place with per-lane index arithmetic; the direct lowering unrolls its taps
/// over statically valid column ranges instead (ShuffleNet's 3×3 depthwise convolutions:
/// 0.39 ms tiled, 0.024 ms direct).
pub fn worth_tiling(spec: &ProductSpec, lanes: i64) -> bool {
    spec.dtype == DType::F32
        && (big_enough(spec.batch, spec.m, spec.n, spec.k, lanes) || narrow_dots(spec, lanes))
        && (spec.conv.is_none() || spec.m >= MIN_PACKED_ROWS)
}

/// Whether `spec` has fewer columns than a vector and reads both operands along `k` — a
/// classifier written as a 1×1 convolution of a 1×1 image (DenseNet-121's 1024→1000: one
/// column, 1000 rows of weights), a matrix times a vector: then the dot-product form, rows
/// of `A` streamed along `k` (the plain nest, a scalar sum per output: 1.8 GFLOP/s).
fn narrow_dots(spec: &ProductSpec, lanes: i64) -> bool {
    narrow_enough(spec.batch, spec.m, spec.n, spec.k, lanes) && dot::suits(spec)
}

/// The size part of [`narrow_dots`]: fewer columns than a vector, `k` of at least 4 vectors,
/// and `batch·m·n·k` of at least [`MIN_TILED_WORK`].
fn narrow_enough(batch: i64, m: i64, n: i64, k: i64, lanes: i64) -> bool {
    n < lanes && k >= 4 * lanes && batch * m * n * k >= MIN_TILED_WORK
}

/// The accumulators (rows × columns) of the default dot-product tile of a narrow product.
const NARROW_DOTS: i64 = 8;

/// Whether the default schedule packs `B` of a `batch × (m×k · k×n)` product on every CPU
/// target (vectors of up to 16 lanes): tiled, with enough rows to pack for. A `B` read with
/// a stride along its rows (a transposed operand read in place) is then gathered once per
/// panel rather than once per row of `A`.
pub fn packs_b_everywhere(batch: i64, m: i64, n: i64, k: i64) -> bool {
    big_enough(batch, m, n, k, 16) && packs_b(m)
}

/// Whether the default schedule takes dot products along `k` for a `batch × (m×k · k×n)`
/// product whose `B` is contiguous along `k`, on every CPU target: tiled (at least a vector
/// of columns, or fewer with `k` of 4 vectors: [`narrow_dots`]), with too few rows of `A` to
/// pack `B` for (a matrix-vector product: one query against a key cache). A smaller product
/// keeps the plain loop nest, which reads `B` along `n`.
pub fn dots_along_k_everywhere(batch: i64, m: i64, n: i64, k: i64) -> bool {
    (big_enough(batch, m, n, k, 16) || narrow_enough(batch, m, n, k, 16)) && !packs_b(m) && k >= 16
}

/// The size part of [`worth_tiling`]: at least a vector of columns, 8 steps of `k`, and
/// `batch·m·n·k` of at least [`MIN_TILED_WORK`].
fn big_enough(batch: i64, m: i64, n: i64, k: i64, lanes: i64) -> bool {
    n >= lanes && k >= 8 && batch * m * n * k >= MIN_TILED_WORK
}

/// The fewest multiply-adds (`batch·m·n·k`) a product is tiled for: smaller products keep
/// the plain loop nest.
const MIN_TILED_WORK: i64 = 1 << 15;

/// The rows of `A` in one product of a MatMul whose left operand has shape `a` (per batch;
/// a 1-D `A` is one row).
pub fn matmul_rows(a: &[usize]) -> i64 {
    match a.len() {
        0 | 1 => 1,
        r => a[r - 2] as i64,
    }
}

/// Whether a product with enough rows to pack for reads `B` in place instead: a short
/// reduction (`k` at most [`SHORT_K`]) over a `B` whose rows are contiguous along `j`, not a
/// convolution's im2col. Each packed panel would serve only `k` steps of work per row tile,
/// and the copy is a whole pass over `B`: measured on Winograd products (16 planes of
/// `K×C · C×tiles`), C = 64 at 28×28 tiles 1.30 → 0.93 ms, C = 32 at 56×56 1.91 → 1.11 ms.
fn short_k_in_place(spec: &ProductSpec) -> bool {
    let [_, _, vj, _] = &spec.vars;
    let rows_contiguous =
        matches!(&spec.b, VExpr::Load { index, .. } if index.coeff(vj) == Some(1));
    spec.conv.is_none() && packs_b(spec.m) && spec.k <= SHORT_K && rows_contiguous
}

/// The longest reduction whose `B` is read in place ([`short_k_in_place`]).
const SHORT_K: i64 = 64;

/// Rows from which the default tiling packs `B`'s panels (fewer: `B` is read in place).
const MIN_PACKED_ROWS: i64 = 6;

/// Whether the default tiling packs `B` for a product with `m` rows of `A` (per batch):
/// with fewer rows than a register tile, `B` is read in place.
pub fn packs_b(m: i64) -> bool {
    m >= MIN_PACKED_ROWS
}
