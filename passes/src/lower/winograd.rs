//! The two transforms of a Winograd convolution ([`tessera_ir::winograd`]) as loop nests.
//!
//! - `WinogradInput`: per image, channel and tile row, a loop over the tile columns whose
//!   body loads the `α×α` input tile (a column step of `m`: strided vector loads) and stores
//!   its `α²` transformed values, each a contiguous row of `V`. Only the taps whose row or
//!   column can fall outside the image carry a check (`select`, a masked load in a vector).
//! - `WinogradOutput`: per image, output channel and tile row, a loop over the tile columns
//!   that loads `α²` products (contiguous) and stores the `m×m` output tile with the bias
//!   and the fused epilogue applied. Whole tiles and the partial last tile row and column
//!   are separate loops, so no store is checked.
//!
//! Both compute `Bᵀ d B` (or `Aᵀ M A`) as two passes of a matrix times the tile, skipping
//! zero coefficients and writing ±1 as an add or a subtract.

use super::{Builder, NodeCx, in_range, serial_for, strides_of};
use crate::error::PassError;
use tessera_ir::DType;
use tessera_ir::loops::{BinOp, IExpr, Stmt, VExpr};
use tessera_ir::winograd::WinogradPlan;

/// `Σᵢ coeffs[i] · terms[i]`, zero coefficients skipped.
fn combine(coeffs: &[f64], terms: &[VExpr], dt: DType) -> VExpr {
    let mut sum: Option<VExpr> = None;
    for (&c, t) in coeffs.iter().zip(terms) {
        if c == 0.0 {
            continue;
        }
        let (term, negative) = match c.abs() == 1.0 {
            true => (t.clone(), c < 0.0),
            false => (
                VExpr::bin(BinOp::Mul, VExpr::f(c.abs(), dt), t.clone()),
                c < 0.0,
            ),
        };
        sum = Some(match (sum, negative) {
            (None, false) => term,
            (None, true) => VExpr::un(tessera_ir::loops::UnOp::Neg, term),
            (Some(s), false) => VExpr::bin(BinOp::Add, s, term),
            (Some(s), true) => VExpr::bin(BinOp::Sub, s, term),
        });
    }
    sum.unwrap_or_else(|| VExpr::lit(0.0, dt))
}

/// `X · tile · Xᵀ` for a square tile `t` (row-major, `cols × cols`) and `X` (`rows × cols`):
/// row-major `rows × rows`.
fn sandwich(x: &[&[f64]], t: &[VExpr], dt: DType) -> Vec<VExpr> {
    let cols = x[0].len();
    // First pass: `X · t`, rows × cols.
    let left: Vec<VExpr> = x
        .iter()
        .flat_map(|row| {
            (0..cols).map(move |j| {
                let column: Vec<VExpr> = (0..cols).map(|i| t[i * cols + j].clone()).collect();
                combine(row, &column, dt)
            })
        })
        .collect();
    (0..x.len())
        .flat_map(|p| {
            let left = &left;
            x.iter()
                .map(move |row| combine(row, &left[p * cols..][..cols], dt))
        })
        .collect()
}

pub(crate) fn input(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let xs = cx.shape(0).to_vec();
    let p = WinogradPlan::of_input(cx.node, &xs).map_err(|e| cx.err(e))?;
    let (a, m, dt) = (p.alpha(), p.m as i64, cx.out_dtype);
    let (h, w) = (xs[2], xs[3]);
    let [th, tw] = p.tiles;
    let (vb, vc, vy, vx) = (b.var(), b.var(), b.var(), b.var());
    let (ib, ic, ty, tx) = (
        IExpr::var(&vb),
        IExpr::var(&vc),
        IExpr::var(&vy),
        IExpr::var(&vx),
    );
    let (x_strides, v_strides) = (strides_of(&xs), strides_of(&cx.out_shape));
    // Whether tap row `i` (column `j`) of some tile falls outside the image.
    let leaves = |k: usize, tiles: usize, pad: usize, size: usize| {
        k < pad || (tiles - 1) * p.m + k >= pad + size
    };
    let mut tile = Vec::with_capacity(a * a);
    for i in 0..a {
        for j in 0..a {
            let iy = ty
                .clone()
                .times(m)
                .plus(IExpr::c(i as i64 - p.pad[0] as i64));
            let ix = tx
                .clone()
                .times(m)
                .plus(IExpr::c(j as i64 - p.pad[1] as i64));
            let at = IExpr::linear(
                &[ib.clone(), ic.clone(), iy.clone(), ix.clone()],
                &x_strides,
            );
            let load = VExpr::load(cx.buf(0), at.simplify());
            let row = leaves(i, th, p.pad[0], h).then(|| in_range(iy, h));
            let col = leaves(j, tw, p.pad[1], w).then(|| in_range(ix, w));
            let inside = match (row, col) {
                (Some(r), Some(c)) => Some(VExpr::bin(BinOp::And, r, c)),
                (r, c) => r.or(c),
            };
            tile.push(match inside {
                Some(c) => VExpr::select(c, load, VExpr::lit(0.0, dt)),
                None => load,
            });
        }
    }
    let v = sandwich(p.matrices().bt, &tile, dt);
    let t = ty.clone().times(tw as i64).plus(tx.clone());
    let stores = (0..a * a)
        .map(|xi| {
            let plane = IExpr::c(xi as i64);
            let at = IExpr::linear(&[ib.clone(), plane, ic.clone(), t.clone()], &v_strides);
            Stmt::Store {
                buf: cx.out.clone(),
                index: at.simplify(),
                value: v[xi].clone(),
            }
        })
        .collect();
    let columns = serial_for(&vx, tw, stores);
    let rows = serial_for(&vy, th, vec![columns]);
    Ok(vec![serial_for(
        &vb,
        xs[0],
        vec![serial_for(&vc, xs[1], vec![rows])],
    )])
}

