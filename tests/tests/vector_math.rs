//! Native math and folds that do not follow the interpreter's operation order: the
//! polynomial `exp` and the rational `tanh` and `erf` (scalar and vector) over the whole
//! f32 range, and reductions annotated
//! `vectorize(w)` (lane-wise partial results, masked remainders, fallbacks) against the loop
//! interpreter.

use tessera::fuzzgen::oracle::{agree, interpret, native_tolerance, program_inputs, run_native};
use tessera_ir::loops::parse::parse_program;
use tessera_ir::{DType, Tensor};

/// The smallest normal f32: below it the native `exp` flushes to zero.
const F32_MIN_NORMAL: f64 = f32::MIN_POSITIVE as f64;

/// Distance in units in the last place (+0 and −0 are the same number).
fn ulps(a: f32, b: f32) -> u64 {
    if a == b {
        return 0;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
}

/// Inputs from below the flush point to past overflow, dense near 0, plus the special values.
fn exp_inputs() -> Vec<f64> {
    let mut xs: Vec<f64> = (0..6000).map(|i| -110.0 + i as f64 * 0.0335).collect();
    xs.extend((0..2000).map(|i| (i as f64 - 1000.0) * 1e-4));
    xs.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        88.72,
        88.7228,
        88.723,
        89.0,
        -87.33,
        -87.34,
        -1e4,
        1e4,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    xs
}

/// The loop program `y[i] = f(x[i])` over `n` elements, scalar or `kind` (` vectorize(w)`).
fn unary_program(f: &str, n: usize, kind: &str) -> tessera_ir::loops::LoopProgram {
    let text = format!(
        "kernel {f}_{}(in x: f32[{n}], out y: f32[{n}]) {{\n  for i in 0..{n}{kind} {{\n    y[i] = {f}(x[i])\n  }}\n}}\n",
        kind.trim().replace(['(', ')'], "")
    );
    parse_program(&text).expect("parses")
}

fn run_unary(f: &str, xs: &[f64], kind: &str) -> Vec<f64> {
    let prog = unary_program(f, xs.len(), kind);
    let input = Tensor::from_f64(DType::F32, vec![xs.len()], xs);
    run_native(&prog, &[input]).expect("runs")[0].to_f64_vec()
}

const KINDS: [&str; 3] = ["", " vectorize(8)", " vectorize(16)"];

#[test]
fn exp_is_within_one_ulp_over_the_whole_range_scalar_and_vector() {
    let xs = exp_inputs();
    for kind in KINDS {
        let got = run_unary("exp", &xs, kind);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = (x as f32 as f64).exp();
            let (g32, w32) = (g as f32, want as f32);
            if want.is_nan() {
                assert!(g.is_nan(), "{kind}: exp({x}) = {g}, want NaN");
            } else if want < F32_MIN_NORMAL {
                // Flushed: zero (or the exact denormal), never more than the smallest normal.
                assert!(
                    (0.0..=F32_MIN_NORMAL).contains(&g),
                    "{kind}: exp({x}) = {g}"
                );
            } else if w32.is_infinite() {
                assert!(g32.is_infinite() && g32 > 0.0, "{kind}: exp({x}) = {g}");
            } else {
                let u = ulps(g32, w32);
                assert!(u <= 1, "{kind}: exp({x}) = {g}, want {want} ({u} ulp)");
            }
        }
    }
}

/// tanh and erf (the rational fits): within `max_ulps` of the correctly rounded value, or
/// within `abs` absolutely (near zero crossings, where ulps are tiny).
fn check_odd_fit(f: &str, reference: fn(f64) -> f64, max_ulps: u64, abs: f64) {
    let mut xs: Vec<f64> = (0..8000).map(|i| -12.0 + i as f64 * 0.003).collect();
    xs.extend((1..200).map(|i| 1e-6 * i as f64));
    xs.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        1e-40,
        30.0,
        -30.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    for kind in KINDS {
        let got = run_unary(f, &xs, kind);
        let mut worst = 0;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = reference(x as f32 as f64);
            if want.is_nan() {
                assert!(g.is_nan(), "{kind}: {f}({x}) = {g}, want NaN");
                continue;
            }
            let u = ulps(g as f32, want as f32);
            assert!(
                u <= max_ulps || (g - want).abs() <= abs,
                "{kind}: {f}({x}) = {g}, want {want} ({u} ulp)"
            );
            // Where the function rounds to ±1 the result must be exactly ±1, and where it
            // does not, not: an ulp either way flips comparisons such as `1 + tanh(9) < 2`
            // or `tanh(9) < 1` (a fuzzer found both).
            assert_eq!(
                (g as f32).abs() == 1.0,
                (want as f32).abs() == 1.0,
                "{kind}: {f}({x}) = {g}, want {want}: ±1 exactly in one only"
            );
            worst = worst.max(u);
        }
        eprintln!("{f}{kind}: worst {worst} ulp");
    }
}

