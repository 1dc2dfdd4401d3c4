//! Col2Im: sums sliding blocks (columns, as im2col lays them out) back into an image.
//!
//! Input `[N, C·∏block, L]` with `L = ∏ n_blocks`; output `[N, C, …image_shape]`. Column
//! entry `(c, kernel offset kk, block l)` lands at image position
//! `l·stride − pad_begin + kk·dilation` (per spatial dimension), overlapping entries add up.
//! [`Col2ImPlan::source`] answers the gather direction (which entry a position reads for one
//! kernel offset), which the interpreter and the lowering both use.

use crate::graph::Node;
use crate::op::AttrsExt;
use crate::tensor::Tensor;

type R<T> = Result<T, String>;

#[derive(Clone, Debug, PartialEq)]
pub struct Col2ImPlan {
    pub image: Vec<usize>,
    pub block: Vec<usize>,
    pub n_blocks: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_begin: Vec<usize>,
    pub channels: usize,
}

pub fn col2im_plan(
    n: &Node,
    shape: &[usize],
    image: Option<&Tensor>,
    block: Option<&Tensor>,
) -> R<Col2ImPlan> {
    let ints = |t: Option<&Tensor>, what: &str| -> R<Vec<usize>> {
        let v = t
            .ok_or_else(|| format!("Col2Im needs the value of `{what}`"))?
            .to_i64_vec();
        if v.iter().any(|&d| d <= 0 || d >= 1 << 31) {
            return Err(format!("`{what}` {v:?} must be positive"));
        }
        Ok(v.iter().map(|&d| d as usize).collect())
    };
    let (image, block) = (ints(image, "image_shape")?, ints(block, "block_shape")?);
    let k = image.len();
    if block.len() != k || shape.len() != 3 {
        return Err(format!(
            "input {shape:?}, image_shape {image:?} and block_shape {block:?} do not agree"
        ));
    }
    let attr = |name: &str, len: usize, default: i64| -> R<Vec<usize>> {
        let v = n.attrs.ints(name)?.unwrap_or_else(|| vec![default; len]);
        if v.len() != len || v.iter().any(|x| !(0..1 << 31).contains(x)) {
            return Err(format!(
                "`{name}` {v:?} must have {len} non-negative values"
            ));
        }
        Ok(v.iter().map(|&x| x as usize).collect())
    };
    let (strides, dilations, pads) = (
        attr("strides", k, 1)?,
        attr("dilations", k, 1)?,
        attr("pads", 2 * k, 0)?,
    );
    let mut n_blocks = Vec::with_capacity(k);
    for d in 0..k {
        let span = dilations[d] * (block[d] - 1) + 1;
        let room = image[d] + pads[d] + pads[d + k];
        if strides[d] == 0 || room < span {
            return Err(format!("block {block:?} does not fit image {image:?}"));
        }
        n_blocks.push((room - span) / strides[d] + 1);
    }
    let kernel: usize = block.iter().product();
    if !shape[1].is_multiple_of(kernel) || shape[2] != n_blocks.iter().product::<usize>() {
        return Err(format!(
            "input {shape:?} does not hold {kernel}-entry columns for {n_blocks:?} blocks"
        ));
    }
    Ok(Col2ImPlan {
        channels: shape[1] / kernel,
        image,
        block,
        n_blocks,
        strides,
        dilations,
        pad_begin: pads[..k].to_vec(),
    })
}

impl Col2ImPlan {
    pub fn out_shape(&self, batch: usize) -> Vec<usize> {
        let mut s = vec![batch, self.channels];
        s.extend(&self.image);
        s
    }

    /// For image position `y` (per dimension) and kernel offset `kk`: the block index it reads
    /// (per dimension), or None when no block puts that offset there.
    pub fn source(&self, y: &[usize], kk: &[usize]) -> Option<Vec<usize>> {
        let mut l = Vec::with_capacity(y.len());
        for d in 0..y.len() {
            let t = (y[d] + self.pad_begin[d]) as i64 - (kk[d] * self.dilations[d]) as i64;
            if t < 0 || t % self.strides[d] as i64 != 0 {
                return None;
            }
            let b = (t / self.strides[d] as i64) as usize;
            if b >= self.n_blocks[d] {
                return None;
            }
            l.push(b);
        }
        Some(l)
    }

    /// Applies Col2Im to row-major f64 data of `shape`.
    pub fn apply(&self, x: &[f64], shape: &[usize]) -> Vec<f64> {
        let unravel = |mut i: usize, dims: &[usize]| -> Vec<usize> {
            let mut v = vec![0; dims.len()];
            for d in (0..dims.len()).rev() {
                v[d] = i % dims[d];
                i /= dims[d];
            }
            v
        };
        let ravel = |v: &[usize], dims: &[usize]| v.iter().zip(dims).fold(0, |a, (i, d)| a * d + i);
        let (kernel, blocks): (usize, usize) =
            (self.block.iter().product(), self.n_blocks.iter().product());
        let pixels: usize = self.image.iter().product();
        let mut out = Vec::with_capacity(shape[0] * self.channels * pixels);
        for b in 0..shape[0] {
            for c in 0..self.channels {
                for p in 0..pixels {
                    let y = unravel(p, &self.image);
                    let mut acc = 0.0;
                    for k in 0..kernel {
                        let kk = unravel(k, &self.block);
                        if let Some(l) = self.source(&y, &kk) {
                            let row = c * kernel + k;
                            acc += x[(b * shape[1] + row) * blocks + ravel(&l, &self.n_blocks)];
                        }
                    }
                    out.push(acc);
                }
            }
        }
        out
    }
}
