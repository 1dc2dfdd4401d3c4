//! The tiled product schedule against the reference, kernel by kernel: every product kernel
//! of a set of graphs (tails in every dimension, batches with broadcasting, Gemm transposes,
//! fused epilogues) is rebuilt with many tilings — the default, and random ones the knobs'
//! validation accepts — then run on the loop interpreter and as JIT-compiled code (the
//! parallel range split in two calls, as two threads would) on fresh random inputs, with
//! outputs poisoned, and compared with the untiled kernel on the loop interpreter.
//!
//! The GPU's tiled product (shared-memory tiles, register tiles, a uniform `k` loop) is checked
//! the same way: the default GPU tiling and random valid ones, on the interpreter (which also
//! reports shared-memory races) and as CPU code of the GPU program; its PTX is assembled by
//! `ptxas`.

use std::collections::BTreeMap;
use tessera::fuzzgen::oracle;
use tessera_ir::loops::{BufRole, LoopProgram};
use tessera_ir::{Rng, Tensor};
use tessera_passes::gpu_product::{GpuProductTiling, tile_gpu};
use tessera_passes::product::{ProductSpec, ProductTiling, tile};
use tessera_tests::*;

const GRAPHS: [(&str, &str); 13] = [
    (
        "matmul with row, column and k tails",
        "graph \"g\" opset 21 {\n input a: f32[61,300]\n input b: f32[300,70]\n node \"mm\" MatMul(a, b) -> (y: f32[61,70])\n output y\n}",
    ),
    (
        "batched matmul, broadcast B",
        "graph \"g\" opset 21 {\n input a: f32[3,13,40]\n input b: f32[40,50]\n node \"mm\" MatMul(a, b) -> (y: f32[3,13,50])\n output y\n}",
    ),
    (
        "batched matmul, both batched",
        "graph \"g\" opset 21 {\n input a: f32[2,2,9,33]\n input b: f32[2,1,33,17]\n node \"mm\" MatMul(a, b) -> (y: f32[2,2,9,17])\n output y\n}",
    ),
    (
        "gemm transposed with alpha, beta and a bias row",
        "graph \"g\" opset 21 {\n input a: f32[45,20]\n input b: f32[33,45]\n input c: f32[33]\n node \"g\" Gemm[alpha=0.7, beta=1.3, transA=1, transB=1](a, b, c) -> (y: f32[20,33])\n output y\n}",
    ),
    (
        "matmul + bias + tanh epilogue",
        "graph \"g\" opset 21 {\n input x: f32[2,19,24]\n input w: f32[24,40]\n input b: f32[40]\n node \"mm\" MatMul(x, w) -> (m: f32[2,19,40])\n node \"add\" Add(m, b) -> (a: f32[2,19,40])\n node \"t\" Tanh(a) -> (y: f32[2,19,40])\n output y\n}",
    ),
    (
        "a few rows times a transposed B, relu epilogue (dot products along k, k tail)",
        "graph \"g\" opset 21 {\n input a: f32[3,100]\n input b: f32[37,100]\n input c: f32[37]\n node \"g\" Gemm[transB=1](a, b, c) -> (g: f32[3,37])\n node \"r\" Relu(g) -> (y: f32[3,37])\n output y\n}",
    ),
    (
        "many rows times three columns of a transposed B (narrow: dot products along k)",
        "graph \"g\" opset 21 {\n input a: f32[37,300]\n input b: f32[3,300]\n node \"g\" Gemm[transB=1](a, b) -> (y: f32[37,3])\n output y\n}",
    ),
    (
        "a classifier as a 1x1 conv of a 1x1 image, with bias (one column, k tail)",
        "graph \"g\" opset 21 {\n input x: f32[1,1000,1,1]\n input w: f32[40,1000,1,1]\n input b: f32[40]\n node \"c\" Conv[kernel_shape=ints(1,1)](x, w, b) -> (y: f32[1,40,1,1])\n output y\n}",
    ),
    (
        "gemm + relu epilogue",
        "graph \"g\" opset 21 {\n input x: f32[30,12]\n input w: f32[12,100]\n input c: f32[100]\n node \"gemm\" Gemm(x, w, c) -> (g: f32[30,100])\n node \"r\" Relu(g) -> (y: f32[30,100])\n output y\n}",
    ),
    (
        "conv 3x3, padded, with bias (im2col panels)",
        "graph \"g\" opset 21 {\n input x: f32[2,5,11,9]\n input w: f32[7,5,3,3]\n input b: f32[7]\n node \"c\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w, b) -> (y: f32[2,7,11,9])\n output y\n}",
    ),
    (
        "conv strided, dilated, asymmetric pads",
        "graph \"g\" opset 21 {\n input x: f32[1,6,13,12]\n input w: f32[9,6,3,2]\n node \"c\" Conv[kernel_shape=ints(3,2), strides=ints(2,1), dilations=ints(1,2), pads=ints(2,0,1,1)](x, w) -> (y: f32[1,9,7,11])\n output y\n}",
    ),
    (
        "grouped conv",
        "graph \"g\" opset 21 {\n input x: f32[2,8,7,7]\n input w: f32[12,4,3,3]\n node \"c\" Conv[kernel_shape=ints(3,3), group=2, pads=ints(1,1,1,1)](x, w) -> (y: f32[2,12,7,7])\n output y\n}",
    ),
    (
        "1x1 conv + residual add + relu epilogue",
        "graph \"g\" opset 21 {\n input x: f32[1,40,6,6]\n input w: f32[10,40,1,1]\n input z: f32[1,10,6,6]\n node \"c\" Conv[kernel_shape=ints(1,1)](x, w) -> (c: f32[1,10,6,6])\n node \"add\" Add(c, z) -> (a: f32[1,10,6,6])\n node \"r\" Relu(a) -> (y: f32[1,10,6,6])\n output y\n}",
    ),
];

