//! Tensor copies (TMA) and mbarriers, hand-written: a pipeline of two boxes per phase over
//! two mbarriers lands the boxes of a batched matrix (swizzled and plain, hanging over its
//! edges) where the interpreter, the CPU code and a copy computed here agree; its PTX has
//! one `cp.async.bulk.tensor` per copy and `ptxas` accepts it for sm_90; sm_80 is refused
//! with a typed error; the TMA-staged tensor-core product runs, and refused when its waits
//! are removed or wait on the wrong parity. (The schedule over all products: `tensor_cores.rs`.)

use tessera::fuzzgen::oracle;
use tessera_ir::loops::parse::parse_program;
use tessera_ir::loops::tma::{Mbarrier, MbarrierOp};
use tessera_ir::loops::verify::verify;
use tessera_ir::loops::{IExpr, LoopProgram, Stmt};
use tessera_passes::gpu_mma::{Consumers, GpuMmaTiling, MmaStaging, tile_mma};
use tessera_tests::*;

/// `body` with each mbarrier statement changed by `edit`, which says whether it stays.
fn edit_mbarriers(body: &mut Vec<Stmt>, edit: &dyn Fn(&mut Mbarrier) -> bool) {
    body.retain_mut(|s| match s {
        Stmt::Mbarrier(m) => edit(m),
        s => {
            if let Some(nested) = s.nested_mut() {
                edit_mbarriers(nested, edit);
            }
            true
        }
    });
}

