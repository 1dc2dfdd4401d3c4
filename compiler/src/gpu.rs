//! Compiling for a CUDA target: GPU-scheduled kernels → one PTX module, plus the same
//! execution plan and weight blob as on the CPU; written as a GPU artifact (`model.ptx`,
//! `model.json`, `model.weights`) or loaded onto a device through the runtime.

use crate::error::CompileError;
use crate::pipeline::{Compiler, Stages, build_plan};
use std::collections::BTreeMap;
use std::path::Path;
use tessera_codegen::Target;
use tessera_codegen::ptx::{PtxConfig, PtxModule, compile_ptx_with};
use tessera_ir::Graph;
use tessera_ir::loops::LoopProgram;
use tessera_ir::plan::{ExecPlan, Slot};
use tessera_runtime::artifact::{GPU_MANIFEST_FORMAT, GpuManifest, manifest_path};
use tessera_runtime::cuda::{GpuConfig, GpuExecutable};

/// A model compiled for one GPU architecture.
#[derive(Clone, Debug)]
pub struct GpuProgram {
    pub module: PtxModule,
    pub plan: ExecPlan,
    pub weights: Vec<u8>,
}

impl GpuProgram {
    /// Kernels that bind no loop and so run as a single GPU thread (correct, slow).
    pub fn single_thread_kernels(&self) -> Vec<&str> {
        self.module
            .kernels
            .iter()
            .filter(|k| k.launch == tessera_ir::loops::gpu::Launch::SINGLE)
            .map(|k| k.name.as_str())
            .collect()
    }

    /// Loads the program onto device 0 (a typed error without a CUDA driver).
    pub fn load(&self, cfg: GpuConfig) -> Result<GpuExecutable, CompileError> {
        Ok(GpuExecutable::load(
            &self.module.text,
            &self.module.kernels,
            self.plan.clone(),
            &self.weights,
            cfg,
        )?)
    }

    /// Writes `out` (the PTX), its manifest (`.json`) and weights (`.weights`).
    pub fn write(&self, model: &str, out: &Path) -> Result<GpuManifest, CompileError> {
        let file_name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| CompileError::Usage(format!("bad output path {}", out.display())))
        };
        let weights_path = out.with_extension("weights");
        let manifest = GpuManifest {
            format: GPU_MANIFEST_FORMAT.into(),
            model: model.into(),
            compiler_version: crate::VERSION.into(),
            target: Target::Cuda { sm: self.module.sm }.describe(),
            plan: self.plan.clone(),
            kernels: self.module.kernels.clone(),
            ptx: file_name(out)?,
            weights: file_name(&weights_path)?,
        };
        std::fs::write(out, &self.module.text)?;
        std::fs::write(&weights_path, &self.weights)?;
        std::fs::write(
            manifest_path(out),
            serde_json::to_string_pretty(&manifest).expect("manifest serialises"),
        )?;
        Ok(manifest)
    }
}

/// The GPU program of GPU-scheduled stages (see `Compiler::stages` with a CUDA target).
pub fn gpu_program(stages: &Stages, sm: u32) -> Result<GpuProgram, CompileError> {
    let (plan, weights) = build_plan(stages)?;
    let progs: Vec<&LoopProgram> = stages.kernels.iter().map(|k| &k.program).collect();
    let module = compile_ptx_with(&progs, sm, &argument_alignment(&plan))?;
    Ok(GpuProgram {
        module,
        plan,
        weights,
    })
}

/// The alignment `plan` guarantees each kernel's arguments: every device allocation (input,
/// output, weights, workspace) is at least 256-byte aligned, so an argument at `offset` into
/// one is aligned as the offset is (views sit at any offset); 16 is all a load can use.
pub fn argument_alignment(plan: &ExecPlan) -> PtxConfig {
    const USEFUL: u32 = 16;
    let of = |slot: &Slot| match *slot {
        Slot::Input { .. } | Slot::Output { .. } => USEFUL,
        // The offset's lowest set bit (none for 0: the allocation's own alignment).
        Slot::Weight { offset } | Slot::Workspace { offset } => {
            1 << offset.trailing_zeros().min(USEFUL.trailing_zeros())
        }
    };
    let mut cfg = PtxConfig::default();
    for step in &plan.steps {
        let aligns: Vec<u32> = step.args.iter().map(of).collect();
        // A kernel called by several steps gets what all of them guarantee.
        let entry = cfg
            .param_align
            .entry(step.kernel.clone())
            .or_insert_with(|| vec![USEFUL; aligns.len()]);
        for (have, new) in entry.iter_mut().zip(aligns) {
            *have = (*have).min(new);
        }
    }
    cfg
}

impl Compiler {
    /// Compiles `graph` for this compiler's CUDA target with the given symbol sizes.
    pub fn compile_gpu(
        &self,
        graph: &Graph,
        bindings: &BTreeMap<String, usize>,
    ) -> Result<(Stages, GpuProgram), CompileError> {
        let Target::Cuda { sm } = self.target else {
            return Err(CompileError::Usage(format!(
                "compile_gpu needs a CUDA target, not {}",
                self.target.describe()
            )));
        };
        let stages = self.stages(graph, bindings)?;
        let program = gpu_program(&stages, sm)?;
        Ok((stages, program))
    }
}
