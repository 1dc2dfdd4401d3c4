//! Legalisation: rewrites nodes the lowering has no direct kernel for into equivalent nodes it
//! has, once shapes are static (inside [`crate::fold::prepare`]).
//!
//! Today: Resize in modes whose taps have no closed form in the loop IR (cubic, antialiased,
//! tf_crop_and_resize, half_pixel_symmetric) becomes one matrix product per resized axis with
//! a constant interpolation matrix built from [`ResizePlan::taps`] — the same taps the
//! interpreter uses — plus a `Where` for extrapolated positions.
//!
//! Also: a product whose `B` is a 2-D constant gets it in the layout its default schedule
//! reads best (`k×n` where `B` is packed, `n×k` for a matrix-vector product), transposed at
//! compile time (`lay_out_constant_b`) — at no run-time cost.
//!
//! A 1-D Conv, MaxPool or AveragePool becomes the 2-D one over a height-1 view of its input
//! (`lift_1d_windows`, [`tessera_ir::infer::lift_1d_window`]).
//!
//! DepthToSpace and SpaceToDepth become their definitions, a Reshape, a Transpose and a
//! Reshape (`space_depth_as_transpose`).
//!
//! And a 2-D ConvTranspose with a constant weight becomes the product its definition is — every
//! input pixel times the weight's `cout·kh·kw` columns — and a Col2Im that adds the columns
//! into the image (`conv_transpose_as_product`), as onnxruntime computes it.
//!
//! Invariant: legalisation preserves the graph's meaning exactly up to float reassociation;
//! the verifier runs after it, as after every pass.

use crate::derived::Derived;
use tessera_ir::infer::ResizePlan;
use tessera_ir::{DType, Graph, IrError, Node, OpKind, Tensor, ValueId};

/// What legalisation assumes of the target's products.
#[derive(Clone, Copy, Debug)]
pub struct LegalizeConfig {
    /// Store a matrix-vector product's constant `B` as `n×k`, for dot products along `k`
    /// (the CPU's `k_lanes` form). Off, every constant `B` is `k×n`: on a GPU a thread per
    /// column then reads a row of `B` coalesced with its neighbours.
    pub matrix_vector_b_along_k: bool,
}

impl LegalizeConfig {
    pub fn cpu() -> LegalizeConfig {
        LegalizeConfig {
            matrix_vector_b_along_k: true,
        }
    }
    pub fn gpu() -> LegalizeConfig {
        LegalizeConfig {
            matrix_vector_b_along_k: false,
        }
    }
}

/// Rewrites every node that needs it; returns how many were rewritten.
pub fn legalize(g: &mut Graph, cfg: &LegalizeConfig) -> Result<usize, IrError> {
    let mut count = lift_1d_windows(g)?;
    count += space_depth_as_transpose(g)?;
    count += conv_transpose_as_product(g)?;
    count += lay_out_constant_b(g, cfg)?;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        if n.op != OpKind::Resize {
            continue;
        }
        let err = |msg: String| n.error(msg);
        let Some(x) = n.inputs.first().copied().flatten() else {
            continue;
        };
        let ty = g.ty_of(x)?.clone();
        let shape = ty
            .static_shape()
            .ok_or_else(|| err("Resize needs a static input shape".into()))?;
        let c = |i: usize| {
            n.inputs
                .get(i)
                .copied()
                .flatten()
                .and_then(|v| g.initializers.get(&v))
        };
        let plan = tessera_ir::infer::resize_plan(&n, &shape, c(1), c(2), c(3)).map_err(err)?;
        if plan.direct() {
            continue;
        }
        if !ty.dtype.is_float() {
            return Err(err(format!(
                "Resize mode `{}` of {} is not supported",
                plan.mode, ty.dtype
            )));
        }
        g.remove_node(ix);
        resize_by_matrices(g, &n, x, ty.dtype, &shape, &plan);
        count += 1;
    }
    Ok(count)
}