/// `x`: 2 batches of a 24 × 64 f16 matrix (rows of 64, batches 1 600 apart, from element
/// 32). Four phases `p` over two mbarriers (`p % 2`, parity `p / 2`): thread 0 copies the
/// box of 8 rows × 64 columns at row `6p − 4` of batch `p % 2` (swizzled: 1 KB) and the box
/// of 16 rows × 16 columns at column `56`, row `6p` (plain: 512 bytes, 8 columns outside)
/// into stage `p % 2`; every thread waits, then copies both boxes out to `y` as they lie.
const PIPELINE: &str = "kernel tma(in x: f16[3232], out y: f16[4608], shared s: f16[2048], shared t: f16[512], shared bar: i64[2]) {
  for g in 0..1 block(x) {
    for i in 0..128 thread(x) {
      if (i == 0) {
        mbarrier_init bar[0] count(1)
        mbarrier_init bar[1] count(1)
      }
    }
    for p in 0..4 {
      for j in 0..128 thread(x) {
        if (j == 0) {
          mbarrier_expect_tx bar[(p % 2)] bytes(1536)
          tensor_copy(f16, sw128) s[(p % 2)*1024] = x[32; 64, 24, 2; 64, 1600; box 64, 8, 1] at(0, (p*6 - 4), (p % 2)) mbar(bar[(p % 2)])
          tensor_copy(f16, none) t[(p % 2)*256] = x[32; 64, 24, 2; 64, 1600; box 16, 16, 1] at(56, p*6, (p % 2)) mbar(bar[(p % 2)])
        }
        mbarrier_wait bar[(p % 2)] parity((p // 2))
        for e in 0..4 {
          y[((p*128 + j)*4 + e)] = s[(((p % 2)*1024 + j*4) + e)]
        }
        y[((2048 + p*128) + j)] = t[((p % 2)*256 + j)]
        y[((2560 + p*128) + j)] = t[(((p % 2)*256 + 128) + j)]
      }
    }
  }
}
";

/// What `PIPELINE` stores, computed from `x` directly.
fn expected(x: &[f64]) -> Vec<f64> {
    let at = |b: i64, r: i64, c: i64| match (0..24).contains(&r) && (0..64).contains(&c) {
        true => x[(32 + b * 1600 + r * 64 + c) as usize],
        false => 0.0,
    };
    let mut y = vec![0.0; 4608];
    for p in 0..4i64 {
        for o in 0..512i64 {
            // The swizzled box: element `o` of the box lands at `swizzle(o)`.
            let place = o ^ (((o / 64) % 8) * 8);
            y[(p * 512 + place) as usize] = at(p % 2, p * 6 - 4 + o / 64, o % 64);
        }
        for o in 0..256i64 {
            let half = 2048 + (o / 128) * 512 + p * 128 + o % 128;
            y[half as usize] = at(p % 2, p * 6 + o / 16, 56 + o % 16);
        }
    }
    y[3072..].iter_mut().for_each(|v| *v = f64::NAN);
    y
}

#[test]
fn a_tensor_copy_pipeline_lands_its_boxes() {
    let p = parse_program(PIPELINE).expect("parses");
    verify(&p).expect("verifies");
    assert_eq!(parse_program(&p.to_string()).unwrap(), p, "round trip");
    let inputs = oracle::program_inputs(&p, 11);
    let want = expected(&inputs[0].to_f64_vec());
    for (how, got) in [
        ("interpreted", oracle::interpret(&p, &inputs).unwrap()),
        ("CPU code", oracle::run_native(&p, &inputs).unwrap()),
    ] {
        let got = got[0].to_f64_vec();
        for (i, (g, w)) in got.iter().zip(&want).enumerate().take(3072) {
            assert_eq!(g, w, "{how}: y[{i}]");
        }
    }
    assert!(
        tessera_codegen::ptx::compile_ptx(&[&p], 80)
            .unwrap_err()
            .to_string()
            .contains("need sm_90"),
        "sm_80 has no TMA"
    );
    if ptxas_or_skip("a_tensor_copy_pipeline_lands_its_boxes (ptxas)").is_some() {
        let module = tessera_codegen::ptx::compile_ptx(&[&p], 90).unwrap();
        let copies = module.text.matches("cp.async.bulk.tensor.3d").count();
        assert!(copies >= 2, "{}", module.text);
        assert!(module.text.contains("mbarrier.try_wait.parity"));
        assert_eq!(module.kernels[0].tensor_maps.len(), 2);
        assert_eq!(module.kernels[0].tensor_maps[0].param, 0);
        tessera_codegen::ptx::check_with_ptxas(&module.text, 90).unwrap();
    }
}

/// A tensor store, hand-written: 128 threads each write two elements of a 16 × 16 f16 tile
/// (`2·x + 1`) into shared memory, fence them for the copy engine and arrive; thread 0 waits
/// and stores the tile as the box at column 24, row 8 of the 20 × 40 output `y` (hanging
/// over its bottom edge), then waits for the store's reads.
const TILE_STORE: &str =
    "kernel store(in x: f16[256], out y: f16[800], shared s: f16[512], shared bar: i64[1]) {
  for g in 0..1 block(x) {
    for t in 0..128 thread(x) {
      if (t == 0) {
        mbarrier_init bar[0] count(128)
      }
    }
    for t1 in 0..128 thread(x) {
      for e in 0..2 {
        s[(t1*2 + e)] = ((x[(t1*2 + e)] * 2.0:f16) + 1.0:f16)
      }
      fence_proxy_async
      mbarrier_arrive bar[0]
      if (t1 == 0) {
        mbarrier_wait bar[0] parity(0)
        tensor_store(f16, none) y[0; 40, 20; 40; box 16, 16] at(24, 8) = s[0]
        bulk_wait_read pending(0)
      }
    }
  }
}
";