pub(crate) fn output(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let ms = cx.shape(0).to_vec();
    let p = WinogradPlan::of_output(cx.node, &ms).map_err(|e| cx.err(e))?;
    let (a, m, dt) = (p.alpha(), p.m, cx.out_dtype);
    let (n, k) = (ms[0], ms[2]);
    let (m_strides, y_strides) = (strides_of(&ms), strides_of(&cx.out_shape));
    let [oh, ow] = p.out;
    let [_, tw] = p.tiles;
    let (vb, vk) = (b.var(), b.var());
    let (ib, ik) = (IExpr::var(&vb), IExpr::var(&vk));
    // The output tile at (ty, tx), rows `0..us` and columns `0..vs` of it.
    let tile_stores = |ty: &IExpr, tx: &IExpr, us: usize, vs: usize| -> Vec<Stmt> {
        let t = ty.clone().times(tw as i64).plus(tx.clone());
        let prods: Vec<VExpr> = (0..a * a)
            .map(|xi| {
                let plane = IExpr::c(xi as i64);
                let at = IExpr::linear(&[ib.clone(), plane, ik.clone(), t.clone()], &m_strides);
                VExpr::load(cx.buf(0), at.simplify())
            })
            .collect();
        let y = sandwich(p.matrices().at, &prods, dt);
        let mut out = Vec::with_capacity(us * vs);
        for u in 0..us {
            for v in 0..vs {
                let mut value = y[u * m + v].clone();
                if cx.has(1) {
                    value = VExpr::bin(BinOp::Add, value, VExpr::load(cx.buf(1), ik.clone()));
                }
                let oy = ty.clone().times(m as i64).plus(IExpr::c(u as i64));
                let ox = tx.clone().times(m as i64).plus(IExpr::c(v as i64));
                let coords = [ib.clone(), ik.clone(), oy, ox];
                if let Some(epi) = cx.epilogue {
                    value = epi(value, &coords);
                }
                let at = IExpr::linear(&coords, &y_strides);
                out.push(Stmt::Store {
                    buf: cx.out.clone(),
                    index: at.simplify(),
                    value,
                });
            }
        }
        out
    };
    // Whole tiles, then the partial last column and row.
    let row_of_tiles = |b: &mut Builder, ty: &IExpr, us: usize| -> Vec<Stmt> {
        let mut v = Vec::new();
        if ow / m > 0 {
            let vx = b.var();
            v.push(serial_for(
                &vx,
                ow / m,
                tile_stores(ty, &IExpr::var(&vx), us, m),
            ));
        }
        if ow % m != 0 {
            v.extend(tile_stores(ty, &IExpr::c((ow / m) as i64), us, ow % m));
        }
        v
    };
    let mut rows = Vec::new();
    if oh / m > 0 {
        let vy = b.var();
        let body = row_of_tiles(b, &IExpr::var(&vy), m);
        rows.push(serial_for(&vy, oh / m, body));
    }
    if oh % m != 0 {
        rows.extend(row_of_tiles(b, &IExpr::c((oh / m) as i64), oh % m));
    }
    Ok(vec![serial_for(&vb, n, vec![serial_for(&vk, k, rows)])])
}