/// The layout of a constant 2-D `B` a product reads best, by whether its default schedule
/// reads `B` along `k` ([`crate::product::dots_along_k_everywhere`]: tiled, with fewer rows
/// of `A` than it packs for; never, for a target whose products do not read `B` along `k`:
/// [`LegalizeConfig`]):
///
/// - along `n`: `k×n`, row by row — what packed panels copy and the register tile
///   vectorizes, and what the plain loop nest of a product too small to tile reads (a
///   recurrent cell's `h·Rᵀ`: `n×k` there made every vector a gather, 3.6 GFLOP/s). A
///   Gemm(A, B, transB=1) (how exporters write a linear layer) gets `Bᵀ` and `transB=0`.
/// - along `k` (a tiled matrix-vector product: a classifier on one image, a decoder step):
///   `n×k`, each column's weights contiguous along `k` — the dot-product form
///   (`product/dot.rs`) streams them. A `k×n` `B` read by columns walks a row of `B`
///   apart per `k` step, a new page each time: VGG-19's 4096×4096 layer ran at 7.4 GB/s
///   that way, against 21 GB/s for its `n×k` layer. A Gemm(transB=0) gets `Bᵀ` and
///   `transB=1`; a MatMul gets `Bᵀ` read back through `b_perm=[1,0]`.
///
/// The copy is computed now by the reference interpreter, once per constant however many
/// products share it. Returns how many products were rewritten.
fn lay_out_constant_b(g: &mut Graph, cfg: &LegalizeConfig) -> Result<usize, IrError> {
    use tessera_ir::{Attr, AttrsExt};
    let mut transposed = Derived::new("transposed");
    // Whether the default schedule reads `B` along `n` (packed panels, or the plain loop
    // nest of a product too small to tile), as opposed to dot products along `k`.
    let b_along_n = |batch: i64, rows: i64, n: i64, k: i64| {
        !cfg.matrix_vector_b_along_k || !crate::product::dots_along_k_everywhere(batch, rows, n, k)
    };
    let mut count = 0;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        let (Some(a), Some(b)) = (
            n.inputs.first().copied().flatten(),
            n.inputs.get(1).copied().flatten(),
        ) else {
            continue;
        };
        let Some(b_shape) = g
            .initializers
            .get(&b)
            .map(|t| t.shape().to_vec())
            .filter(|s| s.len() == 2)
        else {
            continue;
        };
        let Some(a_shape) = g.ty(a).and_then(|t| t.static_shape()) else {
            continue;
        };
        let err = |msg: String| n.error(msg);
        // The attribute that says how B is read after the change.
        let (key, read): (&str, Attr) = match n.op {
            OpKind::Gemm => {
                let trans_a = n.attrs.int("transA", 0).map_err(err)? != 0;
                let trans_b = n.attrs.int("transB", 0).map_err(err)? != 0;
                let (Some(&rows), Some(&k)) = (
                    a_shape.get(usize::from(trans_a)),
                    a_shape.get(usize::from(!trans_a)),
                ) else {
                    continue;
                };
                let cols = b_shape[usize::from(!trans_b)];
                if trans_b != b_along_n(1, rows as i64, cols as i64, k as i64) {
                    continue;
                }
                ("transB", Attr::Int(i64::from(!trans_b)))
            }
            OpKind::MatMul if !n.attrs.contains_key("b_perm") => {
                let rank = a_shape.len();
                let batch: usize = a_shape[..rank.saturating_sub(2)].iter().product();
                let (rows, k) = (crate::product::matmul_rows(&a_shape), b_shape[0] as i64);
                if b_along_n(batch as i64, rows, b_shape[1] as i64, k) {
                    continue;
                }
                ("b_perm", Attr::Ints(vec![1, 0]))
            }
            _ => continue,
        };
        let bt = transposed
            .of(g, b, |t| crate::derived::transposed(t, &[1, 0]))
            .map_err(err)?;
        let node = g.node_mut(ix);
        node.inputs[1] = Some(bt);
        node.attrs.insert(key.into(), read);
        count += 1;
    }
    Ok(count)
}

/// Rewrites each DepthToSpace and SpaceToDepth as its definition
/// ([`tessera_ir::infer::space_depth_plan`]): a 6-D Reshape (a view), a Transpose (one
/// copy), a Reshape back to 4-D. A malformed one stays: the lowering reports it.
fn space_depth_as_transpose(g: &mut Graph) -> Result<usize, IrError> {
    use tessera_ir::Attr;
    let mut count = 0;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        if !matches!(n.op, OpKind::DepthToSpace | OpKind::SpaceToDepth) {
            continue;
        }
        let Some(x) = n.inputs.first().copied().flatten() else {
            continue;
        };
        let shape_of = |v: ValueId| g.ty(v).and_then(|t| t.static_shape());
        let (Some(xs), Some(ys)) = (shape_of(x), shape_of(n.outputs[0])) else {
            continue;
        };
        let Ok(b) = tessera_ir::infer::space_depth_block(&n) else {
            continue;
        };
        let Ok((six, perm)) = tessera_ir::infer::space_depth_plan(&n, &xs, b) else {
            continue;
        };
        g.remove_node(ix);
        let mut e = Emit::new(&n.name);
        let (blocks, moved) = (e.fresh(g, "blocks"), e.fresh(g, "moved"));
        e.reshape(g, x, &six, blocks);
        let perm_attr = [("perm".to_string(), Attr::Ints(perm))]
            .into_iter()
            .collect();
        e.add(g, OpKind::Transpose, vec![blocks], perm_attr, moved);
        e.reshape(g, moved, &ys, n.outputs[0]);
        count += 1;
    }
    Ok(count)
}