/// The tensor store lands its box — clipped at the edge — alike on the interpreter and the
/// CPU code, and its PTX (one `cp.async.bulk.tensor … .global.shared::cta.bulk_group` through
/// a tensor map over the output, a commit, the fence, the wait) passes ptxas for sm_90.
#[test]
fn a_tensor_store_lands_its_tile_clipped_at_the_edge() {
    let p = parse_program(TILE_STORE).expect("parses");
    verify(&p).expect("verifies");
    assert_eq!(parse_program(&p.to_string()).unwrap(), p, "round trip");
    // The CPU runs a thread loop's threads one after another: the tile goes to thread 0
    // across a barrier instead of the mbarrier.
    let across_a_barrier = parse_program(&TILE_STORE.replace(
        "      mbarrier_arrive bar[0]\n      if (t1 == 0) {\n        mbarrier_wait bar[0] parity(0)\n",
        "    }\n    for t2 in 0..128 thread(x) {\n      if (t2 == 0) {\n",
    ))
    .unwrap();
    verify(&across_a_barrier).unwrap();
    let inputs = oracle::program_inputs(&p, 17);
    let x = inputs[0].to_f64_vec();
    for (how, got) in [
        ("interpreted", oracle::interpret(&p, &inputs).unwrap()),
        (
            "across a barrier, interpreted",
            oracle::interpret(&across_a_barrier, &inputs).unwrap(),
        ),
        (
            "across a barrier, CPU code",
            oracle::run_native(&across_a_barrier, &inputs).unwrap(),
        ),
    ] {
        let got = got[0].to_f64_vec();
        for r in 8..20usize {
            for c in 24..40usize {
                let v = x[(r - 8) * 16 + c - 24];
                let want = tessera_ir::DType::F16
                    .round_f64(tessera_ir::DType::F16.round_f64(v * 2.0) + 1.0);
                assert_eq!(got[r * 40 + c], want, "{how}: y({r}, {c})");
            }
        }
        let written = got.iter().filter(|v| !v.is_nan()).count();
        assert!(
            written <= 12 * 16 + 40 * 8,
            "{how}: {written} elements written outside the box"
        );
    }
    let module = tessera_codegen::ptx::compile_ptx(&[&p], 90).unwrap();
    for instruction in [
        "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group",
        "cp.async.bulk.commit_group",
        "cp.async.bulk.wait_group.read 0",
        "fence.proxy.async.shared::cta",
    ] {
        assert!(
            module.text.contains(instruction),
            "{instruction}: {}",
            module.text
        );
    }
    let maps = &module.kernels[0].tensor_maps;
    assert_eq!((maps.len(), maps[0].param), (1, 1), "one map, over `y`");
    if ptxas_or_skip("a_tensor_store_lands_its_tile_clipped_at_the_edge (ptxas)").is_some() {
        tessera_codegen::ptx::check_with_ptxas(&module.text, 90).unwrap();
    }
}

/// A kernel's tensor maps travel in its manifest entry (and a manifest from before them,
/// without the field, still reads: no maps).
#[test]
fn tensor_maps_travel_in_the_manifest() {
    let p = parse_program(PIPELINE).unwrap();
    let kernel = tessera_ir::plan::GpuKernel {
        name: p.name.clone(),
        launch: tessera_ir::loops::gpu::launch(&p).unwrap(),
        params: p.params().count(),
        tensor_maps: tessera_ir::loops::tma::tensor_maps(&p.body)
            .into_iter()
            .map(|map| tessera_ir::plan::GpuTensorMap { param: 0, map })
            .collect(),
    };
    assert_eq!(kernel.tensor_maps.len(), 2);
    let json = serde_json::to_string(&kernel).unwrap();
    let back: tessera_ir::plan::GpuKernel = serde_json::from_str(&json).unwrap();
    assert_eq!(back, kernel);
    let old = serde_json::to_value(&kernel).unwrap();
    let mut old = old.as_object().unwrap().clone();
    old.remove("tensor_maps");
    let back: tessera_ir::plan::GpuKernel =
        serde_json::from_value(serde_json::Value::Object(old)).unwrap();
    assert!(back.tensor_maps.is_empty());
}

/// The f16 product `m × k × n` as a swizzled warpgroup tiling staged by `staging` (128 × 64
/// × 64 tiles here), verified and run on the interpreter against the plain kernel, and the
/// inputs it ran on.
fn checked_product(shape: [i64; 3], staging: MmaStaging) -> (LoopProgram, Vec<tessera_ir::Tensor>) {
    checked_product_with(shape, |t| GpuMmaTiling { staging, ..t })
}

/// [`checked_product`] on the swizzled warpgroup tiling as `edit` changes it.
fn checked_product_with(
    shape: [i64; 3],
    edit: impl Fn(GpuMmaTiling) -> GpuMmaTiling,
) -> (LoopProgram, Vec<tessera_ir::Tensor>) {
    checked_batched_product(&[], shape, edit)
}

