//! The search space, the features and the cost models, without measuring anything:
//! every schedule the space hands out can be built and computes what the kernel computes;
//! features are well-formed and tell schedules apart; the XGBoost model learns a ranking
//! and survives a save/load round trip.

use std::collections::BTreeMap;
use tessera_autotune::features::{FEATURES, features};
use tessera_autotune::model::{AnalyticModel, CostModel, XgbConfig, XgbModel};
use tessera_autotune::space::Space;
use tessera_ir::compare::{Tolerance, compare};
use tessera_ir::loops::{BufRole, LoopProgram};
use tessera_ir::{Rng, Tensor};
use tessera_passes::lower::Kernel;
use tessera_passes::schedule::{
    CpuScheduleConfig, KernelSchedule, apply_schedule, default_schedule,
};

/// Lowered, unscheduled kernels of a small graph: a matmul with tails, a conv, a softmax.
fn kernels() -> Vec<Kernel> {
    let text = "graph \"g\" opset 21 {\n input a: f32[37,70]\n input b: f32[70,45]\n input x: f32[1,4,9,9]\n input w: f32[6,4,3,3]\n node \"mm\" MatMul(a, b) -> (m: f32[37,45])\n node \"sm\" Softmax[axis=1](m) -> (y: f32[37,45])\n node \"c\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w) -> (z: f32[1,6,9,9])\n output y\n output z\n}";
    let g = tessera_ir::text::parse_graph(text).unwrap();
    let mut prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new()).unwrap();
    tessera_passes::lower::lower_graph(&mut prepared).unwrap()
}

fn run(p: &LoopProgram, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut ins = inputs.iter();
    let mut bufs: Vec<Tensor> = p
        .params()
        .map(|b| match b.role {
            BufRole::Input => ins.next().unwrap().clone(),
            _ => Tensor::poisoned(b.dtype, vec![b.len]),
        })
        .collect();
    tessera_ir::loops::interp::run(p, &mut bufs).unwrap();
    bufs
}

/// Random values for kernel `k`'s input buffers.
fn random_inputs(k: &Kernel, rng: &mut Rng) -> Vec<Tensor> {
    k.program
        .params()
        .filter(|b| b.role == BufRole::Input)
        .map(|b| rng.tensor(b.dtype, vec![b.len]))
        .collect()
}

