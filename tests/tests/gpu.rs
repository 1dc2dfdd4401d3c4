//! The GPU backend without a GPU, and with one when present.
//!
//! - Binding loops to blocks and threads preserves meaning: every kernel of every bundled
//!   model, GPU-scheduled, computes bit-for-bit what its unscheduled form computes on the loop
//!   interpreter, and the CPU code of the same GPU-scheduled program agrees too (bound loops
//!   run serially there) — on fresh random inputs, outputs poisoned.
//! - Every bundled model's PTX is accepted by `ptxas` for sm_80 and sm_90 (`ptxas` comes from
//!   `nvidia-cuda-nvcc-cu12`; without it the test skips loudly, except under CI where it fails).
//! - The verifier's rules for bound loops, and the schedule's refusals.
//! - Asking for the GPU without a driver is a typed error; with one, models run on it and
//!   match the interpreter.

use tessera::fuzzgen::oracle::{
    PASS_EXACT, agree, interpret, native_tolerance, program_inputs, run_native,
};
use tessera::{Compiler, Target};
use tessera_ir::loops::LoopProgram;
use tessera_ir::loops::gpu::Launch;
use tessera_passes::gpu_schedule::{GpuScheduleConfig, default_gpu};

fn models() -> Vec<(String, tessera_ir::Graph)> {
    let dir = tessera_tests::repo_root().join("examples/models");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/models")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .map(|p| {
            let g = tessera::onnx::import_file(&p).expect("bundled model imports");
            (p.file_name().unwrap().to_string_lossy().into_owned(), g)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "bundled models missing");
    out
}

#[test]
fn gpu_schedule_preserves_meaning_on_every_bundled_kernel() {
    let mut bound = 0;
    let mut total = 0;
    for (name, g) in models() {
        let kernels = tessera::fuzzgen::unscheduled_kernels(&g).expect("lowers");
        for (i, plain) in kernels.into_iter().map(|k| k.program).enumerate() {
            let mut gpu = plain.clone();
            let binding = default_gpu(&mut gpu, &GpuScheduleConfig::default())
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", plain.name));
            tessera_ir::loops::verify::verify(&gpu).expect("valid GPU program");
            total += 1;
            bound += (binding.launch != Launch::SINGLE) as usize;
            let inputs = program_inputs(&plain, 1000 + i as u64);
            let want = interpret(&plain, &inputs).expect("interpreter");
            let got = interpret(&gpu, &inputs).expect("interpreter, GPU-scheduled");
            agree(
                &format!("{name}: {} (GPU schedule, interpreter)", plain.name),
                &got,
                &want,
                |_| PASS_EXACT,
            )
            .unwrap();
            let native = run_native(&gpu, &inputs).expect("CPU code of the GPU program");
            agree(
                &format!("{name}: {} (GPU schedule, CPU code)", plain.name),
                &native,
                &want,
                native_tolerance,
            )
            .unwrap();
        }
    }
    // Every kernel of the bundled models but a batch-1 softmax binds its outer loops.
    assert!(
        bound + 1 >= total,
        "only {bound} of {total} kernels bound to threads"
    );
}

/// `ptxas`, or `None` with a loud skip (a failure under CI, where set-up installs it).
fn ptxas_or_skip(test: &str) -> Option<std::path::PathBuf> {
    match tessera_codegen::ptx::find_ptxas() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: ptxas not found under CI (scripts/setup.sh installs it)")
        }
        None => {
            eprintln!("SKIPPED {test}: ptxas not found (install nvidia-cuda-nvcc-cu12)");
            None
        }
    }
}

#[test]
fn bundled_models_ptx_is_accepted_by_ptxas() {
    if ptxas_or_skip("bundled_models_ptx_is_accepted_by_ptxas").is_none() {
        return;
    }
    for (name, g) in models() {
        for sm in [80, 90] {
            let c = Compiler::new(Target::Cuda { sm });
            let b = tessera::pipeline::bind_symbols(&g, &Default::default());
            let (_, program) = c.compile_gpu(&g, &b).expect("compiles for the GPU");
            assert_eq!(program.module.kernels.len(), program.plan.steps.len());
            assert!(program.module.text.contains(&format!(".target sm_{sm}")));
            for k in &program.module.kernels {
                assert!(
                    program.module.text.contains(&format!(".entry {}(", k.name)),
                    "{name}: kernel {} is not an entry of the PTX module",
                    k.name
                );
            }
            tessera_codegen::ptx::check_with_ptxas(&program.module.text, sm)
                .unwrap_or_else(|e| panic!("{name} sm_{sm}: {e}"));
        }
    }
}

#[test]
fn ptxas_rejects_broken_ptx() {
    // The check must be able to fail: a module with an undefined register.
    if ptxas_or_skip("ptxas_rejects_broken_ptx").is_none() {
        return;
    }
    let bad = ".version 7.8\n.target sm_90\n.address_size 64\n.visible .entry k() {\n  add.s32 %r1, %r2, 1;\n  ret;\n}\n";
    assert!(tessera_codegen::ptx::check_with_ptxas(bad, 90).is_err());
}

fn parse(text: &str) -> LoopProgram {
    tessera_ir::loops::parse::parse_program(text).expect("parses")
}

