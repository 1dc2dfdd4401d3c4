//! Register reallocation between warpgroups (`setmaxnreg`, sm_90a): in a warp-specialised
//! kernel the producer warpgroup, which only issues copies, gives registers back to the
//! multiprocessor and the consumer warpgroups, whose sums live in registers, claim them —
//! CUTLASS's 40 / 232 split of a 384-thread block.
//!
//! `setmaxnreg_dec count(n)` / `setmaxnreg_inc count(n)` ([`SetMaxNReg`]): from here on
//! each thread of the executing warpgroup holds `n` registers (24 to 256, a multiple of 8).
//! A warpgroup-collective statement: only in a thread loop, every thread of a warpgroup
//! together (no guard that splits a warpgroup). A kernel starts with the registers its
//! launch allows each thread ([`entry_registers`]: what ptxas gives a kernel whose
//! `.maxntid` is its block); a claim waits until releases have freed enough of the
//! multiprocessor's registers, so the claims of a block must not exceed what its releases
//! free ([`claimable`]) — or it hangs. The statement changes no value: the interpreters and
//! the CPU code skip it; the CUDA backend emits the instruction.

use std::fmt;

/// Registers of a multiprocessor (sm_80, sm_90), shared by its resident blocks' threads.
pub const SM_REGISTERS: i64 = 65_536;

/// Registers a thread can hold at most (PTX's limit: 255 addressable).
pub const MAX_THREAD_REGISTERS: i64 = 255;

/// The range and granule of `setmaxnreg`'s count.
pub const SETMAXNREG_MIN: i64 = 24;
pub const SETMAXNREG_MAX: i64 = 256;
pub const SETMAXNREG_GRANULE: i64 = 8;

/// Whether a warpgroup releases registers or claims more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterChange {
    /// `.dec`: down to the count, the rest back to the multiprocessor.
    Release,
    /// `.inc`: up to the count, waiting for registers released by others.
    Claim,
}

/// `setmaxnreg_{dec,inc} count(n)`.
#[derive(Clone, Debug, PartialEq)]
pub struct SetMaxNReg {
    pub change: RegisterChange,
    pub count: i64,
}

impl SetMaxNReg {
    /// The statement's keyword.
    pub fn keyword(&self) -> &'static str {
        match self.change {
            RegisterChange::Release => "setmaxnreg_dec",
            RegisterChange::Claim => "setmaxnreg_inc",
        }
    }

    /// Whether the count is one `setmaxnreg` takes.
    pub fn count_ok(&self) -> bool {
        (SETMAXNREG_MIN..=SETMAXNREG_MAX).contains(&self.count)
            && self.count % SETMAXNREG_GRANULE == 0
    }
}

impl fmt::Display for SetMaxNReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} count({})", self.keyword(), self.count)
    }
}

/// Whether `body` reallocates registers (code for sm_90a, whose entry needs its registers
/// fixed: `.maxntid` and `.minnctapersm 1`).
pub fn uses_setmaxnreg(body: &[super::Stmt]) -> bool {
    super::any_stmt(body, &|s| matches!(s, super::Stmt::SetMaxNReg(_)))
}

/// Registers per thread a kernel of `threads`-thread blocks starts with under `.maxntid`:
/// the multiprocessor's registers shared out among one block's threads, in granules of 8,
/// at most 255 — ptxas's limit for such a kernel.
pub fn entry_registers(threads: i64) -> i64 {
    let share = SM_REGISTERS / threads.max(1);
    (share / SETMAXNREG_GRANULE * SETMAXNREG_GRANULE).min(MAX_THREAD_REGISTERS)
}

/// The most registers each of `claiming` threads can claim (a multiple of 8, at most
/// `setmaxnreg`'s 256) in a block of `threads` threads whose other `threads − claiming`
/// release theirs down to `released` each: their entry registers and their share of the
/// freed ones.
pub fn claimable(threads: i64, claiming: i64, released: i64) -> i64 {
    let entry = entry_registers(threads);
    let freed = (threads - claiming) * (entry - released).max(0);
    let extra = freed / claiming.max(1) / SETMAXNREG_GRANULE * SETMAXNREG_GRANULE;
    (entry + extra).min(SETMAXNREG_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loops::parse::parse_program;
    use crate::loops::verify::verify;

    /// A kernel whose first warpgroup claims registers (under `claim`) and whose second
    /// releases them (`release`), then copies `x` to `y`.
    fn kernel(claim: &str, release: &str) -> String {
        format!(
            "kernel k(in x: f32[256], out y: f32[256]) {{
  for g in 0..1 block(x) {{
    for t in 0..256 thread(x) {{
      if (t < 128) {{
        {claim}
      }}
      if (t >= 128) {{
        {release}
      }}
      y[t] = x[t]
    }}
  }}
}}"
        )
    }

    #[test]
    fn setmaxnreg_round_trips_and_is_a_warpgroup_collective() {
        let text = kernel("setmaxnreg_inc count(232)", "setmaxnreg_dec count(40)");
        let prog = parse_program(&text).unwrap();
        verify(&prog).unwrap();
        assert_eq!(
            parse_program(&prog.to_string()).unwrap(),
            prog,
            "round trip"
        );
        let x = crate::Tensor::from_f64(
            crate::DType::F32,
            vec![256],
            &(0..256).map(|i| i as f64 + 0.5).collect::<Vec<_>>(),
        );
        let y = crate::loops::interp::run_outputs(&prog, std::slice::from_ref(&x)).unwrap();
        assert_eq!(y[0], x, "no value changes");
        for (claim, why) in [
            ("setmaxnreg_inc count(236)", "a multiple of 8"),
            ("setmaxnreg_inc count(264)", "24 to 256"),
            (
                "if (t < 64) {\n setmaxnreg_inc count(232)\n }",
                "splits its groups",
            ),
        ] {
            let prog = parse_program(&kernel(claim, "")).unwrap();
            let e = verify(&prog).unwrap_err().to_string();
            assert!(e.contains(why), "{claim}: expected `{why}` in `{e}`");
        }
        let outside = "kernel k(in x: f32[1], out y: f32[1]) {
  setmaxnreg_dec count(40)
  y[0] = x[0]
}";
        let e = verify(&parse_program(outside).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside a thread loop"), "{e}");
    }

    #[test]
    fn a_producer_warpgroup_frees_what_two_consumer_warpgroups_claim() {
        // CUTLASS's warp-specialised Hopper GEMM: 384 threads start at 168, the producer
        // goes down to 40, the consumers up to 232 — 64 512 registers either way.
        assert_eq!(entry_registers(384), 168);
        let claim = claimable(384, 256, 40);
        assert_eq!(claim, 232);
        assert!(128 * 40 + 256 * claim <= SM_REGISTERS);
        // Two teams of two consumer warpgroups: 640 threads.
        assert_eq!(entry_registers(640), 96);
        let claim = claimable(640, 512, 40);
        assert!(128 * 40 + 512 * claim <= SM_REGISTERS, "{claim}");
        assert_eq!(entry_registers(128), 255);
        assert_eq!(claimable(128, 128, 40), 255);
    }
}
