//! Transcendental functions as plain `arith` code, so that they vectorize.
//!
//! MLIR lowers `math.exp`, `math.tanh` and `math.erf` on the CPU to LLVM intrinsics or libm
//! calls, which LLVM's x86 backend runs one lane at a time: a softmax, a sigmoid or a GELU
//! over a 16-wide vector became 16 calls. Here, on f32, written with `arith` ops that work
//! the same on a scalar or a vector:
//! - `exp`: the Cephes polynomial (Cody–Waite range reduction, degree-6 polynomial), within
//!   1 ulp of the correctly rounded result over the whole normal range (tested over it);
//! - `tanh` and `erf`: the odd rational minimax fits that onnxruntime's MLAS (tanh), Eigen
//!   and XLA (both) use near 0; toward ±1, `1 − 2/(e^{2|x|}+1)` and `1 − erfc` from its
//!   asymptotic series, which round as the exact values do there: a fit an ulp off flips
//!   comparisons such as `tanh(9) < 1` (the fuzzers found two).
//!
//! The GPU keeps the `math` ops, which become CUDA's libdevice functions.

use super::{Em, ty};
use crate::error::CodegenError;
use tessera_ir::DType;
use tessera_ir::loops::Lit;

/// Below this `exp` is not a normal f32 (ln of the smallest normal): the result is 0, so
/// that inputs such as an attention mask's −10000 never reach slow denormal arithmetic.
const EXP_LOWEST: f64 = -87.336_54;
/// Above this `exp` overflows (ln of the largest f32): clamped here, the result is +inf.
const EXP_HIGHEST: f64 = 88.722_84;
/// Adding 1.5 · 2²³ rounds an f32 of magnitude below 2²² to an integer, which then sits in
/// the low bits of the sum's representation: rounding and conversion without `fptosi`
/// (whose result on NaN would be poison).
const ROUND_MAGIC: f64 = 12_582_912.0;
/// ln 2 in two parts: `n · LN2_HI` is exact for the |n| ≤ 128 used here.
const LN2_HI: f64 = 0.693_359_375;
const LN2_LO: f64 = -2.121_944_4e-4;
/// Cephes `expf`'s polynomial for e^r − 1 − r over |r| ≤ ln 2 / 2, highest degree first.
const EXP_POLY: [f64; 6] = [
    1.987_569_15e-4,
    1.398_199_950_7e-3,
    8.333_451_907_3e-3,
    4.166_579_589_4e-2,
    1.666_666_545_9e-1,
    5.000_000_120_1e-1,
];

/// From here on tanh is computed from `exp` (see [`Em::tanh_f32`]), below by the fit.
const TANH_EXP_FROM: f64 = 4.0;
/// Below this tanh(x) is x to f32 precision (and the fit would lose tiny values to underflow).
const TANH_LINEAR: f64 = 4e-4;
/// tanh(x) ≈ x · P(x²) / Q(x²) below [`TANH_EXP_FROM`], coefficients highest degree first.
const TANH_P: [f64; 7] = [
    -2.760_768_477_423_55e-16,
    2.000_187_904_824_77e-13,
    -8.604_671_522_137_35e-11,
    5.122_297_090_371_14e-8,
    1.485_722_357_179_79e-5,
    6.372_619_288_754_36e-4,
    4.893_524_558_917_86e-3,
];
const TANH_Q: [f64; 4] = [
    1.198_258_394_667_02e-6,
    1.185_347_056_866_54e-4,
    2.268_434_632_439e-3,
    4.893_525_185_543_85e-3,
];
/// The fit's input is clamped here (its lanes beyond [`ERF_ASYMPTOTIC_FROM`] are unused).
const ERF_CLAMP: f64 = 4.0;
/// From here on erf is `1 − erfc` with erfc's asymptotic series (see [`Em::erf_f32`]).
const ERF_ASYMPTOTIC_FROM: f64 = 3.5;
/// `erfc(x) · x√π · e^{x²} ≈ 1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸)`, as a
/// polynomial in `1/x²`, highest degree first (the next term is below 2e-4 from 3.5 on).
const ERFC_SERIES: [f64; 5] = [105.0 / 16.0, -15.0 / 8.0, 3.0 / 4.0, -0.5, 1.0];
/// erf(x) ≈ x · P(x²) / Q(x²) below [`ERF_ASYMPTOTIC_FROM`], highest degree first.
const ERF_P: [f64; 7] = [
    -2.726_142_258_013_06e-10,
    2.770_681_424_959_02e-8,
    -2.101_024_020_825_08e-6,
    -5.692_506_394_623_46e-5,
    -7.349_906_303_268_55e-4,
    -2.954_599_808_540_25e-3,
    -1.609_603_332_624_15e-2,
];
const ERF_Q: [f64; 5] = [
    -1.456_607_184_649_96e-5,
    -2.133_740_552_789_05e-4,
    -1.682_826_974_382_03e-3,
    -7.373_329_167_204_68e-3,
    -1.426_473_905_141_89e-2,
];

