//! The feature vector of a GPU candidate: what the cost model sees of a GPU schedule.
//!
//! A layout of its own ([`GPU_FEATURES`], versioned by [`GPU_FEATURE_VERSION`]): a GPU's
//! speed depends on other things than a CPU's — how many blocks fill the SMs, how many stay
//! resident (shared memory, registers, threads), how much each block reuses what it stages.
//! GPU records live under their own target key (`cuda/sm_NN`), so the two layouts never
//! meet in one model.

use tessera_ir::loops::{BufRole, LoopProgram};
use tessera_passes::gpu_mma::{Consumers, MmaEngine, MmaEpilogue, MmaLayout, MmaStaging};
use tessera_passes::gpu_schedule::GpuKernelSchedule;
use tessera_passes::lower::Kernel;

/// The version of [`GPU_FEATURES`]; bump it when a field is added, removed or redefined.
pub const GPU_FEATURE_VERSION: u32 = 8;

/// Resources of one SM the occupancy estimate assumes (sm_80 and sm_90 alike).
const SM_THREADS: f64 = 2048.0;
const SM_BLOCKS: f64 = 32.0;
const SM_SHARED_BYTES: f64 = 228.0 * 1024.0;
const SM_REGISTERS: f64 = 65536.0;
/// Registers a thread needs beside its local buffers (indices, addresses): a guess that
/// only has to rank schedules.
const BASE_REGISTERS: f64 = 32.0;

/// Every field: name and meaning, in vector order.
pub const GPU_FEATURES: [(&str, &str); 28] = [
    ("bound", "1 for bound loops (one thread per element or run)"),
    ("rows", "1 for a block per row"),
    ("tiled", "1 for CUDA-core product tiles"),
    ("tensor_cores", "1 for tensor-core product tiles"),
    (
        "log_flops",
        "log2(1 + multiply-adds x 2) of a product, or of stores + reduction steps otherwise",
    ),
    ("log_bytes", "log2(1 + bytes of all parameter buffers)"),
    ("intensity", "log2(1 + flops per parameter byte)"),
    ("log_blocks", "log2(1 + blocks of the launch)"),
    ("log_threads", "log2(threads per block)"),
    (
        "log_shared_bytes",
        "log2(1 + shared memory per block, in bytes)",
    ),
    (
        "log_local_bytes",
        "log2(1 + thread-private buffers per thread, in bytes): registers",
    ),
    (
        "occupancy",
        "resident threads per SM / 2048, limited by threads, blocks, shared memory, registers",
    ),
    ("log_tile_m", "log2(1 + rows of a product's block tile)"),
    ("log_tile_n", "log2(1 + columns of a product's block tile)"),
    ("log_tile_k", "log2(1 + depth of a product's k tile)"),
    (
        "log_work_per_thread",
        "log2(1 + outputs per thread): register tile, fragments, run or row share",
    ),
    (
        "tile_waste",
        "fraction of a product's tiled output outside the product (edge tiles)",
    ),
    (
        "vector_run",
        "elements per thread of a bound kernel's runs (1: none)",
    ),
    (
        "warpgroup_mma",
        "1 for tensor-core tiles of warpgroup steps (wgmma), 0 for warps' (mma.sync)",
    ),
    (
        "copy_stages",
        "buffers of a tensor-core tile's copy pipeline (0: staged through registers)",
    ),
    (
        "tma",
        "1 when tensor-core tiles are staged by the tensor memory accelerator",
    ),
    (
        "swizzled",
        "1 for tensor-core tiles under the 128-byte swizzle",
    ),
    (
        "warp_specialized",
        "1 when a producer warpgroup stages the tiles by TMA for consumer warpgroups",
    ),
    (
        "persistent",
        "1 when a warp-specialised pipeline runs on a persistent grid (blocks loop over tiles)",
    ),
    (
        "ping_pong",
        "1 when two teams of consumer warpgroups take a persistent grid's tiles in turns",
    ),
    (
        "log_group_rows",
        "log2(1 + rows of output tiles per group in the blocks' order): L2 reuse",
    ),
    (
        "tma_epilogue",
        "1 when the consumers store their tiles through shared memory by TMA",
    ),
    (
        "tma_epilogue_sub_tiles",
        "1 when that TMA epilogue goes through two 64-column sub-tiles per warpgroup",
    ),
];

fn lg(x: f64) -> f32 {
    (1.0 + x.max(0.0)).log2() as f32
}