/// [`checked_product_with`] of a batch of products (`batch`: its leading dimensions).
fn checked_batched_product(
    batch: &[i64],
    [m, k, n]: [i64; 3],
    edit: impl Fn(GpuMmaTiling) -> GpuMmaTiling,
) -> (LoopProgram, Vec<tessera_ir::Tensor>) {
    let dims = |rows: i64, cols: i64| {
        let mut d: Vec<String> = batch.iter().map(i64::to_string).collect();
        d.extend([rows.to_string(), cols.to_string()]);
        d.join(",")
    };
    let (a, b, y) = (dims(m, k), dims(k, n), dims(m, n));
    let text = format!(
        "graph \"g\" opset 21 {{\n input a: f16[{a}]\n input b: f16[{b}]\n node \"mm\" MatMul(a, b) -> (y: f16[{y}])\n output y\n}}"
    );
    let g = tessera_ir::text::parse_graph(&text).unwrap();
    let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &tessera::Target::host()).unwrap();
    let kernel = &kernels[0];
    let spec = kernel.product.as_ref().unwrap();
    let t = edit(GpuMmaTiling::swizzled_warpgroup_for(spec));
    assert_eq!(t.bk, 64);
    let tiled = tile_mma(&kernel.program, spec, &t).unwrap();
    verify(&tiled).unwrap();
    let inputs = oracle::program_inputs(&kernel.program, 5);
    let want = oracle::interpret(&kernel.program, &inputs).unwrap();
    let got = oracle::interpret(&tiled, &inputs).unwrap();
    let tol = tessera_ir::compare::Tolerance::Close {
        rtol: 1.0 / 1024.0,
        atol: 1e-3,
    };
    tessera_ir::compare::compare(&got[0], &want[0], tol).unwrap();
    (tiled, inputs)
}

/// The interpreter is the TMA schedule's safety net: the tensor-core product staged by TMA
/// (four `k` tiles through three buffers) runs, and the same program with its waits removed,
/// or waiting on the other parity, is refused — not silently wrong.
#[test]
fn the_interpreter_refuses_a_tma_pipeline_that_does_not_wait() {
    let (tiled, inputs) = checked_product([64, 256, 64], MmaStaging::Tma { stages: 3 });
    for (change, why) in [
        (
            &(|_: &IExpr| None) as &dyn Fn(&IExpr) -> Option<IExpr>,
            "has not waited",
        ),
        (
            &|p: &IExpr| Some(IExpr::c(1).minus(p.clone())),
            "the GPU would hang",
        ),
    ] {
        let mut broken = tiled.clone();
        edit_mbarriers(&mut broken.body, &|m| match &mut m.op {
            MbarrierOp::Wait { parity } => match change(parity) {
                Some(p) => {
                    *parity = p;
                    true
                }
                None => false,
            },
            _ => true,
        });
        let e = oracle::interpret(&broken, &inputs).unwrap_err().to_string();
        assert!(e.contains(why), "expected `{why}` in `{e}`");
    }
}

