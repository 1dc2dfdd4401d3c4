//! The fuzzers' generators and oracle in ordinary CI: generated inputs are valid by
//! construction, random cases pass the oracle on a correct compiler, saved findings
//! (`tests/fuzz/regressions/*.case`) and the fuzz corpora (`fuzz/corpus/<target>/`) replay
//! as tests, and cases round-trip through their text form.

use arbitrary::Unstructured;
use tessera::fuzzgen::{self, Case, FuzzTarget, Verdict};
use tessera_ir::{OpKind, Rng};
use tessera_tests::repo_root;

/// Deterministic pseudo-random byte strings (what a fuzzer without feedback would feed).
fn byte_strings(seed: u64, count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let n = 16 + rng.below(len as u64) as usize;
            (0..n).map(|_| rng.next_u64() as u8).collect()
        })
        .collect()
}

#[test]
fn generated_graphs_verify_and_interpret() {
    let mut made = 0;
    let mut seen = std::collections::BTreeSet::new();
    let mut rules = std::collections::BTreeSet::new();
    for bytes in byte_strings(1, 300, 400) {
        let mut u = Unstructured::new(&bytes);
        let Ok(g) = fuzzgen::graph_gen::arbitrary_graph(&mut u) else {
            continue;
        };
        made += 1;
        seen.extend(g.nodes().map(|(_, n)| n.op.to_string()));
        // Written-out softmax and layer norms reach the composite rules.
        if g.nodes()
            .any(|(_, n)| matches!(n.op, OpKind::Sqrt | OpKind::Log))
        {
            let prepared = tessera_passes::fold::prepare(&g, &Default::default())
                .expect("a generated graph prepares");
            let (_, report) = tessera_passes::egraph::optimize(&prepared, &Default::default())
                .expect("a generated graph optimises");
            rules.extend(
                report
                    .applied
                    .iter()
                    .filter(|(_, k)| *k > 0)
                    .map(|(n, _)| n.clone()),
            );
        }
        g.verify().expect("a generated graph verifies");
        let inputs = fuzzgen::graph_inputs(&g, 3);
        tessera_ir::interp::run_graph(&g, &inputs).unwrap_or_else(|e| {
            panic!(
                "the interpreter refuses a generated graph: {e}\n{}",
                tessera_ir::text::print_graph(&g)
            )
        });
    }
    assert!(made >= 200, "only {made} of 300 byte strings made a graph");
    // Every op family of the generator occurs (a branch that always fails would not).
    for op in [
        "MatMul",
        "Conv",
        "Softmax",
        "LayerNormalization",
        "Transpose",
        "Reshape",
        "MaxPool",
        "Concat",
        "Slice",
        "Gather",
        "Where",
        "ReduceSum",
        "Sqrt",
        "Log",
    ] {
        assert!(seen.contains(op), "no generated graph has {op}: {seen:?}");
    }
    for rule in [
        "softmax-written-out",
        "log-softmax-written-out",
        "layernorm-written-out",
        "layernorm-written-out-rsqrt",
    ] {
        assert!(
            rules.contains(rule),
            "{rule} never fired on a generated graph: {rules:?}"
        );
    }
}

#[test]
fn generated_loop_programs_verify_and_interpret() {
    // The poison pattern of an integer buffer (`Tensor::poisoned`: 0x5A bytes).
    let int_poison = i32::from_ne_bytes([0x5A; 4]) as f64;
    let (mut ints, mut lane_folds, mut leaving) = (0, 0, 0);
    for bytes in byte_strings(2, 300, 300) {
        let mut u = Unstructured::new(&bytes);
        let p = fuzzgen::loop_gen::arbitrary_program(&mut u).expect("a program from any bytes");
        tessera_ir::loops::verify::verify(&p)
            .unwrap_or_else(|e| panic!("a generated program does not verify: {e}\n{p}"));
        let text = p.to_string();
        ints += text.contains(": i32[") as usize;
        lane_folds += text.contains(") vectorize(") as usize;
        leaving += has_load_that_may_leave_its_buffer(&p) as usize;
        let inputs = fuzzgen::oracle::program_inputs(&p, 5);
        let out = fuzzgen::oracle::interpret(&p, &inputs)
            .unwrap_or_else(|e| panic!("interpreter: {e}\n{p}"));
        // Every output element is written (none is left poisoned).
        for t in out {
            assert!(
                t.to_f64_vec()
                    .iter()
                    .all(|v| !v.is_nan() && *v != int_poison),
                "an unwritten output element\n{p}"
            );
        }
    }
    // Integer programs and reductions folded lane by lane both occur.
    assert!(ints >= 30, "{ints} i32 programs of 300");
    assert!(
        lane_folds >= 10,
        "{lane_folds} programs with a vectorized reduction"
    );
    // Guarded loads whose address leaves the buffer where the guard is false occur (what
    // the oracle's guard pages check native code on).
    assert!(
        leaving >= 20,
        "{leaving} programs with a load that may leave its buffer"
    );
}

