//! Reads through views in a fused body: a `Slice` with constant bounds, a `Gather` of one
//! constant index or a `Transpose`, whose data is a body input (or another such view), is not
//! computed by the kernel. Each element the body needs is loaded straight from the input, at the coordinates
//! the view maps to — so `sigmoid(x[:, 0:h]) · tanh(x[:, 2h:3h])` is one kernel reading `x`,
//! not two copies and a kernel.
//!
//! [`ViewMap::of`] decides which views qualify; the fusion rule (`rules/fusion.rs`) asks it
//! before putting a view into a body, the lowering ([`BodyViews`]) and the extraction cost
//! ask it again of the body it gets.

use super::{NodeCx, strides_of};
use std::collections::HashMap;
use tessera_ir::loops::{IExpr, VExpr};
use tessera_ir::{Attrs, AttrsExt, Graph, OpKind, Tensor, ValueId, infer};

/// Whether `op` can be a view in a fused body (with constant parameters, see [`ViewMap::of`]).
pub fn is_view_op(op: OpKind) -> bool {
    matches!(op, OpKind::Slice | OpKind::Gather | OpKind::Transpose)
}

/// How a view's coordinates become its data's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewMap {
    /// A Slice: data coordinate `start + step·c` on every axis (the resolved bounds).
    Slice(Vec<(i64, i64)>),
    /// A Gather of one constant index: the data coordinate `index` at `axis` (inserted there;
    /// `keep`: the indices are a 1-element vector, so the view keeps a dimension of 1 there).
    Pick { axis: usize, index: i64, keep: bool },
    /// A Transpose: view axis `i` is data axis `perm[i]` (a transposed read gathers, as the
    /// Transpose kernel itself would, but the transposed copy is never written).
    Permute(Vec<usize>),
}

impl ViewMap {
    /// The map of view `op(data, params…)` over data of shape `data_shape`, when every
    /// parameter it needs is a constant (`params`: the node's inputs after the data, `None`
    /// where absent or not constant). A Gather index outside the axis is no view (the
    /// kernel reports it).
    pub fn of(
        op: OpKind,
        attrs: &Attrs,
        data_shape: &[usize],
        params: &[Option<&Tensor>],
    ) -> Option<ViewMap> {
        let param = |i: usize| params.get(i).copied().flatten();
        match op {
            OpKind::Slice => {
                let ints = |i: usize| param(i).map(|t| t.to_i64_vec());
                let resolved = infer::slice_params(
                    data_shape,
                    &ints(0)?,
                    &ints(1)?,
                    ints(2).as_deref(),
                    ints(3).as_deref(),
                )
                .ok()?;
                Some(ViewMap::Slice(
                    resolved
                        .iter()
                        .map(|&(start, step, _)| (start, step))
                        .collect(),
                ))
            }
            OpKind::Gather => {
                let indices = param(0)?;
                if indices.len() != 1 || indices.shape().len() > 1 || indices.dtype().is_float() {
                    return None;
                }
                let axis = infer::norm_axis(attrs.int("axis", 0).ok()?, data_shape.len()).ok()?;
                let extent = data_shape[axis] as i64;
                let index = indices.get_i64(0);
                if !(-extent..extent).contains(&index) {
                    return None;
                }
                Some(ViewMap::Pick {
                    axis,
                    index: index.rem_euclid(extent),
                    keep: indices.shape().len() == 1,
                })
            }
            OpKind::Transpose => {
                let rank = data_shape.len();
                let perm = infer::permutation(attrs.ints("perm").ok()?, rank).ok()?;
                Some(ViewMap::Permute(perm))
            }
            _ => None,
        }
    }

    /// The data coordinates of view coordinates `coords`, each as a variable part and a
    /// constant offset (kept apart so the final index stays `Σ var·stride + constant`).
    fn data_coords(&self, coords: &[(IExpr, i64)]) -> Vec<(IExpr, i64)> {
        match self {
            ViewMap::Slice(bounds) => coords
                .iter()
                .zip(bounds)
                .map(|((e, off), &(start, step))| (e.clone().times(step), start + off * step))
                .collect(),
            ViewMap::Pick { axis, index, keep } => {
                let mut out = coords[..*axis].to_vec();
                out.push((IExpr::c(0), *index));
                let rest = if *keep { axis + 1 } else { *axis };
                out.extend_from_slice(&coords[rest..]);
                out
            }
            ViewMap::Permute(perm) => {
                let mut out = vec![(IExpr::c(0), 0); perm.len()];
                for (c, &axis) in coords.iter().zip(perm) {
                    out[axis] = c.clone();
                }
                out
            }
        }
    }
}

/// The views of one fused body: each view value's data value and map.
#[derive(Default)]
pub(crate) struct BodyViews {
    maps: HashMap<ValueId, (ValueId, ViewMap)>,
}

