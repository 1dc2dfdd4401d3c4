//! GPU tuning rounds without a GPU: a round of candidates is exported (tasks with reference
//! data, each candidate checked on the loop interpreter, compiled to its own PTX module with
//! a one-step plan whose parameters are the reference data's tensors, accepted by `ptxas`),
//! measurements in the runner's format are imported into the tuning database (a torn last
//! line ignored, a malformed or foreign line refused with its line number and nothing
//! imported, a second import of the same round skipped), the next round learns from them
//! (nothing measured is proposed again), and a compiler with the database applies the
//! fastest GPU schedule of each workload — whose program still agrees with the interpreter.
//! The timings imported are written by this test: on this machine nothing can time a GPU
//! kernel (`scripts/gpu_check.sh` measures a real round on a GPU machine).

use std::path::Path;
use tessera::Compiler;
use tessera::gpu_tune::{GpuRoundOptions, export_gpu_round, import_gpu_round, round_standings};
use tessera::tune::{ModelKind, compiler_key_for, tuned_compiler};
use tessera_autotune::db::TuningDb;
use tessera_ir::compare::compare;
use tessera_passes::schedule::KernelSchedule;
use tessera_runtime::tuning::{MEASUREMENTS_FILE, TuneRound};
use tessera_tests::*;

/// A half-precision product (tensor-core, CUDA-core and bound schedules) and an f32 row
/// softmax (a block per row, or bound rows).
const GRAPH: &str = "graph \"g\" opset 21 {\n input a: f16[40,48]\n input b: f16[48,72]\n input x: f32[24,160]\n node \"mm\" MatMul(a, b) -> (y: f16[40,72])\n node \"sm\" Softmax[axis=1](x) -> (s: f32[24,160])\n output y\n output s\n}";

/// A fresh folder, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("tessera-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TARGET: tessera::Target = tessera::Target::Cuda { sm: 90 };

fn options(db: &Path, dir: &Path, seed: u64) -> GpuRoundOptions {
    GpuRoundOptions {
        db: db.to_path_buf(),
        dir: dir.to_path_buf(),
        trials: 14,
        batch: 4,
        model: ModelKind::Xgboost,
        seed,
        min_work: 1024,
        bindings: Default::default(),
        model_file: None,
        interpret_max_work: u64::MAX,
    }
}

/// The measurements a runner would write: each task's default 1000 ns, its first other
/// candidate 500 ns (the fastest), its second wrong, the rest 800 ns; then a torn line.
fn write_measurements(dir: &Path, round: &TuneRound) {
    let mut lines = String::new();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for c in &round.candidates {
        let n = match seen.iter_mut().find(|(w, _)| *w == c.workload) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((&c.workload, 0));
                0
            }
        };
        let outcome = match (c.default, n) {
            (true, _) => r#""status":"ok","median_ns":1000"#.to_string(),
            (false, 1) => r#""status":"ok","median_ns":500"#.to_string(),
            (false, 2) => r#""status":"wrong","detail":"output 0: element 3""#.to_string(),
            _ => r#""status":"ok","median_ns":800"#.to_string(),
        };
        lines += &format!("{{\"id\":\"{}\",{outcome}}}\n", c.id);
    }
    lines += r#"{"id":"c00"#;
    std::fs::write(dir.join(MEASUREMENTS_FILE), lines).unwrap();
}

