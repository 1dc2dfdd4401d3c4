//! Tensor copies (TMA) and mbarriers, hand-written: a pipeline of two boxes per phase over
//! two mbarriers lands the boxes of a batched matrix (swizzled and plain, hanging over its
//! edges) where the interpreter, the CPU code and a copy computed here agree; its PTX has
//! one `cp.async.bulk.tensor` per copy and `ptxas` accepts it for sm_90; sm_80 is refused
//! with a typed error; the TMA-staged tensor-core product runs, and refused when its waits
//! are removed or wait on the wrong parity. (The schedule over all products: `tensor_cores.rs`.)

use tessera::fuzzgen::oracle;
use tessera_ir::loops::parse::parse_program;
use tessera_ir::loops::verify::verify;
use tessera_tests::*;

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

/// The interpreter is the TMA schedule's safety net: the tensor-core product staged by TMA
/// (four `k` tiles through three buffers) runs, and the same program with its waits removed,
/// or waiting on the other parity, is refused — not silently wrong.
#[test]
fn the_interpreter_refuses_a_tma_pipeline_that_does_not_wait() {
    use tessera_ir::loops::tma::MbarrierOp;
    use tessera_ir::loops::{IExpr, Stmt};
    use tessera_passes::gpu_mma::{GpuMmaTiling, MmaStaging, tile_mma};
    let text = "graph \"g\" opset 21 {\n input a: f16[64,256]\n input b: f16[256,64]\n node \"mm\" MatMul(a, b) -> (y: f16[64,64])\n output y\n}";
    let g = tessera_ir::text::parse_graph(text).unwrap();
    let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &tessera::Target::host()).unwrap();
    let k = &kernels[0];
    let spec = k.product.as_ref().unwrap();
    let t = GpuMmaTiling {
        staging: MmaStaging::Tma { stages: 3 },
        ..GpuMmaTiling::swizzled_warpgroup_for(spec)
    };
    let tiled = tile_mma(&k.program, spec, &t).unwrap();
    let inputs = oracle::program_inputs(&k.program, 5);
    let want = oracle::interpret(&k.program, &inputs).unwrap();
    let got = oracle::interpret(&tiled, &inputs).unwrap();
    let tol = tessera_ir::compare::Tolerance::Close {
        rtol: 1.0 / 1024.0,
        atol: 1e-3,
    };
    tessera_ir::compare::compare(&got[0], &want[0], tol).unwrap();
    /// `body` with every mbarrier wait changed by `change` (`None`: removed).
    fn waits(body: &mut Vec<Stmt>, change: &dyn Fn(&IExpr) -> Option<IExpr>) {
        body.retain_mut(|s| match s {
            Stmt::Mbarrier(m) => match &mut m.op {
                MbarrierOp::Wait { parity } => match change(parity) {
                    Some(p) => {
                        *parity = p;
                        true
                    }
                    None => false,
                },
                _ => true,
            },
            s => {
                if let Some(nested) = s.nested_mut() {
                    waits(nested, change);
                }
                true
            }
        });
    }
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
        waits(&mut broken.body, change);
        let e = oracle::interpret(&broken, &inputs).unwrap_err().to_string();
        assert!(e.contains(why), "expected `{why}` in `{e}`");
    }
}
