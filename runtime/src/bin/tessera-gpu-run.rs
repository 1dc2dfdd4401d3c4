//! The runtime-only GPU runner (no LLVM, no MLIR: small enough to carry to a GPU machine).
//!
//!     tessera-gpu-run BUNDLE_DIR [RUNS]
//!
//! `BUNDLE_DIR/bundle.json` lists cases written by `cargo run -p tessera-examples --example
//! gpu_bundle`: a GPU artifact (manifest + PTX + weights), raw input bytes, and the reference
//! interpreter's raw output bytes with a tolerance. Each case is loaded, run with outputs and
//! workspace poisoned, compared element by element with the reference, then timed (inputs
//! on the device; launches + synchronise; median of RUNS after a warm-up). One JSON line per
//! case; exit status 1 if any case fails or errors.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_ir::Tensor;
use tessera_runtime::cuda::GpuConfig;

#[derive(Deserialize)]
struct Case {
    name: String,
    artifact: String,
    inputs: Vec<String>,
    reference: Vec<String>,
    rtol: f64,
    atol: f64,
    /// Bytes the model must move at least (each input, weight and output once).
    bytes: u64,
    flops: u64,
}

fn read_tensor(
    dir: &Path,
    file: &str,
    sig: &tessera_ir::plan::TensorSig,
) -> Result<Tensor, String> {
    let bytes = std::fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
    Tensor::from_bytes(sig.dtype, sig.shape.clone(), bytes).map_err(|e| format!("{file}: {e}"))
}

/// Largest |got − want| / (atol + rtol·|want|); ≤ 1 passes. NaN in `got` never passes.
fn worst(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> f64 {
    got.to_f64_vec()
        .iter()
        .zip(want.to_f64_vec())
        .map(|(&g, w)| {
            if g.is_nan() != w.is_nan() {
                f64::INFINITY
            } else if g == w || (g.is_nan() && w.is_nan()) {
                0.0
            } else {
                (g - w).abs() / (atol + rtol * w.abs())
            }
        })
        .fold(0.0, f64::max)
}

fn run_case(dir: &Path, c: &Case, runs: usize) -> Result<serde_json::Value, String> {
    let mut exe =
        tessera_runtime::artifact::load_gpu(&dir.join(&c.artifact), GpuConfig { poison: true })
            .map_err(|e| e.to_string())?;
    let plan = exe.plan().clone();
    let inputs = c
        .inputs
        .iter()
        .zip(&plan.inputs)
        .map(|(f, s)| read_tensor(dir, f, s))
        .collect::<Result<Vec<_>, _>>()?;
    let reference = c
        .reference
        .iter()
        .zip(&plan.outputs)
        .map(|(f, s)| read_tensor(dir, f, s))
        .collect::<Result<Vec<_>, _>>()?;
    let got = exe.run(&inputs).map_err(|e| e.to_string())?;
    let err = got
        .iter()
        .zip(&reference)
        .map(|(g, w)| worst(g, w, c.rtol, c.atol))
        .fold(0.0, f64::max);
    exe.upload(&inputs).map_err(|e| e.to_string())?;
    for _ in 0..3 {
        exe.launch_all().map_err(|e| e.to_string())?;
    }
    exe.synchronize().map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        exe.launch_all().map_err(|e| e.to_string())?;
        exe.synchronize().map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    Ok(serde_json::json!({
        "case": c.name,
        "device": exe.device().name,
        "pass": err <= 1.0,
        "worst_error_over_tolerance": err,
        "kernels": plan.steps.len(),
        "median_ms": ms,
        "gbytes_per_s": c.bytes as f64 / (ms * 1e-3) / 1e9,
        "gflops": c.flops as f64 / (ms * 1e-3) / 1e9,
    }))
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: tessera-gpu-run BUNDLE_DIR [RUNS]");
        return std::process::ExitCode::FAILURE;
    };
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(50);
    let cases: Vec<Case> = match std::fs::read_to_string(dir.join("bundle.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.join("bundle.json").display());
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = tessera_runtime::cuda::probe() {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let mut ok = true;
    for c in &cases {
        match run_case(&dir, c, runs) {
            Ok(line) => {
                ok &= line["pass"] == true;
                println!("{line}");
            }
            Err(e) => {
                ok = false;
                println!(
                    "{}",
                    serde_json::json!({ "case": c.name, "pass": false, "error": e })
                );
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
