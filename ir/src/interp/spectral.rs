//! The interpreter's signal-processing ops: window functions, mel filter banks, DFT and
//! STFT (the plans live in `crate::signal`).

use super::{R, arg};
use crate::dtype::DType;
use crate::graph::Node;
use crate::op::{AttrsExt, OpKind};
use crate::tensor::Tensor;

/// MelWeightMatrix as onnx's reference computes it: triangular filters on the mel scale,
/// `[dft_length / 2 + 1, num_mel_bins]` row-major.
pub(super) fn mel_weight_matrix(
    bins: usize,
    dft: i64,
    rate: i64,
    lo_hz: f64,
    hi_hz: f64,
) -> Vec<f64> {
    let spec = (dft / 2 + 1) as usize;
    let mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / 10f64.ln();
    let (lo, hi) = (mel(lo_hz), mel(hi_hz));
    let step = (hi - lo) / (bins + 2) as f64;
    let freq: Vec<i64> = (0..bins + 2)
        .map(|i| {
            let m = i as f64 * step + lo;
            let hz = 700.0 * (m / 2595.0 * 10f64.ln()).exp_m1();
            (((dft + 1) as f64 * hz) / rate as f64).floor() as i64
        })
        .collect();
    let mut out = vec![0.0; spec * bins];
    let mut set = |j: i64, i: usize, v: f64| {
        if j >= 0 && (j as usize) < spec {
            out[j as usize * bins + i] = v;
        }
    };
    for i in 0..bins {
        let (l, c, h) = (freq[i], freq[i + 1], freq[i + 2]);
        if c == l {
            set(c, i, 1.0);
        } else {
            for j in l..=c {
                set(j, i, (j - l) as f64 / (c - l) as f64);
            }
        }
        if h > c {
            for j in c..h {
                set(j, i, (h - j) as f64 / (h - c) as f64);
            }
        }
    }
    out
}

/// Hann, Hamming and Blackman windows (periodic or symmetric).
pub(super) fn window(n: &Node, odt: DType, oshape: Vec<usize>) -> R<Tensor> {
    let size = oshape[0];
    let periodic = n.attrs.int("periodic", 1)? != 0;
    let denom = if periodic {
        size
    } else {
        size.saturating_sub(1)
    } as f64;
    let pi = std::f64::consts::PI;
    let v: Vec<f64> = (0..size)
        .map(|i| {
            let t = i as f64 / denom;
            match n.op {
                OpKind::HannWindow => (pi * t).sin().powi(2),
                OpKind::HammingWindow => 25.0 / 46.0 - (21.0 / 46.0) * (2.0 * pi * t).cos(),
                _ => 0.42 - 0.5 * (2.0 * pi * t).cos() + 0.08 * (4.0 * pi * t).cos(),
            }
        })
        .collect();
    Ok(Tensor::from_f64(odt, oshape, &v))
}

/// MelWeightMatrix: triangular mel filters over the DFT bins.
pub(super) fn mel_weight_matrix_op(
    args: &[Option<&Tensor>],
    odt: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    Ok(Tensor::from_f64(
        odt,
        oshape.clone(),
        &mel_weight_matrix(
            oshape[1],
            arg(args, 1)?.get_i64(0),
            arg(args, 2)?.get_i64(0),
            arg(args, 3)?.get_f64(0),
            arg(args, 4)?.get_f64(0),
        ),
    ))
}

/// DFT along an axis (`crate::signal::dft_plan`).
pub(super) fn dft(n: &Node, args: &[Option<&Tensor>], odt: DType, oshape: Vec<usize>) -> R<Tensor> {
    let x = arg(args, 0)?;
    let p = crate::signal::dft_plan(
        n,
        x.shape(),
        args.get(1).copied().flatten(),
        args.get(2).copied().flatten(),
    )?;
    Ok(Tensor::from_f64(
        odt,
        oshape,
        &p.apply(&x.to_f64_vec(), x.shape()),
    ))
}

/// STFT: windowed DFTs of frames (`crate::signal::stft_plan`).
pub(super) fn stft(
    n: &Node,
    args: &[Option<&Tensor>],
    odt: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    let x = arg(args, 0)?;
    let w = args.get(2).copied().flatten().map(|t| t.to_f64_vec());
    let p = crate::signal::stft_plan(
        n,
        x.shape(),
        args.get(1).copied().flatten(),
        w.as_ref().map(|w| w.len()),
        args.get(3).copied().flatten(),
    )?;
    Ok(Tensor::from_f64(
        odt,
        oshape,
        &p.apply(&x.to_f64_vec(), x.shape(), w.as_deref()),
    ))
}
