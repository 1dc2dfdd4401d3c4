//! Asynchronous copies from global into shared memory: how a GPU schedule stages the next
//! tile while the threads still compute on the current one, without passing it through
//! registers (`cp.async` on sm_80+).
//!
//! `async_copy(f16, 8) dst[d] = src[s] valid(v) lands(n)` — the running thread copies
//! `src[s..s+8]` into `dst[d..d+8]`, where only the first `v` elements (clamped to `0..=8`)
//! are read and the rest are written as zeros (a run that crosses the edge of its matrix).
//! `dst` is a shared buffer, `src` an input of the kernel: nothing in the kernel writes it,
//! so when the copy reads it does not matter.
//!
//! **What it means.** The copy is *in flight* until the `n`-th barrier after it (`lands(1)`,
//! printed without it: the end of its thread loop): only then are the elements in place and
//! visible to every thread of the block. Until then no thread — the copying one included —
//! may read or write them; the interpreter reports such an access as an error, as it reports
//! races. Read that way, the per-thread expansion ([`AsyncCopy::expand`]: one guarded store
//! per element) means the same: the interpreter and the CPU backend run it; the CUDA backend
//! issues one `cp.async` where the run is 4, 8 or 16 bytes at addresses aligned to its size
//! (else the expansion). Before each barrier every thread commits the copies it issued since
//! the last one as a group and waits until at most `n − 1` groups are pending (the least `n`
//! of the kernel's copies): a copy issued `n` barriers back has landed. A pipeline `n` deep
//! thus keeps `n` tiles in flight while it computes on another.
//!
//! **Architecture invariant:** an `async_copy` sits inside a thread loop, copies from an
//! input buffer into a shared buffer of the same dtype, and its destination elements are
//! touched by nobody until the next barrier. The verifier checks the first two, the
//! interpreter the last.

use super::{CmpOp, IExpr, Stmt, VExpr};
use crate::dtype::DType;

/// Most elements one copy moves (16 bytes of 8-bit elements).
pub const MAX_ASYNC_COPY_LEN: i64 = 16;
/// Most barriers a copy may stay in flight (deeper pipelines would not fit shared memory).
pub const MAX_ASYNC_COPY_LANDS: i64 = 8;

/// `dst[dst_at..dst_at+len] = src[src_at..src_at+valid] ++ zeros`, complete at the next
/// barrier.
#[derive(Clone, Debug, PartialEq)]
pub struct AsyncCopy {
    /// The elements' dtype (both buffers').
    pub dtype: DType,
    /// Elements copied (1 to [`MAX_ASYNC_COPY_LEN`]).
    pub len: i64,
    /// A shared buffer and the first element written.
    pub dst: String,
    pub dst_at: IExpr,
    /// An input buffer and the first element read.
    pub src: String,
    pub src_at: IExpr,
    /// How many of the `len` elements are read (clamped to `0..=len`); the rest are zeros.
    pub valid: IExpr,
    /// After how many barriers the copy has landed (1: the next).
    pub lands: i64,
}

impl AsyncCopy {
    /// The copy as ordinary loop IR: per element `u`, `dst[d + u] = select(u < valid,
    /// src[s + u], 0)` — the load evaluated only where it is selected.
    pub fn expand(&self) -> Vec<Stmt> {
        let zero = VExpr::lit(0.0, self.dtype);
        (0..self.len)
            .map(|u| Stmt::Store {
                buf: self.dst.clone(),
                index: self.dst_at.clone().plus(IExpr::c(u)),
                value: VExpr::select(
                    VExpr::ICmp(CmpOp::Lt, IExpr::c(u), self.valid.clone()),
                    VExpr::load(&self.src, self.src_at.clone().plus(IExpr::c(u))),
                    zero.clone(),
                ),
            })
            .collect()
    }

