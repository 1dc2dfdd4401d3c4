//! The `tessera` command line end to end: compile (AOT and every `--emit` stage), run (.onnx
//! and .so, .npy in and out, `--check`), bench (`--json`), and clean errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_stage_prints() {
    let model = root().join("examples/models/mlp.onnx");
    let expect = [
        ("graph", "node \""),
        ("prepared", "Gemm"),
        ("fused", "optimizer: "),
        ("loops", "vectorize"),
        ("mlir", "scf.for"),
        ("llvm", "define void @k0_"),
    ];
    for (stage, needle) in expect {
        let out = ok(bin()
            .arg("compile")
            .arg(&model)
            .args(["--emit", stage])
            .output()
            .unwrap());
        assert!(
            out.contains(needle),
            "--emit {stage} lacks `{needle}`:\n{}",
            &out[..out.len().min(2000)]
        );
    }
}

#[test]
fn compile_run_roundtrip_with_npy() {
    let d = tmp("rt");
    let model = root().join("examples/models/small_cnn.onnx");
    let so = d.join("cnn.so");
    ok(bin()
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(&so)
        .args(["--bind", "N=2"])
        .output()
        .unwrap());
    let x = tessera_ir::Rng::new(5).tensor(tessera_ir::DType::F32, vec![2, 3, 32, 32]);
    std::fs::write(d.join("x.npy"), tessera::npy::write(&x).unwrap()).unwrap();
    let out = ok(bin()
        .arg("run")
        .arg(&so)
        .arg("--input")
        .arg(d.join("x.npy"))
        .arg("--output")
        .arg(d.join("y_aot.npy"))
        .output()
        .unwrap());
    assert!(
        out.contains("latency:") && out.contains("f32[2, 10]"),
        "{out}"
    );
    let out = ok(bin()
        .arg("run")
        .arg(&model)
        .arg("--input")
        .arg(d.join("x.npy"))
        .arg("--output")
        .arg(d.join("y_jit.npy"))
        .arg("--check")
        .output()
        .unwrap());
    assert!(out.contains("max relative error vs interpreter"), "{out}");
    let a = tessera::npy::read(&std::fs::read(d.join("y_aot.npy")).unwrap()).unwrap();
    let b = tessera::npy::read(&std::fs::read(d.join("y_jit.npy")).unwrap()).unwrap();
    assert_eq!(a.shape(), &[2, 10]);
    for (p, q) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
        assert!(
            (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
            "AOT {p} vs JIT {q}"
        );
    }
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn bench_prints_one_json_line() {
    let out = ok(bin()
        .arg("bench")
        .arg(root().join("examples/models/mlp.onnx"))
        .args(["--threads", "1", "--runs", "5", "--json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["median_ms"].as_f64().unwrap() > 0.0 && v["threads"] == 1,
        "{v}"
    );
}

#[test]
fn bad_inputs_are_clean_errors() {
    let d = tmp("bad");
    std::fs::write(d.join("junk.onnx"), b"\x08\x07garbage\xff").unwrap();
    let o = bin().arg("run").arg(d.join("junk.onnx")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("ONNX") && !err.contains("panicked"),
        "{err}"
    );
    let x = tessera_ir::Rng::new(5).tensor(tessera_ir::DType::F32, vec![1, 7]);
    std::fs::write(d.join("x.npy"), tessera::npy::write(&x).unwrap()).unwrap();
    let o = bin()
        .arg("run")
        .arg(root().join("examples/models/mlp.onnx"))
        .arg("--input")
        .arg(d.join("x.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("expects f32[N,64]") && !err.contains("panicked"),
        "{err}"
    );
    std::fs::remove_dir_all(d).ok();
}
