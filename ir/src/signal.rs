//! The discrete Fourier transform (ONNX `DFT`, opset-20 form): geometry shared by inference,
//! the interpreter and the lowering, and the per-term coefficients all three use.
//!
//! Signals are real (`[..., 1]`) or complex as (re, im) pairs (`[..., 2]`). A forward transform
//! is `X_k = Σ_s x_s e^{-2πi·ks/n}` (zero-padded or truncated to `n = dft_length`), `onesided`
//! keeping `k ≤ n/2`; the inverse divides by `n` and uses `e^{+…}`; an inverse `onesided`
//! transform is numpy's `irfft`: a Hermitian half spectrum in, a real signal of length `n` out.
//! The direct O(n²) sum is computed in f64 with the angle reduced `ks mod n` first, so
//! mathematically zero terms stay near f64 round-off.

use crate::graph::Node;
use crate::op::AttrsExt;
use crate::tensor::Tensor;

type R<T> = Result<T, String>;

/// How one DFT node transforms its input.
#[derive(Clone, Debug, PartialEq)]
pub struct DftPlan {
    pub axis: usize,
    /// The transform length.
    pub n: usize,
    /// Output length along `axis`.
    pub out_len: usize,
    /// Input entries along `axis` that enter the sum (the rest is zero padding).
    pub terms: usize,
    pub inverse: bool,
    /// An inverse one-sided transform (irfft): real output.
    pub irfft: bool,
    /// Whether the input has an imaginary part.
    pub complex_in: bool,
}

pub fn dft_plan(
    n: &Node,
    shape: &[usize],
    len: Option<&Tensor>,
    axis: Option<&Tensor>,
) -> R<DftPlan> {
    let r = shape.len();
    if r < 2 || !matches!(shape[r - 1], 1 | 2) {
        return Err(format!(
            "DFT input {shape:?} must end in a dimension of 1 (real) or 2 (complex)"
        ));
    }
    let axis = match axis {
        Some(t) if t.len() == 1 => t.get_i64(0),
        Some(_) => return Err("`axis` must be a scalar".into()),
        None => -2,
    };
    let axis = crate::infer::norm_axis(axis, r)?;
    if axis == r - 1 {
        return Err("DFT cannot run along the (re, im) dimension".into());
    }
    let inverse = n.attrs.int("inverse", 0)? != 0;
    let onesided = n.attrs.int("onesided", 0)? != 0;
    let irfft = inverse && onesided;
    let in_len = shape[axis];
    let length = match len {
        Some(t) if t.len() == 1 && t.get_i64(0) > 0 && t.get_i64(0) < (1 << 24) => {
            t.get_i64(0) as usize
        }
        Some(t) => {
            return Err(format!(
                "dft_length {:?} must be one positive size",
                t.to_i64_vec()
            ));
        }
        None if irfft => 2 * in_len.saturating_sub(1).max(1),
        None => in_len,
    };
    let out_len = if onesided && !inverse {
        length / 2 + 1
    } else {
        length
    };
    let terms = if irfft {
        in_len.min(length / 2 + 1)
    } else {
        in_len.min(length)
    };
    Ok(DftPlan {
        axis,
        n: length,
        out_len,
        terms,
        inverse,
        irfft,
        complex_in: shape[r - 1] == 2,
    })
}

impl DftPlan {
    pub fn out_shape(&self, shape: &[usize]) -> Vec<usize> {
        let mut s = shape.to_vec();
        s[self.axis] = self.out_len;
        let last = s.len() - 1;
        s[last] = if self.irfft { 1 } else { 2 };
        s
    }

    /// Coefficients `(a_re, a_im, b_re, b_im)` of one term: output component re =
    /// `a_re·x_re + b_re·x_im`, im = `a_im·x_re + b_im·x_im`, for output index `o` and summed
    /// index `s`.
    pub fn coeffs(&self, o: usize, s: usize) -> [f64; 4] {
        let k = (o as u128 * s as u128 % self.n as u128) as f64;
        let theta = 2.0 * std::f64::consts::PI * k / self.n as f64;
        let (c, sn) = (theta.cos(), theta.sin());
        if !self.inverse {
            // (a + ib)(cos − i sin)
            [c, -sn, sn, c]
        } else {
            let scale = if self.irfft {
                // Hermitian half: every bin but DC and Nyquist stands for two.
                let twice = s != 0 && !(self.n.is_multiple_of(2) && s == self.n / 2);
                if twice { 2.0 } else { 1.0 }
            } else {
                1.0
            } / self.n as f64;
            // (a + ib)(cos + i sin) / n
            [c * scale, sn * scale, -sn * scale, c * scale]
        }
    }