impl BodyViews {
    /// Every view node of `body`; a view op whose parameters are not the body's constants is
    /// an error naming it.
    pub fn of(body: &Graph) -> Result<BodyViews, String> {
        let mut maps = HashMap::new();
        for (_, n) in body.nodes().filter(|(_, n)| is_view_op(n.op)) {
            let data = n.inputs.first().copied().flatten();
            let shape = data.and_then(|v| body.ty(v)).and_then(|t| t.static_shape());
            let params: Vec<Option<&Tensor>> = n.inputs[1..]
                .iter()
                .map(|i| i.and_then(|v| body.initializers.get(&v)))
                .collect();
            let map = shape.and_then(|s| ViewMap::of(n.op, &n.attrs, &s, &params));
            match (data, map) {
                (Some(data), Some(map)) => {
                    maps.insert(n.outputs[0], (data, map));
                }
                _ => {
                    return Err(format!(
                        "{} `{}` in a fused body needs a typed input and constant parameters",
                        n.op, n.name
                    ));
                }
            }
        }
        Ok(BodyViews { maps })
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The load of view `v` at its own coordinates `coords`: through the chain of views down
    /// to the body input that holds the elements.
    fn load(&self, cx: &NodeCx, body: &Graph, v: ValueId, coords: &[IExpr]) -> Option<VExpr> {
        let mut at: Vec<(IExpr, i64)> = coords.iter().map(|c| (c.clone(), 0)).collect();
        let mut v = v;
        while let Some((data, map)) = self.maps.get(&v) {
            at = map.data_coords(&at);
            v = *data;
        }
        let input = body.inputs.iter().position(|&x| x == v)?;
        let strides = strides_of(cx.shape(input));
        let vars: Vec<IExpr> = at.iter().map(|(e, _)| e.clone()).collect();
        let offset: i64 = at
            .iter()
            .zip(&strides)
            .map(|((_, off), &s)| off * s as i64)
            .sum();
        Some(VExpr::load(
            cx.buf(input),
            IExpr::linear(&vars, &strides).plus(IExpr::c(offset)),
        ))
    }

    /// Adds to `env` each view of rank ≤ `rank`, loaded at output coordinates `coords`
    /// (broadcast like an input: leading dimensions and dimensions of 1 ignored).
    pub fn add_loads(
        &self,
        cx: &NodeCx,
        body: &Graph,
        coords: &[IExpr],
        rank: usize,
        env: &mut HashMap<ValueId, VExpr>,
    ) {
        for &v in self.maps.keys() {
            let Some(shape) = body.ty(v).and_then(|t| t.static_shape()) else {
                continue;
            };
            if shape.len() > rank {
                continue;
            }
            let off = rank - shape.len();
            let own: Vec<IExpr> = shape
                .iter()
                .enumerate()
                .map(|(d, &n)| match coords.get(off + d) {
                    Some(c) if n != 1 => c.clone(),
                    _ => IExpr::c(0),
                })
                .collect();
            if let Some(load) = self.load(cx, body, v, &own) {
                env.insert(v, load);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[i64]) -> Tensor {
        Tensor::from_i64(tessera_ir::DType::I64, vec![v.len()], v)
    }

    #[test]
    fn slices_picks_and_permutations_map_coordinates() {
        let (s, e, a) = (ints(&[2]), ints(&[6]), ints(&[1]));
        let m = ViewMap::of(
            OpKind::Slice,
            &Attrs::new(),
            &[3, 8],
            &[Some(&s), Some(&e), Some(&a)],
        )
        .expect("constant slice");
        assert_eq!(m, ViewMap::Slice(vec![(0, 1), (2, 1)]));
        let at = m.data_coords(&[(IExpr::var("i"), 0), (IExpr::var("j"), 0)]);
        assert_eq!(at[1].1, 2);
        let scalar = Tensor::from_i64(tessera_ir::DType::I64, vec![], &[-1]);
        let pick = ViewMap::of(OpKind::Gather, &Attrs::new(), &[4, 3], &[Some(&scalar)])
            .expect("constant index");
        assert_eq!(
            pick,
            ViewMap::Pick {
                axis: 0,
                index: 3,
                keep: false
            }
        );
        assert_eq!(pick.data_coords(&[(IExpr::var("j"), 0)]).len(), 2);
        let outside = Tensor::from_i64(tessera_ir::DType::I64, vec![], &[4]);
        assert!(ViewMap::of(OpKind::Gather, &Attrs::new(), &[4, 3], &[Some(&outside)]).is_none());
        assert!(ViewMap::of(OpKind::Slice, &Attrs::new(), &[3, 8], &[Some(&s), None]).is_none());
        // Transpose [2, 3, 4] → [4, 2, 3] (perm 2, 0, 1): view (k, i, j) reads data (i, j, k).
        let mut attrs = Attrs::new();
        attrs.insert("perm".into(), tessera_ir::Attr::Ints(vec![2, 0, 1]));
        let t = ViewMap::of(OpKind::Transpose, &attrs, &[2, 3, 4], &[]).expect("a permutation");
        let at = t.data_coords(&[
            (IExpr::var("k"), 0),
            (IExpr::var("i"), 0),
            (IExpr::var("j"), 0),
        ]);
        assert_eq!(at[0].0, IExpr::var("i"));
        assert_eq!(at[2].0, IExpr::var("k"));
    }
}
