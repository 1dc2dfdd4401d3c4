//! The tensor-core product schedule (`mma.m16n8k16`, f16 / bf16 elements, f32 sums) without a
//! GPU: every half-precision product kernel of a set of graphs (row, column and `k` tails,
//! batches, a transposed Gemm with bias, fused epilogues, a convolution as implicit GEMM) is
//! rebuilt with the default tiling and random valid ones, run on the loop interpreter (which
//! checks shared memory for races) and as CPU code of the GPU program on fresh random
//! inputs with outputs poisoned, and compared with the plain kernel; its PTX, which must hold
//! the `mma.sync` instructions and load the fragments by `ldmatrix`, is assembled by `ptxas`
//! for sm_80 and sm_90 — and the warpgroup tilings' (`wgmma`, core-matrix or swizzled tiles,
//! dynamic shared memory beyond 48 KB) for sm_90a. The `mma` statement's own meaning:
//! `mma_steps.rs`.

use tessera::fuzzgen::oracle;
use tessera_ir::compare::Tolerance;
use tessera_ir::loops::Stmt;
use tessera_ir::{DType, Rng};
use tessera_passes::gpu_mma::{
    Consumers, GpuMmaTiling, MmaEngine, MmaEpilogue, MmaLayout, MmaStaging, tile_mma, worth_mma,
};
use tessera_tests::*;

/// Graphs in `{T}`, instantiated in f16 and bf16.
const GRAPHS: [(&str, &str); 7] = [
    (
        "matmul with row, column and k tails",
        "graph \"g\" opset 21 {\n input a: {T}[61,100]\n input b: {T}[100,70]\n node \"mm\" MatMul(a, b) -> (y: {T}[61,70])\n output y\n}",
    ),
    (
        "matmul whose tiles divide it",
        "graph \"g\" opset 21 {\n input a: {T}[64,64]\n input b: {T}[64,128]\n node \"mm\" MatMul(a, b) -> (y: {T}[64,128])\n output y\n}",
    ),
    (
        "batched matmul, broadcast B",
        "graph \"g\" opset 21 {\n input a: {T}[3,20,40]\n input b: {T}[40,24]\n node \"mm\" MatMul(a, b) -> (y: {T}[3,20,24])\n output y\n}",
    ),
    (
        "gemm transposed with alpha, beta and a bias row",
        "graph \"g\" opset 21 {\n input a: {T}[45,20]\n input b: {T}[33,45]\n input c: {T}[33]\n node \"g\" Gemm[alpha=0.7, beta=1.3, transA=1, transB=1](a, b, c) -> (y: {T}[20,33])\n output y\n}",
    ),
    (
        "matmul + bias + tanh epilogue",
        "graph \"g\" opset 21 {\n input x: {T}[2,19,24]\n input w: {T}[24,40]\n input b: {T}[40]\n node \"mm\" MatMul(x, w) -> (m: {T}[2,19,40])\n node \"add\" Add(m, b) -> (a: {T}[2,19,40])\n node \"t\" Tanh(a) -> (y: {T}[2,19,40])\n output y\n}",
    ),
    (
        "matmul with a long k and a k tail (deep pipelines)",
        "graph \"g\" opset 21 {\n input a: {T}[24,300]\n input b: {T}[300,40]\n node \"mm\" MatMul(a, b) -> (y: {T}[24,40])\n output y\n}",
    ),
    (
        "conv 3x3, padded, with bias (implicit GEMM)",
        "graph \"g\" opset 21 {\n input x: {T}[1,8,9,10]\n input w: {T}[24,8,3,3]\n input b: {T}[24]\n node \"c\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w, b) -> (y: {T}[1,24,9,10])\n output y\n}",
    ),
];

/// One unit in the last place of the element dtype, relative: the sums agree in f32 up to
/// their order, and the one rounding to the elements may then land on either side.
fn tolerance(d: DType) -> Tolerance {
    let ulp = match d {
        DType::BF16 => 1.0 / 128.0,
        _ => 1.0 / 1024.0,
    };
    Tolerance::Close {
        rtol: ulp,
        atol: 1e-3,
    }
}

/// How many statements of `body`, at any depth, `pick` picks.
fn count(body: &[Stmt], pick: &dyn Fn(&Stmt) -> bool) -> usize {
    body.iter()
        .map(|s| {
            pick(s) as usize
                + match s {
                    Stmt::For(l) => count(&l.body, pick),
                    Stmt::If { then, .. } => count(then, pick),
                    Stmt::Reduce(r) => count(&r.body, pick),
                    _ => 0,
                }
        })
        .sum()
}

