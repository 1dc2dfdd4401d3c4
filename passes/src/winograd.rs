//! 3×3 convolutions at stride 1 as Winograd convolutions ([`tessera_ir::winograd`]): after
//! the optimizer, each eligible Conv — alone, or anchoring a fused kernel with its epilogue —
//! becomes
//!
//! ```text
//! V = WinogradInput(x)                      [N, α², C, tiles]   (Bᵀ d B per input tile)
//! M = MatMul(U, V)                          [N, α², K, tiles]   (U = G g Gᵀ, at compile time)
//! y = WinogradOutput(M, bias)  (+ epilogue) [N, K, oh, ow]      (Aᵀ M A per output tile)
//! ```
//!
//! `F(2×2, 3×3)` does 16 multiplications per tile and channel pair where the direct
//! convolution does 36: the product, which takes the tiled schedule, is 2.25× smaller.
//!
//! It runs after the e-graph optimizer, not in legalisation, so that the optimizer still sees
//! the Conv (folding a BatchNormalization into its weights, fusing its epilogue): a fused
//! kernel anchored on an eligible Conv keeps its body with the Conv replaced by
//! `WinogradOutput`, which anchors the same epilogue.
//!
//! Invariant: the rewrite preserves the convolution up to float rounding (Winograd's
//! transforms reassociate the sum; `F(2, 3)`'s coefficients are 0, ±1 and ±½, so its error
//! is that of a reordered sum).

use crate::derived::Derived;
use crate::legalize::Emit;
use tessera_ir::infer::Window;
use tessera_ir::winograd::{WinogradPlan, transform_weights};
use tessera_ir::{Attr, AttrsExt, DType, Graph, IrError, Node, OpKind, Tensor, ValueId, ValueType};

/// Which convolutions become Winograd convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinogradConfig {
    /// Output tile side `m` of `F(m×m, 3×3)` (2 or 4); 0 turns the rewrite off.
    pub tile: usize,
    /// Least input and output channels: below, the transforms cost more than the product
    /// saves.
    pub min_channels: usize,
    /// Least tiles per image: below, the product is too narrow to tile well.
    pub min_tiles: usize,
}

impl WinogradConfig {
    pub fn cpu() -> WinogradConfig {
        WinogradConfig {
            tile: 2,
            min_channels: 16,
            min_tiles: 16,
        }
    }
    pub fn off() -> WinogradConfig {
        WinogradConfig {
            tile: 0,
            ..WinogradConfig::cpu()
        }
    }
}

/// A convolution found eligible: its operands and geometry.
struct Eligible {
    x: ValueId,
    w: ValueId,
    bias: Option<ValueId>,
    /// `[N, C, H, W]` of `x`, and `K`.
    xs: Vec<usize>,
    k: usize,
    plan: WinogradPlan,
    pads: Vec<i64>,
}

/// The Conv node `n` (reading `x`, `w`, `bias` — outer values) if it qualifies: 2-D, one
/// group, a constant f32 `[K, C, 3, 3]` weight, stride and dilation 1, enough channels
/// and tiles.
fn eligible(
    g: &Graph,
    n: &Node,
    ins: [Option<ValueId>; 3],
    cfg: &WinogradConfig,
) -> Option<Eligible> {
    let (x, w) = (ins[0]?, ins[1]?);
    let xt = g.ty(x)?;
    let wt = g.initializers.get(&w)?;
    let xs = xt.static_shape()?;
    let ws = wt.shape();
    if xt.dtype != DType::F32 || wt.dtype() != DType::F32 || xs.len() != 4 || ws.len() != 4 {
        return None;
    }
    if ws[2..] != [3, 3] || ws[1] != xs[1] || n.attrs.int("group", 1).ok()? != 1 {
        return None;
    }
    let win = Window::from_node(n, &xs[2..], Some(&ws[2..])).ok()?;
    if win.strides != [1, 1] || win.dilations != [1, 1] {
        return None;
    }
    let out = win.output_sizes(&xs[2..]).ok()?;
    let plan = WinogradPlan::new(cfg.tile, [win.pads[0], win.pads[1]], [out[0], out[1]]).ok()?;
    let channels = xs[1].min(ws[0]);
    if channels < cfg.min_channels || plan.tile_count() < cfg.min_tiles {
        return None;
    }
    Some(Eligible {
        x,
        w,
        bias: ins[2],
        k: ws[0],
        xs,
        plan,
        pads: win.pads.iter().map(|&p| p as i64).collect(),
    })
}

