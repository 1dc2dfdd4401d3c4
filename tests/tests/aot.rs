//! Ahead-of-time artifacts: the shared library, run (1) by the runtime-only loader and (2) by
//! the C host in `examples/aot_c/`, must agree with the JIT on the same inputs.

use std::process::Command;
use tessera::{Compiler, Target};
use tessera_tests::*;

#[test]
fn shared_library_runs_from_rust_and_from_c() {
    let root = repo_root();
    let out_dir = std::env::temp_dir().join(format!("tessera-aot-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let lib = out_dir.join("mlp.so");
    let graph = tessera::onnx::import_file(&root.join("examples/models/mlp.onnx")).unwrap();
    let compiler = Compiler::new(Target::host());
    let bindings = [("N".to_string(), 2usize)].into();
    let manifest = tessera::aot::write_artifact(&compiler, &graph, &bindings, &lib).unwrap();
    assert_eq!(manifest.plan.inputs[0].shape, vec![2, 64]);
    assert!(out_dir.join("mlp.json").exists() && out_dir.join("mlp.h").exists());

    // The C host's inputs: x[i] = sin(0.37 i + k).
    let n = 2 * 64;
    let x: Vec<f64> = (0..n).map(|i| (0.37f32 * i as f32).sin() as f64).collect();
    let x = tessera_ir::Tensor::from_f64(tessera_ir::DType::F32, vec![2, 64], &x);
    let want = compiler
        .compile(&graph)
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap();

    // Runtime-only loader (what `tessera run model.so` uses).
    let cfg = tessera_runtime::ExecConfig {
        threads: 2,
        poison: true,
    };
    let exe = tessera_runtime::artifact::load(&lib, &cfg).unwrap();
    let got = exe.run(std::slice::from_ref(&x)).unwrap();
    compare(&got[0], &want[0], ARITH).unwrap();

    // The C host, built against the generated header and linked to the library.
    let host = out_dir.join("host");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-std=c11", "-I"])
        .arg(&out_dir)
        .args(["-include", "mlp.h"])
        .arg(root.join("examples/aot_c/main.c"))
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", out_dir.display()))
        .args(["-lm", "-o"])
        .arg(&host)
        .status()
        .unwrap();
    assert!(status.success(), "building the C host failed");
    let out = Command::new(&host).output().unwrap();
    assert!(
        out.status.success(),
        "C host failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let vals: Vec<f64> = text
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    let c_out = tessera_ir::Tensor::from_f64(tessera_ir::DType::F32, vec![2, 10], &vals);
    compare(&c_out, &want[0], ARITH).unwrap();
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn the_jit_example_runs() {
    // `cargo test --workspace` builds every example next to the test binaries (target/debug/
    // examples); running it directly avoids a nested cargo with a different feature set.
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let exe = deps.parent().unwrap().join("examples").join("jit");
    if !exe.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "tessera-examples", "--example", "jit"])
            .current_dir(repo_root())
            .status()
            .unwrap();
        assert!(st.success(), "building the jit example failed");
    }
    let out = Command::new(&exe)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("output [4, 10]"));
}
