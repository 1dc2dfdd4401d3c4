//! Loading an AOT artifact: `model.so` + `model.json` (the manifest) → an [`Executor`]; or a
//! GPU artifact: `model.ptx` + `model.json` + `model.weights` → a
//! [`crate::cuda::GpuExecutable`]. This is the runtime-only path: no LLVM, no MLIR.

use crate::error::RuntimeError;
use crate::executor::{ExecConfig, Executor, Weights};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_ir::plan::{ExecPlan, KernelFn};

/// The JSON manifest written next to a compiled shared library.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub model: String,
    pub compiler_version: String,
    /// `{"kind": "cpu", "cpu": ..., "features": ...}`
    pub target: serde_json::Value,
    pub plan: ExecPlan,
}

pub const MANIFEST_FORMAT: &str = "tessera-artifact/1";

/// The manifest path for a library path: `model.so` → `model.json`.
pub fn manifest_path(lib: &Path) -> PathBuf {
    lib.with_extension("json")
}

pub fn read_manifest(lib: &Path) -> Result<Manifest, RuntimeError> {
    let mp = manifest_path(lib);
    let err = |msg: String| RuntimeError::Artifact {
        path: mp.display().to_string(),
        msg,
    };
    let text =
        std::fs::read_to_string(&mp).map_err(|e| err(format!("cannot read manifest: {e}")))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| err(format!("bad manifest: {e}")))?;
    if m.format != MANIFEST_FORMAT {
        return Err(err(format!(
            "unknown format `{}` (expected `{MANIFEST_FORMAT}`)",
            m.format
        )));
    }
    Ok(m)
}

/// x86 features an artifact may rely on that this CPU lacks (from the manifest's `+feature` list).
pub fn missing_cpu_features(features: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for f in features.split(',').filter_map(|f| f.strip_prefix('+')) {
        #[cfg(target_arch = "x86_64")]
        let have = match f {
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            _ => true,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let have = true;
        if !have {
            missing.push(f.to_string());
        }
    }
    missing
}

/// Loads a compiled model library and its manifest.
pub fn load(lib: &Path, cfg: &ExecConfig) -> Result<Executor, RuntimeError> {
    let m = read_manifest(lib)?;
    let err = |msg: String| RuntimeError::Artifact {
        path: lib.display().to_string(),
        msg,
    };
    if let Some(f) = m.target.get("features").and_then(|f| f.as_str()) {
        let missing = missing_cpu_features(f);
        if !missing.is_empty() {
            return Err(RuntimeError::CpuMismatch(missing.join(", ")));
        }
    }
    // SAFETY: loading runs the library's initialisers; tessera artifacts have none beyond the
    // C runtime's, and the caller asked for this library by path.
    let library =
        unsafe { libloading::Library::new(lib) }.map_err(|e| err(format!("cannot load: {e}")))?;
    let mut kernels = Vec::new();
    for s in &m.plan.steps {
        // SAFETY: the manifest says the symbol is a kernel with the KernelFn ABI.
        let f: KernelFn = unsafe {
            *library
                .get::<KernelFn>(s.kernel.as_bytes())
                .map_err(|e| err(format!("missing kernel `{}`: {e}", s.kernel)))?
        };
        kernels.push(f);
    }
    // SAFETY: `tessera_weights` is a data symbol; we only take its address.
    let weights = unsafe {
        library
            .get::<*const u8>(b"tessera_weights")
            .map_err(|e| err(format!("missing weights: {e}")))?
            .try_as_raw_ptr()
    }
    .ok_or_else(|| err("null weights symbol".into()))? as *const u8;
    Ok(Executor::new(
        m.plan,
        kernels,
        Weights::Borrowed(weights),
        Arc::new(library),
        cfg,
    ))
}

/// The manifest format of a GPU artifact (`model.json` beside `model.ptx` and `model.weights`).
pub const GPU_MANIFEST_FORMAT: &str = "tessera-gpu-artifact/1";

/// The manifest of a GPU artifact: the plan, one launchable kernel per step, and the names of
/// the PTX and weight files (beside the manifest).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GpuManifest {
    pub format: String,
    pub model: String,
    pub compiler_version: String,
    /// `{"kind": "cuda", "sm": 90}`.
    pub target: serde_json::Value,
    pub plan: ExecPlan,
    pub kernels: Vec<tessera_ir::plan::GpuKernel>,
    /// File name of the PTX module, relative to the manifest.
    pub ptx: String,
    /// File name of the raw weight blob, relative to the manifest.
    pub weights: String,
}

/// A GPU artifact read from disk: its manifest, PTX text and weights.
pub struct GpuArtifact {
    pub manifest: GpuManifest,
    pub ptx: String,
    pub weights: Vec<u8>,
}

/// Reads a GPU artifact given its manifest (`model.json`) or PTX (`model.ptx`) path.
pub fn read_gpu_artifact(path: &Path) -> Result<GpuArtifact, RuntimeError> {
    let mp = manifest_path(path);
    let err = |msg: String| RuntimeError::Artifact {
        path: mp.display().to_string(),
        msg,
    };
    let text =
        std::fs::read_to_string(&mp).map_err(|e| err(format!("cannot read manifest: {e}")))?;
    let m: GpuManifest =
        serde_json::from_str(&text).map_err(|e| err(format!("bad manifest: {e}")))?;
    if m.format != GPU_MANIFEST_FORMAT {
        return Err(err(format!(
            "unknown format `{}` (expected `{GPU_MANIFEST_FORMAT}`)",
            m.format
        )));
    }
    let dir = mp.parent().unwrap_or(Path::new("."));
    let ptx = std::fs::read_to_string(dir.join(&m.ptx))
        .map_err(|e| err(format!("cannot read PTX `{}`: {e}", m.ptx)))?;
    let weights = std::fs::read(dir.join(&m.weights))
        .map_err(|e| err(format!("cannot read weights `{}`: {e}", m.weights)))?;
    if weights.len() != m.plan.weight_bytes {
        return Err(err(format!(
            "weights `{}` hold {} bytes, the plan needs {}",
            m.weights,
            weights.len(),
            m.plan.weight_bytes
        )));
    }
    Ok(GpuArtifact {
        manifest: m,
        ptx,
        weights,
    })
}

/// Loads a GPU artifact onto device 0 (a typed error without a CUDA driver).
pub fn load_gpu(
    path: &Path,
    cfg: crate::cuda::GpuConfig,
) -> Result<crate::cuda::GpuExecutable, RuntimeError> {
    let a = read_gpu_artifact(path)?;
    crate::cuda::GpuExecutable::load(
        &a.ptx,
        &a.manifest.kernels,
        a.manifest.plan,
        &a.weights,
        cfg,
    )
}