#[test]
fn every_schedule_the_space_hands_out_builds_and_computes_the_same() {
    let mut rng = Rng::new(11);
    let ks = kernels();
    assert!(ks.iter().any(|k| k.product.is_some()));
    for k in &ks {
        let space = Space::for_kernel(k, 64);
        assert_eq!(space.has_product(), k.product.is_some(), "{}", k.node);
        let inputs = random_inputs(k, &mut rng);
        let want = run(&k.program, &inputs);
        let mut seen = std::collections::HashSet::new();
        let mut points = Vec::new();
        for _ in 0..12 {
            let (p, s) = space.sample(&mut rng).unwrap();
            points.push(p);
            seen.insert(s);
        }
        for i in 0..24 {
            let a = &points[i % points.len()];
            let b = &points[(i * 7 + 3) % points.len()];
            if let Some((p, s)) = space.mutate(a, &mut rng) {
                assert_eq!(space.decode(&p).unwrap(), s);
                seen.insert(s);
            }
            if let Some((_, s)) = space.crossover(a, b, &mut rng) {
                seen.insert(s);
            }
        }
        assert!(
            seen.len() > 4,
            "{}: only {} distinct schedules",
            k.node,
            seen.len()
        );
        for s in &seen {
            if let Some(p) = space.encode(s) {
                assert_eq!(&space.decode(&p).unwrap(), s, "encode/decode of {s:?}");
            }
            let mut scheduled = k.clone();
            apply_schedule(&mut scheduled, s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            for (g, w) in run(&scheduled.program, &inputs).iter().zip(&want) {
                let tol = Tolerance::Close {
                    rtol: 1e-4,
                    atol: 1e-5,
                };
                compare(g, w, tol).unwrap_or_else(|e| panic!("{} with {s:?}: {e}", k.node));
            }
        }
    }
}

#[test]
fn points_outside_the_space_are_refused() {
    let ks = kernels();
    let space = Space::for_kernel(&ks[0], 64);
    assert!(space.decode(&vec![0; space.knobs.len() + 1]).is_err());
    let too_far: Vec<usize> = space.knobs.iter().map(|k| k.values.len()).collect();
    assert!(space.decode(&too_far).is_err());
    // A 12 x 8-vector register tile does not fit: decoding refuses it.
    let mut p = vec![0; space.knobs.len()];
    let at = |n: &str| space.knobs.iter().position(|k| k.name == n).unwrap();
    p[at("mr")] = space.knobs[at("mr")]
        .values
        .iter()
        .position(|&v| v == 12)
        .unwrap();
    p[at("nr_vectors")] = space.knobs[at("nr_vectors")]
        .values
        .iter()
        .position(|&v| v == 8)
        .unwrap();
    let e = space.decode(&p).unwrap_err();
    assert!(e.to_string().contains("registers"), "{e}");
}

#[test]
fn features_are_well_formed_and_tell_schedules_apart() {
    let mut rng = Rng::new(5);
    let cfg = CpuScheduleConfig {
        vector_bytes: 64,
        ..Default::default()
    };
    for k in kernels() {
        let space = Space::for_kernel(&k, 64);
        let mut vectors = Vec::new();
        for s in [
            default_schedule(&k, &cfg),
            space.sample(&mut rng).unwrap().1,
        ] {
            let mut sk = k.clone();
            apply_schedule(&mut sk, &s).unwrap();
            let f = features(&k, &s, &sk.program, 2);
            assert_eq!(f.len(), FEATURES.len());
            assert!(f.iter().all(|x| x.is_finite()), "{}: {f:?}", k.node);
            if matches!(s, KernelSchedule::Product(_)) {
                assert_eq!(f[0], 1.0);
            }
            vectors.push((sk.program.to_string(), f));
        }
        // Knob settings may build the same program; different programs differ in features.
        if vectors[0].0 != vectors[1].0 {
            assert_ne!(vectors[0].1, vectors[1].1, "{}: same features", k.node);
        }
    }
    for (name, doc) in FEATURES {
        assert!(
            !name.is_empty() && doc.len() > 10,
            "{name}: document every field"
        );
    }
}

/// Synthetic data: the score is a known function of two features.
fn synthetic(n: usize, rng: &mut Rng) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for _ in 0..n {
        let mut f = vec![0f32; FEATURES.len()];
        for v in f.iter_mut() {
            *v = rng.uniform() as f32;
        }
        ys.push(0.7 * f[9] + 0.3 * (1.0 - f[11]));
        xs.push(f);
    }
    (xs, ys)
}

/// Fraction of pairs ordered as the truth orders them.
fn pair_accuracy(pred: &[f32], truth: &[f32]) -> f64 {
    let (mut ok, mut all) = (0, 0);
    for i in 0..pred.len() {
        for j in i + 1..pred.len() {
            if truth[i] != truth[j] {
                all += 1;
                if (pred[i] > pred[j]) == (truth[i] > truth[j]) {
                    ok += 1;
                }
            }
        }
    }
    ok as f64 / all as f64
}

#[test]
fn xgboost_learns_a_ranking_and_round_trips_through_a_file() {
    let mut rng = Rng::new(3);
    let (xs, ys) = synthetic(300, &mut rng);
    let (tx, ty) = synthetic(100, &mut rng);
    let mut m = XgbModel::new(XgbConfig::default());
    // Too little data: the analytic fallback answers.
    m.train(&xs[..3], &ys[..3], &[]).unwrap();
    assert!(!m.trained());
    assert_eq!(m.predict(&tx).unwrap(), AnalyticModel.predict(&tx).unwrap());
    m.train(&xs, &ys, &vec![1.0; xs.len()]).unwrap();
    assert!(m.trained());
    let pred = m.predict(&tx).unwrap();
    let acc = pair_accuracy(&pred, &ty);
    assert!(acc > 0.85, "pairwise ranking accuracy {acc}");
    let path = std::env::temp_dir().join(format!("tessera-xgb-{}.json", std::process::id()));
    m.save(&path).unwrap();
    let mut back = XgbModel::load(&path, XgbConfig::default()).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(back.predict(&tx).unwrap(), pred);
    // A wrong-length feature vector is an error, not a crash.
    assert!(back.predict(&[vec![1.0; 3]]).is_err());
    assert!(
        XgbModel::load(
            std::path::Path::new("/nonexistent/model.json"),
            XgbConfig::default()
        )
        .is_err()
    );
}