/// Whether some load of `p` cannot be proven inside its buffer by `loops::range`.
fn has_load_that_may_leave_its_buffer(p: &tessera_ir::loops::LoopProgram) -> bool {
    use tessera_ir::loops::{Stmt, VExpr};
    let extents = tessera_ir::loops::range::extents(p);
    let leaves = |e: &VExpr| {
        !e.loads_in_bounds(&|v| extents.get(v).copied(), &|b| {
            p.buffer(b).map(|x| x.len)
        })
    };
    fn walk(body: &[Stmt], leaves: &dyn Fn(&VExpr) -> bool) -> bool {
        body.iter().any(|s| match s {
            Stmt::For(l) => walk(&l.body, leaves),
            Stmt::If { then, .. } => walk(then, leaves),
            Stmt::Reduce(r) => leaves(&r.value) || leaves(&r.init) || walk(&r.body, leaves),
            Stmt::Store { value, .. } => leaves(value),
            s @ (Stmt::Mma(_)
            | Stmt::WarpFold(_)
            | Stmt::AsyncCopy(_)
            | Stmt::Mbarrier(_)
            | Stmt::SetMaxNReg(_)
            | Stmt::TensorCopy(_)
            | Stmt::TensorStore(_)
            | Stmt::AsyncProxy(_)) => walk(&s.expansion(), leaves),
        })
    }
    walk(&p.body, &leaves)
}

/// Random cases of every target pass the oracle on this (correct) compiler.
/// The graph fuzzer reaches the Winograd rewrite: some generated cases ask for it and have
/// a convolution it applies to (a 3×3 one at stride 1, one group).
#[test]
fn generated_cases_reach_the_winograd_rewrite() {
    let mut reached = 0;
    for bytes in byte_strings(5, 300, 600) {
        let Some(fuzzgen::Case::Graph { graph, options, .. }) =
            fuzzgen::generate(FuzzTarget::GraphPipeline, &bytes)
        else {
            continue;
        };
        if !options.winograd {
            continue;
        }
        let config = tessera::CompileConfig {
            winograd: Some(options.winograd_config()),
            ..Default::default()
        };
        let Ok(stages) = tessera::Compiler::new(tessera::Target::host())
            .with_config(config)
            .stages(&graph, &Default::default())
        else {
            continue;
        };
        let rewritten = |g: &tessera_ir::Graph| {
            g.nodes().any(|(_, n)| match &n.attrs.get("body") {
                Some(tessera_ir::Attr::Graph(b)) => {
                    b.0.nodes().any(|(_, m)| m.op == OpKind::WinogradOutput)
                }
                _ => n.op == OpKind::WinogradOutput,
            })
        };
        reached += rewritten(&stages.optimized) as usize;
    }
    assert!(
        reached >= 3,
        "only {reached} of 300 generated cases had a Winograd conv"
    );
}

/// The `schedule` target makes some cases' products half precision: their kernels are then
/// checked with the tensor-core schedule too — and pass.
#[test]
fn generated_schedule_cases_reach_half_precision_products() {
    let mut reached = 0;
    for bytes in byte_strings(9, 160, 600) {
        let Some(case @ Case::Schedule { .. }) = fuzzgen::generate(FuzzTarget::Schedule, &bytes)
        else {
            continue;
        };
        let Case::Schedule { graph, kernel, .. } = &case else {
            unreachable!()
        };
        let Ok(kernels) = fuzzgen::unscheduled_kernels(graph, &tessera::Target::Cuda { sm: 90 })
        else {
            continue;
        };
        let half = kernels
            .get(*kernel)
            .and_then(|k| k.product.as_ref())
            .is_some_and(|p| matches!(p.dtype, tessera_ir::DType::F16 | tessera_ir::DType::BF16));
        if half {
            reached += 1;
            match fuzzgen::check(&case) {
                Ok(Verdict::Passed | Verdict::Skipped(_)) => {}
                Err(f) => panic!("{}", f.case.to_text()),
            }
        }
    }
    assert!(
        reached >= 2,
        "only {reached} of 160 schedule cases checked a half-precision product kernel"
    );
}

