//! Resize's geometry: output shape, and per axis the taps (input index, weight) of every output
//! index — for all of the ONNX op's modes (nearest, linear, cubic, antialiased linear/cubic),
//! coordinate transformations (half_pixel, half_pixel_symmetric, pytorch_half_pixel,
//! align_corners, asymmetric, tf_crop_and_resize), `axes`, `exclude_outside` and
//! `keep_aspect_ratio_policy`.
//!
//! The arithmetic follows onnx's reference implementation (`onnx/reference/ops/op_resize.py`)
//! step by step — same float formulas, same neighbour choice — because the node tests compare
//! against it. Resize is separable: the result is one 1-D interpolation per axis in turn.

use crate::graph::Node;
use crate::op::AttrsExt;
use crate::tensor::Tensor;

type R<T> = Result<T, String>;

/// How Resize maps each output coordinate back to the input.
#[derive(Clone, Debug)]
pub struct ResizePlan {
    pub out: Vec<usize>,
    /// The scale per dimension (output / input) used by the coordinate transformation.
    pub scales: Vec<f64>,
    /// `nearest`, `linear` or `cubic`.
    pub mode: String,
    pub coord_mode: String,
    pub nearest_mode: String,
    pub antialias: bool,
    pub cubic_a: f64,
    pub exclude_outside: bool,
    /// The value of outputs that map outside the input (tf_crop_and_resize only).
    pub extrapolation: f64,
    /// Region of interest per dimension: starts then ends (tf_crop_and_resize only).
    pub roi: Vec<f64>,
}

/// The taps of one axis: output index `o` reads `count` input indices `index[o * count + k]`
/// with weights `weight[o * count + k]`, unless `outside[o]` (then it is the extrapolation
/// value).
#[derive(Clone, Debug, PartialEq)]
pub struct AxisTaps {
    pub count: usize,
    pub index: Vec<usize>,
    pub weight: Vec<f64>,
    pub outside: Vec<bool>,
}