fn count_mma(body: &[Stmt]) -> usize {
    count(body, &|s| matches!(s, Stmt::Mma(_)))
}

fn count_async_copies(body: &[Stmt]) -> usize {
    count(body, &|s| matches!(s, Stmt::AsyncCopy(_)))
}

fn count_tensor_copies(body: &[Stmt]) -> usize {
    count(body, &|s| matches!(s, Stmt::TensorCopy(_)))
}

#[test]
fn tensor_core_products_match_the_plain_kernels() {
    let ptxas = ptxas_or_skip("tensor_core_products_match_the_plain_kernels (ptxas part)");
    let mut rng = Rng::new(2028);
    let mut checked = 0;
    // Product kernels so far: picks each one's warpgroup staging.
    let mut ordinal = 0;
    for dtype in [DType::F16, DType::BF16] {
        for (name, text) in GRAPHS {
            let text = text.replace("{T}", &dtype.to_string());
            let g = tessera_ir::text::parse_graph(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let kernels =
                tessera::fuzzgen::unscheduled_kernels(&g, &tessera::Target::host()).unwrap();
            let mut products = 0;
            for k in &kernels {
                let Some(spec) = k.product.as_ref().filter(|s| worth_mma(s)) else {
                    continue;
                };
                products += 1;
                let inputs = oracle::program_inputs(&k.program, rng.next_u64());
                let want = oracle::interpret(&k.program, &inputs).unwrap();
                // The default, the default staged each way in turn (two / three / four
                // buffers of async copies, registers), a random tiling.
                let default = GpuMmaTiling::default_for(spec);
                // (TMA stages swizzled warpgroup tiles only: below.)
                let stagings: Vec<MmaStaging> = GpuMmaTiling::STAGINGS
                    .into_iter()
                    .filter(|s| {
                        !matches!(
                            s,
                            MmaStaging::Tma { .. } | MmaStaging::WarpSpecialized { .. }
                        )
                    })
                    .collect();
                let mut staged = GpuMmaTiling {
                    staging: stagings[checked / 3 % stagings.len()],
                    ..default
                };
                if staged.validate(spec).is_err() {
                    // Four buffers of 128 × 32 tiles exceed shared memory: 16 deep.
                    staged.bk = 16;
                }
                let mut tilings = vec![default, staged];
                tilings.push(GpuMmaTiling::sample(spec, &mut rng));
                // Warpgroup steps (wgmma): the default (three buffers), staged through
                // registers every other time; the long `k` by six or eight buffers of 32-deep
                // tiles (a steady loop, the tail's step, the drain).
                let mut warpgroup = GpuMmaTiling::warpgroup_default_for(spec);
                if name == GRAPHS[5].0 {
                    warpgroup.bk = 32;
                    warpgroup.staging = MmaStaging::AsyncCopy {
                        stages: [6, 8][ordinal % 2],
                    };
                } else if ordinal % 2 == 1 {
                    warpgroup.staging = MmaStaging::Registers;
                }
                // The same, its tiles 128-byte swizzled (64-deep `k` tiles, steps of 64
                // columns or more): three or four buffers, or registers.
                let swizzled = GpuMmaTiling {
                    staging: [
                        MmaStaging::AsyncCopy { stages: 3 },
                        MmaStaging::Registers,
                        MmaStaging::AsyncCopy { stages: 4 },
                    ][ordinal % 3],
                    ..GpuMmaTiling::swizzled_warpgroup_for(spec)
                };
                // The same staged by TMA (three or four buffers), where the operands allow
                // (else as async copies).
                let tma = GpuMmaTiling {
                    staging: MmaStaging::Tma {
                        stages: [3, 4][ordinal % 2],
                    },
                    ..swizzled
                };
                ordinal += 1;
                tilings.extend([warpgroup, swizzled, tma]);
                // And by a warp-specialised TMA pipeline (four or six buffers; on a
                // persistent grid of three blocks, its consumers cooperating or taking turns
                // over tiles grouped by two rows, or a block per tile), where TMA applies:
                // the interpreter runs its threads by turns (f16 only: bf16 takes the same
                // path, and an OS thread per GPU thread costs; `tma/` has more).
                let aligned_rows = [GRAPHS[1].0, GRAPHS[2].0, GRAPHS[4].0].contains(&name);
                if aligned_rows && dtype == DType::F16 {
                    tilings.push(GpuMmaTiling {
                        staging: MmaStaging::WarpSpecialized {
                            stages: [4, 6, 3][ordinal % 3],
                            persistent_blocks: [3, 0, 3][ordinal % 3],
                            consumers: [
                                Consumers::Cooperative,
                                Consumers::Cooperative,
                                Consumers::PingPong,
                            ][ordinal % 3],
                        },
                        // (Ping-pong's tiles in groups of two rows of tiles.)
                        group_rows: [1, 1, 2][ordinal % 3],
                        // (Block-per-tile: TMA stores of whole tiles, ping-pong: through
                        // sub-tiles, where the tiles divide.)
                        epilogue: [
                            MmaEpilogue::Direct,
                            MmaEpilogue::TensorStore,
                            MmaEpilogue::TensorStoreSubTiles,
                        ][ordinal % 3],
                        ..swizzled
                    });
                }
                for (n, t) in tilings.into_iter().enumerate() {
                    let what = format!("{name} ({dtype}) with {t:?}");
                    let tiled =
                        tile_mma(&k.program, spec, &t).unwrap_or_else(|e| panic!("{what}: {e}"));
                    // (`tile_mma` verifies in debug builds only: here always.)
                    tessera_ir::loops::verify::verify(&tiled)
                        .unwrap_or_else(|e| panic!("{what} does not verify: {e}"));
                    assert!(count_mma(&tiled.body) > 0, "{what}: no mma statement");
                    // Copied where both operands are runs of inputs: not a transposed operand,
                    // not the implicit GEMM's gathered windows.
                    let plain = ![GRAPHS[3].0, GRAPHS[6].0].contains(&name);
                    let copies = count_async_copies(&tiled.body);
                    let tensor_copies = count_tensor_copies(&tiled.body);
                    // TMA reads operands whose rows start 16-byte aligned (multiples of 8
                    // elements long): the others stage by async copies.
                    let by_tma = matches!(
                        t.staging,
                        MmaStaging::Tma { .. } | MmaStaging::WarpSpecialized { .. }
                    );
                    assert_eq!(
                        tensor_copies > 0,
                        by_tma && aligned_rows,
                        "{what}: tensor copies"
                    );
                    match t.staging {
                        MmaStaging::AsyncCopy { .. } if plain => {
                            assert!(copies > 0, "{what}: staged without async copies")
                        }
                        _ if by_tma && tensor_copies > 0 => {
                            assert_eq!(copies, 0, "{what}: async copies beside TMA")
                        }
                        _ if by_tma => {}
                        _ => assert_eq!(copies, 0, "{what}: async copies"),
                    }
                    let interpreted = oracle::interpret(&tiled, &inputs)
                        .unwrap_or_else(|e| panic!("{what} (interpreted): {e}"));
                    let mut results = vec![("interpreted", interpreted)];
                    let specialized = tessera_ir::loops::tma::hands_over(&tiled.body);
                    assert_eq!(
                        specialized,
                        matches!(t.staging, MmaStaging::WarpSpecialized { .. })
                            && tensor_copies > 0,
                        "{what}: warp-specialised"
                    );
                    match oracle::run_native(&tiled, &inputs) {
                        Ok(native) => {
                            assert!(
                                !specialized,
                                "{what}: the CPU ran a warp-specialised kernel"
                            );
                            results.push(("CPU code", native));
                        }
                        // The CPU runs a thread loop's threads one after another: a typed
                        // refusal, never wrong sums.
                        Err(e) => assert!(
                            specialized && e.to_string().contains("warp-specialised"),
                            "{what} (CPU code): {e}"
                        ),
                    }
                    for (how, got) in results {
                        for (g, w) in got.iter().zip(&want) {
                            compare(g, w, tolerance(dtype))
                                .unwrap_or_else(|e| panic!("{what} ({how}): {e}"));
                        }
                    }
                    if ptxas.is_some() && t.engine == MmaEngine::Warpgroup && n >= 3 {
                        let staged_by = match (copies > 0, tensor_copies > 0) {
                            (true, _) => Copies::Async,
                            (_, true) => Copies::Tensor,
                            _ => Copies::None,
                        };
                        warpgroup_ptx(&what, &tiled, &t, dtype, staged_by, spec.k);
                    }
                    if ptxas.is_some() && n < 2 {
                        let instruction =
                            format!("mma.sync.aligned.m16n8k16.row.col.f32.{dtype}.{dtype}.f32");
                        // Inputs and outputs 16-byte aligned, as the executor allocates them.
                        let aligned = tessera_codegen::ptx::PtxConfig {
                            param_align: [(tiled.name.clone(), vec![16; tiled.params().count()])]
                                .into(),
                        };
                        for sm in [80, 90] {
                            let module =
                                tessera_codegen::ptx::compile_ptx_with(&[&tiled], sm, &aligned)
                                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                            // Runs of 8 elements 16-byte aligned in global and shared memory
                            // (every row, when the matrices' rows are multiples of 8 long)
                            // copy by `cp.async`; the threads wait for them at barriers.
                            if copies > 0 && name == GRAPHS[1].0 {
                                for ptx in ["cp.async.cg.shared.global", "cp.async.wait_group"] {
                                    assert!(module.text.contains(ptx), "{what}: no `{ptx}`");
                                }
                                // A pipeline of `stages` buffers (no more than the `k` tiles
                                // and one) keeps `stages − 2` groups in flight at a barrier.
                                if let MmaStaging::AsyncCopy { stages } = t.staging {
                                    let tiles = (spec.k + t.bk - 1) / t.bk;
                                    let pending = stages.min(tiles + 1) - 2;
                                    let waits: Vec<&str> = module
                                        .text
                                        .lines()
                                        .filter_map(|l| {
                                            l.trim().strip_prefix("cp.async.wait_group")
                                        })
                                        .map(|n| n.trim().trim_end_matches(';'))
                                        .collect();
                                    let want = pending.to_string();
                                    assert!(
                                        !waits.is_empty() && waits.iter().all(|n| *n == want),
                                        "{what}: waits {waits:?}, want {pending}"
                                    );
                                }
                            }
                            if copies == 0 {
                                assert!(!module.text.contains("cp.async"), "{what}: cp.async");
                            }
                            assert!(
                                module.text.contains(&instruction),
                                "{what}: no `{instruction}` in the PTX"
                            );
                            // The schedule's padded tiles keep every fragment row 16 bytes,
                            // 16-byte aligned: fragments load by `ldmatrix`, never by element;
                            // `B`'s two at a time where a warp's columns pair up (16-aligned).
                            let a_load = "ldmatrix.sync.aligned.m8n8.x4.shared.b16";
                            assert!(module.text.contains(a_load), "{what}: no `{a_load}`");
                            let pairs = (t.bn / t.warps_n / 8) % 2 == 0;
                            for (b_load, present) in [
                                ("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", pairs),
                                ("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16", !pairs),
                            ] {
                                assert_eq!(
                                    module.text.contains(b_load),
                                    present,
                                    "{what}: {b_load}"
                                );
                            }
                            assert!(
                                !module.text.contains("ld.shared"),
                                "{what}: fragments loaded element by element"
                            );
                            tessera_codegen::ptx::check_with_ptxas(&module.text, sm)
                                .unwrap_or_else(|e| panic!("{what} sm_{sm}: {e}"));
                        }
                    }
                    checked += 1;
                }
            }
            assert!(
                products > 0,
                "{name} ({dtype}): no half-precision product kernel"
            );
        }
    }
    assert!(checked >= GRAPHS.len() * 2 * 4);
}

/// The PTX of a warpgroup tiling (sm_90a): its `wgmma` steps of the tiling's width, async
/// copies where staged so, no `ldmatrix` (the tensor core reads shared memory itself), and
/// `ptxas` accepts it.
/// How a tiled kernel stages its tiles: by its threads, by async copies, by TMA.
#[derive(Clone, Copy, PartialEq)]
enum Copies {
    None,
    Async,
    Tensor,
}

fn warpgroup_ptx(
    what: &str,
    tiled: &tessera_ir::loops::LoopProgram,
    t: &GpuMmaTiling,
    dtype: DType,
    staged_by: Copies,
    k: i64,
) {
    let aligned = tessera_codegen::ptx::PtxConfig {
        param_align: [(tiled.name.clone(), vec![16; tiled.params().count()])].into(),
    };
    let module = tessera_codegen::ptx::compile_ptx_with(&[tiled], 90, &aligned)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let ptx = &module.text;
    let n = t.bn / t.warps_n;
    let step = format!("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{dtype}.{dtype}");
    assert!(ptx.contains(&step), "{what}: no `{step}`");
    assert!(!ptx.contains("ldmatrix"), "{what}: ldmatrix");
    assert_eq!(
        ptx.contains("cp.async.c"),
        staged_by == Copies::Async,
        "{what}: cp.async"
    );
    assert_eq!(
        ptx.contains("cp.async.bulk.tensor") && ptx.contains("mbarrier.try_wait.parity"),
        staged_by == Copies::Tensor,
        "{what}: TMA"
    );
    // Steps in flight across a barrier (pipelines of three or more buffers) wait for all
    // but the last group; the others for all.
    let in_flight = count(
        &tiled.body,
        &|s| matches!(s, Stmt::Mma(m) if m.retires == 2),
    ) > 0;
    // (Where there is a `k` loop: a tail alone is one step.)
    let pipelined = match t.staging {
        MmaStaging::AsyncCopy { stages }
        | MmaStaging::Tma { stages }
        | MmaStaging::WarpSpecialized { stages, .. } => stages >= 3,
        MmaStaging::Registers => false,
    };
    // Warp-specialised consumers keep each tile's steps in flight through the next's (as
    // async copies where TMA cannot read the operands) — but for the last of a ping-pong
    // team's round, which it waits for: with one `k` tile, none.
    let specialized = tessera_ir::loops::tma::hands_over(&tiled.body);
    let ping_pong = matches!(
        t.staging,
        MmaStaging::WarpSpecialized {
            consumers: Consumers::PingPong,
            ..
        }
    );
    let expected = match specialized && ping_pong {
        true => k > t.bk,
        false => specialized || (pipelined && staged_by != Copies::None && k >= t.bk),
    };
    assert_eq!(in_flight, expected, "{what}: steps in flight");
    assert_eq!(
        ptx.contains("wgmma.wait_group.sync.aligned 1;"),
        in_flight,
        "{what}: wait_group 1"
    );
    // More than 48 KB of tiles: all in the launch's dynamic shared memory, none static.
    let (_, shared) = tessera_ir::loops::gpu::shared_layout(tiled);
    let dynamic = module.kernels[0].launch.dynamic_shared as usize;
    if shared > tessera_ir::loops::MAX_STATIC_SHARED_BYTES {
        assert_eq!(dynamic, shared, "{what}: dynamic shared memory");
        assert!(
            ptx.contains(".extern .shared .align 1024 .b8"),
            "{what}: no extern"
        );
        assert!(
            !ptx.lines().any(|l| l.trim_start().starts_with(".shared")),
            "{what}: static tiles"
        );
    } else {
        assert_eq!(dynamic, 0, "{what}: dynamic shared memory");
    }
    // Accepted, without spills, and without serialising the steps: ptxas does where the
    // accumulators' registers are touched while steps are in flight (C7519, e.g. across a
    // conditional copy inside the `k` loop).
    let report =
        tessera_codegen::ptx::ptxas_report(ptx, 90).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(report.spill_bytes(), 0, "{what}: spills\n{}", report.text);
    assert!(
        !report.serialises_warpgroup_steps(),
        "{what}: ptxas serialised the warpgroup steps\n{}",
        report.text
    );
    // A warp-specialised kernel's register reallocation honoured (C7508 where ptxas cannot
    // tell the registers at entry).
    assert!(
        !report.ignores_setmaxnreg(),
        "{what}: ptxas ignored setmaxnreg\n{}",
        report.text
    );
}

/// The compiler picks tensor cores for a half-precision product on sm_80 and later, the
/// CUDA-core tiles before that and for f32.
#[test]
fn tensor_cores_are_chosen_by_dtype_and_architecture() {
    let text = |dtype: &str| {
        format!(
            "graph \"g\" opset 21 {{\n input a: {dtype}[128,64]\n input b: {dtype}[64,96]\n node \"mm\" MatMul(a, b) -> (y: {dtype}[128,96])\n output y\n}}"
        )
    };
    for (dtype, sm, tensor_cores) in [
        ("f16", 90, true),
        ("bf16", 80, true),
        ("f16", 75, false),
        ("f32", 90, false),
    ] {
        let g = tessera_ir::text::parse_graph(&text(dtype)).unwrap();
        let c = tessera::Compiler::new(tessera::Target::Cuda { sm });
        let stages = c.stages(&g, &Default::default()).unwrap();
        let mma: usize = stages
            .kernels
            .iter()
            .map(|k| count_mma(&k.program.body))
            .sum();
        assert_eq!(
            mma > 0,
            tensor_cores,
            "{dtype} on sm_{sm}: {mma} mma statements"
        );
        if tensor_cores
            && ptxas_or_skip("tensor_cores_are_chosen_by_dtype_and_architecture").is_some()
        {
            // The operands' 16-byte alignment is known from the memory plan: staging copies
            // 16 bytes at a time, straight into shared memory.
            let program = tessera::gpu::gpu_program(&stages, sm).unwrap();
            let ptx = &program.module.text;
            assert!(
                ptx.contains("cp.async.cg.shared.global") && !ptx.contains("ld.global"),
                "{dtype} sm_{sm}: no 16-byte async copies"
            );
            assert!(
                ptx.contains("mma.sync.aligned.m16n8k16"),
                "{dtype} sm_{sm}: no mma"
            );
            tessera_codegen::ptx::check_with_ptxas(ptx, sm).unwrap();
        }
    }
}

/// The default tiles of a product too small to give every multiprocessor a block shrink
/// (the longer side first, to 64 × 64 at least) until it does or can shrink no further; a
/// product that fills the GPU keeps its 128 × 128 tiles — for warps and warpgroups alike;
/// a block has four warps at least.
#[test]
fn small_products_take_smaller_default_tiles_to_fill_the_gpu() {
    use tessera_passes::gpu_mma::HOPPER_SMS;
    for (batch, m, k, n, want) in [
        // The GPU-sized transformer block's projections: 12 blocks of 128 × 128.
        (1, 512, 384, 384, (64, 64)),
        // Its attention scores (6 heads): 96 blocks, then 192.
        (6, 512, 64, 512, (64, 128)),
        (1, 4096, 512, 4096, (128, 128)),
        // Narrower than 64 from the start: the columns stay.
        (1, 64, 64, 32, (64, 32)),
    ] {
        let lead = if batch > 1 {
            format!("{batch},")
        } else {
            String::new()
        };
        let text = format!(
            "graph \"g\" opset 21 {{\n input a: f16[{lead}{m},{k}]\n input b: f16[{lead}{k},{n}]\n node \"mm\" MatMul(a, b) -> (y: f16[{lead}{m},{n}])\n output y\n}}"
        );
        let g = tessera_ir::text::parse_graph(&text).unwrap();
        let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &tessera::Target::host()).unwrap();
        let spec = kernels[0].product.as_ref().unwrap();
        for t in [
            GpuMmaTiling::default_for(spec),
            GpuMmaTiling::warpgroup_default_for(spec),
        ] {
            let what = format!("{batch} x {m} x {k} x {n} with {t:?}");
            assert_eq!((t.bm, t.bn), want, "{what}");
            t.validate(spec).unwrap_or_else(|e| panic!("{what}: {e}"));
            let blocks = batch * ((m + t.bm - 1) / t.bm) * ((n + t.bn - 1) / t.bn);
            assert!(
                blocks >= HOPPER_SMS || t.bm.min(t.bn) <= 64,
                "{what}: {blocks} blocks"
            );
            // Four warps (or a warpgroup) at least: one per quarter of a multiprocessor.
            let warps = match t.engine {
                MmaEngine::Warp => t.warps_m * t.warps_n,
                MmaEngine::Warpgroup => 4 * t.warps_m * t.warps_n,
            };
            assert!(warps >= 4, "{what}: {warps} warps");
        }
    }
}

