//! The feature vector of a candidate schedule: what the cost model sees.
//!
//! One fixed-length vector of `f32` per (kernel, schedule), the same fields for every kernel
//! (fields that do not apply are 0), described field by field in [`FEATURES`]. Sizes are
//! `log2(1 + x)` so that trees split on orders of magnitude. The vector's layout is
//! versioned ([`FEATURE_VERSION`]): a model or a database record made with another version
//! is not mixed with this one's.

use tessera_ir::loops::{LoopKind, LoopProgram, Stmt};
use tessera_passes::lower::Kernel;
use tessera_passes::schedule::KernelSchedule;

/// The version of [`FEATURES`]; bump it when a field is added, removed or redefined.
pub const FEATURE_VERSION: u32 = 3;

/// Every field: name and meaning, in vector order.
pub const FEATURES: [(&str, &str); 27] = [
    (
        "is_tiled_product",
        "1 when the schedule is the tiled product schedule, else 0",
    ),
    (
        "log_flops",
        "log2(1 + multiply-adds x 2) of the product, or of stores + reduction steps otherwise",
    ),
    ("log_bytes", "log2(1 + bytes of all parameter buffers)"),
    (
        "intensity",
        "log2(1 + flops per byte of parameter buffers): arithmetic intensity",
    ),
    ("mr", "rows of the register tile (0 when not tiled)"),
    (
        "nr_vectors",
        "columns of the register tile in vectors (0 when not tiled)",
    ),
    ("log_kc", "log2(1 + k block length) (0 when not tiled)"),
    (
        "log_row_block",
        "log2(1 + rows per parallel task) (0 when not tiled)",
    ),
    ("pack_b", "1 when B's panel is packed into scratch"),
    (
        "accumulators",
        "vector registers holding the register tile, mr x nr_vectors",
    ),
    (
        "loads_per_fma",
        "vector loads per vector FMA in the micro-kernel, (mr + nr_vectors) / accumulators",
    ),
    (
        "row_tail",
        "fraction of rows in the partial last register tile",
    ),
    (
        "col_tail",
        "fraction of columns in the partial last column panel",
    ),
    ("k_tail", "fraction of k in the partial last k block"),
    (
        "log_panel_bytes",
        "log2(1 + bytes of one packed B panel, kc x nr): wants to stay in L1",
    ),
    (
        "log_a_block_bytes",
        "log2(1 + bytes of A read per task and k block, row_block x kc): wants to stay in L2",
    ),
    (
        "log_tasks",
        "log2(1 + parallel tasks): iterations of the parallel loop",
    ),
    (
        "balance",
        "tasks / (rounds x threads): how evenly the tasks fill the threads",
    ),
    (
        "vector_lanes",
        "widest vectorized loop's width in elements (0 when scalar)",
    ),
    (
        "vector_fraction",
        "fraction of stores executed inside vectorized loops",
    ),
    ("unroll", "largest unroll factor of a loop"),
    (
        "loop_depth",
        "deepest loop nesting of the scheduled program",
    ),
    (
        "log_innermost_extent",
        "log2(1 + extent of the first innermost loop)",
    ),
    (
        "log_scratch_bytes",
        "log2(1 + bytes of kernel-local scratch buffers)",
    ),
    (
        "conv_rows",
        "output rows per column panel of a convolution packed by rows (0: flat panels)",
    ),
    (
        "lane_use",
        "fraction of the register tile's vector lanes that hold outputs (columns, or rows)",
    ),
    (
        "row_vectors",
        "vectors of rows in the register tile with the rows along the lanes (0: columns)",
    ),
];

/// The features of a candidate: [`features`] for a CPU schedule,
/// [`crate::gpu_features::gpu_features`] for a GPU one.
pub fn candidate_features(
    k: &Kernel,
    schedule: &KernelSchedule,
    scheduled: &LoopProgram,
    threads: usize,
) -> Vec<f32> {
    match schedule {
        KernelSchedule::Gpu(s) => crate::gpu_features::gpu_features(k, s, scheduled),
        _ => features(k, schedule, scheduled, threads),
    }
}

/// The version of the feature layout of `schedule`'s kind (CPU or GPU).
pub fn feature_version(schedule: &KernelSchedule) -> u32 {
    match schedule {
        KernelSchedule::Gpu(_) => crate::gpu_features::GPU_FEATURE_VERSION,
        _ => FEATURE_VERSION,
    }
}

/// Kernel `k`'s work — the flops of its product (multiply-adds × 2), else its stores and
/// reduction steps — and the bytes of its parameter buffers.
pub(crate) fn work_and_bytes(k: &Kernel) -> (f64, f64) {
    let bytes: f64 = k
        .program
        .params()
        .map(|b| (b.len * b.dtype.size()) as f64)
        .sum();
    let flops = match &k.product {
        Some(p) => 2.0 * (p.batch * p.m * p.n * p.k) as f64,
        None => k.program.work() as f64,
    };
    (flops, bytes)
}