    /// The statement with `f` applied to each of its index expressions.
    pub fn map_iexprs(&self, f: &dyn Fn(&IExpr) -> IExpr) -> AsyncCopy {
        AsyncCopy {
            dst_at: f(&self.dst_at),
            src_at: f(&self.src_at),
            valid: f(&self.valid),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::loops::interp::run_outputs;
    use crate::loops::parse::parse_program;
    use crate::loops::verify::verify;
    use crate::{DType, Tensor};

    /// Two threads each copy a run of 4 of `x` into shared memory — the second run only 3
    /// long, its last element a zero — and, after the barrier, each writes the run the other
    /// copied; or (`read_in_same_loop`) each reads its own run back before the barrier.
    fn kernel(read_in_same_loop: bool) -> String {
        let read = "y[(t*4 + u)] = s[((1 - t)*4 + u)]";
        let (first, second) = match read_in_same_loop {
            true => (
                "for u in 0..4 {\n y[(t*4 + u)] = s[(t*4 + u)]\n }".to_string(),
                String::new(),
            ),
            false => (
                String::new(),
                format!("for t in 0..2 thread(x) {{\n for u in 0..4 {{\n {read}\n }}\n }}")
                    .replace("for t in", "for t2 in")
                    .replace("t*4", "t2*4")
                    .replace("(1 - t)", "(1 - t2)"),
            ),
        };
        format!(
            "kernel k(in x: f32[8], out y: f32[8], shared s: f32[8]) {{
  for g in 0..1 block(x) {{
    for t in 0..2 thread(x) {{
      async_copy(f32, 4) s[t*4] = x[t*4] valid((4 - t))
      {first}
    }}
    {second}
  }}
}}"
        )
    }

    #[test]
    fn a_copy_lands_at_the_barrier_with_its_tail_zeroed() {
        let prog = parse_program(&kernel(false)).unwrap();
        verify(&prog).unwrap();
        assert_eq!(
            parse_program(&prog.to_string()).unwrap(),
            prog,
            "prints and parses back"
        );
        let x: Vec<f64> = (1..=8).map(f64::from).collect();
        let y = run_outputs(&prog, &[Tensor::from_f64(DType::F32, vec![8], &x)]).unwrap();
        let got: Vec<f64> = (0..8).map(|i| y[0].get_f64(i)).collect();
        assert_eq!(got, [5.0, 6.0, 7.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn touching_a_copy_in_flight_is_an_error() {
        let prog = parse_program(&kernel(true)).unwrap();
        verify(&prog).unwrap();
        let x = Tensor::from_f64(DType::F32, vec![8], &[1.0; 8]);
        let e = run_outputs(&prog, &[x]).unwrap_err().to_string();
        assert!(e.contains("in flight"), "{e}");
    }

    #[test]
    fn the_verifier_keeps_copies_from_inputs_to_shared_memory_in_thread_loops() {
        let good = "async_copy(f32, 4) s[0] = x[0] valid(4)";
        for (bad, why) in [
            (
                "async_copy(f32, 4) y[0] = x[0] valid(4)",
                "into a shared buffer",
            ),
            ("async_copy(f32, 4) s[0] = y[0] valid(4)", "from an input"),
            ("async_copy(f16, 4) s[0] = x[0] valid(4)", "both f16"),
            ("async_copy(f32, 17) s[0] = x[0] valid(4)", "1 to 16"),
            (
                "async_copy(f32, 4) s[0] = x[0] valid(q)",
                "`q` is not bound",
            ),
        ] {
            let text =
                kernel(false).replace("async_copy(f32, 4) s[t*4] = x[t*4] valid((4 - t))", bad);
            let e = verify(&parse_program(&text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: expected `{why}` in `{e}`");
        }
        let outside =
            kernel(false).replace("async_copy(f32, 4) s[t*4] = x[t*4] valid((4 - t))", "");
        let outside = outside.replacen("for t in", &format!("{good}\n for t in"), 1);
        let e = verify(&parse_program(&outside).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside a thread loop"), "{e}");
    }
}
