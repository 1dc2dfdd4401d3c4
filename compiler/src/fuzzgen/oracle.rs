//! The differential oracle: the reference interpreters against the passes and the native
//! code, on fresh random inputs (never zeros) with outputs poisoned before every run.
//!
//! Named tolerances:
//! - [`PASS_EXACT`]: a loop pass (split, reorder, fuse, tile, annotations) keeps every
//!   operation and the order of every sum, so the loop interpreter must agree bit for bit.
//! - [`native_tolerance`]: compiled code may contract multiplies and adds into FMAs and
//!   fold a vector loop's reduction per lane, so it gets `rtol` 1e-4 and an absolute slack of
//!   1e-5 × the largest reference magnitude (a sum's rounding scales with its terms); f16
//!   and bf16 outputs, whose f32 sums in another order may round to the neighbouring value,
//!   two of their units (2e-3, 2e-2).
//! - [`graph_tolerance`]: a whole optimised graph (rewrites, fusion, folded constants) vs
//!   the graph interpreter: `rtol` 1e-3, absolute 1e-4 × the largest magnitude.

use super::fence::{FencedBuf, Flush};
use tessera_ir::compare::{Tolerance, compare};
use tessera_ir::loops::{BufRole, LoopProgram};
use tessera_ir::{Rng, Tensor};

pub const PASS_EXACT: Tolerance = Tolerance::Exact;

fn scaled(want: &Tensor, rtol: f64, atol_per_magnitude: f64) -> Tolerance {
    let largest = if want.dtype().is_float() {
        want.to_f64_vec()
            .into_iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()))
    } else {
        0.0
    };
    Tolerance::Close {
        rtol,
        atol: atol_per_magnitude * largest.max(1.0),
    }
}

pub fn native_tolerance(want: &Tensor) -> Tolerance {
    match want.dtype() {
        // Sums in f32 in another order may round to the neighbouring half-precision value.
        tessera_ir::DType::F16 => scaled(want, 2e-3, 2e-4),
        tessera_ir::DType::BF16 => scaled(want, 2e-2, 2e-3),
        _ => scaled(want, 1e-4, 1e-5),
    }
}

pub fn graph_tolerance(want: &Tensor) -> Tolerance {
    scaled(want, 1e-3, 1e-4)
}

/// Random values for the input buffers of `prog` (from `seed`; never zero).
pub fn program_inputs(prog: &LoopProgram, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    prog.params()
        .filter(|b| b.role == BufRole::Input)
        .map(|b| rng.tensor(b.dtype, vec![b.len]))
        .collect()
}

/// The parameter buffers of `prog`: `inputs` in order, every output poisoned.
fn buffers(prog: &LoopProgram, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut ins = inputs.iter();
    prog.params()
        .map(|b| match b.role {
            BufRole::Input => ins
                .next()
                .cloned()
                .unwrap_or_else(|| Tensor::poisoned(b.dtype, vec![b.len])),
            _ => Tensor::poisoned(b.dtype, vec![b.len]),
        })
        .collect()
}

/// The outputs of `prog` on the loop interpreter.
pub fn interpret(prog: &LoopProgram, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    tessera_ir::loops::interp::run_outputs(prog, inputs).map_err(|e| e.to_string())
}

fn outputs(prog: &LoopProgram, bufs: Vec<Tensor>) -> Vec<Tensor> {
    bufs.into_iter()
        .zip(prog.params())
        .filter(|(_, b)| b.role == BufRole::Output)
        .map(|(t, _)| t)
        .collect()
}

/// The outputs of `prog` compiled by the JIT for the host, called on the two halves of its
/// parallel range (as two threads would run it). Every buffer lies between guard pages
/// ([`fence`](super::fence)), flush against the one after it and, in a second run, against
/// the one before it: an access outside a buffer faults instead of passing unseen. The two
/// runs must agree bit for bit.
pub fn run_native(prog: &LoopProgram, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let jit = tessera_codegen::jit::JitModule::compile(&[prog], &tessera_codegen::Target::host())
        .map_err(|e| format!("code generation failed: {e}"))?;
    let f = jit
        .function(&prog.name)
        .ok_or_else(|| format!("kernel `{}` missing after compilation", prog.name))?;
    let mut runs = Vec::new();
    for flush in [Flush::End, Flush::Start] {
        let bufs = buffers(prog, inputs);
        let mut fenced = bufs
            .iter()
            .map(|t| FencedBuf::new(t.bytes(), flush))
            .collect::<Result<Vec<_>, _>>()?;
        let args: Vec<*mut u8> = fenced.iter_mut().map(FencedBuf::as_mut_ptr).collect();
        let end = prog.parallel_extent();
        // SAFETY: `args` holds one pointer per parameter of `prog`, each to a live buffer of
        // the declared dtype and length (built from `prog.params()` above); the two calls
        // cover disjoint halves of the parallel range, one after the other.
        unsafe {
            f(args.as_ptr(), 0, end / 2);
            f(args.as_ptr(), end / 2, end);
        }
        let bufs = bufs
            .into_iter()
            .zip(&fenced)
            .map(|(t, fb)| {
                Tensor::from_bytes(t.dtype(), t.shape().to_vec(), fb.bytes().to_vec())
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        runs.push(outputs(prog, bufs));
    }
    let second = runs.pop().expect("two runs");
    let first = runs.pop().expect("two runs");
    agree(
        "native code at the other guard page",
        &second,
        &first,
        |_| Tolerance::Exact,
    )?;
    Ok(second)
}

/// Compares output lists; the error names the output and the first differing element.
pub fn agree(
    what: &str,
    got: &[Tensor],
    want: &[Tensor],
    tol: impl Fn(&Tensor) -> Tolerance,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} outputs, expected {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        compare(g, w, tol(w)).map_err(|e| format!("{what}: output {i}: {e}"))?;
    }
    Ok(())
}