/// The length of the feature vector of `schedule`'s kind.
pub fn feature_width(schedule: &KernelSchedule) -> usize {
    match schedule {
        KernelSchedule::Gpu(_) => crate::gpu_features::GPU_FEATURES.len(),
        _ => FEATURES.len(),
    }
}

fn lg(x: f64) -> f32 {
    (1.0 + x.max(0.0)).log2() as f32
}

/// The features of `scheduled`, the program `schedule` made of kernel `k`, run on
/// `threads` threads.
pub fn features(
    k: &Kernel,
    schedule: &KernelSchedule,
    scheduled: &LoopProgram,
    threads: usize,
) -> Vec<f32> {
    let mut f = vec![0f32; FEATURES.len()];
    let (flops, bytes) = work_and_bytes(k);
    f[1] = lg(flops);
    f[2] = lg(bytes);
    f[3] = lg(flops / bytes.max(1.0));
    let tasks = scheduled.parallel_extent().max(1) as f64;
    if let (KernelSchedule::Product(t), Some(p)) = (schedule, &k.product) {
        // Vectors per tile row: of columns, or (rows along the lanes) of rows.
        let nrv = match t.row_lanes {
            0 => t.nr / t.lanes.max(1),
            rows => rows / t.lanes.max(1),
        } as f64;
        let acc = t.mr as f64 * nrv;
        let elem = p.dtype.size() as f64;
        let tail = |x: i64, m: i64| (x % m) as f32 / x.max(1) as f32;
        f[0] = 1.0;
        f[4] = t.mr as f32;
        f[5] = nrv as f32;
        f[6] = lg(t.kc as f64);
        f[7] = lg(t.row_block as f64);
        f[8] = t.pack_b as u8 as f32;
        f[9] = acc as f32;
        f[10] = ((t.mr as f64 + nrv) / acc.max(1.0)) as f32;
        f[11] = tail(p.m, t.mr);
        let cols = t.panel_columns(p).min(p.n);
        f[12] = tail(p.n, cols);
        f[13] = tail(p.k, t.kc);
        f[14] = lg((t.kc.min(p.k) * t.nr) as f64 * elem);
        f[15] = lg((t.row_block.min(p.m) * t.kc.min(p.k)) as f64 * elem);
        f[24] = t.conv_rows as f32;
        let lanes = t.lanes.max(1);
        f[25] = match t.row_lanes {
            0 => cols as f32 / ((cols + lanes - 1) / lanes * lanes).max(1) as f32,
            _ => 1.0,
        };
        f[26] = (t.row_lanes / lanes) as f32;
    }
    let threads = threads.max(1) as f64;
    f[16] = lg(tasks);
    f[17] = (tasks / ((tasks / threads).ceil() * threads)) as f32;
    let mut walk = Walk::default();
    walk.block(&scheduled.body, 1, 1.0, false);
    f[18] = walk.lanes as f32;
    f[19] = (walk.vector_stores / walk.stores.max(1.0)) as f32;
    f[20] = walk.unroll as f32;
    f[21] = walk.depth as f32;
    f[22] = lg(walk.innermost.unwrap_or(1) as f64);
    f[23] = lg(scheduled
        .scratch()
        .map(|b| (b.len * b.dtype.size()) as f64)
        .sum());
    f
}

/// Statistics gathered over the loop nest.
#[derive(Default)]
struct Walk {
    lanes: u32,
    unroll: u32,
    depth: usize,
    innermost: Option<i64>,
    stores: f64,
    vector_stores: f64,
}

impl Walk {
    fn block(&mut self, body: &[Stmt], depth: usize, trips: f64, vectorized: bool) {
        for s in body {
            match s {
                Stmt::For(l) => {
                    self.depth = self.depth.max(depth);
                    let vec = match l.kind {
                        LoopKind::Vectorize(w) => {
                            self.lanes = self.lanes.max(w);
                            true
                        }
                        LoopKind::Unroll(n) => {
                            self.unroll = self.unroll.max(n);
                            false
                        }
                        _ => false,
                    };
                    if self.innermost.is_none() && !l.body.iter().any(|s| matches!(s, Stmt::For(_)))
                    {
                        self.innermost = Some(l.extent);
                    }
                    self.block(
                        &l.body,
                        depth + 1,
                        trips * l.extent.max(0) as f64,
                        vectorized || vec,
                    );
                }
                Stmt::If { then, .. } => self.block(then, depth, trips, vectorized),
                Stmt::Reduce(r) => self.block(&r.body, depth, trips, vectorized),
                s @ (Stmt::Mma(_)
                | Stmt::WarpFold(_)
                | Stmt::AsyncCopy(_)
                | Stmt::Mbarrier(_)
                | Stmt::SetMaxNReg(_)
                | Stmt::TensorCopy(_)
                | Stmt::TensorStore(_)
                | Stmt::AsyncProxy(_)) => self.block(&s.expansion(), depth, trips, vectorized),
                Stmt::Store { .. } => {
                    self.stores += trips;
                    if vectorized {
                        self.vector_stores += trips;
                    }
                }
            }
        }
    }
}
