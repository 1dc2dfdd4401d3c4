//! The GPU part of a kernel's schedule space: which GPU schedule (bound loops, a block per
//! row, CUDA-core tiles, tensor-core tiles) and each one's knobs, decoded to a validated
//! [`GpuKernelSchedule`].
//!
//! The knobs of the schedules not selected are left as they are in a point (they do not
//! change the program; candidates are deduplicated by their scheduled program anyway), and
//! [`encode`] sets them to their first value.

use crate::error::TuneError;
use crate::space::{Knob, Point, Space};
use tessera_ir::loops::gpu::max_shared_bytes;
use tessera_passes::gpu_mma::{
    GpuMmaTiling, MmaEngine, MmaEpilogue, MmaLayout, MmaStaging, worth_mma,
};
use tessera_passes::gpu_product::{GpuProductTiling, worth_gpu_tiling};
use tessera_passes::gpu_schedule::{GpuKernelSchedule, GpuScheduleConfig, is_row_reduction};
use tessera_passes::lower::Kernel;
use tessera_passes::product::ProductSpec;
use tessera_passes::schedule::KernelSchedule;

/// The selector's values.
const BOUND: i64 = 0;
const ROWS: i64 = 1;
const TILED: i64 = 2;
const TENSOR_CORES: i64 = 3;

const SCHEDULE: &str = "gpu_schedule";
const THREADS: &str = "threads_per_block";
const VECTOR_RUNS: &str = "vector_runs";
const ROW_THREADS: &str = "row_threads";
const TILE_M: &str = "tile_m";
const TILE_N: &str = "tile_n";
const TILE_K: &str = "tile_k";
const THREAD_M: &str = "thread_m";
const THREAD_N: &str = "thread_n";
const MMA_M: &str = "mma_tile_m";
const MMA_N: &str = "mma_tile_n";
const MMA_K: &str = "mma_tile_k";
const WARPS_M: &str = "warps_m";
const WARPS_N: &str = "warps_n";
const MMA_STAGING: &str = "mma_staging";
const MMA_ENGINE: &str = "mma_engine";
const MMA_LAYOUT: &str = "mma_layout";
const MMA_GROUP_ROWS: &str = "mma_group_rows";
const MMA_EPILOGUE: &str = "mma_epilogue";

/// What a GPU space needs to decode its points.
#[derive(Clone, Debug)]
pub(crate) struct GpuSpace {
    spec: Option<ProductSpec>,
    /// The shared memory a block may have on the GPU: tiles that need more are not points.
    max_shared: usize,
}

fn knob(name: &'static str, values: &[i64]) -> Knob {
    Knob {
        name,
        values: values.to_vec(),
    }
}

