//! The shapes of the matrix products and convolutions (MatMul, Gemm, Conv).

use super::{R, Window, broadcast, input, known, permutation, permuted, spatial_sizes};
use crate::graph::{Dim, Node, ValueType};
use crate::op::AttrsExt;

/// The shape of a MatMul: numpy-style (vectors promoted, batch axes broadcast); with the
/// optimizer's `b_perm`, of input 1 transposed.
pub(super) fn matmul(n: &Node, tys: &[Option<ValueType>]) -> R<Vec<ValueType>> {
    let (a, b) = (input(tys, 0)?, input(tys, 1)?);
    // `b_perm` (set by the optimizer's `transpose-into-matmul` rule, not ONNX): the
    // right operand is input 1 transposed by this permutation.
    let b_permuted;
    let b = match n.attrs.ints("b_perm")? {
        Some(p) => {
            let perm = permutation(Some(p), b.rank())?;
            b_permuted = ValueType {
                dtype: b.dtype,
                shape: permuted(&b.shape, &perm),
            };
            &b_permuted
        }
        None => b,
    };
    if a.dtype != b.dtype {
        return Err("operands differ in dtype".into());
    }
    if a.rank() == 0 || b.rank() == 0 {
        return Err("MatMul of a scalar".into());
    }
    let mut sa = a.shape.clone();
    let mut sb = b.shape.clone();
    let (va, vb) = (sa.len() == 1, sb.len() == 1);
    if va {
        sa.insert(0, Dim::Known(1));
    }
    if vb {
        sb.push(Dim::Known(1));
    }
    let (k1, k2) = (&sa[sa.len() - 1], &sb[sb.len() - 2]);
    if k1 != k2 {
        return Err(format!("inner dimensions differ: {k1} vs {k2}"));
    }
    let mut out = broadcast(&[&sa[..sa.len() - 2], &sb[..sb.len() - 2]])?;
    if !va {
        out.push(sa[sa.len() - 2].clone());
    }
    if !vb {
        out.push(sb[sb.len() - 1].clone());
    }
    Ok(vec![ValueType {
        dtype: a.dtype,
        shape: out,
    }])
}

/// The shape of a Gemm (`transA`, `transB`; `C` must broadcast to the result).
pub(super) fn gemm(n: &Node, tys: &[Option<ValueType>]) -> R<Vec<ValueType>> {
    let (a, b) = (input(tys, 0)?, input(tys, 1)?);
    if a.rank() != 2 || b.rank() != 2 {
        return Err("Gemm needs 2-D operands".into());
    }
    let ta = n.attrs.int("transA", 0)? != 0;
    let tb = n.attrs.int("transB", 0)? != 0;
    let (m, k1) = if ta {
        (&a.shape[1], &a.shape[0])
    } else {
        (&a.shape[0], &a.shape[1])
    };
    let (k2, nn) = if tb {
        (&b.shape[1], &b.shape[0])
    } else {
        (&b.shape[0], &b.shape[1])
    };
    if k1 != k2 {
        return Err(format!("inner dimensions differ: {k1} vs {k2}"));
    }
    let out = vec![m.clone(), nn.clone()];
    if let Ok(cc) = input(tys, 2) {
        broadcast(&[&cc.shape, &out]).map_err(|e| format!("C does not broadcast: {e}"))?;
    }
    Ok(vec![ValueType {
        dtype: a.dtype,
        shape: out,
    }])
}

/// The shape of a 1-D or 2-D Conv (channels, groups and the window checked).
pub(super) fn conv(n: &Node, tys: &[Option<ValueType>]) -> R<Vec<ValueType>> {
    let (xx, w) = (input(tys, 0)?, input(tys, 1)?);
    if !matches!(xx.rank(), 3 | 4) || w.rank() != xx.rank() {
        return Err(format!(
            "only 1-D and 2-D Conv (rank-3 or rank-4 input and weight) are supported, got ranks {} and {}",
            xx.rank(),
            w.rank()
        ));
    }
    let group = n.attrs.int("group", 1)?;
    let cin = known(&xx.shape[1], "input channels")?;
    let wshape: Vec<usize> = w.static_shape().ok_or("weight shape must be static")?;
    if group <= 0
        || cin as i64 % group != 0
        || wshape[1] * group as usize != cin
        || !wshape[0].is_multiple_of(group as usize)
    {
        return Err(format!(
            "channels {cin}, weight {wshape:?} and group {group} are inconsistent"
        ));
    }
    let spatial = spatial_sizes(xx)?;
    let win = Window::from_node(n, &spatial, Some(&wshape[2..]))?;
    if win.ceil_mode {
        return Err("ceil_mode is not a Conv attribute".into());
    }
    let o = win.output_sizes(&spatial)?;
    let mut out = vec![xx.shape[0].clone(), Dim::Known(wshape[0])];
    out.extend(o.into_iter().map(Dim::Known));
    Ok(vec![ValueType {
        dtype: xx.dtype,
        shape: out,
    }])
}
