//! The autotuner end to end, measuring in real worker processes (`tessera tune-worker`):
//! every candidate is checked against the reference interpreter and recorded; the best
//! schedules apply through `--tuning-db` and still compute what the interpreter computes;
//! planted crashing, hanging and miscomputing candidates are recorded as such without
//! stopping the search; a killed run leaves a database that the next run repairs and resumes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tessera::tune::{ModelKind, TuneOptions, tune_model, tuned_compiler};
use tessera::{CompileConfig, Compiler, Target};
use tessera_autotune::db::{Outcome, TuningDb};
use tessera_autotune::measure::{Plant, WorkerCommand};
use tessera_ir::compare::{Tolerance, compare};
use tessera_ir::{Rng, Tensor};

const GRAPH: &str = "graph \"g\" opset 21 {\n input a: f32[48,64]\n input b: f32[64,80]\n input x: f32[1,8,12,12]\n input w: f32[16,8,3,3]\n node \"mm\" MatMul(a, b) -> (m: f32[48,80])\n node \"r\" Relu(m) -> (rm: f32[48,80])\n node \"sm\" Softmax[axis=1](rm) -> (y: f32[48,80])\n node \"c\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w) -> (z: f32[1,16,12,12])\n output y\n output z\n}";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-tune-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn options(db: PathBuf, trials: usize) -> TuneOptions {
    TuneOptions {
        db,
        trials,
        budget: None,
        model: ModelKind::Xgboost,
        seed: 3,
        min_work: 1000,
        worker: WorkerCommand {
            program: env!("CARGO_BIN_EXE_tessera").into(),
            args: vec!["tune-worker".into()],
        },
        timeout: Duration::from_secs(60),
        model_file: None,
        bindings: Default::default(),
        measure_default: true,
        prior_db: None,
        plants: Vec::new(),
    }
}

fn compiler() -> Compiler {
    Compiler::new(Target::host()).with_config(CompileConfig {
        threads: 2,
        poison: true,
        ..Default::default()
    })
}

