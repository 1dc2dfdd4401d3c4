//! The command line's CUDA paths: `--emit ptx|llvm`, `compile -o model.ptx`, `run model.json`,
//! and `bench --target cuda:sm_NN` (device timing, JSON).

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tessera::{Compiler, Target, Tensor};
use tessera_ir::Graph;
use tessera_ir::loops::LoopProgram;
use tessera_runtime::cuda::GpuConfig;

fn sm_of(target: &Target) -> Result<u32> {
    match target {
        Target::Cuda { sm } => Ok(*sm),
        _ => bail!("this needs a CUDA target, e.g. --target cuda:sm_90"),
    }
}

/// The PTX module of the stages' kernels (`--emit ptx`): what `compile -o model.ptx` writes,
/// for the arguments' alignment the memory plan guarantees.
pub fn ptx_text(stages: &tessera::Stages, target: &Target) -> Result<String> {
    Ok(tessera::gpu::gpu_program(stages, sm_of(target)?)?
        .module
        .text)
}

/// The optimised NVPTX LLVM module of the stages' kernels (`--emit llvm` for a CUDA target).
pub fn nvptx_llvm_text(stages: &tessera::Stages, target: &Target) -> Result<String> {
    let progs: Vec<&LoopProgram> = stages.kernels.iter().map(|k| &k.program).collect();
    let (plan, _) = tessera::pipeline::build_plan(stages)?;
    let align = tessera::gpu::argument_alignment(&plan);
    Ok(tessera_codegen::ptx::nvptx_llvm_text(
        &progs,
        sm_of(target)?,
        &align,
    )?)
}

/// `tessera compile --target cuda:sm_NN -o model.ptx`: PTX, manifest and weights.
pub fn write(
    c: &Compiler,
    g: &Graph,
    bindings: &BTreeMap<String, usize>,
    out: &Path,
) -> Result<()> {
    let (stages, program) = c.compile_gpu(g, bindings)?;
    let m = program.write(&g.name, out)?;
    let single = program.single_thread_kernels();
    eprintln!(
        "wrote {} ({} kernels for sm_{}, {} with tuned schedules, {} run as one thread{}), {}, {}",
        out.display(),
        m.kernels.len(),
        program.module.sm,
        stages.tuned_kernels,
        single.len(),
        if single.is_empty() {
            String::new()
        } else {
            format!(": {}", single.join(", "))
        },
        tessera_runtime::artifact::manifest_path(out).display(),
        out.with_extension("weights").display()
    );
    Ok(())
}

/// `tessera run model.json` for a GPU artifact: (inputs, outputs, milliseconds).
pub fn run_artifact(path: &Path, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Vec<Tensor>, f64)> {
    let mut exe = tessera_runtime::artifact::load_gpu(path, GpuConfig::default())
        .with_context(|| format!("loading {}", path.display()))?;
    let inputs = if inputs.is_empty() {
        crate::random_inputs(&exe.plan().inputs)
    } else {
        inputs
    };
    exe.run(&inputs)?; // warm-up: module load, first launches
    let t = Instant::now();
    let out = exe.run(&inputs)?;
    Ok((inputs, out, t.elapsed().as_secs_f64() * 1e3))
}

/// `tessera bench --target cuda:sm_NN`: device time of one run (launches + synchronise, inputs
/// already on the device), median of `runs`, as one JSON line.
pub fn bench(
    c: &Compiler,
    g: &Graph,
    bindings: &BTreeMap<String, usize>,
    model: &Path,
    runs: usize,
    warmup: usize,
) -> Result<serde_json::Value> {
    let t0 = Instant::now();
    let (_, program) = c.compile_gpu(g, bindings)?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut exe = program.load(GpuConfig::default())?;
    let inputs = crate::random_inputs(&program.plan.inputs);
    exe.upload(&inputs)?;
    let times = exe.time_runs(warmup.max(1), runs)?;
    Ok(serde_json::json!({
        "model": model.display().to_string(),
        "target": c.target.describe(),
        "device": exe.device().name,
        "kernels": program.plan.steps.len(),
        "single_thread_kernels": program.single_thread_kernels().len(),
        "runs": times.len(),
        "compile_ms": compile_ms,
        "median_ms": times[times.len() / 2],
        "min_ms": times[0],
        "max_ms": times[times.len() - 1],
    }))
}
