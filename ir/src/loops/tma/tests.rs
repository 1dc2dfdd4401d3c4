//! The TMA statements' meaning on the interpreter, their text form and their verifier rules.

use crate::loops::interp::run_outputs;
use crate::loops::parse::parse_program;
use crate::loops::verify::verify;
use crate::{DType, Tensor};

/// A 10 × 20 f16 matrix `x` (rows of 24) copied as a box of 4 rows × 8 columns at column
/// −2, row 7 — so that it hangs over the left and the bottom edge — by thread 0 into `s`;
/// both threads wait for it, then each writes 16 of the box's 32 elements to `y`.
/// `issue` and `wait` are the issuing and the waiting statements (to be broken by tests).
fn kernel(issue: &str, wait: &str, swizzle: &str) -> String {
    format!(
        "kernel k(in x: f16[240], out y: f16[32], shared s: f16[512], shared bar: i64[2]) {{
  for g in 0..1 block(x) {{
    for t in 0..2 thread(x) {{
      if (t == 0) {{
        mbarrier_init bar[0] count(1)
      }}
    }}
    for t1 in 0..2 thread(x) {{
      if (t1 == 0) {{
        {issue}
        tensor_copy(f16, {swizzle}) s[0] = x[0; 20, 10; 24; box 8, 4] at(-2, 7) mbar(bar[0])
      }}
      {wait}
      for u in 0..16 {{
        y[(t1*16 + u)] = s[(t1*16 + u)]
      }}
    }}
  }}
}}"
    )
}

const ISSUE: &str = "mbarrier_expect_tx bar[0] bytes(64)";
const WAIT: &str = "mbarrier_wait bar[0] parity(0)";

fn x() -> Tensor {
    let values: Vec<f64> = (0..240).map(|i| (i % 97) as f64 + 1.0).collect();
    Tensor::from_f64(DType::F16, vec![240], &values)
}

fn run(text: &str) -> crate::error::Result<Vec<f64>> {
    let y = crate::loops::testing::first_output(text, &[x()])?;
    Ok((0..32).map(|i| y.get_f64(i)).collect())
}

#[test]
fn a_box_lands_after_the_wait_with_zeros_outside_the_tensor() {
    let text = kernel(ISSUE, WAIT, "none");
    crate::loops::testing::assert_round_trip(&text);
    let got = run(&text).unwrap();
    let x = x();
    for r in 0..4usize {
        for c in 0..8usize {
            let (row, col) = (7 + r as i64, c as i64 - 2);
            let want = match row < 10 && col >= 0 {
                true => x.get_f64((row * 24 + col) as usize),
                false => 0.0,
            };
            assert_eq!(got[r * 8 + c], want, "box element ({r}, {c})");
        }
    }
}

#[test]
fn reading_before_the_wait_or_waiting_on_the_wrong_parity_is_an_error() {
    for (wait, why) in [
        ("", "has not waited for phase 0"),
        // Phase 1 has begun: parity 1 waits for its end, which nothing brings.
        ("mbarrier_wait bar[0] parity(1)", "the GPU would hang"),
    ] {
        let e = run(&kernel(ISSUE, wait, "none")).unwrap_err().to_string();
        assert!(e.contains(why), "{wait}: expected `{why}` in `{e}`");
    }
}

#[test]
fn a_phase_that_cannot_complete_is_a_hang() {
    for (issue, why) in [
        ("mbarrier_expect_tx bar[0] bytes(128)", "the GPU would hang"),
        ("", "the GPU would hang"),
        (
            "mbarrier_expect_tx bar[1] bytes(64)",
            "before it is initialised",
        ),
    ] {
        let e = run(&kernel(issue, WAIT, "none")).unwrap_err().to_string();
        assert!(e.contains(why), "{issue}: expected `{why}` in `{e}`");
    }
    // Nobody waits, and the phase never completes: the block ends with it open.
    let text = kernel("mbarrier_expect_tx bar[0] bytes(128)", "", "none")
        .replace("y[(t1*16 + u)] = s[(t1*16 + u)]", "y[(t1*16 + u)] = 1:f16");
    let e = run(&text).unwrap_err().to_string();
    assert!(e.contains("incomplete"), "{e}");
}