/// The warp-specialised product (`MmaStaging::WarpSpecialized`): a producer warpgroup's
/// thread copies the four 64-deep tiles of a 128 × 224 × 64 product (a `k` tail) through two
/// buffers while two consumer warpgroups multiply them. The
/// interpreter runs its threads by turns and agrees with the plain kernel; the CPU refuses
/// it with a typed error (it runs a thread loop's threads one after another); broken — the
/// producer not waiting for released buffers, the consumers not releasing them, or releasing
/// them while their steps are in flight, waiting on the wrong parity — it is refused; its sm_90a PTX passes ptxas without spills or
/// serialised steps.
#[test]
fn a_warp_specialised_product_takes_turns_and_is_refused_when_broken() {
    let (tiled, inputs) = checked_product(
        [128, 224, 64],
        MmaStaging::WarpSpecialized {
            stages: 2,
            persistent_blocks: 0,
            consumers: Consumers::Cooperative,
        },
    );
    assert!(tessera_ir::loops::tma::hands_over(&tiled.body));
    let e = oracle::run_native(&tiled, &inputs).unwrap_err();
    assert!(e.contains("warp-specialised"), "{e}");

    // The producer's waits on the "empty" mbarriers are those after the buffers' full ones.
    fn empty(m: &Mbarrier) -> bool {
        // Two buffers: mbarriers 2 and 3.
        !matches!(m.at.evaluate(&|_| Ok::<i64, ()>(0), &|| ()), Ok(b) if b < 2)
    }
    type Edit<'a> = dyn Fn(&mut Mbarrier) -> bool + 'a;
    let broken: [(&str, &Edit, &[&str]); 4] = [
        (
            "no waits for released buffers",
            &|m| !(matches!(m.op, MbarrierOp::Wait { .. }) && empty(m)),
            &["overwrites", "the GPU would hang"],
        ),
        (
            "no releases",
            &|m| m.op != MbarrierOp::Arrive,
            &["the GPU would hang"],
        ),
        (
            "each tile released right after its own steps, still in flight",
            &|m| {
                if m.op == MbarrierOp::Arrive {
                    m.at = IExpr::c(2).plus(IExpr::var("mkc").modulo(2));
                }
                true
            },
            &["overwrites", "the GPU would hang"],
        ),
        (
            "waits for tiles on the other parity",
            &|m| {
                let tile = !empty(m);
                if let MbarrierOp::Wait { parity } = &mut m.op
                    && tile
                {
                    *parity = IExpr::c(1).minus(parity.clone());
                }
                true
            },
            // (Parity 1 on a fresh mbarrier passes at once: the tile is read before its
            // copy, which then overwrites what was read.)
            &["the GPU would hang", "overwrites"],
        ),
    ];
    for (what, edit, why) in broken {
        let mut p = tiled.clone();
        edit_mbarriers(&mut p.body, edit);
        assert_refused(&p, &tiled, &inputs, why, what);
    }
    // The consumers' leaders release the previous tile's buffer before this tile's steps
    // — while the previous tile's steps are still in flight (they retire at the end of
    // this tile's run): the producer's next copy overwrites what they still read.
    fn release_first(body: &mut [Stmt]) -> bool {
        body.iter_mut().any(|s| match s {
            Stmt::For(l) if l.var == "mkc" => {
                let release = l.body.pop().expect("the release");
                assert!(matches!(release, Stmt::If { .. }), "{release:?}");
                l.body.insert(1, release);
                true
            }
            s => s.nested_mut().is_some_and(|b| release_first(b)),
        })
    }
    let mut early = tiled.clone();
    assert!(release_first(&mut early.body));
    assert_refused(&early, &tiled, &inputs, &["overwrites"], "early releases");

    if ptxas_or_skip("a_warp_specialised_product_takes_turns (ptxas part)").is_none() {
        return;
    }
    let module = sm90_ptx(&tiled);
    let ptx = &module.text;
    for instruction in [
        "mbarrier.arrive.shared::cta.b64",
        "mbarrier.arrive.expect_tx",
        "cp.async.bulk.tensor.2d",
        "wgmma.mma_async.sync.aligned.m64n64k16",
        "wgmma.wait_group.sync.aligned 0;",
        // The producer's registers to the consumers: 384 threads start at 168.
        "setmaxnreg.dec.sync.aligned.u32 40;",
        "setmaxnreg.inc.sync.aligned.u32 232;",
        ".maxntid 384, 1, 1",
        ".minnctapersm 1",
    ] {
        assert!(ptx.contains(instruction), "no `{instruction}`");
    }
    assert_eq!(
        module.kernels[0].launch.block[0], 384,
        "two consumer warpgroups and one producer"
    );
    assert_ptxas_keeps_the_steps_async(ptx);
}