/// The GPU schedule space of kernel `k` (unscheduled) on a GPU of compute capability `sm`.
pub fn for_gpu_kernel(k: &Kernel, sm: u32) -> Result<Space, TuneError> {
    let cfg = GpuScheduleConfig::for_sm(sm);
    let spaced = |e: tessera_passes::PassError| TuneError::Space(e.to_string());
    let mut kinds = vec![BOUND];
    let mut knobs = Vec::new();
    if is_row_reduction(&k.program).map_err(spaced)? {
        kinds.push(ROWS);
        knobs.push(knob(ROW_THREADS, &[32, 64, 128, 256, 512, 1024]));
    }
    let spec = k.product.clone();
    if let Some(spec) = &spec {
        if worth_gpu_tiling(spec) {
            kinds.push(TILED);
            knobs.extend([
                knob(TILE_M, &GpuProductTiling::TILES),
                knob(TILE_N, &GpuProductTiling::TILES),
                knob(TILE_K, &GpuProductTiling::DEPTHS),
                knob(THREAD_M, &GpuProductTiling::PER_THREAD),
                knob(THREAD_N, &GpuProductTiling::PER_THREAD),
            ]);
        }
        if cfg.tensor_cores && worth_mma(spec) {
            kinds.push(TENSOR_CORES);
            // Tiles that fit the product (see `GpuMmaTiling::fits`).
            let [m, n, k] = GpuMmaTiling::largest_sides(spec);
            let upto = |values: &[i64], most: i64| -> Vec<i64> {
                values.iter().copied().filter(|&v| v <= most).collect()
            };
            knobs.extend([
                knob(MMA_M, &upto(&GpuMmaTiling::TILES, m)),
                knob(MMA_N, &upto(&GpuMmaTiling::TILES, n)),
                knob(MMA_K, &upto(&GpuMmaTiling::DEPTHS, k)),
                knob(WARPS_M, &GpuMmaTiling::WARPS),
                knob(WARPS_N, &GpuMmaTiling::WARPS),
                // Positions in `STAGINGS` (TMA where warpgroups are: sm_90).
                knob(
                    MMA_STAGING,
                    &(0..GpuMmaTiling::STAGINGS.len())
                        .filter(|&i| {
                            cfg.warpgroup_mma
                                || !matches!(
                                    GpuMmaTiling::STAGINGS[i],
                                    MmaStaging::Tma { .. } | MmaStaging::WarpSpecialized { .. }
                                )
                        })
                        .map(|i| i as i64)
                        .collect::<Vec<_>>(),
                ),
                knob(MMA_GROUP_ROWS, &GpuMmaTiling::GROUP_ROWS),
            ]);
            if cfg.warpgroup_mma {
                // Positions in `ENGINES`.
                knobs.push(knob(
                    MMA_ENGINE,
                    &(0..GpuMmaTiling::ENGINES.len() as i64).collect::<Vec<_>>(),
                ));
                // Positions in `LAYOUTS` (swizzled tiles are the warpgroups').
                knobs.push(knob(
                    MMA_LAYOUT,
                    &(0..GpuMmaTiling::LAYOUTS.len() as i64).collect::<Vec<_>>(),
                ));
                // Positions in `EPILOGUES` (TMA stores are the warp-specialised pipelines').
                knobs.push(knob(
                    MMA_EPILOGUE,
                    &(0..GpuMmaTiling::EPILOGUES.len() as i64).collect::<Vec<_>>(),
                ));
            }
        }
    }
    // The specialised schedules first: the selector's first value is the most likely good.
    kinds.reverse();
    knobs.splice(
        0..0,
        [
            knob(SCHEDULE, &kinds),
            knob(THREADS, &[64, 128, 256, 512, 1024]),
            knob(VECTOR_RUNS, &[1, 0]),
        ],
    );
    let max_shared = max_shared_bytes(sm);
    Ok(Space::gpu(knobs, GpuSpace { spec, max_shared }))
}

/// The schedule at point `p` of `space`, validated.
pub(crate) fn decode(
    space: &Space,
    gpu: &GpuSpace,
    p: &Point,
) -> Result<GpuKernelSchedule, TuneError> {
    let v = |name: &str| space.value(p, name);
    let spec = || {
        gpu.spec
            .as_ref()
            .ok_or_else(|| TuneError::Space("the kernel is not a product".into()))
    };
    let invalid = |e: tessera_passes::PassError| TuneError::Space(e.to_string());
    let fits_gpu = |bytes: usize| match bytes <= gpu.max_shared {
        true => Ok(()),
        false => Err(TuneError::Space(format!(
            "{bytes} bytes of shared memory (the GPU's blocks have {})",
            gpu.max_shared
        ))),
    };
    Ok(match v(SCHEDULE)? {
        BOUND => GpuKernelSchedule::Bound {
            threads_per_block: v(THREADS)?,
            vector_runs: v(VECTOR_RUNS)? == 1,
        },
        ROWS => GpuKernelSchedule::Rows {
            threads: v(ROW_THREADS)?,
            vector_runs: v(VECTOR_RUNS)? == 1,
        },
        TILED => {
            let tiling = GpuProductTiling {
                bm: v(TILE_M)?,
                bn: v(TILE_N)?,
                bk: v(TILE_K)?,
                tm: v(THREAD_M)?,
                tn: v(THREAD_N)?,
            };
            tiling.validate(spec()?).map_err(invalid)?;
            GpuKernelSchedule::Tiled { tiling }
        }
        TENSOR_CORES => {
            let staging = GpuMmaTiling::STAGINGS[v(MMA_STAGING)? as usize];
            let tiling = GpuMmaTiling {
                bm: v(MMA_M)?,
                bn: v(MMA_N)?,
                bk: v(MMA_K)?,
                warps_m: v(WARPS_M)?,
                warps_n: v(WARPS_N)?,
                staging,
                // Spaces without the knob (GPUs without warpgroup steps): warps.
                engine: match space.value(p, MMA_ENGINE) {
                    Ok(e) => GpuMmaTiling::ENGINES[e as usize],
                    Err(_) => MmaEngine::Warp,
                },
                layout: match space.value(p, MMA_LAYOUT) {
                    Ok(l) => GpuMmaTiling::LAYOUTS[l as usize],
                    Err(_) => MmaLayout::Plain,
                },
                group_rows: v(MMA_GROUP_ROWS)?,
                // The knob means something to warp-specialised pipelines only: elsewhere
                // its values are one schedule (no half of the space invalid for it).
                epilogue: match (space.value(p, MMA_EPILOGUE), staging) {
                    (Ok(e), MmaStaging::WarpSpecialized { .. }) => {
                        GpuMmaTiling::EPILOGUES[e as usize]
                    }
                    _ => MmaEpilogue::Direct,
                },
            };
            tiling.validate(spec()?).map_err(invalid)?;
            fits_gpu(tiling.shared_bytes(spec()?.dtype))?;
            GpuKernelSchedule::TensorCores { tiling }
        }
        other => return Err(TuneError::Space(format!("GPU schedule kind {other}"))),
    })
}

