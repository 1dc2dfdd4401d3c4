//! Compilation targets.

use serde_json::json;

/// What to generate code for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An x86-64 CPU: LLVM CPU name (e.g. `znver4`, `x86-64-v3`) and feature string.
    Cpu { cpu: String, features: String },
}

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

    /// Vector register width in bytes the default schedule should aim for.
    pub fn vector_bytes(&self) -> usize {
        match self {
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
        }
    }
}