#[test]
fn initialising_races_with_a_use_between_the_same_barriers() {
    let text = kernel(ISSUE, WAIT, "none").replace(
        "for t in 0..2 thread(x) {\n      if (t == 0) {\n        mbarrier_init bar[0] count(1)\n      }\n    }\n",
        "",
    );
    let text = text.replace(
        "if (t1 == 0) {\n        mbarrier",
        "if (t1 == 0) {\n        mbarrier_init bar[0] count(1)\n        mbarrier",
    );
    let e = run(&text).unwrap_err().to_string();
    assert!(e.contains("data race"), "{e}");
}

#[test]
fn a_swizzled_box_lands_in_the_swizzled_places() {
    // A box of 64 columns: the swizzle needs 128-byte rows.
    let text = kernel(ISSUE, WAIT, "sw128")
        .replace("x: f16[240]", "x: f16[640]")
        .replace("x[0; 20, 10; 24; box 8, 4]", "x[0; 64, 10; 64; box 64, 2]")
        .replace("bytes(64)", "bytes(256)")
        .replace("at(-2, 7)", "at(0, 3)")
        .replace("y: f16[32]", "y: f16[128]")
        .replace("u in 0..16", "u in 0..64")
        .replace("t1*16", "t1*64");
    let prog = parse_program(&text).unwrap();
    verify(&prog).unwrap();
    let values: Vec<f64> = (0..640).map(|i| (i % 89) as f64).collect();
    let y = run_outputs(&prog, &[Tensor::from_f64(DType::F16, vec![640], &values)]).unwrap();
    for r in 0..2 {
        for c in 0..64 {
            let o = r * 64 + c;
            let place = o ^ (((o / 64) % 8) * 8);
            assert_eq!(y[0].get_f64(place), values[(3 + r) * 64 + c], "({r}, {c})");
        }
    }
}

#[test]
fn the_verifier_keeps_copies_to_what_the_hardware_accepts() {
    let good = "tensor_copy(f16, none) s[0] = x[0; 20, 10; 24; box 8, 4] at(-2, 7) mbar(bar[0])";
    for (bad, why) in [
        (
            good.replace("s[0]", "y[0]"),
            "from an input into a shared buffer",
        ),
        (
            good.replace("x[0;", "y[0;"),
            "from an input into a shared buffer",
        ),
        (good.replace("s[0]", "s[8]"), "128 bytes aligned"),
        (good.replace("x[0;", "x[4;"), "16-byte aligned"),
        (good.replace("; 24;", "; 20;"), "16-byte aligned"),
        (
            good.replace("box 8, 4", "box 4, 4"),
            "rows of whole 16-byte units",
        ),
        (good.replace("box 8, 4", "box 8, 300"), "sides 1 to 256"),
        (good.replace("20, 10", "24, 11"), "reaches element"),
        (good.replace("at(-2, 7)", "at(-2)"), "coordinates"),
        (good.replace("none", "sw128"), "rows of 128 bytes"),
        (
            good.replace("mbar(bar[0])", "mbar(s[0])"),
            "not a shared i64 buffer",
        ),
    ] {
        let text = kernel(ISSUE, WAIT, "none").replace(good, &bad);
        let e = verify(&parse_program(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{bad}: expected `{why}` in `{e}`");
    }
    for (bad, why) in [
        ("mbarrier_init bar[0] count(0)", "count 0"),
        ("mbarrier_init s[0] count(1)", "not a shared i64 buffer"),
        ("y[0] = 0:f16", ""),
    ] {
        let text = kernel(ISSUE, WAIT, "none").replace("mbarrier_init bar[0] count(1)", bad);
        let result = verify(&parse_program(&text).unwrap());
        match why {
            "" => assert!(result.is_ok(), "{bad}: {result:?}"),
            why => assert!(
                result.unwrap_err().to_string().contains(why),
                "{bad}: expected `{why}`"
            ),
        }
    }
    let text = kernel(ISSUE, WAIT, "none").replace(
        "y[(t1*16 + u)] = s[(t1*16 + u)]",
        "y[(t1*16 + u)] = s[(t1*16 + u)]\n        bar[0] = 1:i64",
    );
    let e = verify(&parse_program(&text).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("mbarrier buffer `bar`"), "{e}");
}