/// The knob settings of `s` (knobs it does not name keep their first value).
pub(crate) fn knob_values(s: &KernelSchedule) -> Option<Vec<(&'static str, i64)>> {
    let KernelSchedule::Gpu(s) = s else {
        return None;
    };
    Some(match *s {
        GpuKernelSchedule::Bound {
            threads_per_block,
            vector_runs,
        } => vec![
            (SCHEDULE, BOUND),
            (THREADS, threads_per_block),
            (VECTOR_RUNS, vector_runs as i64),
        ],
        GpuKernelSchedule::Rows {
            threads,
            vector_runs,
        } => vec![
            (SCHEDULE, ROWS),
            (ROW_THREADS, threads),
            (VECTOR_RUNS, vector_runs as i64),
        ],
        GpuKernelSchedule::Tiled { tiling: t } => vec![
            (SCHEDULE, TILED),
            (TILE_M, t.bm),
            (TILE_N, t.bn),
            (TILE_K, t.bk),
            (THREAD_M, t.tm),
            (THREAD_N, t.tn),
        ],
        GpuKernelSchedule::TensorCores { tiling: t } => vec![
            (SCHEDULE, TENSOR_CORES),
            (MMA_M, t.bm),
            (MMA_N, t.bn),
            (MMA_K, t.bk),
            (WARPS_M, t.warps_m),
            (WARPS_N, t.warps_n),
            (MMA_STAGING, staging_knob(t.staging)?),
            (MMA_ENGINE, engine_knob(t.engine)?),
            (MMA_LAYOUT, layout_knob(t.layout)?),
            (MMA_GROUP_ROWS, t.group_rows),
            (MMA_EPILOGUE, epilogue_knob(t.epilogue)?),
        ],
    })
}

/// The `mma_staging` knob's value of `staging`: its position in `GpuMmaTiling::STAGINGS`
/// (`None` for a staging outside the domain: a hand-made record).
fn staging_knob(staging: MmaStaging) -> Option<i64> {
    let at = GpuMmaTiling::STAGINGS.iter().position(|&s| s == staging)?;
    Some(at as i64)
}

/// The `mma_epilogue` knob's value of `epilogue`: its position in `GpuMmaTiling::EPILOGUES`.
fn epilogue_knob(epilogue: MmaEpilogue) -> Option<i64> {
    let at = GpuMmaTiling::EPILOGUES
        .iter()
        .position(|&e| e == epilogue)?;
    Some(at as i64)
}

/// The `mma_engine` knob's value of `engine`: its position in `GpuMmaTiling::ENGINES`.
fn engine_knob(engine: MmaEngine) -> Option<i64> {
    let at = GpuMmaTiling::ENGINES.iter().position(|&e| e == engine)?;
    Some(at as i64)
}

/// The `mma_layout` knob's value of `layout`: its position in `GpuMmaTiling::LAYOUTS`.
fn layout_knob(layout: MmaLayout) -> Option<i64> {
    let at = GpuMmaTiling::LAYOUTS.iter().position(|&l| l == layout)?;
    Some(at as i64)
}
