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

    /// A named CPU with LLVM's default features for it (for artifacts meant to ship).
    pub fn cpu(name: &str) -> Target {
        Target::Cpu {
            cpu: name.to_string(),
            features: String::new(),
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