/// The warp-specialised product on a persistent grid (`persistent_blocks`): two blocks
/// compute the three 128 × 64 output tiles of a 320 × 224 × 64 product (an edge tile; block
/// 0 two of them, block 1 one, its second round skipped), one pipeline of three buffers per
/// block whose `k` tiles (four per output tile) and phases run on across its output tiles. The interpreter agrees
/// with the plain kernel; broken — the producer starting each output tile's phases afresh,
/// the consumers releasing no buffer of a finished tile — it is refused. Its sm_90a PTX
/// launches two blocks and waits for every step before a tile's sums are stored, and ptxas
/// accepts it with no spills and no serialised steps.
#[test]
fn a_persistent_warp_specialised_product_runs_its_pipeline_across_tiles() {
    let staging = MmaStaging::WarpSpecialized {
        stages: 3,
        persistent_blocks: 2,
        consumers: Consumers::Cooperative,
    };
    let (tiled, inputs) = checked_product([320, 224, 64], staging);
    let Stmt::For(grid) = &tiled.body[0] else {
        panic!("no block loop: {:?}", tiled.body[0]);
    };
    assert_eq!(grid.extent, 2, "two persistent blocks");
    // Broken: a round's `k` tiles numbered from 0 again — the producer's phases (and
    // buffers) out of step with the consumers'.
    let mut fresh_phases = tiled.clone();
    edit_stmts(&mut fresh_phases.body, &|s| match s {
        Stmt::For(l) if l.var == "mkp" => {
            *s = s.subst("mrp", &IExpr::c(0));
            true
        }
        _ => false,
    });
    assert_refused(
        &fresh_phases,
        &tiled,
        &inputs,
        &["the GPU would hang", "overwrites", "has not waited"],
        "fresh phases per tile",
    );
    // Broken: no release of a tile's last buffer at the next tile's first step (`n > 0`
    // became `k tile > 0`): the producer waits for it forever.
    let mut unreleased = tiled.clone();
    edit_stmts(&mut unreleased.body, &|s| match s {
        Stmt::If { cond, then } if matches!(then.as_slice(), [Stmt::Mbarrier(m)] if m.op == MbarrierOp::Arrive) =>
        {
            let first_tile_only = tessera_ir::loops::VExpr::ICmp(
                tessera_ir::loops::CmpOp::Gt,
                IExpr::var("mkc"),
                IExpr::c(0),
            );
            *cond = tessera_ir::loops::VExpr::bin(
                tessera_ir::loops::BinOp::And,
                cond.clone(),
                first_tile_only,
            );
            true
        }
        _ => false,
    });
    assert_refused(
        &unreleased,
        &tiled,
        &inputs,
        &["the GPU would hang"],
        "no release across tiles",
    );

    if ptxas_or_skip("a_persistent_warp_specialised_product (ptxas part)").is_none() {
        return;
    }
    let module = sm90_ptx(&tiled);
    assert_eq!(module.kernels[0].launch.grid[0], 2);
    assert_eq!(module.kernels[0].launch.block[0], 384);
    let ptx = &module.text;
    // Every step waited for before the sums are stored (and in the `k` loop, all but one).
    for instruction in [
        "wgmma.wait_group.sync.aligned 1;",
        "cp.async.bulk.tensor.2d",
    ] {
        assert!(ptx.contains(instruction), "no `{instruction}`");
    }
    let first_store = ptx.find("st.global").expect("stores of the sums");
    let last_step = ptx[..first_store]
        .rfind("wgmma.mma_async")
        .expect("steps before the stores");
    assert!(
        ptx[last_step..first_store].contains("wgmma.wait_group.sync.aligned 0;"),
        "the sums are stored before the steps are waited for"
    );
    assert_ptxas_keeps_the_steps_async(ptx);
}

/// Ping-pong consumers (`Consumers::PingPong`): two teams of one warpgroup take the five
/// 64 × 64 output tiles of a 320 × 224 × 64 product in turns on a persistent grid of two
/// blocks (block 0: rounds 0 and 2 by team 0, round 1 by team 1; block 1: two rounds, its
/// third skipped), four `k` tiles per output tile through three buffers. The interpreter
/// agrees with the plain kernel; broken — no turns (a team's wait sees a phase of the
/// right parity two phases early, or a fresh mbarrier's), a round's last tile released
/// while its steps are in flight, or never — it is refused. Its sm_90a PTX launches 2
/// blocks of 384 threads, waits for the last step before the turn goes over, and passes
/// ptxas with no spills and no serialised steps.
#[test]
fn ping_pong_consumers_take_the_tiles_in_turns() {
    let (tiled, inputs) = checked_product_with([320, 224, 64], |t| GpuMmaTiling {
        bm: 64,
        warps_m: 1,
        staging: MmaStaging::WarpSpecialized {
            stages: 3,
            persistent_blocks: 2,
            consumers: Consumers::PingPong,
        },
        ..t
    });
    // Three buffers: mbarriers 6 and 7 are the turns.
    let turns =
        |m: &Mbarrier| matches!(m.at.evaluate(&|_| Ok::<i64, ()>(0), &|| ()), Ok(b) if b >= 6);
    type Edit<'a> = dyn Fn(&mut Mbarrier) -> bool + 'a;
    let broken: [(&str, &Edit, &[&str]); 2] = [
        (
            "no turns",
            &|m| !(matches!(m.op, MbarrierOp::Wait { .. }) && turns(m)),
            &["has not waited", "overwrites", "the GPU would hang"],
        ),
        (
            "no turns handed over",
            &|m| !(m.op == MbarrierOp::Arrive && turns(m)),
            &["the GPU would hang"],
        ),
    ];
    for (what, edit, why) in broken {
        let mut p = tiled.clone();
        edit_mbarriers(&mut p.body, edit);
        assert_refused(&p, &tiled, &inputs, why, what);
    }
    // The round's last steps left in flight (`retires(2)`) when its tiles are released.
    let mut in_flight = tiled.clone();
    edit_stmts(&mut in_flight.body, &|s| match s {
        Stmt::Mma(m) if m.retires == 1 => {
            m.retires = 2;
            true
        }
        _ => false,
    });
    assert_refused(
        &in_flight,
        &tiled,
        &inputs,
        &["overwrites", "the GPU would hang"],
        "last steps in flight",
    );

    if ptxas_or_skip("ping_pong_consumers (ptxas part)").is_none() {
        return;
    }
    let module = sm90_ptx(&tiled);
    assert_eq!(module.kernels[0].launch.grid[0], 2);
    assert_eq!(
        module.kernels[0].launch.block[0], 384,
        "two teams of one consumer warpgroup and a producer"
    );
    assert_ptxas_keeps_the_steps_async(&module.text);
}

