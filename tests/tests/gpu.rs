//! The GPU backend without a GPU, and with one when present.
//!
//! - Binding loops to blocks and threads preserves meaning: every kernel of every bundled
//!   model, GPU-scheduled, computes bit-for-bit what its unscheduled form computes on the loop
//!   interpreter (tiled products and block-per-row reductions: up to the order of their
//!   sums; the interpreter also checks shared memory for races), and the CPU code of the same
//!   GPU-scheduled program agrees too (bound loops run serially there) — on fresh random
//!   inputs, outputs poisoned.
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
use tessera_passes::gpu_schedule::{GpuScheduleConfig, default_gpu, schedule_gpu};
use tessera_tests::ptxas_or_skip;

/// The lowering shape of the GPU kernels checked here.
const GPU: Target = Target::Cuda { sm: 90 };

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
    let (mut bound, mut total, mut tiled, mut rows) = (0, 0, 0, 0);
    for (name, g) in models() {
        let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &GPU).expect("lowers");
        for (i, k) in kernels.into_iter().enumerate() {
            let plain = k.program;
            let mut gpu = plain.clone();
            let binding = schedule_gpu(&mut gpu, k.product.as_ref(), &GpuScheduleConfig::default())
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", plain.name));
            tessera_ir::loops::verify::verify(&gpu).expect("valid GPU program");
            total += 1;
            bound += (binding.launch != Launch::SINGLE) as usize;
            tiled += binding.tiled_product as usize;
            rows += binding.row_blocks as usize;
            let inputs = program_inputs(&plain, 1000 + i as u64);
            let want = interpret(&plain, &inputs).expect("interpreter");
            let got = interpret(&gpu, &inputs).expect("interpreter, GPU-scheduled");
            // Binding loops keeps every operation in place: bit-exact. A tiled product sums
            // in the spec's `k` order, which for a convolution is not the nest's; a row
            // reduction in a tree.
            agree(
                &format!("{name}: {} (GPU schedule, interpreter)", plain.name),
                &got,
                &want,
                |d| {
                    if binding.tiled_product || binding.row_blocks {
                        native_tolerance(d)
                    } else {
                        PASS_EXACT
                    }
                },
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
    // Every kernel of the bundled models but a batch-1 softmax binds its outer loops; the
    // big products (the CNN's convolutions, the transformer's projections) are tiled through
    // shared memory.
    assert!(
        bound + 1 >= total,
        "only {bound} of {total} kernels bound to threads"
    );
    assert!(
        tiled >= 5,
        "only {tiled} kernels got the tiled product schedule"
    );
    assert!(rows >= 3, "only {rows} kernels got one block per row");
    eprintln!("{bound}/{total} kernels bound, {tiled} tiled products, {rows} row reductions");
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
        // a thread loop under a guard (not every thread would reach the barrier)
        (
            "kernel k(in x: f32[4], out y: f32[4]) {\n  for b in 0..2 block(x) {\n    if (b < 1) {\n      for t in 0..2 thread(x) {\n        y[(b*2 + t)] = x[(b*2 + t)]\n      }\n    }\n  }\n}\n",
            "thread loop",
        ),
        // GPU memory in a kernel that binds nothing
        (
            "kernel k(in x: f32[4], out y: f32[4], local a: f32[2]) {\n  for i in 0..4 {\n    y[i] = x[i]\n  }\n}\n",
            "no GPU-bound loop",
        ),
        // too much shared memory
        (
            "kernel k(in x: f32[4], out y: f32[4], shared s: f32[60000]) {\n  for t in 0..4 thread(x) {\n    y[t] = x[t]\n  }\n}\n",
            "bytes of shared memory",
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

/// Runs `p` on the interpreter and as CPU code, with `x` as its one input.
fn both_ways(p: &LoopProgram, x: &tessera_ir::Tensor) -> [Vec<tessera_ir::Tensor>; 2] {
    let inputs = vec![x.clone()];
    [
        interpret(p, &inputs).expect("interpreter"),
        run_native(p, &inputs).expect("CPU code"),
    ]
}

/// Shared buffers beyond the static 48 KB go to the launch's dynamic shared memory: the
/// launch asks for their bytes (one layout, buffers of 1 KB or more 1024-byte aligned —
/// the 128-byte swizzle's period), the PTX declares one
/// `.extern .shared` array instead of the buffers, and a GPU with less per block refuses
/// the kernel with a typed error.
#[test]
fn big_shared_buffers_are_dynamic_shared_memory() {
    // Two 40 KB buffers; every thread stages its elements, then reads a neighbour's.
    let p = parse(
        "kernel k(in x: f32[10000], out y: f32[10000], shared s: f32[10000], shared r: f32[10000]) {\n  for b in 0..1 block(x) {\n    for t in 0..250 thread(x) {\n      for q in 0..40 {\n        s[(q*250 + t)] = x[(q*250 + t)]\n        r[(q*250 + t)] = (x[(q*250 + t)] * 2.0:f32)\n      }\n    }\n    for u in 0..250 thread(x) {\n      for v in 0..40 {\n        y[(v*250 + u)] = (s[(v*250 + ((u + 1) % 250))] + r[(v*250 + u)])\n      }\n    }\n  }\n}\n",
    );
    tessera_ir::loops::verify::verify(&p).unwrap();
    let launch = tessera_ir::loops::gpu::launch(&p).unwrap();
    assert_eq!(launch.dynamic_shared, 40960 + 40000);
    assert_eq!(
        tessera_ir::loops::gpu::shared_layout(&p).0,
        vec![("s".to_string(), 0), ("r".to_string(), 40960)]
    );
    let x = tessera_ir::Tensor::from_f64(
        tessera_ir::DType::F32,
        vec![10000],
        &(0..10000).map(|i| i as f64).collect::<Vec<_>>(),
    );
    let want: Vec<f64> = (0..10000)
        .map(|i| {
            let (q, u) = (i / 250, i % 250);
            (q * 250 + (u + 1) % 250) as f64 + 2.0 * i as f64
        })
        .collect();
    for got in both_ways(&p, &x) {
        assert_eq!(got[0].to_f64_vec(), want);
    }
    let e = tessera_codegen::ptx::compile_ptx(&[&p], 75)
        .unwrap_err()
        .to_string();
    assert!(e.contains("80960 bytes of shared memory"), "{e}");
    if ptxas_or_skip("big_shared_buffers_are_dynamic_shared_memory").is_some() {
        for sm in [80, 90] {
            let module = tessera_codegen::ptx::compile_ptx(&[&p], sm).unwrap();
            assert_eq!(module.kernels[0].launch, launch);
            assert!(module.text.contains(".extern .shared .align 1024 .b8"));
            assert!(!module.text.contains("k_s_shared") && !module.text.contains("k_r_shared"));
            tessera_codegen::ptx::check_with_ptxas(&module.text, sm).unwrap();
        }
    }
}

#[test]
fn shared_memory_is_per_block_and_races_are_reported() {
    // Rotates each block's 4 elements through shared memory: every thread stages its own,
    // and after the barrier (the next thread loop) reads its neighbour's.
    let rotate = parse(
        "kernel k(in x: f32[8], out y: f32[8], shared s: f32[4]) {\n  for b in 0..2 block(x) {\n    for t in 0..4 thread(x) {\n      s[t] = x[(b*4 + t)]\n    }\n    for u in 0..4 thread(x) {\n      y[(b*4 + u)] = s[((u + 1) % 4)]\n    }\n  }\n}\n",
    );
    tessera_ir::loops::verify::verify(&rotate).unwrap();
    assert_eq!(parse(&rotate.to_string()), rotate, "print/parse round trip");
    let x = tessera_ir::Tensor::from_f64(
        tessera_ir::DType::F32,
        vec![8],
        &[1., 2., 3., 4., 5., 6., 7., 8.],
    );
    for got in both_ways(&rotate, &x) {
        assert_eq!(got[0].to_f64_vec(), vec![2., 3., 4., 1., 6., 7., 8., 5.]);
    }
    // The same in one thread loop: thread t reads what thread t + 1 writes, no barrier
    // between — serially it would happen to work for all threads but the last; on a GPU it
    // is a race, and the interpreter says so.
    let racy = parse(
        "kernel k(in x: f32[8], out y: f32[8], shared s: f32[4]) {\n  for b in 0..2 block(x) {\n    for t in 0..4 thread(x) {\n      s[t] = x[(b*4 + t)]\n      y[(b*4 + t)] = s[((t + 1) % 4)]\n    }\n  }\n}\n",
    );
    tessera_ir::loops::verify::verify(&racy).unwrap();
    let e = interpret(&racy, std::slice::from_ref(&x)).unwrap_err();
    assert!(e.contains("data race on shared `s["), "{e}");
    // Shared memory does not outlive its block: block 1 reading what block 0 staged reads
    // poison.
    let stale = parse(
        "kernel k(in x: f32[8], out y: f32[8], shared s: f32[4]) {\n  for b in 0..2 block(x) {\n    for t in 0..4 thread(x) {\n      if (b < 1) {\n        s[t] = x[t]\n      }\n    }\n    for u in 0..4 thread(x) {\n      y[(b*4 + u)] = s[u]\n    }\n  }\n}\n",
    );
    let got = interpret(&stale, &[x]).expect("interpreter");
    assert!(got[0].to_f64_vec()[4..].iter().all(|v| v.is_nan()));
}

#[test]
fn local_memory_is_per_thread_across_a_uniform_loop() {
    // Each of 4 threads sums a strided column of x in its own accumulator, kept across the
    // iterations of a serial loop that every thread runs (a barrier after each).
    let sums = parse(
        "kernel k(in x: f32[64], out y: f32[4], local a: f32[1]) {\n  for t in 0..4 thread(x) {\n    a[0] = 0.0:f32\n  }\n  for c in 0..16 {\n    for u in 0..4 thread(x) {\n      a[0] = (a[0] + x[(c*4 + u)])\n    }\n  }\n  for v in 0..4 thread(x) {\n    y[v] = a[0]\n  }\n}\n",
    );
    tessera_ir::loops::verify::verify(&sums).unwrap();
    let values: Vec<f64> = (0..64).map(|i| (i * i % 17) as f64 - 8.0).collect();
    let x = tessera_ir::Tensor::from_f64(tessera_ir::DType::F32, vec![64], &values);
    let want: Vec<f64> = (0..4)
        .map(|v| (0..16).map(|c| values[c * 4 + v]).sum())
        .collect();
    for got in both_ways(&sums, &x) {
        assert_eq!(got[0].to_f64_vec(), want);
    }
    if ptxas_or_skip("local_memory_is_per_thread_across_a_uniform_loop (ptxas)").is_some() {
        let module = tessera_codegen::ptx::compile_ptx(&[&sums], 90).unwrap();
        // One barrier per iteration of the uniform loop, one before the final thread loop.
        assert!(
            module.text.matches("bar.sync").count() >= 2,
            "{}",
            module.text
        );
        tessera_codegen::ptx::check_with_ptxas(&module.text, 90).unwrap();
    }
}

/// Row reductions of several shapes, one block per row (in 16-byte runs per thread where
/// the rows allow): the interpreter (races checked) and the CPU code of the GPU program
/// against the unscheduled kernel, and ptxas.
#[test]
fn row_reductions_get_a_block_per_row() {
    let ptxas = ptxas_or_skip("row_reductions_get_a_block_per_row (ptxas part)");
    let cases = [
        // (graph, whether the row schedule applies)
        (
            "graph \"g\" opset 21 {\n input x: f32[37,300]\n node \"s\" Softmax[axis=-1](x) -> (y: f32[37,300])\n output y\n}",
            true,
        ),
        (
            "graph \"g\" opset 21 {\n input x: f32[2,5,100]\n input s: f32[100]\n input b: f32[100]\n node \"n\" LayerNormalization[axis=-1](x, s, b) -> (y: f32[2,5,100])\n output y\n}",
            true,
        ),
        (
            "graph \"g\" opset 21 {\n input x: f32[640]\n node \"s\" Softmax[axis=-1](x) -> (y: f32[640])\n output y\n}",
            true,
        ),
        (
            "graph \"g\" opset 21 {\n input x: f32[6,64]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"m\" ReduceMax[keepdims=0](x, ax) -> (y: f32[6])\n output y\n}",
            true,
        ),
        (
            "graph \"g\" opset 21 {\n input x: f16[9,200]\n node \"s\" Softmax[axis=-1](x) -> (y: f16[9,200])\n output y\n}",
            true,
        ),
        (
            "graph \"g\" opset 21 {\n input x: f16[6,64]\n init ax: i64[1] = hex\"0100000000000000\"\n node \"m\" ReduceMax[keepdims=0](x, ax) -> (y: f16[6])\n output y\n}",
            true,
        ),
        // In runs of 16 bytes per thread: f16 rows of 8-element runs (a layer norm's scale
        // and bias too), with runs left over for some threads.
        (
            "graph \"g\" opset 21 {\n input x: f16[3,1024]\n node \"s\" Softmax[axis=-1](x) -> (y: f16[3,1024])\n output y\n}",
            true,
        ),
        (
            "graph \"g\" opset 21 {\n input x: f16[2,3,768]\n input s: f16[768]\n input b: f16[768]\n node \"n\" LayerNormalization[axis=-1](x, s, b) -> (y: f16[2,3,768])\n output y\n}",
            true,
        ),
        // rows shorter than a warp, and a reduction down the columns (strided): not applied
        (
            "graph \"g\" opset 21 {\n input x: f32[50,10]\n node \"s\" Softmax[axis=-1](x) -> (y: f32[50,10])\n output y\n}",
            false,
        ),
        (
            "graph \"g\" opset 21 {\n input x: f32[64,48]\n init ax: i64[1] = hex\"0000000000000000\"\n node \"m\" ReduceSum[keepdims=0](x, ax) -> (y: f32[48])\n output y\n}",
            false,
        ),
    ];
    for (i, (text, applies)) in cases.into_iter().enumerate() {
        let g = tessera_ir::text::parse_graph(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        for k in tessera::fuzzgen::unscheduled_kernels(&g, &GPU).expect("lowers") {
            let plain = k.program;
            let mut gpu = plain.clone();
            let b = schedule_gpu(&mut gpu, None, &GpuScheduleConfig::default()).unwrap();
            assert_eq!(b.row_blocks, applies, "{}:\n{gpu}", plain.name);
            let inputs = program_inputs(&plain, 77 + i as u64);
            let want = interpret(&plain, &inputs).expect("interpreter");
            let what = format!("{} (block per row)", plain.name);
            let got = interpret(&gpu, &inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
            // Sums reassociated in f16 move by a few of its units.
            let tolerance = |w: &tessera_ir::Tensor| match w.dtype() {
                tessera_ir::DType::F16 => tessera_tests::HALF,
                _ => native_tolerance(w),
            };
            agree(&what, &got, &want, tolerance).unwrap();
            let native = run_native(&gpu, &inputs).expect("CPU code");
            agree(&what, &native, &want, tolerance).unwrap();
            if ptxas.is_some() && applies {
                let module = tessera_codegen::ptx::compile_ptx(&[&gpu], 90).unwrap();
                tessera_codegen::ptx::check_with_ptxas(&module.text, 90)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                // 32-bit partials combine through warp shuffles (f16 sums are widened to
                // f32), 16-bit ones (an f16 max) through shared memory.
                let wide = gpu.to_string().contains("warp_fold");
                let f32_fold = plain.to_string().contains(": f32 = reduce");
                assert_eq!(wide, f32_fold, "{what}:\n{gpu}");
                assert_eq!(module.text.contains("shfl.sync.bfly"), wide, "{what}");
            }
        }
    }
}

/// A row kernel's threads read and write their rows 16 bytes at a time where the rows are
/// whole runs of 16 bytes and the arguments 16-byte aligned (as the memory plan makes
/// them): softmax and layer norm, f32 and f16 — bandwidth-bound kernels, where 2-byte
/// accesses would leave most of the memory system idle. Without runs, element accesses.
#[test]
fn row_kernels_access_memory_16_bytes_at_a_time() {
    if ptxas_or_skip("row_kernels_access_memory_16_bytes_at_a_time").is_none() {
        return;
    }
    for dtype in ["f32", "f16"] {
        for node in [
            format!("node \"s\" Softmax[axis=-1](x) -> (y: {dtype}[16,2048])"),
            format!("node \"n\" LayerNormalization[axis=-1](x, s, b) -> (y: {dtype}[16,2048])"),
        ] {
            let text = format!(
                "graph \"g\" opset 21 {{\n input x: {dtype}[16,2048]\n input s: {dtype}[2048]\n input b: {dtype}[2048]\n {node}\n output y\n}}"
            );
            let g = tessera_ir::text::parse_graph(&text).unwrap();
            for vector_runs in [true, false] {
                for k in tessera::fuzzgen::unscheduled_kernels(&g, &GPU).expect("lowers") {
                    let mut gpu = k.program.clone();
                    let cfg = GpuScheduleConfig {
                        vector_runs,
                        ..GpuScheduleConfig::default()
                    };
                    let b = schedule_gpu(&mut gpu, None, &cfg).unwrap();
                    assert!(b.row_blocks, "{dtype} {node}: not a row kernel");
                    let what = format!("{dtype} {node} (runs {vector_runs})");
                    let inputs = program_inputs(&k.program, 9);
                    let want = interpret(&k.program, &inputs).unwrap();
                    let got = interpret(&gpu, &inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
                    agree(&what, &got, &want, |_| tessera_tests::HALF).unwrap();
                    let aligned = tessera_codegen::ptx::PtxConfig {
                        param_align: [(gpu.name.clone(), vec![16; gpu.params().count()])].into(),
                    };
                    let ptx = tessera_codegen::ptx::compile_ptx_with(&[&gpu], 90, &aligned)
                        .unwrap()
                        .text;
                    let element = ["ld.global.b32", "ld.global.b16", "st.global.b32"];
                    let scalar =
                        element.iter().any(|e| ptx.contains(e)) || ptx.contains("st.global.b16");
                    assert_eq!(ptx.contains("ld.global.v4"), vector_runs, "{what}");
                    assert_eq!(scalar, !vector_runs, "{what}");
                    tessera_codegen::ptx::check_with_ptxas(&ptx, 90).unwrap();
                }
            }
        }
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
                threads_per_block: 100,
                ..Default::default()
            }
        )
        .is_err(),
        "threads per block must be a multiple of 32"
    );
}

/// Nests side by side — a Concat's copies — share one grid instead of one thread, bit-exact
/// on the interpreter, large ones in 16-byte runs per thread; nests that depend on each
/// other (one reads what another writes, or both write the same elements) stay serial.
#[test]
fn independent_nests_side_by_side_share_one_grid() {
    let ptxas = ptxas_or_skip("independent_nests_side_by_side_share_one_grid (ptxas)");
    for (dtype, rows, runs) in [("f32", 20, false), ("f16", 512, true)] {
        let text = format!(
            "graph \"g\" opset 21 {{\n input a: {dtype}[{},256]\n input c: {dtype}[{rows},256]\n node \"c\" Concat[axis=0](a, c) -> (y: {dtype}[{},256])\n output y\n}}",
            2 * rows,
            3 * rows
        );
        let g = tessera_ir::text::parse_graph(&text).unwrap();
        let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &GPU).expect("lowers");
        let [k] = kernels.as_slice() else {
            panic!("one Concat kernel expected, got {}", kernels.len())
        };
        assert!(k.program.body.len() >= 2, "{}", k.program);
        let mut gpu = k.program.clone();
        let b = default_gpu(&mut gpu, &GpuScheduleConfig::default()).unwrap();
        let threads = b.launch.blocks() * b.launch.threads_per_block();
        let per_thread = if runs { 8 } else { 1 };
        assert!(
            threads * per_thread >= 2 * rows as u64 * 256,
            "{dtype}: {:?}\n{gpu}",
            b.launch
        );
        assert_eq!(gpu.to_string().contains("unroll("), runs, "{gpu}");
        let what = format!("concat side by side ({dtype})");
        let inputs = program_inputs(&k.program, 4);
        let want = interpret(&k.program, &inputs).unwrap();
        let got = interpret(&gpu, &inputs).unwrap();
        agree(&what, &got, &want, |_| PASS_EXACT).unwrap();
        let native = run_native(&gpu, &inputs).unwrap();
        agree(&what, &native, &want, |_| PASS_EXACT).unwrap();
        if ptxas.is_some() {
            let aligned = tessera_codegen::ptx::PtxConfig {
                param_align: [(gpu.name.clone(), vec![16; gpu.params().count()])].into(),
            };
            let ptx = tessera_codegen::ptx::compile_ptx_with(&[&gpu], 90, &aligned)
                .unwrap()
                .text;
            assert_eq!(ptx.contains("st.global.v4"), runs, "{what}");
            tessera_codegen::ptx::check_with_ptxas(&ptx, 90).unwrap();
        }
    }
    for dependent in [
        // The second nest reads what the first writes.
        "kernel k(in x: f32[64], out y: f32[64], out z: f32[64]) {\n  for i in 0..64 {\n    y[i] = x[i]\n  }\n  for j in 0..64 {\n    z[j] = y[(63 - j)]\n  }\n}\n",
        // Both write y[32..64].
        "kernel k(in x: f32[64], out y: f32[64]) {\n  for i in 0..64 {\n    y[i] = x[i]\n  }\n  for j in 0..32 {\n    y[(32 + j)] = x[j]\n  }\n}\n",
    ] {
        let mut p = parse(dependent);
        let b = default_gpu(&mut p, &GpuScheduleConfig::default()).unwrap();
        assert_eq!(b.launch, Launch::SINGLE, "{p}");
    }
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

/// Two warps each fold their 32 elements through shuffles; lane 0 of each stores the result.
const WARP_SUMS: &str =
    "kernel k(in x: f32[64], out y: f32[2], shared s: f32[64], local v: f32[1]) {
  for b in 0..1 block(x) {
    for t in 0..64 thread(x) {
      s[t] = x[t]
    }
    for u in 0..64 thread(x) {
      warp_fold add(32) v[0] = s[(u // 32)*32] lane((u % 32))
      if ((u % 32) == 0) {
        y[(u // 32)] = v[0]
      }
    }
  }
}
";

#[test]
fn a_warp_fold_reduces_its_elements() {
    let p = parse(WARP_SUMS);
    tessera_ir::loops::verify::verify(&p).unwrap();
    assert_eq!(parse(&p.to_string()), p, "print/parse round trip");
    let values: Vec<f64> = (0..64).map(|i| ((i * 7) % 13) as f64 - 6.25).collect();
    let x = tessera_ir::Tensor::from_f64(tessera_ir::DType::F32, vec![64], &values);
    let want = [values[..32].iter().sum::<f64>(), values[32..].iter().sum()];
    for got in both_ways(&p, &x) {
        assert_eq!(got[0].to_f64_vec(), want);
    }
    if ptxas_or_skip("a_warp_fold_reduces_its_elements (ptxas)").is_some() {
        let module = tessera_codegen::ptx::compile_ptx(&[&p], 80).unwrap();
        assert_eq!(
            module.text.matches("shfl.sync.bfly").count(),
            5,
            "{}",
            module.text
        );
        tessera_codegen::ptx::check_with_ptxas(&module.text, 80).unwrap();
    }
    for (from, to, why) in [
        ("add(32)", "add(24)", "a power of two"),
        ("add(32)", "sub(32)", "not a warp fold"),
        ("lane((u % 32))", "lane((u % 16))", "is not `u % 32`"),
        (
            "s[(u // 32)*32]",
            "s[u]",
            "differs between the threads of a warp",
        ),
        (
            "local v: f32[1]",
            "shared v: f32[1]",
            "from a shared into a local buffer",
        ),
    ] {
        let text = WARP_SUMS.replacen(from, to, 1);
        let e = tessera_ir::loops::parse::parse_program(&text)
            .map_err(|e| e.to_string())
            .and_then(|p| tessera_ir::loops::verify::verify(&p).map_err(|e| e.to_string()))
            .unwrap_err();
        assert!(e.contains(why), "expected `{why}` in: {e}");
    }
}

/// A large elementwise kernel gives each thread a run of 16 bytes (4 f32, 8 f16), staged
/// through registers: the same values bit for bit, and — with its arguments 16-byte aligned —
/// vector loads and 16-byte stores.
#[test]
fn large_elementwise_kernels_take_16_byte_runs() {
    for (dtype, run) in [("f32", 4), ("f16", 8)] {
        let text = format!(
            "graph \"g\" opset 21 {{\n input x: {dtype}[512,256]\n input z: {dtype}[512,256]\n node \"a\" Add(x, z) -> (s: {dtype}[512,256])\n node \"t\" Tanh(s) -> (y: {dtype}[512,256])\n output y\n}}"
        );
        let g = tessera_ir::text::parse_graph(&text).unwrap();
        let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &GPU).expect("lowers");
        let [k] = kernels.as_slice() else {
            panic!("{dtype}: one fused kernel expected, got {}", kernels.len())
        };
        let plain = k.program.clone();
        let mut gpu = plain.clone();
        let b = default_gpu(&mut gpu, &GpuScheduleConfig::default()).unwrap();
        assert_eq!(
            b.launch.threads_per_block() * b.launch.blocks(),
            512 * 256 / run,
            "{gpu}"
        );
        assert!(gpu.to_string().contains(&format!("unroll({run})")), "{gpu}");
        let inputs = program_inputs(&plain, 5);
        let want = interpret(&plain, &inputs).unwrap();
        let got = interpret(&gpu, &inputs).unwrap();
        agree(dtype, &got, &want, |_| PASS_EXACT).unwrap();
        if ptxas_or_skip("large_elementwise_kernels_take_16_byte_runs (ptxas)").is_some() {
            let aligned = tessera_codegen::ptx::PtxConfig {
                param_align: [(gpu.name.clone(), vec![16; 3])].into(),
            };
            let module = tessera_codegen::ptx::compile_ptx_with(&[&gpu], 90, &aligned).unwrap();
            // Stores in 16 bytes; loads in 16 (f32) — f16 loads come out as 4-byte pairs
            // (LLVM vectorizes the f16 arithmetic two lanes wide first).
            let loads = match dtype {
                "f32" => "ld.global.v4",
                _ => "ld.global.v2.b16",
            };
            assert!(module.text.contains(loads), "{dtype}: {}", module.text);
            assert!(
                !module.text.contains("ld.global.b"),
                "{dtype}: scalar loads left"
            );
            assert!(module.text.contains("st.global.v4"), "{dtype}");
            tessera_codegen::ptx::check_with_ptxas(&module.text, 90).unwrap();
        }
    }
}
