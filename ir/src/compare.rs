//! Named tolerances and the comparison of a result with the reference interpreter's, shared
//! by the tests and the autotuner's measurer (one definition of "agrees with the oracle").

use crate::tensor::Tensor;

/// How close a result must be to the reference.
#[derive(Clone, Copy, Debug)]
pub enum Tolerance {
    /// Bit-identical (integer ops, data movement).
    Exact,
    /// `|a - r| <= atol + rtol * |r|` element-wise.
    Close { rtol: f64, atol: f64 },
    /// Within `n` units in the last place of f32.
    Ulp(u32),
}

/// The relative tolerance of compiled results of element type `dtype` against the reference
/// interpreter (`run --check`, the autotuner's candidates): 1e-3 for f32 and wider; for half
/// precision a few units of its own precision, since every operation's result is rounded to
/// it (f16: 2^-10 ≈ 1e-3, bf16: 2^-7 ≈ 8e-3).
pub fn compiled_rtol(dtype: crate::DType) -> f64 {
    match dtype {
        crate::DType::F16 => 1e-2,
        crate::DType::BF16 => 5e-2,
        _ => 1e-3,
    }
}

/// Compares `got` with `want`; returns a description of the first mismatch.
pub fn compare(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!(
            "got {}{:?}, want {}{:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
    }
    if !got.dtype().is_float() || matches!(tol, Tolerance::Exact) {
        if got.bytes() != want.bytes() {
            let i = (0..got.len())
                .find(|&i| got.get_f64(i).to_bits() != want.get_f64(i).to_bits())
                .unwrap_or(0);
            return Err(format!(
                "element {i}: got {}, want {}",
                got.get_f64(i),
                want.get_f64(i)
            ));
        }
        return Ok(());
    }
    for i in 0..got.len() {
        let (a, r) = (got.get_f64(i), want.get_f64(i));
        if a.is_nan() && r.is_nan() {
            continue;
        }
        let ok = match tol {
            Tolerance::Close { rtol, atol } => (a - r).abs() <= atol + rtol * r.abs() || (a == r),
            Tolerance::Ulp(n) => {
                ((a as f32).to_bits() as i64 - (r as f32).to_bits() as i64).unsigned_abs()
                    <= n as u64
            }
            Tolerance::Exact => unreachable!(),
        };
        if !ok {
            return Err(format!(
                "element {i} of {:?}: got {a}, want {r} ({tol:?})",
                got.shape()
            ));
        }
    }
    Ok(())
}
