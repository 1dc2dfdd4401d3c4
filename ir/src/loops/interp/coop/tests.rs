//! Cooperative thread loops on the interpreter: a warp-specialised pipeline — a producer
//! thread copying tiles into two buffers, consumers releasing them through "empty"
//! mbarriers — runs, and the ways to break it are reported.

use crate::{DType, Tensor};

/// Four 8 × 8 f16 tiles of `x` (the rows of a 32 × 8 matrix) pass through two buffers of
/// `s`: thread 4 (the producer) copies tile `k` into buffer `k % 2` once the consumers have
/// released it (`empty`: `bar[2 + k % 2]`, four arrivals), announcing it on `full`
/// (`bar[k % 2]`); threads 0–3 (the consumers) each copy a quarter of every tile to `y`
/// after waiting for it, then release the buffer. `release` and `reuse` are the consumers'
/// arrival and the producer's wait (to be broken by tests).
fn pipeline(release: &str, reuse: &str) -> String {
    format!(
        "kernel k(in x: f16[256], out y: f16[256], shared s: f16[512], shared bar: i64[4]) {{
  for g in 0..1 block(x) {{
    for t in 0..5 thread(x) {{
      if (t == 0) {{
        mbarrier_init bar[0] count(1)
        mbarrier_init bar[1] count(1)
        mbarrier_init bar[2] count(4)
        mbarrier_init bar[3] count(4)
      }}
    }}
    for t1 in 0..5 thread(x) {{
      if (t1 < 4) {{
        for k in 0..4 {{
          mbarrier_wait bar[(k % 2)] parity(((k // 2) % 2))
          for u in 0..16 {{
            y[((k*64 + t1*16) + u)] = s[(((k % 2)*64 + t1*16) + u)]
          }}
          {release}
        }}
      }}
      if (t1 == 4) {{
        for k1 in 0..4 {{
          {reuse}
          mbarrier_expect_tx bar[(k1 % 2)] bytes(128)
          tensor_copy(f16, none) s[(k1 % 2)*64] = x[0; 8, 32; 8; box 8, 8] at(0, k1*8) mbar(bar[(k1 % 2)])
        }}
      }}
    }}
  }}
}}"
    )
}

const RELEASE: &str = "mbarrier_arrive bar[(2 + (k % 2))]";
const REUSE: &str = "mbarrier_wait bar[(2 + (k1 % 2))] parity((((k1 // 2) + 1) % 2))";

fn x() -> Tensor {
    let values: Vec<f64> = (0..256).map(|i| (i % 101) as f64 + 1.0).collect();
    Tensor::from_f64(DType::F16, vec![256], &values)
}

fn run(text: &str) -> crate::error::Result<Tensor> {
    crate::loops::testing::first_output(text, &[x()])
}

#[test]
fn a_producer_and_its_consumers_take_turns() {
    let text = pipeline(RELEASE, REUSE);
    crate::loops::testing::assert_round_trip(&text);
    let y = run(&text).unwrap();
    let x = x();
    for i in 0..256 {
        assert_eq!(y.get_f64(i), x.get_f64(i), "element {i}");
    }
}

#[test]
fn overwriting_a_buffer_before_its_release_is_a_race() {
    // The producer does not wait for the consumers: tile 2 overwrites tile 0 before they
    // read it — or, in this order, after they read it but with nothing telling it so.
    let e = run(&pipeline(RELEASE, "")).unwrap_err().to_string();
    assert!(
        e.contains("overwrites") || e.contains("would hang"),
        "expected a race or a hang: {e}"
    );
}

#[test]
fn a_release_that_never_comes_is_a_hang() {
    let e = run(&pipeline("", REUSE)).unwrap_err().to_string();
    assert!(e.contains("the GPU would hang"), "{e}");
    assert!(e.contains("thread (4, 0, 0) waits on `bar[2]`"), "{e}");
    // One arrival too few a phase: the last buffer is never released either.
    let e = run(&pipeline(RELEASE, REUSE).replace("count(4)", "count(5)"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("the GPU would hang"), "{e}");
}

#[test]
fn a_consumer_reading_before_its_wait_is_caught() {
    // Reading, then waiting: the copy overwrites what the consumers read, unreleased.
    let wait = "mbarrier_wait bar[(k % 2)] parity(((k // 2) % 2))";
    let text = pipeline(RELEASE, REUSE)
        .replace(&format!("{wait}\n"), "")
        .replace(
            &format!("          {RELEASE}"),
            &format!("          {wait}\n          {RELEASE}"),
        );
    assert_ne!(text, pipeline(RELEASE, REUSE));
    let e = run(&text).unwrap_err().to_string();
    assert!(
        e.contains("overwrites shared `s[0]`, which thread (0, 0, 0) read in an epoch"),
        "{e}"
    );
}