/// GPU kernels: a half-precision product (tensor cores, CUDA-core tiles, bound), an f32
/// softmax (a block per row, or bound), an elementwise add.
fn gpu_kernels() -> Vec<Kernel> {
    let text = "graph \"g\" opset 21 {\n input a: f16[33,40]\n input b: f16[40,24]\n input x: f32[12,96]\n node \"mm\" MatMul(a, b) -> (m: f16[33,24])\n node \"sm\" Softmax[axis=1](x) -> (y: f32[12,96])\n node \"add\" Add(y, x) -> (z: f32[12,96])\n output m\n output z\n}";
    let g = tessera_ir::text::parse_graph(text).unwrap();
    let mut prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new()).unwrap();
    let cfg = tessera_passes::lower::LowerConfig::gpu();
    tessera_passes::lower::lower_graph_with(&mut prepared, &cfg).unwrap()
}

#[test]
fn gpu_spaces_hand_out_gpu_schedules_that_compute_the_same() {
    use tessera_autotune::gpu_features::GPU_FEATURES;
    use tessera_passes::gpu_schedule::GpuKernelSchedule;
    let mut rng = Rng::new(5);
    let mut kinds = std::collections::HashSet::new();
    for k in &gpu_kernels() {
        let space = Space::for_gpu_kernel(k, 90).unwrap();
        let inputs = random_inputs(k, &mut rng);
        let want = run(&k.program, &inputs);
        for _ in 0..10 {
            let (p, s) = space.sample(&mut rng).unwrap();
            let KernelSchedule::Gpu(g) = &s else {
                panic!("{}: a CPU schedule {s:?} from a GPU space", k.node)
            };
            kinds.insert(std::mem::discriminant(g));
            assert_eq!(
                space.encode(&s).map(|q| space.decode(&q).unwrap()),
                Some(s.clone())
            );
            assert_eq!(space.decode(&p).unwrap(), s);
            let mut scheduled = k.clone();
            apply_schedule(&mut scheduled, &s).unwrap();
            let f = tessera_autotune::features::candidate_features(k, &s, &scheduled.program, 1);
            assert_eq!(f.len(), GPU_FEATURES.len());
            assert!(f.iter().all(|x| x.is_finite()), "{}: {f:?}", k.node);
            let got = run(&scheduled.program, &inputs);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if k.program.params().nth(i).unwrap().role == BufRole::Input {
                    continue;
                }
                let tol = Tolerance::Close {
                    rtol: 1e-2,
                    atol: 1e-3,
                };
                compare(g, w, tol).unwrap_or_else(|e| panic!("{} with {s:?}: {e}", k.node));
            }
        }
        // A CPU schedule is not one of a GPU space's points.
        assert!(
            space
                .encode(&default_schedule(k, &CpuScheduleConfig::default()))
                .is_none()
        );
    }
    let bound = GpuKernelSchedule::Bound {
        threads_per_block: 64,
        vector_runs: true,
    };
    assert!(kinds.contains(&std::mem::discriminant(&bound)));
    assert!(kinds.len() >= 3, "bound, rows and tiled kinds sampled");
}