#[test]
fn random_cases_pass_the_oracle() {
    for (k, target) in FuzzTarget::ALL.into_iter().enumerate() {
        let (mut passed, mut total) = (0, 0);
        for bytes in byte_strings(10 + k as u64, 40, 600) {
            total += 1;
            match fuzzgen::run_target(target, &bytes) {
                Ok(Verdict::Passed) => passed += 1,
                Ok(Verdict::Skipped(_)) => {}
                Err(f) => panic!("{f}"),
            }
        }
        eprintln!("{}: {passed} of {total} checked", target.name());
        if target != FuzzTarget::OnnxLoader {
            assert!(
                passed * 2 >= total,
                "{}: only {passed} of {total} cases were checkable",
                target.name()
            );
        }
    }
}

#[test]
fn cases_round_trip_through_text() {
    for target in FuzzTarget::ALL {
        for bytes in byte_strings(20, 20, 400) {
            let Some(case) = fuzzgen::generate(target, &bytes) else {
                continue;
            };
            let text = case.to_text();
            let back = Case::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back.to_text(), text);
        }
    }
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every saved finding replays and now passes.
#[test]
fn regressions_replay() {
    let dir = repo_root().join("tests/fuzz/regressions");
    for path in files(&dir) {
        let text = std::fs::read_to_string(&path).expect("readable");
        let case = Case::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(f) = fuzzgen::check(&case) {
            panic!("{}: {f}", path.display());
        }
    }
}

/// The minimised fuzz corpora replay without a finding.
#[test]
fn corpora_replay() {
    for target in FuzzTarget::ALL {
        let dir = repo_root().join("fuzz/corpus").join(target.name());
        for path in files(&dir) {
            let bytes = std::fs::read(&path).expect("readable");
            if let Err(f) = fuzzgen::run_target(target, &bytes) {
                panic!("{}: {f}", path.display());
            }
        }
    }
}

/// With the `planted-bugs` feature and `TESSERA_PLANT=<bug>`: feeds uniformly random bytes
/// (no coverage feedback) to the oracle targets in turn until one reports a finding, and
/// prints how long that took. The coverage-guided version is `scripts/planted_bugs.sh`.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_bug_is_found_by_random_bytes() {
    let Ok(bug) = std::env::var("TESSERA_PLANT") else {
        eprintln!("TESSERA_PLANT is not set: nothing planted, nothing to find");
        return;
    };
    let start = std::time::Instant::now();
    let targets = [
        FuzzTarget::LoopPasses,
        FuzzTarget::GraphPipeline,
        FuzzTarget::Schedule,
    ];
    let mut rng = Rng::new(99);
    let mut runs = 0u64;
    while start.elapsed().as_secs() < 60 {
        let n = 16 + rng.below(600) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        let target = targets[(runs % 3) as usize];
        runs += 1;
        if let Err(f) = fuzzgen::run_target(target, &bytes) {
            eprintln!(
                "{bug}: found by {} after {runs} runs, {:.1} s\n{f}",
                target.name(),
                start.elapsed().as_secs_f64()
            );
            return;
        }
    }
    panic!("{bug}: not found in 60 s ({runs} runs)");
}

/// Native code that reads outside a buffer — here past its end, and in a second program
/// before its start — touches one of the oracle's guard pages and dies, printing the report
/// armed for it first. A fault kills the process, so each probe runs in a child process: this
/// test binary again, asked through `TESSERA_FENCE_PROBE` to run just the probe.
#[test]
fn native_accesses_outside_a_buffer_hit_guard_pages() {
    let probes = [
        (
            "past-end",
            "kernel k(in x: f32[8], out y: f32[8]) {\n  for i in 0..8 {\n    y[i] = x[(i + 8)]\n  }\n}",
        ),
        (
            "before-start",
            "kernel k(in x: f32[8], out y: f32[8]) {\n  for i in 0..8 {\n    y[i] = x[(i + -8)]\n  }\n}",
        ),
    ];
    if let Ok(which) = std::env::var("TESSERA_FENCE_PROBE") {
        let (_, text) = probes.iter().find(|p| p.0 == which).expect("known probe");
        let prog = tessera_ir::loops::parse::parse_program(text).expect("parses");
        let inputs = fuzzgen::oracle::program_inputs(&prog, 1);
        let _armed = fuzzgen::fence::Armed::new(format!("fence probe `{which}` faulted\n"));
        let _ = fuzzgen::oracle::run_native(&prog, &inputs);
        eprintln!("fence probe `{which}` ran to the end");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    for (which, _) in probes {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "native_accesses_outside_a_buffer_hit_guard_pages",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESSERA_FENCE_PROBE", which)
            .output()
            .expect("child runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{which}: the child survived:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("fence probe `{which}` faulted")),
            "{which}: no report before the fault:\n{stderr}"
        );
        assert!(!stderr.contains("ran to the end"), "{which}:\n{stderr}");
    }
}