/// The features of `scheduled`, the program `schedule` made of kernel `k`.
pub fn gpu_features(k: &Kernel, schedule: &GpuKernelSchedule, scheduled: &LoopProgram) -> Vec<f32> {
    let mut f = vec![0f32; GPU_FEATURES.len()];
    let (flops, bytes) = crate::features::work_and_bytes(k);
    f[4] = lg(flops);
    f[5] = lg(bytes);
    f[6] = lg(flops / bytes.max(1.0));
    let launch =
        tessera_ir::loops::gpu::launch(scheduled).unwrap_or(tessera_ir::loops::gpu::Launch::SINGLE);
    let (blocks, threads) = (launch.blocks() as f64, launch.threads_per_block() as f64);
    f[7] = lg(blocks);
    f[8] = threads.log2() as f32;
    let bytes_of = |role: BufRole| -> f64 {
        scheduled
            .buffers
            .iter()
            .filter(|b| b.role == role)
            .map(|b| (b.len * b.dtype.size()) as f64)
            .sum()
    };
    let (shared, local) = (bytes_of(BufRole::Shared), bytes_of(BufRole::Local));
    f[9] = lg(shared);
    f[10] = lg(local);
    let registers = BASE_REGISTERS + local / 4.0;
    let resident = [
        (SM_THREADS / threads).floor(),
        SM_BLOCKS,
        if shared > 0.0 {
            (SM_SHARED_BYTES / shared).floor()
        } else {
            SM_BLOCKS
        },
        (SM_REGISTERS / (registers * threads)).floor(),
    ]
    .into_iter()
    .fold(f64::INFINITY, f64::min);
    f[11] = (resident * threads / SM_THREADS).min(1.0) as f32;
    let out_elems: f64 = k
        .program
        .params()
        .filter(|b| b.role == BufRole::Output)
        .map(|b| b.len as f64)
        .sum();
    let per_thread = out_elems / (blocks * threads).max(1.0);
    let (kind, tile) = match *schedule {
        GpuKernelSchedule::Bound { .. } => (0, None),
        GpuKernelSchedule::Rows { .. } => (1, None),
        GpuKernelSchedule::Tiled { tiling: t } => (2, Some((t.bm, t.bn, t.bk))),
        GpuKernelSchedule::TensorCores { tiling: t } => (3, Some((t.bm, t.bn, t.bk))),
    };
    f[kind] = 1.0;
    if let GpuKernelSchedule::TensorCores { tiling: t } = schedule {
        f[18] = (t.engine == MmaEngine::Warpgroup) as i32 as f32;
        f[19] = match t.staging {
            MmaStaging::AsyncCopy { stages }
            | MmaStaging::Tma { stages }
            | MmaStaging::WarpSpecialized { stages, .. } => stages as f32,
            MmaStaging::Registers => 0.0,
        };
        let specialized = matches!(t.staging, MmaStaging::WarpSpecialized { .. });
        f[20] = (matches!(t.staging, MmaStaging::Tma { .. }) || specialized) as i32 as f32;
        f[21] = (t.layout == MmaLayout::Swizzled) as i32 as f32;
        f[22] = specialized as i32 as f32;
        f[23] = matches!(
            t.staging,
            MmaStaging::WarpSpecialized { persistent_blocks, .. } if persistent_blocks > 0
        ) as i32 as f32;
        f[25] = lg(t.group_rows as f64);
        f[26] = t.epilogue.by_tma() as i32 as f32;
        f[27] = (t.epilogue == MmaEpilogue::TensorStoreSubTiles) as i32 as f32;
        f[24] = matches!(
            t.staging,
            MmaStaging::WarpSpecialized {
                consumers: Consumers::PingPong,
                ..
            }
        ) as i32 as f32;
    }
    if let (Some((bm, bn, bk)), Some(p)) = (tile, &k.product) {
        f[12] = lg(bm as f64);
        f[13] = lg(bn as f64);
        f[14] = lg(bk as f64);
        let padded = |x: i64, t: i64| ((x + t - 1) / t * t) as f64;
        f[16] = (1.0 - (p.m * p.n) as f64 / (padded(p.m, bm) * padded(p.n, bn))) as f32;
    }
    f[15] = lg(per_thread);
    f[17] = match *schedule {
        GpuKernelSchedule::Bound { .. } => per_thread.round().max(1.0) as f32,
        _ => 1.0,
    };
    f
}

/// A hand-written estimate of relative speed from GPU features (the cost model before it
/// has measurements): full SMs, high occupancy, tensor cores and large tiles for products.
pub fn analytic_gpu_score(f: &[f32]) -> f32 {
    let blocks = (f[7].exp2() - 1.0).max(1.0);
    // Fewer blocks than ~132 SMs leaves some idle.
    let fill = (blocks / 132.0).min(1.0);
    let occupancy = 0.25 + 0.75 * f[11];
    let engine = if f[3] == 1.0 {
        4.0
    } else if f[2] == 1.0 || f[1] == 1.0 {
        1.5
    } else {
        1.0
    };
    // A product's block tile reuses each staged element along the other side: bigger
    // tiles read less (tile_m · tile_n / (tile_m + tile_n) per element staged).
    let reuse = match (f[12], f[13]) {
        (m, n) if m > 0.0 && n > 0.0 => {
            let (m, n) = (m.exp2() - 1.0, n.exp2() - 1.0);
            (m * n / (m + n) / 32.0).min(1.0)
        }
        _ => 1.0,
    };
    fill * occupancy * engine * reuse * (1.0 - 0.5 * f[16])
}