/// Arguments are claimed aligned only as far as the memory plan makes them: a view at an odd
/// element offset is not.
#[test]
fn argument_alignment_follows_the_offsets() {
    use tessera_ir::plan::{ExecPlan, Slot, Step};
    let plan = ExecPlan {
        steps: vec![Step {
            kernel: "k".into(),
            node: "n".into(),
            args: vec![
                Slot::Input { index: 0 },
                Slot::Workspace { offset: 64 },
                Slot::Workspace { offset: 6 },
                Slot::Weight { offset: 0 },
            ],
            parallel_extent: 1,
            work: 1,
            once: false,
            product_flops: 0,
        }],
        ..Default::default()
    };
    let cfg = tessera::gpu::argument_alignment(&plan);
    assert_eq!(cfg.param_align["k"], vec![16, 16, 2, 16]);
}

/// Tilings the search could propose that cannot be built are refused with a typed error that
/// names the knob, before anything is built or timed.
#[test]
fn invalid_tensor_core_tilings_are_refused() {
    let text = GRAPHS[1].1.replace("{T}", "f16");
    let g = tessera_ir::text::parse_graph(&text).unwrap();
    let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &tessera::Target::host()).unwrap();
    let k = kernels.iter().find(|k| k.product.is_some()).unwrap();
    let spec = k.product.as_ref().unwrap();
    let ok = GpuMmaTiling::default_for(spec);
    ok.validate(spec).unwrap();
    // The swizzled warpgroup tiling, warp-specialised on four buffers.
    let specialized = |persistent_blocks, consumers| GpuMmaTiling {
        staging: MmaStaging::WarpSpecialized {
            stages: 4,
            persistent_blocks,
            consumers,
        },
        ..GpuMmaTiling::swizzled_warpgroup_for(spec)
    };
    for (t, why) in [
        (GpuMmaTiling { bk: 24, ..ok }, "not a multiple of 16"),
        (GpuMmaTiling { bm: 40, ..ok }, "16x8 fragments"),
        (
            GpuMmaTiling {
                bm: 128,
                bn: 128,
                warps_m: 1,
                warps_n: 1,
                ..ok
            },
            "fragments per warp",
        ),
        (
            GpuMmaTiling {
                bm: 256,
                bn: 256,
                bk: 64,
                warps_m: 4,
                warps_n: 4,
                staging: MmaStaging::AsyncCopy { stages: 4 },
                engine: MmaEngine::Warp,
                layout: MmaLayout::Plain,
                group_rows: 1,
                epilogue: Default::default(),
            },
            "shared memory",
        ),
        (GpuMmaTiling { warps_m: 0, ..ok }, "non-positive"),
        (
            GpuMmaTiling {
                group_rows: 0,
                epilogue: Default::default(),
                ..ok
            },
            "rows of tiles per group",
        ),
        (
            GpuMmaTiling {
                group_rows: 65,
                epilogue: Default::default(),
                ..ok
            },
            "rows of tiles per group",
        ),
        // Swizzled tiles: warpgroups only, 64-deep `k` tiles, steps of 64 columns.
        (
            GpuMmaTiling {
                layout: MmaLayout::Swizzled,
                ..ok
            },
            "swizzled",
        ),
        (
            GpuMmaTiling {
                bm: 64,
                bn: 64,
                bk: 32,
                warps_m: 1,
                warps_n: 1,
                engine: MmaEngine::Warpgroup,
                layout: MmaLayout::Swizzled,
                ..ok
            },
            "swizzled",
        ),
        (
            GpuMmaTiling {
                staging: MmaStaging::AsyncCopy { stages: 9 },
                ..ok
            },
            "pipeline stages",
        ),
        (
            GpuMmaTiling {
                bm: 256,
                bn: 256,
                bk: 64,
                warps_m: 2,
                warps_n: 1,
                staging: MmaStaging::AsyncCopy { stages: 4 },
                engine: MmaEngine::Warpgroup,
                layout: MmaLayout::Plain,
                group_rows: 1,
                epilogue: Default::default(),
            },
            "shared memory",
        ),
        // A persistent grid of a negative or absurd number of blocks.
        (specialized(-1, Consumers::Cooperative), "persistent grid"),
        (
            specialized(1 << 40, Consumers::Cooperative),
            "persistent grid",
        ),
        // Ping-pong consumers without a persistent grid: no rounds to take turns over.
        (
            specialized(0, Consumers::PingPong),
            "ping-pong consumers take turns over the rounds of a persistent grid",
        ),
    ] {
        let e = tile_mma(&k.program, spec, &t)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(why), "{t:?}: expected `{why}` in: `{e}`");
    }
    // A warp-specialised staging recorded before persistent grids existed reads as a block
    // per tile, one recorded before ping-pong consumers as cooperating ones.
    for (record, persistent_blocks) in [
        (r#"{"WarpSpecialized":{"stages":6}}"#, 0),
        (
            r#"{"WarpSpecialized":{"stages":6,"persistent_blocks":132}}"#,
            132,
        ),
    ] {
        let old: MmaStaging = serde_json::from_str(record).unwrap();
        assert_eq!(
            old,
            MmaStaging::WarpSpecialized {
                stages: 6,
                persistent_blocks,
                consumers: Consumers::Cooperative,
            }
        );
    }
    // A tiling recorded before grouped tiles and TMA epilogues existed takes its tiles row
    // after row and stores directly.
    let mut record = serde_json::to_value(GpuMmaTiling {
        epilogue: MmaEpilogue::TensorStore,
        ..ok
    })
    .unwrap();
    record.as_object_mut().unwrap().remove("group_rows");
    record.as_object_mut().unwrap().remove("epilogue");
    let old: GpuMmaTiling = serde_json::from_value(record).unwrap();
    assert_eq!(
        old,
        GpuMmaTiling {
            group_rows: 1,
            epilogue: MmaEpilogue::Direct,
            ..ok
        }
    );
    // A TMA epilogue (of whole tiles or sub-tiles) belongs to a warp-specialised pipeline.
    for epilogue in [MmaEpilogue::TensorStore, MmaEpilogue::TensorStoreSubTiles] {
        let e = GpuMmaTiling { epilogue, ..ok }
            .validate(spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TMA epilogue"), "{epilogue:?}: {e}");
    }
    // f32 elements have no tensor-core path here.
    let mut f32_spec = spec.clone();
    f32_spec.dtype = DType::F32;
    let e = ok.validate(&f32_spec).unwrap_err().to_string();
    assert!(e.contains("f16 or bf16"), "{e}");
}

/// The value of index expression `e` with its variables as in `env` (absent ones 0).
fn evaluate(e: &tessera_ir::loops::IExpr, env: &[(&str, i64)]) -> i64 {
    e.value(&|n| Some(env.iter().find(|(k, _)| *k == n).map_or(0, |(_, x)| *x)))
        .unwrap_or_else(|| panic!("`{e}` has a loaded index or divides by zero"))
}

/// The copies of a warpgroup tile, as the hardware sees them: each 16-byte `cp.async` of a
/// quarter warp (8 threads, one shared-memory wavefront of 128 bytes) writes 8 different
/// 16-byte bank groups — in core matrices and swizzled alike — and with the 128-byte
/// swizzle the 8 read one whole 128-byte line of the operand (core matrices: 8 rows'
/// 16 bytes each).
#[test]
fn warpgroup_copies_write_distinct_banks_and_swizzled_ones_whole_lines() {
    use tessera_ir::loops::Loop;
    use tessera_ir::loops::async_copy::AsyncCopy;
    let text = "graph \"g\" opset 21 {\n input a: f16[128,256]\n input b: f16[256,128]\n node \"mm\" MatMul(a, b) -> (y: f16[128,128])\n output y\n}";
    let g = tessera_ir::text::parse_graph(text).unwrap();
    let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &tessera::Target::host()).unwrap();
    let k = kernels.iter().find(|k| k.product.is_some()).unwrap();
    let spec = k.product.as_ref().unwrap();
    let plain = GpuMmaTiling::warpgroup_default_for(spec);
    for t in [
        plain,
        GpuMmaTiling {
            layout: MmaLayout::Swizzled,
            ..plain
        },
    ] {
        let tiled = tile_mma(&k.program, spec, &t).unwrap();
        // The first thread loop that copies (the accumulators' initialisation and tile 0).
        fn first_copying(body: &[Stmt]) -> Option<&Loop> {
            body.iter().find_map(|s| match s {
                Stmt::For(l) if count_async_copies(&l.body) > 0 => {
                    first_copying(&l.body).or(Some(l))
                }
                _ => None,
            })
        }
        let lp = first_copying(&tiled.body).expect("a thread loop with copies");
        let mut copies: Vec<&AsyncCopy> = Vec::new();
        fn collect<'a>(body: &'a [Stmt], out: &mut Vec<&'a AsyncCopy>) {
            for s in body {
                match s {
                    Stmt::AsyncCopy(c) => out.push(c),
                    Stmt::If { then, .. } => collect(then, out),
                    Stmt::For(l) => collect(&l.body, out),
                    _ => {}
                }
            }
        }
        collect(&lp.body, &mut copies);
        assert!(!copies.is_empty());
        let mut whole_lines = true;
        for c in &copies {
            assert_eq!(c.len, 8, "{t:?}: 16-byte copies");
            for quarter in (0..t.threads()).step_by(8) {
                let at = |e: &tessera_ir::loops::IExpr, th: i64| evaluate(e, &[(&lp.var, th)]);
                let threads = quarter..quarter + 8;
                // Shared: byte address / 16 mod 8 is the bank group a 16-byte store takes.
                let mut groups: Vec<i64> = threads
                    .clone()
                    .map(|th| at(&c.dst_at, th) * 2 / 16 % 8)
                    .collect();
                groups.sort();
                groups.dedup();
                assert_eq!(groups.len(), 8, "{t:?}: a bank conflict in `{}`", c.dst_at);
                // Global: one 128-byte line, all of it.
                let mut chunks: Vec<i64> = threads.map(|th| at(&c.src_at, th) * 2 / 16).collect();
                chunks.sort();
                whole_lines &= chunks[0] % 8 == 0 && chunks.windows(2).all(|w| w[1] == w[0] + 1);
            }
        }
        assert_eq!(
            whole_lines,
            t.layout == MmaLayout::Swizzled,
            "{t:?}: whole 128-byte lines read"
        );
    }
}