#[test]
fn verifier_enforces_the_shape_of_gpu_programs() {
    let ok = parse(
        "kernel k(in x: f32[1024], out y: f32[1024]) {\n  for b in 0..4 block(x) {\n    for t in 0..256 thread(x) {\n      y[(b*256 + t)] = x[(b*256 + t)]\n    }\n  }\n}\n",
    );
    tessera_ir::loops::verify::verify(&ok).unwrap();
    let launch = tessera_ir::loops::gpu::launch(&ok).unwrap();
    assert_eq!(launch.grid, [4, 1, 1]);
    assert_eq!(launch.block, [256, 1, 1]);
    assert_eq!(parse(&ok.to_string()), ok, "print/parse round trip");
    let bad = [
        // a store outside every thread loop
        (
            "kernel k(in x: f32[4], out y: f32[4]) {\n  for b in 0..4 block(x) {\n    y[b] = x[b]\n  }\n}\n",
            "thread loop",
        ),
        // a thread loop under a serial loop
        (
            "kernel k(in x: f32[4], out y: f32[4]) {\n  for s in 0..2 {\n    for t in 0..2 thread(x) {\n      y[(s*2 + t)] = x[(s*2 + t)]\n    }\n  }\n}\n",
            "thread loop",
        ),
        // one axis bound twice
        (
            "kernel k(in x: f32[4], out y: f32[4]) {\n  for t in 0..2 thread(x) {\n    for u in 0..2 thread(x) {\n      y[(t*2 + u)] = x[(t*2 + u)]\n    }\n  }\n}\n",
            "bound twice",
        ),
        // too many threads per block
        (
            "kernel k(in x: f32[2048], out y: f32[2048]) {\n  for t in 0..1024 thread(x) {\n    for u in 0..2 thread(y) {\n      y[(t*2 + u)] = x[(t*2 + u)]\n    }\n  }\n}\n",
            "threads per block",
        ),
    ];
    for (text, why) in bad {
        let e = tessera_ir::loops::verify::verify(&parse(text))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "expected `{why}` in: {e}");
    }
}

#[test]
fn gpu_schedule_binds_only_what_is_safe() {
    // A row sum by stores: the k loop accumulates into y[i], so only i may be bound.
    let mut rows = parse(
        "kernel k(in x: f32[64], out y: f32[8]) {\n  for i in 0..8 {\n    y[i] = 0.0:f32\n    for k in 0..8 {\n      y[i] = (y[i] + x[(i*8 + k)])\n    }\n  }\n}\n",
    );
    let b = default_gpu(&mut rows, &GpuScheduleConfig::default()).unwrap();
    assert_eq!(b.bound, vec!["i".to_string()]);
    // Every iteration writes y[0]: nothing may be bound.
    let mut same = parse(
        "kernel k(in x: f32[8], out y: f32[1]) {\n  for i in 0..8 {\n    y[0] = x[i]\n  }\n}\n",
    );
    let b = default_gpu(&mut same, &GpuScheduleConfig::default()).unwrap();
    assert_eq!(b.launch, Launch::SINGLE);
    // Overlapping windows (y[i + j]) from different i: i must not be bound.
    let mut overlap = parse(
        "kernel k(in x: f32[4], out y: f32[7]) {\n  for i in 0..4 {\n    for j in 0..4 {\n      y[(i + j)] = x[i]\n    }\n  }\n}\n",
    );
    let b = default_gpu(&mut overlap, &GpuScheduleConfig::default()).unwrap();
    assert_eq!(b.launch, Launch::SINGLE, "bound {:?}", b.bound);
    // A scan (reads y[i - 1]) stays serial.
    let mut scan = parse(
        "kernel k(in x: f32[8], out y: f32[8]) {\n  for i in 0..8 {\n    y[i] = select((i >= 1), (y[max((i - 1), 0)] + x[i]), x[i])\n  }\n}\n",
    );
    let b = default_gpu(&mut scan, &GpuScheduleConfig::default()).unwrap();
    assert_eq!(b.launch, Launch::SINGLE);
    assert!(
        default_gpu(
            &mut rows,
            &GpuScheduleConfig {
                threads_per_block: 100
            }
        )
        .is_err(),
        "threads per block must be a multiple of 32"
    );
}

#[test]
fn gpu_without_a_driver_is_a_typed_error_and_with_one_models_match() {
    let (name, g) = models().into_iter().find(|(n, _)| n == "mlp.onnx").unwrap();
    let c = Compiler::new(Target::Cuda { sm: 90 });
    let b = tessera::pipeline::bind_symbols(&g, &Default::default());
    let (_, program) = c.compile_gpu(&g, &b).expect("compiles");
    match tessera_runtime::cuda::probe() {
        Err(e) => {
            eprintln!("SKIPPED running {name} on a GPU: {e}");
            assert!(
                matches!(e, tessera_runtime::RuntimeError::NoCuda(_)),
                "{e:?}"
            );
            let load = program.load(Default::default());
            assert!(
                matches!(
                    load,
                    Err(tessera::CompileError::Runtime(
                        tessera_runtime::RuntimeError::NoCuda(_)
                    ))
                ),
                "loading without a driver must be NoCuda"
            );
        }
        Ok(info) => {
            let mut exe = program
                .load(tessera_runtime::cuda::GpuConfig { poison: true })
                .expect("loads on the GPU");
            let inputs = tessera_tests::random_inputs(&g, 7);
            let got = exe.run(&inputs).expect("runs on the GPU");
            let want = tessera_ir::interp::run_graph(&g, &inputs).unwrap();
            agree(
                &format!("{name} on {}", info.name),
                &got,
                &want,
                tessera::fuzzgen::oracle::graph_tolerance,
            )
            .unwrap();
        }
    }
}