/// Random tilings for `spec`, keeping only those the knobs' validation accepts.
fn tilings(spec: &ProductSpec, rng: &mut Rng) -> Vec<ProductTiling> {
    let mut out = vec![
        ProductTiling::default_for(spec, 16, 1),
        ProductTiling::default_for(spec, 8, 2),
        ProductTiling::default_for(spec, 16, 3),
    ];
    while out.len() < 8 {
        let lanes = [4, 8, 16][rng.below(3) as usize];
        let mr = 1 + rng.below(8) as i64;
        let t = ProductTiling {
            mr,
            nr: lanes * (1 + rng.below(4) as i64),
            kc: [1, 7, 16, 64, 256][rng.below(5) as usize],
            row_block: mr * (1 + rng.below(4) as i64),
            lanes,
            pack_b: rng.below(4) != 0,
            conv_rows: 0,
            conv_segments: 0,
            k_lanes: false,
            row_lanes: 0,
        };
        if t.validate(spec).is_ok() {
            out.push(t);
        }
    }
    // Dot products along k: tiles of 1..=4 rows by 1..=8 columns, any vector width.
    if tessera_passes::product::suits_k_lanes(spec) {
        for _ in 0..4 {
            let lanes = [4, 8, 16][rng.below(3) as usize];
            let mr = 1 + rng.below(4) as i64;
            out.push(ProductTiling {
                mr,
                nr: lanes * (1 + rng.below(8) as i64),
                kc: 64,
                row_block: mr * (1 + rng.below(2) as i64),
                lanes,
                pack_b: false,
                conv_rows: 0,
                conv_segments: 0,
                k_lanes: true,
                row_lanes: 0,
            });
        }
    }
    // A convolution's panels of whole output rows: every row count up to the image (the
    // last panel short, or the whole image one panel), panels padded past the rows, k blocks
    // of one and of several channels.
    if let Some(conv) = &spec.conv {
        let mut rows_tried = 0;
        while rows_tried < 5 {
            let lanes = [4, 8, 16][rng.below(3) as usize];
            let conv_rows = match rng.below(3) {
                0 => 1,
                _ => 1 + rng.below(conv.oh as u64) as i64,
            };
            // Single rows also in equal segments, when the width splits.
            let conv_segments = match (2..=conv.ow).find(|s| conv.ow % s == 0) {
                Some(s) if conv_rows == 1 && rng.below(2) == 0 => s,
                _ => 1,
            };
            let cols = conv.panel_pixels(conv_rows, conv_segments);
            let nr = (cols + lanes - 1) / lanes * lanes + lanes * rng.below(2) as i64;
            let mr = 1 + rng.below(6) as i64;
            let t = ProductTiling {
                mr,
                nr,
                kc: conv.taps() * (1 + rng.below(4) as i64),
                row_block: mr * (1 + rng.below(3) as i64),
                lanes,
                pack_b: rng.below(5) != 0,
                conv_rows,
                conv_segments,
                k_lanes: false,
                row_lanes: 0,
            };
            if t.validate(spec).is_ok() {
                out.push(t);
                rows_tried += 1;
            }
        }
    }
    out
}

