//! Compilation targets.

use crate::error::CodegenError;
use serde_json::json;

/// What to generate code for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An x86-64 CPU: LLVM CPU name (e.g. `znver4`, `x86-64-v3`) and feature string.
    Cpu { cpu: String, features: String },
    /// An NVIDIA GPU of compute capability `sm` (e.g. 80 for A100, 90 for H100): PTX.
    Cuda { sm: u32 },
}

/// The compute capabilities PTX can be generated for (those LLVM's NVPTX backend and the PTX
/// ISA version we emit both cover).
pub const CUDA_SMS: [u32; 7] = [70, 75, 80, 86, 87, 89, 90];

impl Target {
    /// The CPU this process runs on, with all its features.
    pub fn host() -> Target {
        crate::llvm::init_native();
        let cpu = inkwell::targets::TargetMachine::get_host_cpu_name().to_string();
        let features = inkwell::targets::TargetMachine::get_host_cpu_features().to_string();
        Target::Cpu { cpu, features }
    }

    /// A named CPU with LLVM's default features for it (for artifacts meant to ship). For the
    /// x86-64 micro-architecture levels the implied features are recorded explicitly, so that a
    /// loader can refuse an artifact this CPU cannot run instead of faulting on an instruction.
    pub fn cpu(name: &str) -> Target {
        let v2 = "+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16";
        let v3 = "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe";
        let v4 = "+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl";
        let features = match name {
            "x86-64-v2" => v2.to_string(),
            "x86-64-v3" => format!("{v2},{v3}"),
            "x86-64-v4" => format!("{v2},{v3},{v4}"),
            _ => String::new(),
        };
        Target::Cpu {
            cpu: name.to_string(),
            features,
        }
    }

    /// Parses a `--target` value: `cpu` (this machine), `cpu:<llvm cpu>`, or `cuda:sm_<NN>`.
    pub fn parse(s: &str) -> Result<Target, CodegenError> {
        let bad = |why: &str| CodegenError::Target(format!("`{s}`: {why}"));
        match s.split_once(':') {
            None if s == "cpu" => Ok(Target::host()),
            None if s == "cuda" => Ok(Target::Cuda { sm: 90 }),
            Some(("cpu", name)) if !name.is_empty() => Ok(Target::cpu(name)),
            Some(("cuda", arch)) => {
                let sm = arch
                    .strip_prefix("sm_")
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| bad("expected cuda:sm_<NN>, e.g. cuda:sm_90"))?;
                if !CUDA_SMS.contains(&sm) {
                    return Err(bad(&format!("supported: {CUDA_SMS:?}")));
                }
                Ok(Target::Cuda { sm })
            }
            _ => Err(bad("expected cpu, cpu:<name> or cuda:sm_<NN>")),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Target::Cuda { .. })
    }

    /// How MLIR is emitted for this target.
    pub fn emit_config(&self) -> crate::mlir::EmitConfig {
        crate::mlir::EmitConfig {
            vector_bytes: self.vector_bytes(),
            backend: if self.is_gpu() {
                crate::mlir::Backend::Cuda
            } else {
                crate::mlir::Backend::Cpu
            },
            param_align: Default::default(),
        }
    }

    /// Vector register width in bytes the default schedule should aim for (0 on a GPU,
    /// where a thread is one lane).
    pub fn vector_bytes(&self) -> usize {
        match self {
            Target::Cuda { .. } => 0,
            Target::Cpu { cpu, features } => {
                if features.contains("+avx512f")
                    || (features.is_empty() && (cpu.contains("avx512") || cpu == "x86-64-v4"))
                {
                    64
                } else if features.contains("+avx2") || features.is_empty() && cpu != "x86-64" {
                    32
                } else {
                    16
                }
            }
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        match self {
            Target::Cpu { cpu, features } => {
                json!({ "kind": "cpu", "cpu": cpu, "features": features })
            }
            Target::Cuda { sm } => json!({ "kind": "cuda", "sm": sm }),
        }
    }
}