impl Em<'_> {
    /// `e^x` for an f32 value (scalar or, in a vector loop, vector) `x` of type `t`.
    pub(super) fn exp_f32(&mut self, x: &str, t: &str) -> Result<String, CodegenError> {
        let it = ty(DType::I32, self.vec.as_ref().map(|v| v.width));
        let fl = "fastmath<contract>";
        let (lo, hi) = (self.splat_f32(EXP_LOWEST)?, self.splat_f32(EXP_HIGHEST)?);
        // NaN stays NaN through both (`maximumf` / `minimumf` propagate it).
        let xc = self.op(format!("arith.maximumf {x}, {lo} : {t}"));
        let xc = self.op(format!("arith.minimumf {xc}, {hi} : {t}"));
        // n = round(x / ln 2), as a float and as an integer.
        let (log2e, magic) = (
            self.splat_f32(std::f64::consts::LOG2_E)?,
            self.splat_f32(ROUND_MAGIC)?,
        );
        let scaled = self.op(format!("arith.mulf {xc}, {log2e} {fl} : {t}"));
        let shifted = self.op(format!("arith.addf {scaled}, {magic} {fl} : {t}"));
        let n = self.op(format!("arith.subf {shifted}, {magic} : {t}"));
        let shifted_bits = self.op(format!("arith.bitcast {shifted} : {t} to {it}"));
        let magic_bits = self.op(format!("arith.bitcast {magic} : {t} to {it}"));
        let ni = self.op(format!("arith.subi {shifted_bits}, {magic_bits} : {it}"));
        // r = x − n ln 2, in two steps to keep the bits the first product cancels.
        let (hi_part, lo_part) = (self.splat_f32(LN2_HI)?, self.splat_f32(LN2_LO)?);
        let p = self.op(format!("arith.mulf {n}, {hi_part} {fl} : {t}"));
        let r = self.op(format!("arith.subf {xc}, {p} {fl} : {t}"));
        let p = self.op(format!("arith.mulf {n}, {lo_part} {fl} : {t}"));
        let r = self.op(format!("arith.subf {r}, {p} {fl} : {t}"));
        // e^r ≈ 1 + r + r² · poly(r).
        let poly = self.horner(&r, t, &EXP_POLY)?;
        let r2 = self.op(format!("arith.mulf {r}, {r} {fl} : {t}"));
        let m = self.op(format!("arith.mulf {poly}, {r2} {fl} : {t}"));
        let m = self.op(format!("arith.addf {m}, {r} {fl} : {t}"));
        let one = self.splat_f32(1.0)?;
        let y = self.op(format!("arith.addf {m}, {one} {fl} : {t}"));
        // · 2ⁿ as 2^(n/2) · 2^(n − n/2): n reaches 128 at the top of the range, whose power
        // of two is not an f32, while both halves are.
        let splat_i = |s: &mut Self, v: i64| s.splat(Lit::I(v), DType::I32);
        let one_i = splat_i(self, 1)?;
        let half = self.op(format!("arith.shrsi {ni}, {one_i} : {it}"));
        let rest = self.op(format!("arith.subi {ni}, {half} : {it}"));
        let (bias, mantissa) = (splat_i(self, 127)?, splat_i(self, 23)?);
        let mut result = y;
        for e in [half, rest] {
            let biased = self.op(format!("arith.addi {e}, {bias} : {it}"));
            let bits = self.op(format!("arith.shli {biased}, {mantissa} : {it}"));
            let pow = self.op(format!("arith.bitcast {bits} : {it} to {t}"));
            result = self.op(format!("arith.mulf {result}, {pow} : {t}"));
        }
        let below = self.op(format!("arith.cmpf olt, {x}, {lo} : {t}"));
        let zero = self.splat_f32(0.0)?;
        Ok(self.select(&below, &zero, &result, t))
    }

    /// `tanh(x)` for an f32 value `x` of type `t`: `x` itself near 0, the rational fit
    /// ([`TANH_P`]) up to [`TANH_EXP_FROM`], then `±(1 − 2 / (e^{2|x|} + 1))` — the
    /// subtracted term is accurate to its last bits, so near 1 the result rounds as the
    /// exact value does (a fit an ulp off flips comparisons such as `1 + tanh(9) < 2` or
    /// `tanh(9) < 1`; a fuzzer found both).
    pub(super) fn tanh_f32(&mut self, x: &str, t: &str) -> Result<String, CodegenError> {
        let fit = self.odd_rational(x, t, TANH_EXP_FROM, &TANH_P, &TANH_Q)?;
        let ax = self.op(format!("math.absf {x} : {t}"));
        let (one, two) = (self.splat_f32(1.0)?, self.splat_f32(2.0)?);
        let twice = self.op(format!("arith.mulf {ax}, {two} : {t}"));
        let e = self.exp_f32(&twice, t)?;
        let den = self.op(format!("arith.addf {e}, {one} : {t}"));
        let tail = self.op(format!("arith.divf {two}, {den} : {t}"));
        let v = self.one_minus_beyond(x, &ax, t, &tail, TANH_EXP_FROM, &fit)?;
        let limit = self.splat_f32(TANH_LINEAR)?;
        let small = self.op(format!("arith.cmpf olt, {ax}, {limit} : {t}"));
        Ok(self.select(&small, x, &v, t))
    }

    /// `erf(x)` for an f32 value `x` of type `t`: the rational fit ([`ERF_P`]) below
    /// [`ERF_ASYMPTOTIC_FROM`], then `±(1 − erfc(|x|))` with `erfc` from its asymptotic
    /// series — accurate to its last bits there, so near 1 the result rounds as the exact
    /// value does (see [`Em::tanh_f32`]).
    pub(super) fn erf_f32(&mut self, x: &str, t: &str) -> Result<String, CodegenError> {
        let fit = self.odd_rational(x, t, ERF_CLAMP, &ERF_P, &ERF_Q)?;
        let ax = self.op(format!("math.absf {x} : {t}"));
        let x2 = self.op(format!("arith.mulf {ax}, {ax} : {t}"));
        let neg = self.op(format!("arith.negf {x2} : {t}"));
        let e = self.exp_f32(&neg, t)?;
        let one = self.splat_f32(1.0)?;
        let inv = self.op(format!("arith.divf {one}, {x2} : {t}"));
        let series = self.horner(&inv, t, &ERFC_SERIES)?;
        let root_pi = self.splat_f32(std::f64::consts::PI.sqrt())?;
        let den = self.op(format!("arith.mulf {ax}, {root_pi} : {t}"));
        let num = self.op(format!("arith.mulf {e}, {series} : {t}"));
        let erfc = self.op(format!("arith.divf {num}, {den} : {t}"));
        self.one_minus_beyond(x, &ax, t, &erfc, ERF_ASYMPTOTIC_FROM, &fit)
    }

    /// `±(1 − tail)` (the sign of `x`) where `|x| = ax ≥ from`, else `fit`: the tail forms of
    /// tanh and erf toward ±1.
    fn one_minus_beyond(
        &mut self,
        x: &str,
        ax: &str,
        t: &str,
        tail: &str,
        from: f64,
        fit: &str,
    ) -> Result<String, CodegenError> {
        let one = self.splat_f32(1.0)?;
        let far = self.op(format!("arith.subf {one}, {tail} : {t}"));
        let far = self.op(format!("math.copysign {far}, {x} : {t}"));
        let from = self.splat_f32(from)?;
        let is_far = self.op(format!("arith.cmpf oge, {ax}, {from} : {t}"));
        Ok(self.select(&is_far, &far, fit, t))
    }

    /// `c · P(c²) / Q(c²)` with `c = clamp(x, −limit, limit)` (NaN stays NaN).
    fn odd_rational(
        &mut self,
        x: &str,
        t: &str,
        limit: f64,
        p: &[f64],
        q: &[f64],
    ) -> Result<String, CodegenError> {
        let (lo, hi) = (self.splat_f32(-limit)?, self.splat_f32(limit)?);
        let c = self.op(format!("arith.maximumf {x}, {lo} : {t}"));
        let c = self.op(format!("arith.minimumf {c}, {hi} : {t}"));
        let c2 = self.op(format!("arith.mulf {c}, {c} : {t}"));
        let num = self.horner(&c2, t, p)?;
        let num = self.op(format!("arith.mulf {c}, {num} : {t}"));
        let den = self.horner(&c2, t, q)?;
        Ok(self.op(format!("arith.divf {num}, {den} : {t}")))
    }

    /// `k[0] · xⁿ⁻¹ + … + k[n−1]` by Horner's rule (multiply-adds that LLVM may fuse).
    fn horner(&mut self, x: &str, t: &str, k: &[f64]) -> Result<String, CodegenError> {
        let mut acc = self.splat_f32(k[0])?;
        for &c in &k[1..] {
            let c = self.splat_f32(c)?;
            let m = self.op(format!("arith.mulf {acc}, {x} fastmath<contract> : {t}"));
            acc = self.op(format!("arith.addf {m}, {c} fastmath<contract> : {t}"));
        }
        Ok(acc)
    }

    /// An f32 constant, broadcast to the current vector width if in a vector loop.
    fn splat_f32(&mut self, v: f64) -> Result<String, CodegenError> {
        self.splat(Lit::F(v), DType::F32)
    }
}