/// The stages of `g` compiled for this machine without schedules: unscheduled kernels.
fn unscheduled_stages(g: &tessera_ir::Graph) -> tessera::Stages {
    let compiler =
        tessera::Compiler::new(tessera::Target::host()).with_config(tessera::CompileConfig {
            schedule: false,
            ..Default::default()
        });
    compiler.stages(g, &BTreeMap::new()).unwrap()
}

/// Fresh random values for a kernel's inputs.
fn random_inputs(p: &LoopProgram, rng: &mut Rng) -> Vec<Tensor> {
    p.params()
        .filter(|b| b.role == BufRole::Input)
        .map(|b| rng.tensor(b.dtype, vec![b.len]))
        .collect()
}

/// Runs a kernel on the loop interpreter (outputs poisoned first).
fn interpret(p: &LoopProgram, inputs: &[Tensor]) -> Vec<Tensor> {
    oracle::interpret(p, inputs).unwrap_or_else(|e| panic!("{}: {e}", p.name))
}

/// Runs a kernel compiled by the JIT, calling it on two halves of its parallel range.
fn native(p: &LoopProgram, inputs: &[Tensor]) -> Vec<Tensor> {
    oracle::run_native(p, inputs).unwrap_or_else(|e| panic!("{}: {e}", p.name))
}