#[test]
fn every_candidate_is_recorded_and_the_best_schedules_apply() {
    let g = tessera_ir::text::parse_graph(GRAPH).unwrap();
    let db = tmp("apply.jsonl");
    let trials = 20;
    let r = tune_model(
        &g,
        &compiler(),
        &options(db.clone(), trials),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(r.tasks.len() >= 2, "{} tasks", r.tasks.len());
    assert!(r.tasks.iter().any(|t| t.space.has_product()));
    let (records, _) = TuningDb::open(&db).unwrap();
    assert_eq!(records.records().len(), trials);
    for rec in records.records() {
        assert!(
            matches!(rec.outcome, Outcome::Ok { .. }),
            "a valid schedule was rejected: {rec:?}"
        );
    }
    for (t, st) in r.tasks.iter().zip(&r.states) {
        let (_, best) = st.best().unwrap();
        assert!(best <= st.default_ns.unwrap(), "{}", t.name);
    }
    // The database's best schedules apply and compute what the interpreter computes.
    let (tuned, workloads) = tuned_compiler(compiler(), &db).unwrap();
    assert_eq!(workloads, r.tasks.len());
    let stages = tuned.stages(&g, &Default::default()).unwrap();
    assert_eq!(stages.tuned_kernels, r.tasks.len());
    let exe = tuned.compile(&g).unwrap();
    let mut rng = Rng::new(99);
    let inputs: Vec<Tensor> = g
        .inputs
        .iter()
        .map(|&v| {
            let ty = g.ty_of(v).unwrap();
            rng.tensor(ty.dtype, ty.static_shape().unwrap())
        })
        .collect();
    let got = exe.run(&inputs).unwrap();
    let want = tessera_ir::interp::run_graph(&g, &inputs).unwrap();
    for (a, b) in got.iter().zip(&want) {
        compare(
            a,
            b,
            Tolerance::Close {
                rtol: 1e-4,
                atol: 1e-5,
            },
        )
        .unwrap();
    }
}

#[test]
fn planted_broken_candidates_are_recorded_and_the_search_goes_on() {
    let g = tessera_ir::text::parse_graph(GRAPH).unwrap();
    let db = tmp("planted.jsonl");
    let mut o = options(db.clone(), 9);
    o.timeout = Duration::from_secs(4);
    o.plants = vec![(2, Plant::Crash), (3, Plant::Hang), (4, Plant::Wrong)];
    let r = tune_model(&g, &compiler(), &o, &mut |_, _| {}).unwrap();
    let (records, _) = TuningDb::open(&db).unwrap();
    let recs = records.records();
    assert_eq!(recs.len(), 9);
    match &recs[2].outcome {
        Outcome::Failed { detail } => assert!(detail.contains("died"), "{detail}"),
        o => panic!("planted crash recorded as {o:?}"),
    }
    assert_eq!(recs[3].outcome, Outcome::TimedOut { limit_ms: 4000 });
    assert!(
        matches!(&recs[4].outcome, Outcome::Wrong { detail } if detail.contains("element 0")),
        "{:?}",
        recs[4].outcome
    );
    // A fresh worker measured the rest.
    for rec in &recs[5..] {
        assert!(matches!(rec.outcome, Outcome::Ok { .. }), "{rec:?}");
    }
    // Broken candidates never become the best schedule.
    let best = records.best_schedules(&recs[0].target, &recs[0].compiler);
    for (t, st) in r.tasks.iter().zip(&r.states) {
        if let Some((s, _)) = st.best() {
            assert_eq!(best.get(&t.workload), Some(s));
        }
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn a_killed_run_leaves_a_database_the_next_run_repairs_and_resumes() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/small_cnn.onnx");
    let db = tmp("killed.jsonl");
    let tune = |trials: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
        c.arg("tune")
            .arg(&model)
            .args(["--db", db.to_str().unwrap(), "--trials", trials])
            .args(["--bench-runs", "0", "--min-work", "1", "--json"])
            .arg("--curve")
            .arg(db.with_extension("png"));
        c
    };
    let mut child = tune("100000").spawn().unwrap();
    let t0 = std::time::Instant::now();
    while lines(&db).len() < 4 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no records appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = lines(&db).len();
    // What a kill in the middle of a write leaves: a torn last line.
    let mut bytes = std::fs::read(&db).unwrap();
    bytes.extend_from_slice(b"{\"workload\":\"0123\",\"tar");
    std::fs::write(&db, bytes).unwrap();
    let out = tune("3").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("torn last line"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["resumed_records"], before);
    assert_eq!(summary["trials"], 3);
    let after = lines(&db);
    assert_eq!(after.len(), before + 3);
    for l in &after {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    assert!(db.with_extension("png").exists());
    // The database's schedules apply from the command line.
    let bench = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("bench")
        .arg(&model)
        .args(["--json", "--runs", "3", "--tuning-db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(bench.status.success());
    let b: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert!(b["tuned_kernels"].as_u64().unwrap() > 0, "{b}");
    let run = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("run")
        .arg(&model)
        .args(["--check", "--tuning-db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn a_corrupt_database_is_a_clear_error() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/mlp.onnx");
    let db = tmp("corrupt.jsonl");
    std::fs::write(&db, "{\"workload\": 12}\n").unwrap();
    for args in [
        vec!["bench", "--runs", "1", "--tuning-db"],
        vec!["tune", "--trials", "1", "--db"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args[..1])
            .arg(&model)
            .args(&args[1..])
            .arg(&db)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("line 1"), "{err}");
    }
    // Nothing was rewritten.
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        "{\"workload\": 12}\n"
    );
}

/// A killed run's reference-data folder (its process gone) is removed by the next run; a live
/// process's folder and other names are left alone.
#[test]
fn stale_tuning_folders_of_dead_runs_are_removed() {
    let root = std::env::temp_dir().join(format!("tessera-stale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let folders = [
        format!("tessera-tune-{dead}-0"),
        format!("tessera-tune-{}-3", std::process::id()),
        "tessera-tune-test-12".to_string(),
    ];
    for f in &folders {
        std::fs::create_dir_all(root.join(f)).unwrap();
        std::fs::write(root.join(f).join("task0.npy"), b"x").unwrap();
    }
    assert_eq!(tessera::tune::remove_stale_tune_dirs(&root), 1);
    assert!(
        !root.join(&folders[0]).exists(),
        "the dead run's folder stays"
    );
    assert!(root.join(&folders[1]).exists() && root.join(&folders[2]).exists());
    std::fs::remove_dir_all(&root).unwrap();
}

/// A task's constant inputs (the model's weights) are marked cold — evicted from the caches
/// before each timed run, as a model reads them from memory once per inference — and its
/// activations are not.
#[test]
fn task_data_marks_the_weights_cold() {
    use tessera_autotune::measure::TaskData;
    use tessera_autotune::task::{TaskConfig, extract_tasks};
    use tessera_ir::{DType, Graph, OpKind, ValueType};
    let mut rng = Rng::new(5);
    let mut g = Graph::new("g");
    let x = g.add_input("x", ValueType::new(DType::F32, &[32, 64]));
    let w = g.add_initializer("w", rng.tensor(DType::F32, vec![64, 48]));
    let y = g.op(OpKind::MatMul, &[x, w], Default::default());
    g.outputs.push(y);
    let unscheduled = Compiler::new(Target::host()).with_config(CompileConfig {
        schedule: false,
        ..Default::default()
    });
    let stages = unscheduled.stages(&g, &Default::default()).unwrap();
    let inputs = vec![rng.tensor(DType::F32, vec![32, 64])];
    let cfg = TaskConfig {
        min_work: 0,
        schedule: compiler().schedule_config(),
        gpu_sm: None,
    };
    let dir = tmp("cold-data");
    let tasks = extract_tasks(&stages.optimized, &stages.kernels, &inputs, &cfg, &dir).unwrap();
    assert_eq!(tasks.len(), 1);
    let data = TaskData::read(&tasks[0].data).unwrap();
    let k = &tasks[0].kernel;
    let inputs_of_kernel: Vec<_> = k
        .program
        .params()
        .zip(&k.args)
        .filter(|(b, _)| b.role == tessera_ir::loops::BufRole::Input)
        .map(|(_, &v)| v)
        .collect();
    let want: Vec<bool> = inputs_of_kernel
        .iter()
        .map(|v| stages.optimized.initializers.contains_key(v))
        .collect();
    assert_eq!(data.cold, want);
    assert_eq!(want.iter().filter(|&&c| c).count(), 1, "the weight, only");
}
