//! The tensor-core statements themselves, hand-written: a warp's `mma m16n8k16` and a
//! warpgroup's `mma m64nNk16` on core-matrix and on 128-byte-swizzled tiles each multiply
//! their tiles (checked against a matrix product computed here, on the interpreter and as
//! CPU code; their PTX assembled by `ptxas`), the verifier's rules for where a warp
//! (warpgroup) may run one and what its operands may be, and a warpgroup step's tiles stay
//! unwritten while it is in flight. (The schedule built of them: `tensor_cores.rs`.)

use tessera::fuzzgen::oracle;
use tessera_ir::{DType, Tensor};
use tessera_tests::*;

/// One warp, one `mma`: `C = A·B` for a 16×16 `A` and a 16×8 `B` staged in shared memory
/// (`B` transposed, as the schedule stages it), each thread storing its four sums.
const ONE_TILE: &str = "kernel k(in a: f16[256], in b: f16[128], out c: f32[128], shared as: f16[256], shared bs: f16[128], local acc: f32[4]) {
  for g in 0..1 block(x) {
    for t in 0..32 thread(x) {
      for q in 0..8 {
        as[(q*32 + t)] = a[(q*32 + t)]
      }
      for p in 0..4 {
        bs[(((p*32 + t) % 8)*16 + ((p*32 + t) // 8))] = b[(p*32 + t)]
      }
      for e in 0..4 {
        acc[e] = 0.0:f32
      }
    }
    for u in 0..32 thread(x) {
      mma m16n8k16 acc[0] += as[0; 16, 1] * bs[0; 1, 16] lane((u % 32))
    }
    for v in 0..32 thread(x) {
      c[(((v % 32) // 4)*8 + ((v % 32) % 4)*2)] = acc[0]
      c[(((v % 32) // 4)*8 + (((v % 32) % 4)*2 + 1))] = acc[1]
      c[((((v % 32) // 4) + 8)*8 + ((v % 32) % 4)*2)] = acc[2]
      c[((((v % 32) // 4) + 8)*8 + (((v % 32) % 4)*2 + 1))] = acc[3]
    }
  }
}
";

/// Parses and verifies `text`, a kernel `c = a · b` for an `m × 16` row-major `a` and a
/// `16 × n` row-major `b` (a product of one tensor-core step), checks the print/parse round
/// trip, and runs it on the interpreter and as CPU code against the product computed here.
fn one_step_multiplies(text: &str, m: usize, n: usize) -> tessera_ir::loops::LoopProgram {
    let p = tessera_ir::loops::parse::parse_program(text).expect("parses");
    tessera_ir::loops::verify::verify(&p).expect("verifies");
    assert_eq!(
        tessera_ir::loops::parse::parse_program(&p.to_string()).unwrap(),
        p,
        "print/parse round trip"
    );
    let inputs = oracle::program_inputs(&p, 7);
    let (a, b) = (inputs[0].to_f64_vec(), inputs[1].to_f64_vec());
    let want: Vec<f64> = (0..m * n)
        .map(|rc| {
            (0..16)
                .map(|k| a[rc / n * 16 + k] * b[k * n + rc % n])
                .sum()
        })
        .collect();
    let want = Tensor::from_f64(DType::F32, vec![m * n], &want);
    for (how, got) in [
        ("interpreted", oracle::interpret(&p, &inputs).unwrap()),
        ("CPU code", oracle::run_native(&p, &inputs).unwrap()),
    ] {
        compare(&got[0], &want, REDUCTION).unwrap_or_else(|e| panic!("{how}: {e}"));
    }
    p
}

#[test]
fn an_mma_multiplies_its_tiles() {
    let p = one_step_multiplies(ONE_TILE, 16, 8);
    if ptxas_or_skip("an_mma_multiplies_its_tiles (ptxas)").is_some() {
        let module = tessera_codegen::ptx::compile_ptx(&[&p], 80).unwrap();
        assert!(
            module.text.contains("mma.sync.aligned.m16n8k16"),
            "{}",
            module.text
        );
        tessera_codegen::ptx::check_with_ptxas(&module.text, 80).unwrap();
    }
}

#[test]
fn the_verifier_keeps_mma_where_a_whole_warp_runs_it() {
    let bad = [
        // the lane is not the thread's place in its warp
        ("lane((u % 32))", "lane((u % 16))", "is not `u % 32`"),
        // each thread would name another tile
        (
            "as[0; 16, 1]",
            "as[(u % 2); 16, 1]",
            "differs between the threads of a warp",
        ),
        // a thread loop that is not whole warps
        (
            "for u in 0..32 thread(x) {\n      mma",
            "for u in 0..48 thread(x) {\n      mma",
            "a multiple of 32",
        ),
        // under a guard: part of a warp could skip it
        (
            "      mma m16n8k16 acc[0] += as[0; 16, 1] * bs[0; 1, 16] lane((u % 32))\n",
            "      if (u < 16) {\n        mma m16n8k16 acc[0] += as[0; 16, 1] * bs[0; 1, 16] lane((u % 32))\n      }\n",
            "under a guard",
        ),
        // operands in global memory
        ("as[0; 16, 1]", "a[0; 16, 1]", "shared f16 or bf16"),
        // an accumulator that is not the thread's registers
        (
            "local acc: f32[4]",
            "shared acc: f32[4]",
            "local f32 buffer",
        ),
    ];
    refused_mutations(ONE_TILE, &bad);
}

/// Each `(from, to, why)`: `program` with `from` replaced by `to` parses but does not
/// verify, for a reason that says `why`.
fn refused_mutations(program: &str, mutations: &[(&str, &str, &str)]) {
    for &(from, to, why) in mutations {
        let text = program.replacen(from, to, 1);
        assert_ne!(text, program, "{from} not found");
        let p = tessera_ir::loops::parse::parse_program(&text)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let e = tessera_ir::loops::verify::verify(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "expected `{why}` in: {e}");
    }
}

/// One warpgroup, one `wgmma` step: `C = A·B` for a 64×16 `A` and a 16×16 `B` staged in
/// shared memory as core matrices (8×8 blocks of 128 contiguous bytes: `A` K-major, `B`
/// N-major, the next block along a row 64 elements on, along a column 128), each thread
/// storing its eight sums where the `m64nNk16` accumulator layout puts them.
const ONE_WARPGROUP_TILE: &str = "kernel k(in a: f16[1024], in b: f16[256], out c: f32[1024], shared as: f16[1024], shared bs: f16[256], local acc: f32[8]) {
  for g in 0..1 block(x) {
    for t in 0..128 thread(x) {
      for q in 0..8 {
        as[((((((q*128 + t) // 16) % 8)*8 + (((q*128 + t) % 16) % 8)) + (((q*128 + t) // 16) // 8)*128) + (((q*128 + t) % 16) // 8)*64)] = a[(q*128 + t)]
      }
      for p in 0..2 {
        bs[((((((p*128 + t) // 16) % 8)*8 + (((p*128 + t) % 16) % 8)) + (((p*128 + t) // 16) // 8)*128) + (((p*128 + t) % 16) // 8)*64)] = b[(p*128 + t)]
      }
      for e in 0..8 {
        acc[e] = 0.0:f32
      }
    }
    for u in 0..128 thread(x) {
      mma m64n16k16 acc[0] += as[0; 8, 1; 128, 64] * bs[0; 8, 1; 128, 64] lane((u % 128))
    }
    for v in 0..128 thread(x) {
      c[((((v // 32)*16 + ((v % 32) // 4)) + 0)*16 + (((v % 32) % 4)*2 + 0))] = acc[0]
      c[((((v // 32)*16 + ((v % 32) // 4)) + 0)*16 + (((v % 32) % 4)*2 + 1))] = acc[1]
      c[((((v // 32)*16 + ((v % 32) // 4)) + 8)*16 + (((v % 32) % 4)*2 + 0))] = acc[2]
      c[((((v // 32)*16 + ((v % 32) // 4)) + 8)*16 + (((v % 32) % 4)*2 + 1))] = acc[3]
      c[((((v // 32)*16 + ((v % 32) // 4)) + 0)*16 + (((v % 32) % 4)*2 + 8))] = acc[4]
      c[((((v // 32)*16 + ((v % 32) // 4)) + 0)*16 + (((v % 32) % 4)*2 + 9))] = acc[5]
      c[((((v // 32)*16 + ((v % 32) // 4)) + 8)*16 + (((v % 32) % 4)*2 + 8))] = acc[6]
      c[((((v // 32)*16 + ((v % 32) // 4)) + 8)*16 + (((v % 32) % 4)*2 + 9))] = acc[7]
    }
  }
}
";

#[test]
fn a_warpgroup_mma_multiplies_its_core_matrix_tiles() {
    let p = one_step_multiplies(ONE_WARPGROUP_TILE, 64, 16);
    // Hopper only: sm_90a PTX; any other GPU is refused with a typed error.
    let e = tessera_codegen::ptx::compile_ptx(&[&p], 80)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wgmma") && e.contains("sm_90a"), "{e}");
    if ptxas_or_skip("a_warpgroup_mma_multiplies_its_core_matrix_tiles (ptxas)").is_some() {
        let module = tessera_codegen::ptx::compile_ptx(&[&p], 90).unwrap();
        let ptx = &module.text;
        assert_eq!(
            tessera_codegen::ptx::module_arch(ptx).as_deref(),
            Some("sm_90a")
        );
        for instruction in [
            "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16",
            "wgmma.fence.sync.aligned",
            "wgmma.commit_group.sync.aligned",
            "wgmma.wait_group.sync.aligned 0",
            "fence.proxy.async.shared::cta",
        ] {
            assert!(ptx.contains(instruction), "no `{instruction}`:\n{ptx}");
        }
        tessera_codegen::ptx::check_with_ptxas(ptx, 90).unwrap();
    }
}

/// One warpgroup step on 128-byte-swizzled tiles: a 64×16 `A` (K-major: rows of 64
/// elements, 16 of them used) and a 16×64 `B` (N-major: one atom), each element stored at
/// its row's chunk XOR the row within its 8-row group — as TMA and the schedule's copies
/// write them — and `C = A·B` (64×64) out of the thread's 32 sums.
fn one_swizzled_warpgroup_tile() -> String {
    let mut c_stores = String::new();
    for e in 0..32 {
        let (row, col) = (8 * ((e % 4) / 2), 8 * (e / 4) + e % 2);
        c_stores += &format!(
            "      c[((((v // 32)*16 + ((v % 32) // 4)) + {row})*64 + (((v % 32) % 4)*2 + {col}))] = acc[{e}]\n"
        );
    }
    format!(
        "kernel k(in a: f16[1024], in b: f16[1024], out c: f32[4096], shared as: f16[4096], shared bs: f16[1024], local acc: f32[32]) {{
  for g in 0..1 block(x) {{
    for t in 0..128 thread(x) {{
      for q in 0..8 {{
        as[xor((((q*128 + t) // 16)*64 + ((q*128 + t) % 16)), (((q*128 + t) // 16) % 8)*8)] = a[(q*128 + t)]
        bs[xor((q*128 + t), (((q*128 + t) // 64) % 8)*8)] = b[(q*128 + t)]
      }}
      for e in 0..32 {{
        acc[e] = 0.0:f32
      }}
    }}
    for u in 0..128 thread(x) {{
      mma m64n64k16 acc[0] += as[0; 64, 1; sw128 4096] * bs[0; 64, 1; sw128 1024] lane((u % 128))
    }}
    for v in 0..128 thread(x) {{
{c_stores}    }}
  }}
}}
"
    )
}

#[test]
fn a_warpgroup_mma_multiplies_its_swizzled_tiles() {
    let text = one_swizzled_warpgroup_tile();
    let p = one_step_multiplies(&text, 64, 64);
    if ptxas_or_skip("a_warpgroup_mma_multiplies_its_swizzled_tiles (ptxas)").is_some() {
        let module = tessera_codegen::ptx::compile_ptx(&[&p], 90).unwrap();
        let ptx = &module.text;
        assert!(ptx.contains("wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16"));
        // The swizzle is one exclusive or per index; both tiles start 1024-byte aligned.
        assert!(ptx.contains("xor.b"), "no xor:\n{ptx}");
        assert!(ptx.contains(".shared .align 1024 .b8"), "alignment:\n{ptx}");
        tessera_codegen::ptx::check_with_ptxas(ptx, 90).unwrap();
    }
    let bad = [
        // `A` starting 8 columns into its 128-byte row: not a step's 16
        (
            "as[0; 64, 1; sw128 4096]",
            "as[8; 64, 1; sw128 4096]",
            "swizzled",
        ),
        // `B` starting in the middle of its 8-row group
        (
            "bs[0; 64, 1; sw128 1024]",
            "bs[64; 64, 1; sw128 1024]",
            "swizzled",
        ),
        // rows that are not 128 bytes
        (
            "as[0; 64, 1; sw128 4096]",
            "as[0; 32, 1; sw128 4096]",
            "swizzled",
        ),
        // atoms that would break the swizzle's 1024-byte period
        (
            "bs[0; 64, 1; sw128 1024]",
            "bs[0; 64, 1; sw128 1000]",
            "swizzled",
        ),
    ];
    refused_mutations(&text, &bad);
}

#[test]
fn the_verifier_keeps_warpgroup_mma_to_whole_warpgroups_and_core_matrices() {
    let bad = [
        // a warp's lane, not the warpgroup's
        ("lane((u % 128))", "lane((u % 32))", "is not `u % 128`"),
        // each warp would name another tile
        (
            "as[0; 8, 1; 128, 64]",
            "as[(u // 32)*128; 8, 1; 128, 64]",
            "differs between the threads of a warpgroup",
        ),
        // a thread loop of two warps
        (
            "for u in 0..128 thread(x)",
            "for u in 0..64 thread(x)",
            "a multiple of 128",
        ),
        // a base that is not 16-byte aligned
        (
            "as[0; 8, 1; 128, 64]",
            "as[4; 8, 1; 128, 64]",
            "core matrices",
        ),
        // a plain tile
        ("bs[0; 8, 1; 128, 64]", "bs[0; 16, 1]", "core matrices"),
        // rows of a core matrix that are not 16 contiguous bytes
        (
            "as[0; 8, 1; 128, 64]",
            "as[0; 16, 1; 128, 64]",
            "core matrices",
        ),
        // an N the instruction does not have
        ("mma m64n16k16", "mma m64n12k16", "N = 12"),
        // in flight past the wait_group depth
        (
            "lane((u % 128))",
            "lane((u % 128)) retires(3)",
            "retires(3)",
        ),
    ];
    refused_mutations(ONE_WARPGROUP_TILE, &bad);
}

/// A warpgroup step in flight (`retires(2)`) may read its tiles until the second barrier
/// after it: a write to them before is refused by the interpreter, one after is fine; a
/// warp's step is synchronous.
#[test]
fn warpgroup_mma_tiles_stay_unwritten_while_in_flight() {
    let step = "lane((u % 128))\n    }\n";
    let overwrite = "    for w in 0..128 thread(x) {\n      as[w] = 0.0:f16\n    }\n";
    let in_flight = ONE_WARPGROUP_TILE.replacen(
        step,
        &format!("lane((u % 128)) retires(2)\n    }}\n{overwrite}"),
        1,
    );
    assert_ne!(in_flight, ONE_WARPGROUP_TILE);
    let p = tessera_ir::loops::parse::parse_program(&in_flight).unwrap();
    tessera_ir::loops::verify::verify(&p).unwrap();
    assert_eq!(
        tessera_ir::loops::parse::parse_program(&p.to_string()).unwrap(),
        p
    );
    let inputs = oracle::program_inputs(&p, 3);
    let e = oracle::interpret(&p, &inputs).unwrap_err().to_string();
    assert!(e.contains("warpgroup mma reading it is in flight"), "{e}");
    // One more barrier between them: it has retired.
    let later = in_flight.replacen(
        overwrite,
        &format!("    for z in 0..128 thread(x) {{\n      c[z] = 1.0:f32\n    }}\n{overwrite}"),
        1,
    );
    let p = tessera_ir::loops::parse::parse_program(&later).unwrap();
    oracle::interpret(&p, &inputs).unwrap();
    // Asynchronous only on warpgroups.
    let warp = ONE_TILE.replacen("lane((u % 32))", "lane((u % 32)) retires(2)", 1);
    let p = tessera_ir::loops::parse::parse_program(&warp).unwrap();
    let e = tessera_ir::loops::verify::verify(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("synchronous"), "{e}");
}