#[test]
fn tiled_products_match_the_untiled_kernels() {
    let mut rng = Rng::new(2026);
    let mut checked = 0;
    for (name, text) in GRAPHS {
        let g = tessera_ir::text::parse_graph(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stages = unscheduled_stages(&g);
        let mut products = 0;
        for k in &stages.kernels {
            let Some(spec) = &k.product else { continue };
            products += 1;
            let inputs = random_inputs(&k.program, &mut rng);
            let want = interpret(&k.program, &inputs);
            for t in tilings(spec, &mut rng) {
                let tiled =
                    tile(&k.program, spec, &t).unwrap_or_else(|e| panic!("{name} {t:?}: {e}"));
                let what = format!("{name} with {t:?}");
                for (how, got) in [
                    ("interpreted", interpret(&tiled, &inputs)),
                    ("compiled", native(&tiled, &inputs)),
                ] {
                    for (g, w) in got.iter().zip(&want) {
                        compare(g, w, REDUCTION).unwrap_or_else(|e| panic!("{what} ({how}): {e}"));
                    }
                }
                checked += 1;
            }
        }
        assert!(products > 0, "{name}: no product kernel recorded");
    }
    assert!(checked >= GRAPHS.len() * 8);
}

/// GPU tilings for `spec`: the default and random ones the validation accepts (small tiles,
/// so that edges, k tails and several blocks all occur).
fn gpu_tilings(spec: &ProductSpec, rng: &mut Rng) -> Vec<GpuProductTiling> {
    let mut out = vec![GpuProductTiling::default_for(spec)];
    out.extend((0..3).map(|_| GpuProductTiling::sample(spec, rng)));
    out
}

#[test]
fn gpu_tiled_products_match_the_untiled_kernels() {
    let ptxas = ptxas_or_skip("gpu_tiled_products_match_the_untiled_kernels (ptxas part)");
    let mut rng = Rng::new(2027);
    let mut checked = 0;
    for (name, text) in GRAPHS {
        let g = tessera_ir::text::parse_graph(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kernels = tessera::fuzzgen::unscheduled_kernels(&g, &tessera::Target::host()).unwrap();
        for k in &kernels {
            let Some(spec) = &k.product else { continue };
            let inputs = random_inputs(&k.program, &mut rng);
            let want = interpret(&k.program, &inputs);
            for (n, t) in gpu_tilings(spec, &mut rng).into_iter().enumerate() {
                let tiled =
                    tile_gpu(&k.program, spec, &t).unwrap_or_else(|e| panic!("{name} {t:?}: {e}"));
                let what = format!("{name} with {t:?} on the GPU");
                for (g, w) in interpret(&tiled, &inputs).iter().zip(&want) {
                    compare(g, w, REDUCTION)
                        .unwrap_or_else(|e| panic!("{what} (interpreted): {e}"));
                }
                for (g, w) in native(&tiled, &inputs).iter().zip(&want) {
                    compare(g, w, REDUCTION).unwrap_or_else(|e| panic!("{what} (CPU code): {e}"));
                }
                if ptxas.is_some() && n < 2 {
                    let module = tessera_codegen::ptx::compile_ptx(&[&tiled], 80)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(module.text.contains(".shared"), "{what}: no shared memory");
                    tessera_codegen::ptx::check_with_ptxas(&module.text, 80)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= GRAPHS.len() * 4);
}

/// Tilings the search could propose that cannot be built are refused with an error.
#[test]
fn invalid_tilings_are_refused() {
    let g = tessera_ir::text::parse_graph(GRAPHS[0].1).unwrap();
    let stages = unscheduled_stages(&g);
    let k = &stages.kernels[0];
    let spec = k.product.as_ref().unwrap();
    let ok = ProductTiling::default_for(spec, 16, 2);
    for bad in [
        ProductTiling { nr: 20, ..ok },
        ProductTiling {
            row_block: ok.mr + 1,
            ..ok
        },
        ProductTiling { mr: 0, ..ok },
        ProductTiling {
            mr: 12,
            nr: 64,
            ..ok
        },
        ProductTiling { kc: 100_000, ..ok },
        ProductTiling { conv_rows: 1, ..ok },
    ] {
        let e = tile(&k.program, spec, &bad).expect_err("accepted a bad tiling");
        assert!(e.to_string().contains("product tiling"), "{e}");
    }
}

/// The default tiling splits the rows (output channels) into blocks only where the column
/// panels alone would load the threads unevenly: ResNet-50's 3×3 convolutions at 28×28 have
/// 7 panels of 4 rows (two threads: 4 + 3), its 1×1 convolutions at 14×14 3 full panels and a
/// 4-pixel one; at 56×56 the 3×3 convolution's 28 panels split evenly.
#[test]
fn row_blocks_balance_the_threads() {
    let specs = |text: &str| {
        let g = tessera_ir::text::parse_graph(text).unwrap();
        let stages = unscheduled_stages(&g);
        stages.kernels[0].product.clone().unwrap()
    };
    let conv = |c: usize, hw: usize, k: usize| {
        let pad = k / 2;
        format!(
            "graph \"g\" opset 21 {{\n input x: f32[1,{c},{hw},{hw}]\n input w: f32[{c},{c},{k},{k}]\n node \"c\" Conv[kernel_shape=ints({k},{k}), pads=ints({pad},{pad},{pad},{pad})](x, w) -> (y: f32[1,{c},{hw},{hw}])\n output y\n}}"
        )
    };
    for (text, split_on_two) in [
        (conv(128, 28, 3), true),
        (conv(256, 14, 1), true),
        (conv(64, 56, 3), false),
    ] {
        let spec = specs(&text);
        let blocks = |threads| {
            let t = ProductTiling::default_for(&spec, 16, threads);
            (spec.m + t.row_block - 1) / t.row_block
        };
        assert_eq!(blocks(1), 1, "one thread never splits the rows: {text}");
        assert_eq!(blocks(2) > 1, split_on_two, "{text}");
    }
}

/// Graphs whose convolutions have constant weights (`[cout, cin, kh, kw]`, random, with a
/// bias) and outputs of a few pixels, with output channels in whole vectors: their tiled
/// products put the rows along the lanes, reading the weights from a copy in blocks of 16
/// rows.
const ROW_LANE_GRAPHS: [(&str, &str, [usize; 4]); 3] = [
    (
        "conv 3x3 at 7x7, padded, bias and relu",
        "graph \"g\" opset 21 {\n input x: f32[1,8,7,7]\n WEIGHTS node \"c\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w, b) -> (c: f32[1,32,7,7])\n node \"r\" Relu(c) -> (y: f32[1,32,7,7])\n output y\n}",
        [32, 8, 3, 3],
    ),
    (
        "1x1 conv + residual add (48 rows: a tile's rows end in a shorter one)",
        "graph \"g\" opset 21 {\n input x: f32[1,24,6,6]\n input z: f32[1,48,6,6]\n WEIGHTS node \"c\" Conv[kernel_shape=ints(1,1)](x, w, b) -> (c: f32[1,48,6,6])\n node \"add\" Add(c, z) -> (y: f32[1,48,6,6])\n output y\n}",
        [48, 24, 1, 1],
    ),
    (
        "strided 3x3 conv, two images, asymmetric pads",
        "graph \"g\" opset 21 {\n input x: f32[2,16,9,9]\n WEIGHTS node \"c\" Conv[kernel_shape=ints(3,3), strides=ints(2,2), pads=ints(1,0,1,1)](x, w, b) -> (y: f32[2,32,5,4])\n output y\n}",
        [32, 16, 3, 3],
    ),
];

/// `text` with `WEIGHTS` replaced by random initializers `w` of `shape` and `b`.
fn with_weights(text: &str, shape: [usize; 4], rng: &mut Rng) -> tessera_ir::Graph {
    let mut init = |name: &str, dims: &[usize]| {
        let t = rng.tensor(tessera_ir::DType::F32, dims.to_vec());
        let hex: String = t.bytes().iter().map(|b| format!("{b:02x}")).collect();
        let dims: Vec<String> = dims.iter().map(ToString::to_string).collect();
        format!("init {name}: f32[{}] = hex\"{hex}\"\n ", dims.join(","))
    };
    let weights = init("w", &shape) + &init("b", &shape[..1]);
    tessera_ir::text::parse_graph(&text.replace("WEIGHTS ", &weights)).unwrap()
}

/// Random rows-along-lanes tilings for `spec` (16 lanes, as its weight blocks), keeping
/// those the validation accepts: flat and row panels, tiles of 1..8 columns by 1..3 vectors,
/// row blocks of 1..4 vectors, k blocks of one to a few channels.
fn row_lane_tilings(spec: &ProductSpec, rng: &mut Rng) -> Vec<ProductTiling> {
    let mut out = vec![ProductTiling::default_for(spec, 16, 2)];
    assert!(
        out[0].row_lanes > 0,
        "the default keeps the columns along the lanes"
    );
    while out.len() < 10 {
        let conv = spec.conv.as_ref().unwrap();
        let conv_rows = match rng.below(2) {
            0 if !conv.is_pointwise() => 1 + rng.below(conv.oh as u64) as i64,
            _ => 0,
        };
        let (nr, kc) = match conv_rows {
            0 => (
                1 + rng.below(40) as i64,
                [1, 7, 16, 64][rng.below(4) as usize],
            ),
            rows => (
                conv.panel_pixels(rows, 1) + rng.below(3) as i64,
                conv.taps() * (1 + rng.below(3) as i64),
            ),
        };
        let t = ProductTiling {
            mr: 1 + rng.below(8) as i64,
            nr,
            kc,
            row_block: 16 * (1 + rng.below(4) as i64),
            lanes: 16,
            pack_b: true,
            conv_rows,
            conv_segments: 1,
            k_lanes: false,
            row_lanes: 16 * (1 + rng.below(3) as i64),
        };
        if t.validate(spec).is_ok() {
            out.push(t);
        }
    }
    out
}

#[test]
fn rows_along_lanes_match_the_untiled_kernels() {
    if !wide_vectors() {
        return;
    }
    let mut rng = Rng::new(2027);
    for (name, text, shape) in ROW_LANE_GRAPHS {
        let g = with_weights(text, shape, &mut rng);
        let stages = unscheduled_stages(&g);
        let k = &stages.kernels[0];
        let spec = k.product.as_ref().expect("a product");
        assert!(
            spec.a_blocks.is_some(),
            "{name}: weights not in blocks of rows"
        );
        let inputs = random_inputs(&k.program, &mut rng);
        let want = interpret(&k.program, &inputs);
        for t in row_lane_tilings(spec, &mut rng) {
            let tiled = tile(&k.program, spec, &t).unwrap_or_else(|e| panic!("{name} {t:?}: {e}"));
            for (how, got) in [
                ("interpreted", interpret(&tiled, &inputs)),
                ("compiled", native(&tiled, &inputs)),
            ] {
                for (g, w) in got.iter().zip(&want) {
                    compare(g, w, REDUCTION)
                        .unwrap_or_else(|e| panic!("{name} with {t:?} ({how}): {e}"));
                }
            }
        }
        // And the whole model, scheduled by default, against the graph interpreter.
        let exe = tessera::Compiler::new(tessera::Target::host())
            .compile(&g)
            .unwrap();
        let ins: Vec<Tensor> = g
            .inputs
            .iter()
            .map(|&v| {
                rng.tensor(
                    tessera_ir::DType::F32,
                    g.ty_of(v).unwrap().static_shape().unwrap(),
                )
            })
            .collect();
        let got = exe.run(&ins).unwrap();
        let want = tessera_ir::interp::run_graph(&g, &ins).unwrap();
        for (g, w) in got.iter().zip(&want) {
            compare(g, w, REDUCTION).unwrap_or_else(|e| panic!("{name} compiled: {e}"));
        }
    }
}

/// The weights go into blocks of rows only where the rows along the lanes pay: a 3×3
/// convolution at 28×28 fills its column panels (4 rows, 112 pixels) and keeps them as
/// ONNX stores them; at 7×7 (49 pixels in 64 lanes) they are copied, as `[cout/16, k, 16]`,
/// and the original is no kernel's argument.
#[test]
fn weights_go_into_row_blocks_only_where_rows_along_lanes_pay() {
    if !wide_vectors() {
        return;
    }
    let mut rng = Rng::new(7);
    let conv = |hw: usize| {
        format!(
            "graph \"g\" opset 21 {{\n input x: f32[1,16,{hw},{hw}]\n WEIGHTS node \"c\" Conv[kernel_shape=ints(3,3), pads=ints(1,1,1,1)](x, w, b) -> (y: f32[1,32,{hw},{hw}])\n output y\n}}"
        )
    };
    for (hw, blocked) in [(7, true), (28, false)] {
        let g = with_weights(&conv(hw), [32, 16, 3, 3], &mut rng);
        // The direct convolution's layouts (by default, the 28×28 one is a Winograd one).
        let config = tessera::CompileConfig {
            winograd: Some(tessera_passes::winograd::WinogradConfig::off()),
            ..Default::default()
        };
        let compiler = tessera::Compiler::new(tessera::Target::host()).with_config(config);
        let stages = compiler.stages(&g, &BTreeMap::new()).unwrap();
        let k = &stages.kernels[0];
        let weight = stages.optimized.initializers.get(&k.args[1]).unwrap();
        assert_eq!(
            k.product.as_ref().unwrap().a_blocks.is_some(),
            blocked,
            "{hw}"
        );
        let want: &[usize] = if blocked {
            &[2, 144, 16]
        } else {
            &[32, 16, 3, 3]
        };
        assert_eq!(weight.shape(), want, "{hw}x{hw}");
    }
}

/// Whether this machine has 16-lane vectors, which the rows-along-lanes form is chosen for
/// by default (tests of the default skip loudly without).
fn wide_vectors() -> bool {
    let wide = tessera::Target::host().vector_bytes() >= 64;
    if !wide {
        eprintln!(
            "SKIPPED: rows along the lanes are chosen for 16-lane vectors; this CPU has fewer"
        );
    }
    wide
}

/// One product with a constant `B`, and how `B` should be read once prepared.
struct LayoutCase {
    what: &'static str,
    op: tessera_ir::OpKind,
    /// The Gemm's `transB` (None: a MatMul).
    trans_b: Option<i64>,
    a: &'static [usize],
    b: [usize; 2],
    /// `transB=0|1` for a Gemm, `b_perm` or `none` for a MatMul.
    want: &'static str,
}

/// A constant 2-D `B` is laid out for the schedule of its product: `k×n` where the default
/// packs it (rows of `A` enough for a register tile), `n×k` for a matrix-vector product,
/// whose dot products along `k` then stream it. Each graph also compiles and matches the
/// interpreter.
#[test]
fn constant_b_is_laid_out_for_its_product() {
    use tessera_ir::{Attr, AttrsExt, DType, OpKind};
    let case = |what, op, trans_b, a, b, want| LayoutCase {
        what,
        op,
        trans_b,
        a,
        b,
        want,
    };
    let cases = [
        case(
            "linear layer, one row",
            OpKind::Gemm,
            Some(1),
            &[1, 300],
            [120, 300],
            "transB=1",
        ),
        case(
            "k×n weights, one row",
            OpKind::Gemm,
            Some(0),
            &[1, 300],
            [300, 120],
            "transB=1",
        ),
        case(
            "linear layer, 8 rows",
            OpKind::Gemm,
            Some(1),
            &[8, 300],
            [40, 300],
            "transB=0",
        ),
        case(
            "matmul, one row per batch",
            OpKind::MatMul,
            None,
            &[2, 1, 300],
            [300, 120],
            "b_perm",
        ),
        case(
            "matmul, 8 rows per batch",
            OpKind::MatMul,
            None,
            &[2, 8, 300],
            [300, 40],
            "none",
        ),
        // Too small to tile (a recurrent cell's h·Rᵀ): the plain loop nest reads B along n.
        case(
            "linear layer, one row, too small to tile",
            OpKind::Gemm,
            Some(1),
            &[1, 48],
            [192, 48],
            "transB=0",
        ),
        case(
            "matmul, one row, too small to tile",
            OpKind::MatMul,
            None,
            &[2, 48],
            [48, 192],
            "none",
        ),
    ];
    let mut rng = Rng::new(21);
    for c in cases {
        let what = c.what;
        let node_attrs = match c.trans_b {
            Some(t) => attrs(&[("transB", Attr::Int(t))]),
            None => attrs(&[]),
        };
        let g = OneOp::new(c.op, node_attrs)
            .input(DType::F32, c.a)
            .constant(rng.tensor(DType::F32, c.b.to_vec()))
            .build();
        let prepared = tessera_passes::fold::prepare(&g, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{what}: prepare: {e}"));
        let (_, n) = prepared
            .nodes()
            .find(|(_, n)| n.op == c.op)
            .unwrap_or_else(|| panic!("{what}: the product is gone"));
        let got = match c.op {
            OpKind::Gemm => format!("transB={}", n.attrs.int("transB", 0).unwrap()),
            _ => match n.attrs.get("b_perm") {
                Some(Attr::Ints(p)) if p == &[1, 0] => "b_perm".into(),
                Some(other) => format!("{other:?}"),
                None => "none".into(),
            },
        };
        assert_eq!(got, c.want, "{what}");
        let b_now = prepared.ty(n.inputs[1].unwrap()).unwrap().static_shape();
        let transposed = got == "b_perm" || (c.trans_b == Some(0)) != (got == "transB=0");
        let b_want = if transposed { [c.b[1], c.b[0]] } else { c.b };
        assert_eq!(b_now.as_deref(), Some(&b_want[..]), "{what}: B's shape");
        check_graph(what, &g, &tessera_tests::random_inputs(&g, 3), MODEL);
    }
}

/// A matrix-vector product's default schedule is the dot-product form, and so is a narrow
/// one's (a 1×1 convolution of a 1×1 image: one column).
#[test]
fn matrix_vector_products_take_dot_products_along_k() {
    for (what, text) in [&GRAPHS[6], &GRAPHS[7]] {
        let g = tessera_ir::text::parse_graph(text).unwrap();
        let stages = unscheduled_stages(&g);
        let spec = stages.kernels[0].product.as_ref().expect("a product");
        assert!(
            tessera_passes::product::worth_tiling(spec, 16),
            "{what}: tiled"
        );
        let t = ProductTiling::default_for(spec, 16, 2);
        assert!(t.k_lanes && !t.pack_b, "{what}: {t:?}");
    }
}