/// On sm_90 the tensor-core tilings may use warpgroup steps (`wgmma`): a knob of the space
/// whose points decode, encode back and compute the same; other GPUs have no such knob, and
/// a warpgroup schedule is not one of their points.
#[test]
fn warpgroup_tilings_are_points_of_sm_90_spaces_only() {
    use tessera_passes::gpu_mma::{GpuMmaTiling, MmaEngine};
    use tessera_passes::gpu_schedule::GpuKernelSchedule;
    let kernels = gpu_kernels();
    let k = kernels.iter().find(|k| k.product.is_some()).unwrap();
    let spec = k.product.as_ref().unwrap();
    let hopper = Space::for_gpu_kernel(k, 90).unwrap();
    let ampere = Space::for_gpu_kernel(k, 80).unwrap();
    let has_engine = |s: &Space| s.knobs.iter().any(|k| k.name == "mma_engine");
    assert!(has_engine(&hopper) && !has_engine(&ampere));
    let tiling = GpuMmaTiling::warpgroup_default_for(spec);
    let s = KernelSchedule::Gpu(GpuKernelSchedule::TensorCores { tiling });
    let p = hopper.encode(&s).expect("a point of the sm_90 space");
    assert_eq!(hopper.decode(&p).unwrap(), s);
    assert!(ampere.encode(&s).is_none());
    let mut rng = Rng::new(9);
    let inputs = random_inputs(k, &mut rng);
    let want = run(&k.program, &inputs);
    let mut warpgroups = 0;
    for _ in 0..200 {
        let (_, s) = hopper.sample(&mut rng).unwrap();
        let KernelSchedule::Gpu(GpuKernelSchedule::TensorCores { tiling }) = s else {
            continue;
        };
        if tiling.engine != MmaEngine::Warpgroup || warpgroups == 3 {
            continue;
        }
        warpgroups += 1;
        let mut scheduled = k.clone();
        apply_schedule(&mut scheduled, &s).unwrap();
        let got = run(&scheduled.program, &inputs);
        let tol = Tolerance::Close {
            rtol: 1e-2,
            atol: 1e-3,
        };
        compare(got.last().unwrap(), want.last().unwrap(), tol)
            .unwrap_or_else(|e| panic!("{tiling:?}: {e}"));
    }
    assert!(warpgroups > 0, "no warpgroup tiling sampled");
}

/// A tiling with more shared memory than one GPU's blocks have (eight buffers of 128 × 64 ×
/// 64 tiles: 216 KB) is a point of the sm_90 space (227 KB) and not of the sm_80 one
/// (163 KB), whose candidates would only fail at code generation.
#[test]
fn tilings_beyond_a_gpus_shared_memory_are_not_its_points() {
    use tessera_passes::gpu_mma::{GpuMmaTiling, MmaEngine, MmaLayout, MmaStaging};
    use tessera_passes::gpu_schedule::GpuKernelSchedule;
    let kernels = gpu_kernels();
    let k = kernels.iter().find(|k| k.product.is_some()).unwrap();
    let spec = k.product.as_ref().unwrap();
    let tiling = GpuMmaTiling {
        bm: 128,
        bn: 64,
        bk: 64,
        warps_m: 2,
        warps_n: 2,
        staging: MmaStaging::AsyncCopy { stages: 8 },
        engine: MmaEngine::Warp,
        layout: MmaLayout::Plain,
        group_rows: 8,
        epilogue: Default::default(),
    };
    let bytes = tiling.shared_bytes(spec.dtype);
    let [sm_80, sm_90] = [80, 90].map(tessera_ir::loops::gpu::max_shared_bytes);
    assert!(sm_80 < bytes && bytes <= sm_90, "{bytes} bytes");
    tiling.validate(spec).unwrap();
    let s = KernelSchedule::Gpu(GpuKernelSchedule::TensorCores { tiling });
    let hopper = Space::for_gpu_kernel(k, 90).unwrap();
    let p = hopper.encode(&s).expect("a point of the sm_90 space");
    assert_eq!(hopper.decode(&p).unwrap(), s);
    let ampere = Space::for_gpu_kernel(k, 80).unwrap();
    assert!(ampere.encode(&s).is_none());
    let mut p_80 = p.clone();
    p_80.truncate(ampere.knobs.len());
    let e = ampere.decode(&p_80).unwrap_err().to_string();
    assert!(e.contains("shared memory"), "{e}");
}