/// Rewrites each 1-D Conv, MaxPool and AveragePool (rank-3 input) as the 2-D op over a
/// height-1 view: `Reshape(x, [n, c, 1, l])`, the lifted node (a constant weight reshaped
/// at compile time, another through a `Reshape`), and a `Reshape` back to `[n, c', l']`.
/// Reshapes of contiguous tensors are views, so the 1-D op costs what its 2-D kernel does.
/// A node whose attributes do not lift stays: the lowering reports it.
fn lift_1d_windows(g: &mut Graph) -> Result<usize, IrError> {
    let mut lifted_weights = Derived::new("lifted");
    let mut count = 0;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        if !matches!(n.op, OpKind::Conv | OpKind::MaxPool | OpKind::AveragePool)
            || n.outputs.len() != 1
        {
            continue;
        }
        let Some(x) = n.inputs.first().copied().flatten() else {
            continue;
        };
        let shape_of = |g: &Graph, v: ValueId| g.ty(v).and_then(|t| t.static_shape());
        let (Some(xs), Some(ys)) = (shape_of(g, x), shape_of(g, n.outputs[0])) else {
            continue;
        };
        if xs.len() != 3 || ys.len() != 3 {
            continue;
        }
        let Ok(lifted) = tessera_ir::infer::lift_1d_window(&n) else {
            continue;
        };
        let weight = match n.op {
            OpKind::Conv => match n.inputs.get(1).copied().flatten() {
                Some(w) => match shape_of(g, w) {
                    Some(ws) if ws.len() == 3 => Some((w, ws)),
                    _ => continue,
                },
                None => continue,
            },
            _ => None,
        };
        let err = |msg: String| n.error(msg);
        g.remove_node(ix);
        let mut e = Emit::new(&n.name);
        let height_one = |s: &[usize]| vec![s[0], s[1], 1, s[2]];
        let x4 = e.fresh(g, "rows");
        e.reshape(g, x, &height_one(&xs), x4);
        let mut inputs = vec![Some(x4)];
        if let Some((w, ws)) = weight {
            let w4 = if g.initializers.contains_key(&w) {
                lifted_weights
                    .of(g, w, |t| {
                        t.clone()
                            .reshaped(height_one(&ws))
                            .map_err(|e| e.to_string())
                    })
                    .map_err(err)?
            } else {
                let w4 = e.fresh(g, "weight");
                e.reshape(g, w, &height_one(&ws), w4);
                w4
            };
            inputs.push(Some(w4));
            inputs.extend(n.inputs.iter().skip(2).copied());
        }
        let y4 = e.fresh(g, "lifted");
        // Its output is new: no consumers to connect.
        g.add_node(tessera_ir::Node {
            name: format!("{}_2d", n.name),
            op: n.op,
            attrs: lifted.attrs,
            inputs,
            outputs: vec![y4],
        });
        e.reshape(g, y4, &ys, n.outputs[0]);
        count += 1;
    }
    Ok(count)
}

