//! Winograd's minimal filtering for 3×3 convolutions at stride 1: `F(m×m, 3×3)` computes an
//! `m×m` output tile from an `α×α` input tile (`α = m + 2`) with `α²` multiplications per
//! channel pair instead of `9m²` (Lavin & Gray 2016, "Fast Algorithms for Convolutional
//! Neural Networks"). A convolution becomes three steps:
//!
//! - `WinogradInput(x)`: per tile and channel, `V = Bᵀ d B` of the tile `d` of the padded
//!   input, laid out `[N, α², C, tiles]`;
//! - a batched product `M[ξ] = U[ξ] · V[ξ]` with the weights `U = G g Gᵀ` transformed at
//!   compile time (`[α², K, C]`);
//! - `WinogradOutput(M, bias?)`: per tile and output channel, `Y = Aᵀ M A` (+ bias), the
//!   part of it inside the output written to `[N, K, oh, ow]`.
//!
//! The matrices are the standard ones (points 0, ±1 for `m = 2`; 0, ±1, ±2 for `m = 4`).
//! [`WinogradPlan`] holds the geometry; its `apply_*` functions are the interpreter's meaning
//! of the two ops, and the unit tests check that the three steps are the convolution.

use crate::graph::Node;
use crate::op::AttrsExt;

type R<T> = Result<T, String>;

/// `Bᵀ` (α×α), `G` (α×3) and `Aᵀ` (m×α) of `F(m, 3)`.
pub struct Matrices {
    pub bt: &'static [&'static [f64]],
    pub g: &'static [[f64; 3]],
    pub at: &'static [&'static [f64]],
}