#[test]
fn tanh_and_erf_fits_hold_over_the_whole_range_scalar_and_vector() {
    check_odd_fit("tanh", f64::tanh, 4, 1e-9);
    check_odd_fit("erf", tessera_ir::interp::erf, 4, 1e-9);
}

/// Each program's reductions are annotated; compiled, they must agree with the interpreter
/// (which ignores the annotation): floats within the native tolerance, integers exactly.
#[test]
fn vectorized_reductions_agree_with_the_interpreter() {
    let programs = [
        // A row sum whose length (37) leaves a masked remainder of 5 lanes.
        "kernel rowsum(in x: f32[296], out y: f32[8]) {
  for i in 0..8 parallel {
    $s: f32 = reduce sum(k in 0..37) vectorize(8) init 0.5:f32 of (x[(i*37 + k)] * 2.0:f32) {
      y[i] = $s
    }
  }
}",
        // Softmax: a max, then a sum of exponentials reading the max, then a vector loop.
        "kernel softmax(in x: f32[300], out y: f32[300]) {
  for i in 0..6 parallel {
    $m: f32 = reduce max(k in 0..50) vectorize(16) init -inf:f32 of x[(i*50 + k)] {
      $s: f32 = reduce sum(k2 in 0..50) vectorize(16) init 0.0:f32 of exp((x[(i*50 + k2)] - $m)) {
        for j in 0..50 vectorize(16) {
          y[(i*50 + j)] = (exp((x[(i*50 + j)] - $m)) / $s)
        }
      }
    }
  }
}",
        // Two axes (the outer one carries the lanes), a stride-2 read, a minimum.
        "kernel plane_min(in x: f32[480], out y: f32[4]) {
  for i in 0..4 {
    $m: f32 = reduce min(a in 0..3, b in 0..20) vectorize(4) init 10.0:f32 of x[((i*120 + a*40) + b*2)] {
      y[i] = $m
    }
  }
}",
        // Integers: exact; the max starts below every value.
        "kernel int_folds(in x: i32[90], out s: i32[3], out m: i32[3]) {
  for i in 0..3 {
    $t: i32 = reduce sum(k in 0..30) vectorize(8) init 7:i32 of x[(i*30 + k)] {
      s[i] = $t
    }
    $u: i32 = reduce max(k2 in 0..30) vectorize(8) init -100:i32 of (x[(i*30 + k2)] * -3:i32) {
      m[i] = $u
    }
  }
}",
        // Shorter than one vector: only the masked step runs.
        "kernel short(in x: f32[12], out y: f32[4]) {
  for i in 0..4 {
    $s: f32 = reduce sum(k in 0..3) vectorize(8) init 0.0:f32 of x[(i*3 + k)] {
      y[i] = $s
    }
  }
}",
        // An index computed lane by lane (gathered), and an integer division (which must not
        // run on masked-off lanes: this one stays scalar).
        "kernel gathered(in x: f32[64], in d: i32[64], out y: f32[8], out z: i32[8]) {
  for i in 0..8 {
    $s: f32 = reduce sum(k in 0..8) vectorize(8) init 0.0:f32 of x[((k*k + i) % 64)] {
      y[i] = $s
    }
    $q: i32 = reduce sum(k2 in 0..8) vectorize(8) init 0:i32 of (100:i32 / d[(i*8 + k2)]) {
      z[i] = $q
    }
  }
}",
    ];
    for text in programs {
        let prog = parse_program(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for seed in 1..=3 {
            let inputs = program_inputs(&prog, seed);
            let want = interpret(&prog, &inputs).expect("interprets");
            let got = run_native(&prog, &inputs).expect("compiles and runs");
            agree(&prog.name, &got, &want, native_tolerance)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        }
    }
}

/// The annotation round-trips through the text form and the verifier refuses bad widths.
#[test]
fn reduction_width_prints_parses_and_verifies() {
    let text = "kernel k(in x: f32[64], out y: f32[4]) {
  for i in 0..4 {
    $s: f32 = reduce sum(k in 0..16) vectorize(8) init 0.0:f32 of x[(i*16 + k)] {
      y[i] = $s
    }
  }
}
";
    let prog = parse_program(text).expect("parses");
    assert_eq!(prog.to_string(), text);
    tessera_ir::loops::verify::verify(&prog).expect("verifies");
    let bad = parse_program(&text.replace("vectorize(8)", "vectorize(1)")).expect("parses");
    let err = tessera_ir::loops::verify::verify(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vectorized 1 wide"), "{err}");
}