/// ConvTranspose(x, W[cin, cout, kh, kw], bias) with one group and a constant weight, as
///
/// ```text
/// cols = MatMul(Wᵀ[cout·kh·kw, cin], Reshape(x, [n, cin, h·w]))      (n, cout·kh·kw, h·w)
/// y    = Col2Im(cols, [oh, ow], [kh, kw], strides, dilations, pads) + bias[cout, 1, 1]
/// ```
///
/// which is the definition: input pixel `p` adds `x[ci, p] · W[ci, co, ky, kx]` at output
/// `p·stride + (ky, kx)·dilation − pad`. The product takes the tiled, packed schedules; the
/// gather form that the lowering has for the rest (every output tests every tap) ran a 2×2,
/// stride-2 upsampling of a 128×32×32 map in 79 ms against onnxruntime's 0.8 ms. Col2Im's
/// pads are the begin pads and end pads that make its block count the input's size (the
/// output padding is positions no block reaches). Grouped, non-constant or malformed ones
/// stay as they are: the lowering reports what is wrong with them.
fn conv_transpose_as_product(g: &mut Graph) -> Result<usize, IrError> {
    use tessera_ir::Attr;
    let mut as_columns = Derived::new("as_columns");
    let mut count = 0;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        if n.op != OpKind::ConvTranspose {
            continue;
        }
        let (Some(x), Some(w)) = (
            n.inputs.first().copied().flatten(),
            n.inputs.get(1).copied().flatten(),
        ) else {
            continue;
        };
        let (Some(xt), Some(wt)) = (g.ty(x).cloned(), g.initializers.get(&w)) else {
            continue;
        };
        let (Some(xs), ws) = (xt.static_shape(), wt.shape().to_vec()) else {
            continue;
        };
        if !xt.dtype.is_float() || wt.dtype() != xt.dtype {
            continue;
        }
        let Ok(geo) = tessera_ir::infer::conv_transpose_geometry(&n, &xs, &ws) else {
            continue;
        };
        if geo.group != 1 {
            continue;
        }
        let (nb, cin, cout) = (xs[0], xs[1], geo.out_channels);
        let [kh, kw] = geo.kernel;
        // The least end pad >= 0 that gives Col2Im exactly the input's blocks per axis.
        let mut pads = [0i64; 4];
        let mut fits = true;
        for d in 0..2 {
            let (inp, s, out, pb) = (
                xs[2 + d] as i64,
                geo.strides[d],
                geo.out[d] as i64,
                geo.pad_begin[d],
            );
            let eff = (geo.kernel[d] as i64 - 1) * geo.dilations[d] + 1;
            let least = (inp - 1) * s + eff - out - pb;
            let pe = least.max(0);
            fits &= pb >= 0 && pe < least + s;
            pads[d] = pb;
            pads[2 + d] = pe;
        }
        if !fits {
            continue;
        }
        let err = |msg: String| n.error(msg);
        // Wᵀ as [cout·kh·kw, cin]: W[ci, co, ky, kx] moved to [co, ky, kx, ci].
        let wm = as_columns
            .of(g, w, |t| {
                crate::derived::transposed(t, &[1, 2, 3, 0])?
                    .reshaped(vec![cout * kh * kw, cin])
                    .map_err(|e| e.to_string())
            })
            .map_err(err)?;
        g.remove_node(ix);
        let mut e = Emit::new(&n.name);
        let (flat, cols) = (e.fresh(g, "pixels"), e.fresh(g, "columns"));
        e.reshape(g, x, &[nb, cin, xs[2] * xs[3]], flat);
        e.add(g, OpKind::MatMul, vec![wm, flat], Default::default(), cols);
        let image = e.ints(g, "image", &geo.out);
        let block = e.ints(g, "block", &geo.kernel);
        let ints = |v: &[i64]| Attr::Ints(v.to_vec());
        let attrs = [
            ("strides".to_string(), ints(&geo.strides)),
            ("dilations".to_string(), ints(&geo.dilations)),
            ("pads".to_string(), ints(&pads)),
        ]
        .into_iter()
        .collect();
        let out = n.outputs[0];
        let bias = n.inputs.get(2).copied().flatten();
        let summed = match bias {
            Some(_) => e.fresh(g, "summed"),
            None => out,
        };
        e.add(g, OpKind::Col2Im, vec![cols, image, block], attrs, summed);
        if let Some(bias) = bias {
            let per_channel = e.fresh(g, "bias");
            e.reshape(g, bias, &[cout, 1, 1], per_channel);
            e.add(
                g,
                OpKind::Add,
                vec![summed, per_channel],
                Default::default(),
                out,
            );
        }
        count += 1;
    }
    Ok(count)
}

/// Adds the nodes and constants that replace one node, named after it.
pub(crate) struct Emit<'a> {
    node: &'a str,
    made: usize,
}