const F2_BT: &[&[f64]] = &[
    &[1.0, 0.0, -1.0, 0.0],
    &[0.0, 1.0, 1.0, 0.0],
    &[0.0, -1.0, 1.0, 0.0],
    &[0.0, 1.0, 0.0, -1.0],
];
const F2_G: &[[f64; 3]] = &[
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
const F2_AT: &[&[f64]] = &[&[1.0, 1.0, 1.0, 0.0], &[0.0, 1.0, -1.0, -1.0]];

const F4_BT: &[&[f64]] = &[
    &[4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    &[0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    &[0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    &[0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    &[0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    &[0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const F4_G: &[[f64; 3]] = &[
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
const F4_AT: &[&[f64]] = &[
    &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    &[0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    &[0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    &[0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// The matrices of `F(m, 3)`, for the tile sizes this compiler implements (2 and 4).
pub fn matrices(m: usize) -> Option<Matrices> {
    match m {
        2 => Some(Matrices {
            bt: F2_BT,
            g: F2_G,
            at: F2_AT,
        }),
        4 => Some(Matrices {
            bt: F4_BT,
            g: F4_G,
            at: F4_AT,
        }),
        _ => None,
    }
}

/// The geometry of one Winograd convolution: tile size, leading padding, output size and
/// the tile grid.
#[derive(Clone, Debug, PartialEq)]
pub struct WinogradPlan {
    /// Output tile side `m`; the input tile side is `m + 2`.
    pub m: usize,
    /// Leading padding `[top, left]`: output `(oy, ox)` reads input rows `oy − top ..`.
    pub pad: [usize; 2],
    /// Output rows and columns.
    pub out: [usize; 2],
    /// Tile rows and columns: `⌈out / m⌉`.
    pub tiles: [usize; 2],
}

impl WinogradPlan {
    pub fn new(m: usize, pad: [usize; 2], out: [usize; 2]) -> R<WinogradPlan> {
        if matrices(m).is_none() {
            return Err(format!("Winograd tile {m} is not implemented (2 or 4)"));
        }
        if out.contains(&0) || out.iter().any(|&d| d >= 1 << 31) {
            return Err(format!("Winograd output {out:?} must be positive"));
        }
        Ok(WinogradPlan {
            m,
            pad,
            out,
            tiles: [out[0].div_ceil(m), out[1].div_ceil(m)],
        })
    }

    /// Input tile side `α = m + 2`.
    pub fn alpha(&self) -> usize {
        self.m + 2
    }

    /// Tiles per image.
    pub fn tile_count(&self) -> usize {
        self.tiles[0] * self.tiles[1]
    }

    pub fn matrices(&self) -> Matrices {
        matrices(self.m).expect("checked by WinogradPlan::new")
    }

    /// The plan of a `WinogradInput` node over an input `[N, C, H, W]`: attributes `tile` and
    /// `pads` (`[top, left, bottom, right]`, as Conv's).
    pub fn of_input(n: &Node, x: &[usize]) -> R<WinogradPlan> {
        let (m, pads) = Self::tile_and(n, "pads", 4)?;
        if x.len() != 4 {
            return Err(format!("WinogradInput needs a 4-D input, got {x:?}"));
        }
        let size = |d: usize| (x[2 + d] + pads[d] + pads[d + 2]).checked_sub(2);
        let (Some(oh), Some(ow)) = (size(0), size(1)) else {
            return Err(format!(
                "input {x:?} with pads {pads:?} is smaller than 3×3"
            ));
        };
        WinogradPlan::new(m, [pads[0], pads[1]], [oh, ow])
    }

    /// The plan of a `WinogradOutput` node: attributes `tile` and `output_shape`
    /// (`[oh, ow]`); its input must be `[N, α², K, tiles]`.
    pub fn of_output(n: &Node, mshape: &[usize]) -> R<WinogradPlan> {
        let (m, out) = Self::tile_and(n, "output_shape", 2)?;
        let p = WinogradPlan::new(m, [0, 0], [out[0], out[1]])?;
        let a = p.alpha();
        if mshape.len() != 4 || mshape[1] != a * a || mshape[3] != p.tile_count() {
            return Err(format!(
                "WinogradOutput input {mshape:?} is not [N, {}, K, {}]",
                a * a,
                p.tile_count()
            ));
        }
        Ok(p)
    }

    fn tile_and(n: &Node, name: &str, len: usize) -> R<(usize, Vec<usize>)> {
        let m = n.attrs.int("tile", 2)?;
        let v = n
            .attrs
            .ints(name)?
            .ok_or_else(|| format!("missing attribute `{name}`"))?;
        if v.len() != len || v.iter().any(|d| !(0..1 << 31).contains(d)) || m < 1 {
            return Err(format!("`{name}` {v:?} (tile {m}) is malformed"));
        }
        Ok((m as usize, v.iter().map(|&d| d as usize).collect()))
    }

    /// `V[n, a·α + b, c, t] = Σᵢⱼ Bᵀ[a][i] Bᵀ[b][j] x[n, c, ty·m + i − top, tx·m + j − left]`
    /// (zero outside the image) for `x` of `shape` `[N, C, H, W]`.
    pub fn apply_input(&self, x: &[f64], shape: &[usize]) -> Vec<f64> {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let (a, bt) = (self.alpha(), self.matrices().bt);
        let tiles = self.tile_count();
        let mut out = vec![0.0; n * a * a * c * tiles];
        let mut d = vec![0.0; a * a];
        for b in 0..n {
            for ch in 0..c {
                let plane = &x[(b * c + ch) * h * w..][..h * w];
                for t in 0..tiles {
                    let (ty, tx) = (t / self.tiles[1], t % self.tiles[1]);
                    for i in 0..a {
                        for j in 0..a {
                            let y = (ty * self.m + i) as i64 - self.pad[0] as i64;
                            let xx = (tx * self.m + j) as i64 - self.pad[1] as i64;
                            let inside = (0..h as i64).contains(&y) && (0..w as i64).contains(&xx);
                            d[i * a + j] = match inside {
                                true => plane[y as usize * w + xx as usize],
                                false => 0.0,
                            };
                        }
                    }
                    for (p, q) in (0..a).flat_map(|p| (0..a).map(move |q| (p, q))) {
                        let mut s = 0.0;
                        for i in 0..a {
                            for j in 0..a {
                                s += bt[p][i] * bt[q][j] * d[i * a + j];
                            }
                        }
                        out[((b * a * a + p * a + q) * c + ch) * tiles + t] = s;
                    }
                }
            }
        }
        out
    }

    /// `y[n, k, ty·m + u, tx·m + v] = Σₐ_b Aᵀ[u][a] Aᵀ[v][b] M[n, a·α + b, k, t] + bias[k]`
    /// where inside the output, for `M` of `shape` `[N, α², K, tiles]`.
    pub fn apply_output(&self, mm: &[f64], shape: &[usize], bias: Option<&[f64]>) -> Vec<f64> {
        let (n, k) = (shape[0], shape[2]);
        let (a, at, m) = (self.alpha(), self.matrices().at, self.m);
        let ([oh, ow], tiles) = (self.out, self.tile_count());
        let mut out = vec![0.0; n * k * oh * ow];
        for b in 0..n {
            for ch in 0..k {
                for t in 0..tiles {
                    let (ty, tx) = (t / self.tiles[1], t % self.tiles[1]);
                    for (u, v) in (0..m).flat_map(|u| (0..m).map(move |v| (u, v))) {
                        let (y, x) = (ty * m + u, tx * m + v);
                        if y >= oh || x >= ow {
                            continue;
                        }
                        let mut s = bias.map_or(0.0, |bs| bs[ch]);
                        for p in 0..a {
                            for q in 0..a {
                                let at_m = mm[((b * a * a + p * a + q) * k + ch) * tiles + t];
                                s += at[u][p] * at[v][q] * at_m;
                            }
                        }
                        out[((b * k + ch) * oh + y) * ow + x] = s;
                    }
                }
            }
        }
        out
    }
}

/// `U[a·α + b, k, c] = Σᵢⱼ G[a][i] G[b][j] g[k, c, i, j]` for a weight `g` of `[K, C, 3, 3]`
/// (row-major), as f64: the product's constant operand.
pub fn transform_weights(m: usize, g: &[f64], k: usize, c: usize) -> Option<Vec<f64>> {
    let gm = matrices(m)?.g;
    let a = m + 2;
    let mut u = vec![0.0; a * a * k * c];
    for (kk, cc) in (0..k).flat_map(|kk| (0..c).map(move |cc| (kk, cc))) {
        let w = &g[(kk * c + cc) * 9..][..9];
        for (p, q) in (0..a).flat_map(|p| (0..a).map(move |q| (p, q))) {
            let mut s = 0.0;
            for i in 0..3 {
                for j in 0..3 {
                    s += gm[p][i] * gm[q][j] * w[i * 3 + j];
                }
            }
            u[((p * a + q) * k + kk) * c + cc] = s;
        }
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct 3×3 convolution at stride 1, f64.
    fn direct(x: &[f64], s: [usize; 4], w: &[f64], k: usize, pad: [usize; 4]) -> Vec<f64> {
        let [n, c, h, wd] = s;
        let (oh, ow) = (h + pad[0] + pad[2] - 2, wd + pad[1] + pad[3] - 2);
        let mut y = vec![0.0; n * k * oh * ow];
        for (b, kk, oy, ox) in (0..n).flat_map(|b| {
            (0..k).flat_map(move |kk| {
                (0..oh).flat_map(move |oy| (0..ow).map(move |ox| (b, kk, oy, ox)))
            })
        }) {
            let mut sum = 0.0;
            for (cc, i, j) in
                (0..c).flat_map(|cc| (0..3).flat_map(move |i| (0..3).map(move |j| (cc, i, j))))
            {
                let (iy, ix) = (
                    (oy + i) as i64 - pad[0] as i64,
                    (ox + j) as i64 - pad[1] as i64,
                );
                if (0..h as i64).contains(&iy) && (0..wd as i64).contains(&ix) {
                    sum += x[((b * c + cc) * h + iy as usize) * wd + ix as usize]
                        * w[(kk * c + cc) * 9 + i * 3 + j];
                }
            }
            y[((b * k + kk) * oh + oy) * ow + ox] = sum;
        }
        y
    }

    fn noise(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f64 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The three steps are the convolution, for both tile sizes, odd and even outputs,
    /// asymmetric padding and two images.
    #[test]
    fn three_steps_are_the_convolution() {
        for (m, shape, k, pad) in [
            (2, [1, 3, 6, 6], 4, [1, 1, 1, 1]),
            (2, [2, 2, 7, 5], 3, [1, 0, 0, 2]),
            (4, [1, 3, 9, 8], 2, [1, 1, 1, 1]),
            (4, [2, 2, 5, 11], 3, [0, 1, 2, 0]),
        ] {
            let [n, c, h, w] = shape;
            let (x, g) = (noise(n * c * h * w, 1), noise(k * c * 9, 2));
            let want = direct(&x, shape, &g, k, pad);
            let p = WinogradPlan::new(
                m,
                [pad[0], pad[1]],
                [h + pad[0] + pad[2] - 2, w + pad[1] + pad[3] - 2],
            )
            .unwrap();
            let a = p.alpha();
            let v = p.apply_input(&x, &shape);
            let u = transform_weights(m, &g, k, c).unwrap();
            let t = p.tile_count();
            let mut mm = vec![0.0; n * a * a * k * t];
            for (b, xi, kk, tt) in (0..n).flat_map(|b| {
                (0..a * a).flat_map(move |xi| {
                    (0..k).flat_map(move |kk| (0..t).map(move |tt| (b, xi, kk, tt)))
                })
            }) {
                mm[((b * a * a + xi) * k + kk) * t + tt] = (0..c)
                    .map(|cc| u[(xi * k + kk) * c + cc] * v[((b * a * a + xi) * c + cc) * t + tt])
                    .sum();
            }
            let got = p.apply_output(&mm, &[n, a * a, k, t], None);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-9,
                    "F({m},3) {shape:?} element {i}: {g} vs {w}"
                );
            }
        }
    }
}