/// Resolves a Resize node's output shape and coordinate mapping from its constant inputs
/// (`roi`, `scales`, `sizes`).
pub fn resize_plan(
    n: &Node,
    shape: &[usize],
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> R<ResizePlan> {
    let mode = n.attrs.string("mode", "nearest")?;
    if !matches!(mode.as_str(), "nearest" | "linear" | "cubic") {
        return Err(format!(
            "Resize mode `{mode}` is not one of nearest, linear, cubic"
        ));
    }
    let antialias = n.attrs.int("antialias", 0)? != 0;
    if antialias && mode == "nearest" {
        return Err("antialias needs mode linear or cubic".into());
    }
    let coord_mode = n
        .attrs
        .string("coordinate_transformation_mode", "half_pixel")?;
    if !matches!(
        coord_mode.as_str(),
        "half_pixel"
            | "half_pixel_symmetric"
            | "asymmetric"
            | "align_corners"
            | "pytorch_half_pixel"
            | "tf_crop_and_resize"
    ) {
        return Err(format!(
            "coordinate_transformation_mode `{coord_mode}` is not supported"
        ));
    }
    let r = shape.len();
    let axes: Vec<usize> = match n.attrs.ints("axes")? {
        Some(a) => a
            .iter()
            .map(|&x| crate::infer::norm_axis(x, r))
            .collect::<R<_>>()?,
        None => (0..r).collect(),
    };
    // Expands a per-listed-axis vector to all dimensions.
    let spread = |v: &[f64], fill: &dyn Fn(usize) -> f64| -> Vec<f64> {
        let mut full: Vec<f64> = (0..r).map(fill).collect();
        for (k, &a) in axes.iter().enumerate() {
            full[a] = v[k];
        }
        full
    };
    let policy = n.attrs.string("keep_aspect_ratio_policy", "stretch")?;
    let (out, scales): (Vec<usize>, Vec<f64>) = match (
        sizes.filter(|t| !t.is_empty()),
        scales.filter(|t| !t.is_empty()),
    ) {
        (Some(sz), _) => {
            let v: Vec<f64> = sz.to_i64_vec().iter().map(|&d| d as f64).collect();
            if v.len() != axes.len() || v.iter().any(|&d| d <= 0.0 || d > (1u64 << 40) as f64) {
                return Err(format!("Resize sizes {v:?} do not match axes {axes:?}"));
            }
            let sizes = spread(&v, &|i| shape[i] as f64);
            let sc: Vec<f64> = sizes
                .iter()
                .zip(shape)
                .map(|(&o, &i)| o / i as f64)
                .collect();
            match policy.as_str() {
                "stretch" => (sizes.iter().map(|&d| d as usize).collect(), sc),
                "not_larger" | "not_smaller" => {
                    let pick = axes.iter().map(|&a| sc[a]);
                    let s = if policy == "not_larger" {
                        pick.fold(f64::INFINITY, f64::min)
                    } else {
                        pick.fold(f64::NEG_INFINITY, f64::max)
                    };
                    let out = (0..r)
                        .map(|i| {
                            if axes.contains(&i) {
                                (s * shape[i] as f64 + 0.5) as usize
                            } else {
                                shape[i]
                            }
                        })
                        .collect();
                    let sc = (0..r)
                        .map(|i| if axes.contains(&i) { s } else { 1.0 })
                        .collect();
                    (out, sc)
                }
                p => return Err(format!("keep_aspect_ratio_policy `{p}` is not supported")),
            }
        }
        (None, Some(sc)) => {
            let v = sc.to_f64_vec();
            if v.len() != axes.len() || v.iter().any(|&s| s.is_nan() || s <= 0.0 || !s.is_finite())
            {
                return Err(format!("Resize scales {v:?} do not match axes {axes:?}"));
            }
            let sc = spread(&v, &|_| 1.0);
            let out: Vec<usize> = shape
                .iter()
                .zip(&sc)
                .map(|(&i, &s)| (i as f64 * s) as usize)
                .collect();
            (out, sc)
        }
        (None, None) => return Err("Resize needs constant `scales` or `sizes`".into()),
    };
    if out
        .iter()
        .any(|&d| d as u64 > crate::tensor::MAX_ELEMENTS as u64)
    {
        return Err(format!("Resize output {out:?} is too large"));
    }
    let roi = match roi.filter(|t| !t.is_empty()) {
        Some(t) => {
            let v = t.to_f64_vec();
            if v.len() != 2 * axes.len() {
                return Err(format!("roi {v:?} must have 2 x {} values", axes.len()));
            }
            let starts = spread(&v[..axes.len()], &|_| 0.0);
            let ends = spread(&v[axes.len()..], &|_| 1.0);
            starts.into_iter().chain(ends).collect()
        }
        None if coord_mode == "tf_crop_and_resize" => {
            return Err("tf_crop_and_resize needs a constant `roi`".into());
        }
        None => Vec::new(),
    };
    Ok(ResizePlan {
        out,
        scales,
        mode,
        coord_mode,
        nearest_mode: n.attrs.string("nearest_mode", "round_prefer_floor")?,
        antialias,
        cubic_a: n.attrs.float("cubic_coeff_a", -0.75)?,
        exclude_outside: n.attrs.int("exclude_outside", 0)? != 0,
        extrapolation: n.attrs.float("extrapolation_value", 0.0)?,
        roi,
    })
}

impl ResizePlan {
    pub fn linear(&self) -> bool {
        self.mode == "linear"
    }

    /// Whether axis `d` is left as it is (the reference skips such axes).
    pub fn is_identity(&self, d: usize, in_len: usize) -> bool {
        let roi_whole = self.roi.is_empty()
            || (self.roi[d].abs() < 1e-9 && (self.roi[d + self.out.len()] - 1.0).abs() < 1e-9);
        (self.scales[d] - 1.0).abs() <= 1e-9 && self.out[d] == in_len && roi_whole
    }

    /// Whether the direct (closed-form, in-kernel) lowering handles this plan: nearest or
    /// linear, no antialiasing, and a coordinate transformation without a region of interest.
    pub fn direct(&self) -> bool {
        matches!(self.mode.as_str(), "nearest" | "linear")
            && !self.antialias
            && matches!(
                self.coord_mode.as_str(),
                "half_pixel" | "asymmetric" | "align_corners" | "pytorch_half_pixel"
            )
    }

    /// The input coordinate (real-valued) that output index `x` of axis `d` maps to, or None
    /// when it falls outside the input (tf_crop_and_resize).
    pub fn source(&self, d: usize, x: f64, in_len: usize) -> Option<f64> {
        let s = self.scales[d];
        let input = in_len as f64;
        let width = s * input; // the reference uses the real-valued output width
        Some(match self.coord_mode.as_str() {
            "align_corners" if width == 1.0 => 0.0,
            "align_corners" => x * (input - 1.0) / (width - 1.0),
            "asymmetric" => x / s,
            "tf_crop_and_resize" => {
                let (lo, hi) = (self.roi[d], self.roi[d + self.out.len()]);
                let v = if width == 1.0 {
                    (hi - lo) * (input - 1.0) / 2.0
                } else {
                    x * (hi - lo) * (input - 1.0) / (width - 1.0)
                } + lo * (input - 1.0);
                if v < 0.0 || v > input - 1.0 {
                    return None;
                }
                v
            }
            "pytorch_half_pixel" if width == 1.0 => -0.5,
            "half_pixel_symmetric" => {
                let adjustment = self.out[d] as f64 / width;
                let offset = input / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / s - 0.5
            }
            _ => (x + 0.5) / s - 0.5,
        })
    }

    /// Interpolation coefficients for a source coordinate whose fractional part is `ratio`
    /// (in (0, 1]) — `_nearest_coeffs`, `_linear_coeffs(_antialias)`, `_cubic_coeffs(_antialias)`.
    fn coeffs(&self, ratio: f64, scale: f64) -> Vec<f64> {
        let a = self.cubic_a;
        match (self.mode.as_str(), self.antialias) {
            ("nearest", _) => {
                let (lo, hi) = if ratio == 1.0 {
                    (false, true)
                } else {
                    match self.nearest_mode.as_str() {
                        "round_prefer_ceil" => (ratio < 0.5, ratio >= 0.5),
                        "floor" => (true, false),
                        "ceil" => (false, true),
                        _ => (ratio <= 0.5, ratio > 0.5),
                    }
                };
                vec![lo as u8 as f64, hi as u8 as f64]
            }
            ("linear", false) => vec![1.0 - ratio, ratio],
            ("linear", true) => {
                let scale = scale.min(1.0);
                let start = (-1.0 / scale).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                    .collect();
                normalised(c)
            }
            (_, false) => {
                let r = ratio;
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                    ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a)
                        * ((1.0 - r) + 1.0)
                        - 4.0 * a,
                ]
            }
            (_, true) => {
                let scale = scale.min(1.0);
                let kernel = |x: f64| {
                    let x = x.abs();
                    let (x2, x3) = (x * x, x * x * x);
                    if x <= 1.0 {
                        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                    } else if x < 2.0 {
                        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let start = (-2.0 / scale).floor() as i64 + 1;
                let end = 2 - start;
                normalised(
                    (start..end)
                        .map(|i| kernel(scale * (i as f64 - ratio)))
                        .collect(),
                )
            }
        }
    }

    /// The taps of axis `d` over an input of length `in_len` (`_interpolate_1d_with_x` and
    /// `_get_neighbor` of the reference: the `n` nearest indices of the edge-padded input,
    /// preferring the smaller on ties).
    pub fn taps(&self, d: usize, in_len: usize) -> AxisTaps {
        let out_len = self.out[d];
        let mut count = 0;
        let mut rows: Vec<(Vec<usize>, Vec<f64>, bool)> = Vec::with_capacity(out_len);
        for o in 0..out_len {
            let Some(x) = self.source(d, o as f64, in_len) else {
                rows.push((Vec::new(), Vec::new(), true));
                continue;
            };
            let ratio = if x.fract() == 0.0 { 1.0 } else { x - x.floor() };
            let mut c = self.coeffs(ratio, self.scales[d]);
            let n = c.len();
            let pad = n.div_ceil(2) as i64;
            let limit = in_len as i64 + 2 * pad;
            let xp = x + pad as f64;
            // The n nearest indices to xp in [0, limit), ties to the smaller index.
            let centre = xp.floor() as i64;
            let mut cand: Vec<i64> = (centre - n as i64 - 1..=centre + n as i64 + 1)
                .filter(|&i| (0..limit).contains(&i))
                .collect();
            cand.sort_by(|&a, &b| {
                (xp - a as f64)
                    .abs()
                    .total_cmp(&(xp - b as f64).abs())
                    .then(a.cmp(&b))
            });
            cand.truncate(n);
            cand.sort();
            let idx: Vec<i64> = cand.iter().map(|&i| i - pad).collect();
            if self.exclude_outside {
                for (k, &i) in idx.iter().enumerate() {
                    if i < 0 || i >= in_len as i64 {
                        c[k] = 0.0;
                    }
                }
                c = normalised(c);
            }
            let clamped = idx
                .iter()
                .map(|&i| i.clamp(0, in_len as i64 - 1) as usize)
                .collect();
            count = count.max(n);
            rows.push((clamped, c, false));
        }
        let mut t = AxisTaps {
            count,
            index: Vec::with_capacity(out_len * count),
            weight: Vec::with_capacity(out_len * count),
            outside: Vec::with_capacity(out_len),
        };
        for (mut i, mut w, out) in rows {
            i.resize(count, 0);
            w.resize(count, 0.0);
            t.index.extend(i);
            t.weight.extend(w);
            t.outside.push(out);
        }
        t
    }

    /// Applies the resize to row-major f64 data of `shape` (one axis at a time, as the
    /// reference does), returning the output values.
    pub fn apply(&self, data: &[f64], shape: &[usize]) -> Vec<f64> {
        let mut cur = data.to_vec();
        let mut cur_shape = shape.to_vec();
        for d in 0..shape.len() {
            if self.is_identity(d, shape[d]) {
                continue;
            }
            let t = self.taps(d, shape[d]);
            let outer: usize = cur_shape[..d].iter().product();
            let inner: usize = cur_shape[d + 1..].iter().product();
            let (il, ol) = (cur_shape[d], self.out[d]);
            let mut next = vec![0.0; outer * ol * inner];
            for a in 0..outer {
                for o in 0..ol {
                    for b in 0..inner {
                        next[(a * ol + o) * inner + b] = if t.outside[o] {
                            self.extrapolation
                        } else {
                            (0..t.count)
                                .map(|k| {
                                    let w = t.weight[o * t.count + k];
                                    let i = t.index[o * t.count + k];
                                    w * cur[(a * il + i) * inner + b]
                                })
                                .sum()
                        };
                    }
                }
            }
            cur = next;
            cur_shape[d] = ol;
        }
        cur
    }
}

fn normalised(c: Vec<f64>) -> Vec<f64> {
    let s: f64 = c.iter().sum();
    c.into_iter().map(|v| v / s).collect()
}
