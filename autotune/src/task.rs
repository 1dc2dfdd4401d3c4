//! Tuning tasks: the distinct workloads of a compiled model, each with its reference data.
//!
//! Kernels with the same workload key (the same unscheduled program, wherever it occurs)
//! are one task, weighted by how often the model runs it. A task's reference data is real:
//! the reference interpreter runs the (optimised) graph on the model's random inputs, and
//! each kernel gets the values its buffers hold in that run — inputs, and the outputs it
//! must reproduce.

use crate::error::TuneError;
use crate::measure::TaskData;
use crate::space::Space;
use std::path::{Path, PathBuf};
use tessera_ir::loops::BufRole;
use tessera_ir::{Graph, Tensor};
use tessera_passes::gpu_schedule::{GpuScheduleConfig, default_gpu_schedule};
use tessera_passes::lower::Kernel;
use tessera_passes::schedule::{CpuScheduleConfig, KernelSchedule, default_schedule, workload_key};

/// One workload to tune.
#[derive(Clone, Debug)]
pub struct Task {
    /// The first kernel's node name (for reports).
    pub name: String,
    /// The workload key (see [`workload_key`]).
    pub workload: String,
    /// The unscheduled kernel.
    pub kernel: Kernel,
    /// How many kernels of the model compute this workload.
    pub weight: usize,
    pub space: Space,
    /// The schedule the compiler uses without tuning.
    pub default: KernelSchedule,
    /// Where the reference data is (see [`TaskData`]).
    pub data: PathBuf,
}

/// Options of task extraction.
#[derive(Clone, Debug)]
pub struct TaskConfig {
    /// Kernels doing less work than this (stores + reduction steps) are left untuned: their
    /// time is launch overhead whatever their schedule.
    pub min_work: u64,
    /// The schedule configuration of the target (vector width, default knobs).
    pub schedule: CpuScheduleConfig,
    /// Tune GPU schedules for this compute capability (`Some(90)`: sm_90) instead of CPU ones.
    pub gpu_sm: Option<u32>,
}

/// The tasks of `kernels` (unscheduled, lowered from `graph`), with reference data computed
/// by the interpreter from `inputs` (one per graph input) and written under `dir`.
pub fn extract_tasks(
    graph: &Graph,
    kernels: &[Kernel],
    inputs: &[Tensor],
    cfg: &TaskConfig,
    dir: &Path,
) -> Result<Vec<Task>, TuneError> {
    let mut tasks: Vec<Task> = Vec::new();
    for k in kernels {
        if k.program.work() < cfg.min_work {
            continue;
        }
        let workload = workload_key(&k.program);
        if let Some(t) = tasks.iter_mut().find(|t| t.workload == workload) {
            t.weight += 1;
            continue;
        }
        let (space, default) = match cfg.gpu_sm {
            Some(sm) => {
                let gpu = GpuScheduleConfig::for_sm(sm);
                let default = default_gpu_schedule(&k.program, k.product.as_ref(), &gpu)
                    .map_err(|e| TuneError::Task(format!("kernel `{}`: {e}", k.node)))?;
                (Space::for_gpu_kernel(k, sm)?, KernelSchedule::Gpu(default))
            }
            None => (
                Space::for_kernel(k, cfg.schedule.vector_bytes),
                default_schedule(k, &cfg.schedule),
            ),
        };
        tasks.push(Task {
            name: k.node.clone(),
            data: dir.join(format!("{workload}.data")),
            workload,
            kernel: k.clone(),
            weight: 1,
            space,
            default,
        });
    }
    if tasks.is_empty() {
        return Ok(tasks);
    }
    let values = tessera_ir::interp::run_graph_values(graph, inputs)
        .map_err(|e| TuneError::Task(format!("reference interpreter: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|e| TuneError::Task(format!("{}: {e}", dir.display())))?;
    for t in &tasks {
        let k = &t.kernel;
        let mut data = TaskData {
            inputs: Vec::new(),
            expected: Vec::new(),
            cold: Vec::new(),
        };
        for (b, v) in k.program.params().zip(&k.args) {
            let t = values.get(v).ok_or_else(|| {
                TuneError::Task(format!(
                    "kernel `{}`: buffer `{}` has no reference value",
                    k.node, b.name
                ))
            })?;
            if t.dtype() != b.dtype || t.len() != b.len {
                return Err(TuneError::Task(format!(
                    "kernel `{}`: buffer `{}` is {}[{}], its value {}{:?}",
                    k.node,
                    b.name,
                    b.dtype,
                    b.len,
                    t.dtype(),
                    t.shape()
                )));
            }
            match b.role {
                BufRole::Input => {
                    data.inputs.push(t.clone());
                    data.cold.push(graph.initializers.contains_key(v));
                }
                _ => data.expected.push(t.clone()),
            }
        }
        data.write(&t.data)?;
    }
    Ok(tasks)
}