    /// Applies the transform to row-major f64 data of `shape`.
    pub fn apply(&self, x: &[f64], shape: &[usize]) -> Vec<f64> {
        let r = shape.len();
        let outer: usize = shape[..self.axis].iter().product();
        let inner: usize = shape[self.axis + 1..r - 1].iter().product();
        let (cin, len) = (shape[r - 1], shape[self.axis]);
        let cout = if self.irfft { 1 } else { 2 };
        let mut out = vec![0.0; outer * self.out_len * inner * cout];
        for a in 0..outer {
            for o in 0..self.out_len {
                for b in 0..inner {
                    let (mut re, mut im) = (0.0, 0.0);
                    for s in 0..self.terms {
                        let at = ((a * len + s) * inner + b) * cin;
                        let (xr, xi) = (x[at], if cin == 2 { x[at + 1] } else { 0.0 });
                        let [ar, ai, br, bi] = self.coeffs(o, s);
                        re += ar * xr + br * xi;
                        im += ai * xr + bi * xi;
                    }
                    let at = ((a * self.out_len + o) * inner + b) * cout;
                    out[at] = re;
                    if cout == 2 {
                        out[at + 1] = im;
                    }
                }
            }
        }
        out
    }
}

/// How one STFT node frames its signal `[batch, length, 1|2]`: `frames` windows of
/// `frame_length` samples, `step` apart, each transformed by a forward DFT of that length.
#[derive(Clone, Debug, PartialEq)]
pub struct StftPlan {
    pub step: usize,
    pub frames: usize,
    pub dft: DftPlan,
}

pub fn stft_plan(
    n: &Node,
    shape: &[usize],
    step: Option<&Tensor>,
    window_len: Option<usize>,
    frame_length: Option<&Tensor>,
) -> R<StftPlan> {
    if shape.len() != 3 || !matches!(shape[2], 1 | 2) {
        return Err(format!(
            "STFT signal {shape:?} must be [batch, length, 1 or 2]"
        ));
    }
    let step = match step {
        Some(t) if t.len() == 1 && t.get_i64(0) > 0 => t.get_i64(0) as usize,
        Some(t) => {
            return Err(format!(
                "frame_step {:?} must be one positive value",
                t.to_i64_vec()
            ));
        }
        None => return Err("STFT needs the value of frame_step".into()),
    };
    let len = match (frame_length, window_len) {
        (Some(t), _) if t.len() == 1 && t.get_i64(0) > 0 => t.get_i64(0) as usize,
        (Some(t), _) => {
            return Err(format!(
                "frame_length {:?} must be one positive value",
                t.to_i64_vec()
            ));
        }
        (None, Some(w)) => w,
        (None, None) => shape[1],
    };
    if let Some(w) = window_len
        && w != len
    {
        return Err(format!("window of {w} samples for frames of {len}"));
    }
    if len > shape[1] {
        return Err(format!(
            "frames of {len} samples exceed the signal's {}",
            shape[1]
        ));
    }
    let onesided = n.attrs.int("onesided", 1)? != 0;
    Ok(StftPlan {
        step,
        frames: 1 + (shape[1] - len) / step,
        dft: DftPlan {
            axis: 1,
            n: len,
            out_len: if onesided { len / 2 + 1 } else { len },
            terms: len,
            inverse: false,
            irfft: false,
            complex_in: shape[2] == 2,
        },
    })
}

impl StftPlan {
    pub fn out_shape(&self, batch: usize) -> Vec<usize> {
        vec![batch, self.frames, self.dft.out_len, 2]
    }

    /// Applies the transform to a row-major f64 signal of `shape` with optional window.
    pub fn apply(&self, x: &[f64], shape: &[usize], window: Option<&[f64]>) -> Vec<f64> {
        let (len, c) = (shape[1], shape[2]);
        let d = &self.dft;
        let mut out = Vec::with_capacity(shape[0] * self.frames * d.out_len * 2);
        for b in 0..shape[0] {
            for f in 0..self.frames {
                for o in 0..d.out_len {
                    let (mut re, mut im) = (0.0, 0.0);
                    for s in 0..d.terms {
                        let at = (b * len + f * self.step + s) * c;
                        let w = window.map_or(1.0, |w| w[s]);
                        let (xr, xi) = (w * x[at], if c == 2 { w * x[at + 1] } else { 0.0 });
                        let [ar, ai, br, bi] = d.coeffs(o, s);
                        re += ar * xr + br * xi;
                        im += ai * xr + bi * xi;
                    }
                    out.push(re);
                    out.push(im);
                }
            }
        }
        out
    }
}
