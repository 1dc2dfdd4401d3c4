//! Tensor stores on the interpreter: a cooperative loop's threads write a tile, fence it and
//! hand it over through an mbarrier, one thread stores it — the box lands clipped at the
//! tensor's edges — and every break of the rules (no fence, a fence after the hand-over, a
//! write before the wait, no wait at all) is refused with a message that names it.

use crate::loops::parse::parse_program;
use crate::loops::verify::verify;
use crate::{DType, Tensor};

/// `y`: a 20 × 24 f16 matrix. The 64 threads each write one element of an 8 × 8 tile
/// (`x[t] + 1`) into shared `s` and then run `after_write`; thread 0 waits for the others
/// (`mbarrier_wait bar[0] parity(0)`), stores the tile as the box at column 20, row 16 —
/// hanging over the right and bottom edges — and runs `after_store`.
fn kernel(after_write: &str, after_store: &str) -> String {
    format!(
        "kernel k(in x: f16[64], out y: f16[480], shared s: f16[512], shared bar: i64[1]) {{
  for g in 0..1 block(x) {{
    for t in 0..64 thread(x) {{
      if (t == 0) {{
        mbarrier_init bar[0] count(64)
      }}
    }}
    for t1 in 0..64 thread(x) {{
      s[t1] = (x[t1] + 1.0:f16)
      {after_write}
      if (t1 == 0) {{
        mbarrier_wait bar[0] parity(0)
        tensor_store(f16, none) y[0; 24, 20; 24; box 8, 8] at(20, 16) = s[0]
        {after_store}
      }}
    }}
  }}
}}"
    )
}

const HAND_OVER: &str = "fence_proxy_async\n      mbarrier_arrive bar[0]";
const WAIT: &str = "bulk_wait_read pending(0)";

fn x() -> Tensor {
    let values: Vec<f64> = (0..64).map(|i| (i % 29) as f64 - 7.0).collect();
    Tensor::from_f64(DType::F16, vec![64], &values)
}

fn run(text: &str) -> crate::error::Result<Vec<f64>> {
    let y = crate::loops::testing::first_output(text, &[x()])?;
    Ok((0..480).map(|i| y.get_f64(i)).collect())
}

#[test]
fn a_fenced_handed_over_tile_lands_clipped_to_the_tensor() {
    let text = kernel(HAND_OVER, WAIT);
    crate::loops::testing::assert_round_trip(&text);
    let y = run(&text).unwrap();
    let x = x();
    for r in 0..20usize {
        for c in 0..24usize {
            match r >= 16 && c >= 20 {
                true => {
                    let want = x.get_f64((r - 16) * 8 + c - 20) + 1.0;
                    assert_eq!(y[r * 24 + c], want, "y({r}, {c})")
                }
                // Never written: still the poison.
                false => assert!(y[r * 24 + c].is_nan(), "y({r}, {c}) written"),
            }
        }
    }
}

#[test]
fn breaking_the_fence_the_hand_over_or_the_wait_is_refused() {
    let fence_late = "mbarrier_arrive bar[0]\n      fence_proxy_async";
    let overwrite = "bulk_wait_read pending(0)\n        s[0] = 0.0:f16";
    let overwrite_early = "s[0] = 0.0:f16\n        bulk_wait_read pending(0)";
    for (after_write, after_store, why) in [
        (
            "mbarrier_arrive bar[0]",
            WAIT,
            "no fence_proxy_async after it",
        ),
        (fence_late, WAIT, "in no order this thread knows of"),
        (HAND_OVER, "", "still reads shared memory"),
        (HAND_OVER, overwrite_early, "tensor store still reads it"),
    ] {
        let err = run(&kernel(after_write, after_store))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(why),
            "{after_write:?} / {after_store:?}: {err}"
        );
    }
    // After the wait the tile is the thread's again.
    run(&kernel(HAND_OVER, overwrite)).unwrap();
    // A barrier does not wait for a tensor store's reads: the next thread loop may not
    // write its tile before the issuing thread has waited.
    let next_loop = "    for t2 in 0..64 thread(x) {\n      s[t2] = 0.0:f16\n    }\n  }\n}";
    let text = kernel(HAND_OVER, "").replace("  }\n}", next_loop);
    let err = run(&text).unwrap_err().to_string();
    assert!(err.contains("tensor store still reads it"), "{err}");
    run(&kernel(HAND_OVER, WAIT).replace("  }\n}", next_loop)).unwrap();
}

#[test]
fn the_verifier_names_a_tensor_store_it_refuses() {
    for (from, to, why) in [
        (
            "y[0; 24, 20; 24; box 8, 8]",
            "x[0; 24, 20; 24; box 8, 8]",
            "into an output",
        ),
        ("box 8, 8]", "box 4, 8]", "whole 16-byte units"),
        ("pending(0)", "pending(9)", "9 pending stores"),
    ] {
        let text = kernel(HAND_OVER, WAIT).replace(from, to);
        let err = verify(&parse_program(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{to}: {err}");
    }
}