/// Rewrites every eligible convolution; returns how many.
pub fn winograd_convs(g: &mut Graph, cfg: &WinogradConfig) -> Result<usize, IrError> {
    if cfg.tile == 0 {
        return Ok(0);
    }
    let mut transformed = Derived::new("winograd");
    let mut count = 0;
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        let found = match n.op {
            OpKind::Conv => {
                let at = |i: usize| n.inputs.get(i).copied().flatten();
                eligible(g, &n, [at(0), at(1), at(2)], cfg).map(|e| (e, None))
            }
            OpKind::Fused => fused_conv(g, &n, cfg).map(|(e, a)| (e, Some(a))),
            _ => None,
        };
        let Some((e, anchor)) = found else {
            continue;
        };
        let (a, m) = (e.plan.alpha(), e.plan.m);
        let (c, k) = (e.xs[1], e.k);
        let u = transformed
            .of(g, e.w, |t| {
                let u = transform_weights(m, &t.to_f64_vec(), k, c).ok_or("no such tile")?;
                Ok(Tensor::from_f64(DType::F32, vec![a * a, k, c], &u))
            })
            .map_err(|msg| n.error(msg))?;
        g.remove_node(ix);
        let mut emit = Emit::new(&n.name);
        let (v, prod) = (emit.fresh(g, "tiles"), emit.fresh(g, "products"));
        let tile = ("tile".to_string(), Attr::Int(m as i64));
        let input_attrs = [tile.clone(), ("pads".into(), Attr::Ints(e.pads.clone()))];
        emit.add(
            g,
            OpKind::WinogradInput,
            vec![e.x],
            input_attrs.into_iter().collect(),
            v,
        );
        emit.add(g, OpKind::MatMul, vec![u, v], Default::default(), prod);
        let shape = [e.plan.out[0] as i64, e.plan.out[1] as i64];
        let out_attrs: tessera_ir::Attrs =
            [tile, ("output_shape".into(), Attr::Ints(shape.to_vec()))]
                .into_iter()
                .collect();
        let ptype = ValueType::new(DType::F32, &[e.xs[0], a * a, k, e.plan.tile_count()]);
        g.set_ty(prod, ptype.clone());
        match anchor {
            None => {
                let mut ins = vec![prod];
                ins.extend(e.bias);
                emit.add(g, OpKind::WinogradOutput, ins, out_attrs, n.outputs[0]);
            }
            Some(body_anchor) => {
                let node = with_winograd_anchor(&n, body_anchor, prod, ptype, out_attrs)?;
                let at = g.add_node(node);
                g.connect_consumers(at);
            }
        }
        count += 1;
    }
    Ok(count)
}

/// For a fused kernel anchored on an eligible Conv: the convolution (outer values) and the
/// anchor's index in the body.
fn fused_conv(
    g: &Graph,
    n: &Node,
    cfg: &WinogradConfig,
) -> Option<(Eligible, tessera_ir::NodeIndex)> {
    let body = n.attrs.graph("body").ok()?;
    let order = body.topo_order().ok()?;
    let a = crate::lower::fused_anchor(body, &order)?;
    let conv = body.node(a);
    if conv.op != OpKind::Conv {
        return None;
    }
    // The anchor's operands as the fused node's inputs.
    let outer = |i: usize| -> Option<ValueId> {
        let bv = conv.inputs.get(i).copied().flatten()?;
        let pos = body.inputs.iter().position(|&x| x == bv)?;
        n.inputs.get(pos).copied().flatten()
    };
    if conv.inputs.get(2).copied().flatten().is_some() && outer(2).is_none() {
        return None;
    }
    let e = eligible(g, conv, [outer(0), outer(1), outer(2)], cfg)?;
    Some((e, a))
}

/// The fused node `n` with its Conv anchor (body node `anchor`) replaced by a
/// `WinogradOutput` of the products `prod` (a new input) and the Conv's bias; the body
/// inputs only the Conv read (its data and weight) are dropped.
fn with_winograd_anchor(
    n: &Node,
    anchor: tessera_ir::NodeIndex,
    prod: ValueId,
    ptype: ValueType,
    attrs: tessera_ir::Attrs,
) -> Result<Node, IrError> {
    let mut body = n.attrs.graph("body").map_err(|msg| n.error(msg))?.clone();
    let conv = body.remove_node(anchor).expect("the anchor is a body node");
    let bm = body.add_input("winograd_products", ptype);
    let mut ins = vec![Some(bm)];
    ins.extend(conv.inputs.get(2).copied().flatten().map(Some));
    let out = body.add_node(Node {
        name: conv.name.clone(),
        op: OpKind::WinogradOutput,
        attrs,
        inputs: ins,
        outputs: conv.outputs.clone(),
    });
    body.connect_consumers(out);
    let read = |v: ValueId| body.nodes().any(|(_, b)| b.inputs.contains(&Some(v)));
    let mut inputs = Vec::new();
    let mut kept = Vec::new();
    for (i, &bv) in body.inputs.iter().enumerate() {
        if read(bv) || body.outputs.contains(&bv) {
            kept.push(bv);
            // The new input is the body's last; the others are the fused node's.
            inputs.push(match i < n.inputs.len() {
                true => n.inputs[i],
                false => Some(prod),
            });
        }
    }
    body.inputs = kept;
    let mut node = n.clone();
    node.inputs = inputs;
    node.attrs.insert(
        "body".into(),
        Attr::Graph(tessera_ir::op::SubGraph(Box::new(body))),
    );
    Ok(node)
}