#[test]
fn gpu_rounds_export_import_and_tune_the_compiler() {
    let tmp = TempDir::new("gpu-rounds");
    let (db, dir) = (tmp.path().join("gpu.jsonl"), tmp.path().join("round1"));
    let g = tessera_ir::text::parse_graph(GRAPH).unwrap();
    let compiler = Compiler::new(TARGET);
    let report = export_gpu_round(&g, &compiler, &options(&db, &dir, 1)).unwrap();
    assert_eq!(report.tasks.len(), 2, "the product and the softmax");
    assert_eq!(
        report.rejected, 0,
        "every candidate agrees with the interpreter"
    );
    let round = TuneRound::read(&dir).unwrap();
    assert_eq!(round.candidates.len(), 14);
    assert_eq!(round.target, "cuda/sm_90");
    assert_eq!(round.compiler, compiler_key_for(&TARGET));
    for t in &report.tasks {
        let defaults: Vec<_> = round
            .candidates
            .iter()
            .filter(|c| c.workload == t.workload && c.default)
            .collect();
        assert_eq!(defaults.len(), 1, "task {}: one default", t.name);
        assert!(
            round
                .candidates
                .iter()
                .filter(|c| c.workload == t.workload)
                .count()
                > 2,
            "task {}: the search proposed some",
            t.name
        );
    }
    let kinds: Vec<&str> = round
        .candidates
        .iter()
        .filter_map(|c| c.schedule["gpu"].as_str())
        .collect();
    for kind in ["tensor_cores", "rows"] {
        assert!(kinds.contains(&kind), "{kind} candidates in {kinds:?}");
    }
    let ptxas = ptxas_or_skip("gpu_rounds_export_import_and_tune_the_compiler (ptxas part)");
    for c in &round.candidates {
        round.check(&dir, c).unwrap();
        if ptxas.is_some() {
            let ptx = std::fs::read_to_string(dir.join(&c.artifact)).unwrap();
            tessera_codegen::ptx::check_with_ptxas(&ptx, 90)
                .unwrap_or_else(|e| panic!("candidate {} ({}): {e}", c.id, c.schedule));
        }
    }

    write_measurements(&dir, &round);
    let imported = import_gpu_round(&dir, &db, &TARGET).unwrap();
    assert_eq!(imported.imported, 14);
    assert_eq!(imported.correct, 12, "one wrong candidate per task");
    assert_eq!(imported.unmeasured, 0);
    assert!(imported.torn_bytes > 0);
    let again = import_gpu_round(&dir, &db, &TARGET).unwrap();
    assert_eq!((again.imported, again.duplicates), (0, 14));
    for s in round_standings(&dir, &db).unwrap() {
        assert_eq!((s.default_ns, s.best_ns), (Some(1000), Some(500)), "{s:?}");
        assert_eq!(s.weight, 1, "each workload occurs once");
        assert_eq!(s.rejected, 1);
    }

    // The compiler applies the fastest schedule of each workload, and it still computes the
    // graph.
    let (tuned, n) = tuned_compiler(Compiler::new(TARGET), &db).unwrap();
    assert_eq!(n, 2);
    let stages = tuned.stages(&g, &Default::default()).unwrap();
    assert_eq!(stages.tuned_kernels, 2);
    let (dbase, _) = TuningDb::open(&db).unwrap();
    let best = dbase.best_schedules("cuda/sm_90", &compiler_key_for(&TARGET));
    for s in best.values() {
        let KernelSchedule::Gpu(_) = s else {
            panic!("a CPU schedule for a GPU target: {s:?}")
        };
    }
    let inputs = random_inputs(&g, 7);
    let want = tessera_ir::interp::run_graph(&g, &inputs).unwrap();
    let got = run_loops(&stages, &inputs).unwrap();
    for (i, (a, w)) in got.iter().zip(&want).enumerate() {
        compare(a, w, HALF).unwrap_or_else(|e| panic!("tuned output {i}: {e}"));
    }
    tuned.compile_gpu(&g, &Default::default()).unwrap();

    // The next round learns from the database: nothing measured is proposed again.
    let dir2 = tmp.path().join("round2");
    export_gpu_round(&g, &compiler, &options(&db, &dir2, 2)).unwrap();
    let round2 = TuneRound::read(&dir2).unwrap();
    assert!(!round2.candidates.is_empty());
    for c in &round2.candidates {
        assert!(!c.default, "the defaults are measured");
        assert!(
            !round.candidates.iter().any(|m| m.schedule == c.schedule),
            "{} proposed again",
            c.schedule
        );
    }
}

#[test]
fn bad_rounds_and_measurements_are_refused() {
    let tmp = TempDir::new("gpu-bad-rounds");
    let (db, dir) = (tmp.path().join("gpu.jsonl"), tmp.path().join("round"));
    let g = tessera_ir::text::parse_graph(GRAPH).unwrap();
    let compiler = Compiler::new(TARGET);
    let opts = GpuRoundOptions {
        trials: 4,
        ..options(&db, &dir, 3)
    };
    export_gpu_round(&g, &compiler, &opts).unwrap();
    let again = export_gpu_round(&g, &compiler, &opts).err().unwrap();
    assert!(
        again.to_string().contains("already holds a round"),
        "{again}"
    );
    let cpu = export_gpu_round(&g, &Compiler::new(tessera::Target::host()), &opts)
        .err()
        .unwrap();
    assert!(cpu.to_string().contains("CUDA target"), "{cpu}");

    let round = TuneRound::read(&dir).unwrap();
    let ok = |id: &str| format!("{{\"id\":\"{id}\",\"status\":\"ok\",\"median_ns\":5}}\n");
    let first = &round.candidates[0].id;
    let cases = [
        (
            format!("{}{}", ok(first), ok("c9999")),
            "line 2: candidate `c9999`",
        ),
        (format!("{}not json\n{}", ok(first), ok(first)), "line 2"),
        (format!("{}{}", ok(first), ok(first)), "measured twice"),
        (
            format!("{{\"id\":\"{first}\",\"status\":\"fast\"}}\n"),
            "line 1",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(dir.join(MEASUREMENTS_FILE), text).unwrap();
        let e = import_gpu_round(&dir, &db, &TARGET).err().unwrap();
        assert!(e.to_string().contains(want), "{e} (want {want})");
        let (d, _) = TuningDb::open(&db).unwrap();
        assert!(d.records().is_empty(), "nothing imported after `{want}`");
    }
    std::fs::write(dir.join(MEASUREMENTS_FILE), ok(first)).unwrap();
    let other = tessera::Target::Cuda { sm: 80 };
    let e = import_gpu_round(&dir, &db, &other).err().unwrap();
    assert!(e.to_string().contains("cuda/sm_90"), "{e}");
    std::fs::write(
        dir.join("round.json"),
        std::fs::read_to_string(dir.join("round.json"))
            .unwrap()
            .replace("tessera-gpu-tune-round/1", "tessera-gpu-tune-round/0"),
    )
    .unwrap();
    let e = import_gpu_round(&dir, &db, &TARGET).err().unwrap();
    assert!(e.to_string().contains("format"), "{e}");
}