/// Applies `edit` to every statement of `body`, outermost first; where it says it changed
/// one (`true`), not to the statements nested in it.
fn edit_stmts(body: &mut [Stmt], edit: &dyn Fn(&mut Stmt) -> bool) {
    for s in body {
        if !edit(s)
            && let Some(nested) = s.nested_mut()
        {
            edit_stmts(nested, edit);
        }
    }
}

/// `broken`, a change of `tiled`, is refused by the interpreter for one of `why`.
fn assert_refused(
    broken: &LoopProgram,
    tiled: &LoopProgram,
    inputs: &[tessera_ir::Tensor],
    why: &[&str],
    what: &str,
) {
    assert_ne!(broken, tiled, "{what}: nothing changed");
    let e = oracle::interpret(broken, inputs).unwrap_err().to_string();
    assert!(why.iter().any(|w| e.contains(w)), "{what}: {e}");
}

/// `tiled`'s sm_90a PTX, its arguments 16-byte aligned.
fn sm90_ptx(tiled: &LoopProgram) -> tessera_codegen::ptx::PtxModule {
    let aligned = tessera_codegen::ptx::PtxConfig {
        param_align: [(tiled.name.clone(), vec![16; tiled.params().count()])].into(),
    };
    tessera_codegen::ptx::compile_ptx_with(&[tiled], 90, &aligned).unwrap()
}

/// `ptx` (sm_90a) passes ptxas with no spills and no serialised warpgroup steps; a kernel
/// that reallocates registers starts with what `regs::entry_registers` says for its
/// `.maxntid` (the claims' budget: 168 at 384 threads).
fn assert_ptxas_keeps_the_steps_async(ptx: &str) {
    let report = tessera_codegen::ptx::ptxas_report(ptx, 90).unwrap();
    if ptx.contains("setmaxnreg") {
        assert!(!report.ignores_setmaxnreg(), "{}", report.text);
        let threads: i64 = ptx
            .split(".maxntid ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|x| x.trim().parse().ok())
            .expect("a .maxntid");
        assert_eq!(
            report.max_registers() as i64,
            tessera_ir::loops::regs::entry_registers(threads),
            "registers at entry of a {threads}-thread kernel\n{}",
            report.text
        );
    }
    assert_eq!(report.spill_bytes(), 0, "spills\n{}", report.text);
    assert!(
        !report.serialises_warpgroup_steps(),
        "ptxas serialised the warpgroup steps\n{}",
        report.text
    );
}

/// How many statements of `body` (at any depth) satisfy `f`.
fn count(body: &[Stmt], f: &dyn Fn(&Stmt) -> bool) -> usize {
    let mut n = 0;
    tessera_ir::loops::each_stmt(body, &mut |s| n += f(s) as usize);
    n
}

mod epilogue;