impl<'a> Emit<'a> {
    pub(crate) fn new(node: &'a str) -> Emit<'a> {
        Emit { node, made: 0 }
    }

    /// A new value, `<node>_<what><k>`.
    pub(crate) fn fresh(&mut self, g: &mut Graph, what: &str) -> ValueId {
        self.made += 1;
        g.fresh_value(&format!("{}_{what}{}", self.node, self.made))
    }

    /// A new i64 constant holding `values` (a shape).
    pub(crate) fn ints(&mut self, g: &mut Graph, what: &str, values: &[usize]) -> ValueId {
        let v = self.fresh(g, what);
        let name = g.name_of(v).to_string();
        let vals: Vec<i64> = values.iter().map(|&d| d as i64).collect();
        g.add_initializer(
            &name,
            Tensor::from_i64(DType::I64, vec![values.len()], &vals),
        )
    }

    /// `out = Reshape(x, dims)` (a view of contiguous data).
    pub(crate) fn reshape(&mut self, g: &mut Graph, x: ValueId, dims: &[usize], out: ValueId) {
        let shape = self.ints(g, "shape", dims);
        self.add(g, OpKind::Reshape, vec![x, shape], Default::default(), out);
    }

    /// A node `op(inputs) -> out`.
    pub(crate) fn add(
        &self,
        g: &mut Graph,
        op: OpKind,
        inputs: Vec<ValueId>,
        attrs: tessera_ir::Attrs,
        out: ValueId,
    ) {
        let name = format!("{}_{}", self.node, g.name_of(out));
        let ix = g.add_node(Node {
            name,
            op,
            attrs,
            inputs: inputs.into_iter().map(Some).collect(),
            outputs: vec![out],
        });
        // The replaced node's output keeps its consumers.
        g.connect_consumers(ix);
    }
}

/// Emits the per-axis matrix products replacing Resize node `n`.
fn resize_by_matrices(
    g: &mut Graph,
    n: &Node,
    x: ValueId,
    dt: DType,
    shape: &[usize],
    plan: &ResizePlan,
) {
    let mut e = Emit::new(&n.name);
    let mut cur = x;
    let mut cur_shape = shape.to_vec();
    let mut outside = vec![false; 1];
    let mut outside_shape: Vec<usize> = Vec::new();
    for d in 0..shape.len() {
        if plan.is_identity(d, shape[d]) {
            outside_shape.push(1);
            continue;
        }
        let t = plan.taps(d, shape[d]);
        let (il, ol) = (shape[d], plan.out[d]);
        let (a, b): (usize, usize) = (
            cur_shape[..d].iter().product(),
            cur_shape[d + 1..].iter().product(),
        );
        // W[o, i] = sum of the weights of tap i for output o (0 for outside rows).
        let mut w = vec![0.0; ol * il];
        for o in 0..ol {
            if t.outside[o] {
                continue;
            }
            for j in 0..t.count {
                w[o * il + t.index[o * t.count + j]] += t.weight[o * t.count + j];
            }
        }
        let (wv, flat, prod, next) = (
            e.fresh(g, "interp"),
            e.fresh(g, "rows"),
            e.fresh(g, "resized"),
            e.fresh(g, "axis"),
        );
        let (w_shape, w_vals) = if b == 1 {
            // Last axis: rows [a, in] x Wᵀ [in, out].
            let mut wt = vec![0.0; il * ol];
            for o in 0..ol {
                for i in 0..il {
                    wt[i * ol + o] = w[o * il + i];
                }
            }
            (vec![il, ol], wt)
        } else {
            (vec![ol, il], w)
        };
        let wname = g.name_of(wv).to_string();
        let wv = g.add_initializer(&wname, Tensor::from_f64(dt, w_shape, &w_vals));
        let flat_shape = if b == 1 { vec![a, il] } else { vec![a, il, b] };
        e.reshape(g, cur, &flat_shape, flat);
        let inputs = if b == 1 {
            vec![flat, wv]
        } else {
            vec![wv, flat]
        };
        e.add(g, OpKind::MatMul, inputs, Default::default(), prod);
        cur_shape[d] = ol;
        e.reshape(g, prod, &cur_shape, next);
        cur = next;
        // Outside positions: the union over axes, as a mask broadcast over the output.
        let mut grown = Vec::with_capacity(outside.len() * ol);
        for &prev in &outside {
            for &o in &t.outside {
                grown.push(prev || o);
            }
        }
        outside = grown;
        outside_shape.push(ol);
    }
    let out = n.outputs[0];
    if outside.iter().any(|&o| o) {
        let mv = e.fresh(g, "outside");
        let mname = g.name_of(mv).to_string();
        let vals: Vec<i64> = outside.iter().map(|&o| o as i64).collect();
        let mask = g.add_initializer(&mname, Tensor::from_i64(DType::Bool, outside_shape, &vals));
        let ev = e.fresh(g, "extrapolation");
        let ename = g.name_of(ev).to_string();
        let value = g.add_initializer(&ename, Tensor::from_f64(dt, vec![], &[plan.extrapolation]));
        e.add(
            g,
            OpKind::Where,
            vec![mask, value, cur],
            Default::default(),
            out,
        );
    } else {
        e.add(g, OpKind::Identity, vec![cur], Default::default(), out);
    }
}
