//! Lowering: each graph node becomes one loop program (one kernel).
//!
//! The graph must be prepared first ([`crate::fold::prepare`]): every shape static and every
//! shape-like input (Reshape's shape, Slice's bounds, reduction axes) a constant. A kernel's
//! buffers are its node's present inputs (in order) followed by its outputs; [`Kernel::args`]
//! maps them back to graph values so the runtime can bind memory.

mod body_views;
pub use body_views::{ViewMap, is_view_op};
mod data;
mod elementwise;
mod fused;
pub(crate) use fused::anchor as fused_anchor;
pub use fused::{is_anchor, is_sink};
mod conv;
mod linalg;
mod nn;
mod pool;
mod signal;
mod widen;
mod window;
mod winograd;

use crate::error::PassError;
use crate::product::ProductSpec;
use tessera_ir::loops::{BufRole, Buffer, IExpr, Loop, LoopKind, LoopProgram, Stmt, VExpr};
use tessera_ir::{DType, Graph, Node, OpKind, Tensor, ValueId};

/// One compiled unit: a loop program plus the graph values bound to its buffers, in order.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub node: String,
    pub op: OpKind,
    pub program: LoopProgram,
    pub args: Vec<ValueId>,
    /// The matrix product this kernel computes, for kernels that are one (the tiled
    /// schedule rebuilds the program from it).
    pub product: Option<ProductSpec>,
}

/// How lowering shapes loop nests for the machine that will run them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerConfig {
    /// Direct convolutions and pooling windows: split the output rows into border rows
    /// (written out one by one with only their valid taps) and an interior whose taps need
    /// no row check — for CPUs, which run each row as vectors. Off, the rows are one loop
    /// whose taps that can reach the padding are checked — for GPUs, whose schedule binds
    /// the rows, with the channels, to threads.
    pub split_border_rows: bool,
    /// The target's vector width in f32 lanes, for CPUs: a convolution whose default tiled
    /// product would put its rows along the lanes
    /// ([`crate::product::rows_along_lanes_pay`]) gets its constant weights k-major
    /// (`[cin·kh·kw, cout]`, transposed at compile time). `None` (GPUs, whose product tiles
    /// stage `A` through shared memory): weights keep the ONNX layout.
    pub vector_lanes: Option<i64>,
}

impl LowerConfig {
    /// The shapes that suit a CPU.
    pub fn cpu() -> LowerConfig {
        LowerConfig {
            split_border_rows: true,
            vector_lanes: Some(16),
        }
    }

    /// The shapes that suit a GPU.
    pub fn gpu() -> LowerConfig {
        LowerConfig {
            split_border_rows: false,
            vector_lanes: None,
        }
    }
}

impl Default for LowerConfig {
    fn default() -> Self {
        LowerConfig::cpu()
    }
}

/// Lowers every node of a prepared graph, in topological order, as for a CPU.
pub fn lower_graph(g: &mut Graph) -> Result<Vec<Kernel>, PassError> {
    lower_graph_with(g, &LowerConfig::cpu())
}

/// Lowers every node of a prepared graph, in topological order. Constants derived for the
/// kernels (convolution weights in blocks of rows, [`LowerConfig::vector_lanes`]) are added
/// to `g` as initializers no node reads; the kernels take them as arguments instead.
pub fn lower_graph_with(g: &mut Graph, cfg: &LowerConfig) -> Result<Vec<Kernel>, PassError> {
    let mut out = Vec::new();
    let mut blocked = crate::derived::Derived::new("row_blocks");
    for ix in g.topo_order()? {
        let n = g.node(ix).clone();
        let mut k = lower_node(g, &n, out.len(), cfg, None)?;
        if let (Some(lanes), Some(spec)) = (cfg.vector_lanes, &k.product)
            && crate::product::rows_along_lanes_pay(spec, lanes)
            && let Some(pos) = blockable_weight(g, &n)?
        {
            let w = n.inputs[pos].expect("blockable_weight checked the input");
            let copy = blocked
                .of(g, w, |t| in_row_blocks(t, lanes))
                .map_err(|msg| PassError::Lower {
                    node: n.name.clone(),
                    op: n.op.name().into(),
                    msg,
                })?;
            k = lower_node(g, &n, out.len(), cfg, Some((pos, copy, lanes)))?;
        }
        widen::widen_half_sums(&mut k.program);
        crate::verify_after("lower", &k.program)?;
        out.push(k);
    }
    Ok(out)
}

/// The input position of the weight of a convolution (or of a fused kernel anchored on
/// one) that can be stored in blocks of rows: a constant 4-D f32 weight of one group.
fn blockable_weight(g: &Graph, n: &Node) -> Result<Option<usize>, PassError> {
    use tessera_ir::AttrsExt;
    let (conv, pos) = match n.op {
        OpKind::Conv => (n, 1),
        OpKind::Fused => {
            let Ok(body) = n.attrs.graph("body") else {
                return Ok(None);
            };
            let anchor = fused::anchor(body, &body.topo_order()?).map(|ix| body.node(ix));
            let Some(a) = anchor.filter(|a| a.op == OpKind::Conv) else {
                return Ok(None);
            };
            let w = a.inputs.get(1).copied().flatten();
            match w.and_then(|w| body.inputs.iter().position(|&x| x == w)) {
                Some(pos) => (a, pos),
                None => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    if conv.attrs.int("group", 1).unwrap_or(0) != 1 {
        return Ok(None);
    }
    let Some(t) = n
        .inputs
        .get(pos)
        .copied()
        .flatten()
        .and_then(|w| g.initializers.get(&w))
    else {
        return Ok(None);
    };
    Ok((t.dtype() == DType::F32 && t.shape().len() == 4).then_some(pos))
}

/// `t` (`[cout, cin, kh, kw]`) in blocks of `rows` output channels, k-major within each
/// (`[cout / rows, cin·kh·kw, rows]`).
fn in_row_blocks(t: &Tensor, rows: i64) -> Result<Tensor, String> {
    let (rows, cout) = (rows as usize, t.shape()[0]);
    let blocks = t
        .clone()
        .reshaped(vec![cout / rows, rows, t.len() / cout])
        .map_err(|e| e.to_string())?;
    crate::derived::transposed(&blocks, &[0, 2, 1])
}

/// Static view of one node's operands, handed to the per-op lowerings.
pub(crate) struct NodeCx<'a> {
    pub node: &'a Node,
    pub in_shapes: Vec<Option<Vec<usize>>>,
    pub in_dtypes: Vec<Option<DType>>,
    pub consts: Vec<Option<&'a Tensor>>,
    pub out_shape: Vec<usize>,
    pub out_dtype: DType,
    /// Buffer name of each input (`None` for omitted optional inputs).
    pub bufs: Vec<Option<String>>,
    pub out: String,
    /// For the anchor of a fused kernel (MatMul, Gemm, Conv): the elementwise epilogue,
    /// mapping an output element's final value and its output coordinates to what is stored.
    pub epilogue: Option<&'a Epilogue<'a>>,
    /// For a reduction ending a fused kernel: the value of its data input at the given input
    /// coordinates, computed in registers instead of loaded.
    pub prologue: Option<&'a Prologue<'a>>,
    /// For a convolution (or a fused kernel anchored on one): its weight buffer holds the
    /// weight in blocks of this many output channels, k-major within each (`[cout / rows,
    /// cin·kh·kw, rows]`, [`LowerConfig::vector_lanes`]); 0: as ONNX stores it.
    pub weight_row_blocks: i64,
}

/// A prologue: `input coordinates -> value`.
pub(crate) type Prologue<'a> = dyn Fn(&[IExpr]) -> VExpr + 'a;

/// An epilogue: `(value, output coordinates) -> stored value`.
pub(crate) type Epilogue<'a> = dyn Fn(VExpr, &[IExpr]) -> VExpr + 'a;

/// Whether a value costs much more than a multiply-add per element: a transcendental
/// function, a square root or a division (SiLU's `x / (1 + exp(-x))` is; ReLU, a clip or a
/// residual add is not). Loads, selects and casts count by their operands.
pub(crate) fn is_costly(e: &VExpr) -> bool {
    use tessera_ir::loops::UnOp::*;
    match e {
        VExpr::Unary(Exp | Log | Sqrt | Tanh | Erf | Sin | Cos, _) => true,
        VExpr::Binary(tessera_ir::loops::BinOp::Div | tessera_ir::loops::BinOp::Pow, _, _) => true,
        VExpr::Unary(_, a) | VExpr::Cast(_, a) => is_costly(a),
        VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => is_costly(a) || is_costly(b),
        VExpr::Select(c, a, b) => is_costly(c) || is_costly(a) || is_costly(b),
        VExpr::Const(..)
        | VExpr::Load { .. }
        | VExpr::Acc(..)
        | VExpr::ICmp(..)
        | VExpr::Index(..) => false,
    }
}

impl NodeCx<'_> {
    pub fn err(&self, msg: impl Into<String>) -> PassError {
        PassError::Lower {
            node: self.node.name.clone(),
            op: self.node.op.name().into(),
            msg: msg.into(),
        }
    }
    /// A 0/1 integer attribute of the node (absent: false).
    pub fn flag(&self, name: &str) -> Result<bool, PassError> {
        use tessera_ir::AttrsExt;
        Ok(self.node.attrs.int(name, 0).map_err(|e| self.err(e))? != 0)
    }
    pub fn shape(&self, i: usize) -> &[usize] {
        self.in_shapes[i].as_deref().unwrap_or(&[])
    }
    pub fn has(&self, i: usize) -> bool {
        self.in_shapes.get(i).is_some_and(|s| s.is_some())
    }
    pub fn buf(&self, i: usize) -> &str {
        self.bufs[i].as_deref().unwrap_or("")
    }
    pub fn const_ints(&self, i: usize) -> Result<Vec<i64>, PassError> {
        self.consts
            .get(i)
            .copied()
            .flatten()
            .map(|t| t.to_i64_vec())
            .ok_or_else(|| self.err(format!("input {i} must be a constant")))
    }
}

/// Builds loop programs: fresh index variable names and nested loops; a lowering that
/// writes a matrix product also records it here as data.
pub(crate) struct Builder {
    next_var: usize,
    pub product: Option<ProductSpec>,
    pub cfg: LowerConfig,
}

impl Builder {
    pub fn new(cfg: LowerConfig) -> Builder {
        Builder {
            next_var: 0,
            product: None,
            cfg,
        }
    }
    pub fn var(&mut self) -> String {
        self.next_var += 1;
        format!("i{}", self.next_var - 1)
    }
    /// Loop variables for each dimension; extent-1 dimensions get the constant 0 and no loop.
    pub fn dims(&mut self, shape: &[usize]) -> Vec<(Option<String>, usize)> {
        shape
            .iter()
            .map(|&d| (if d > 1 { Some(self.var()) } else { None }, d))
            .collect()
    }
}

pub(crate) fn idx(dims: &[(Option<String>, usize)]) -> Vec<IExpr> {
    dims.iter()
        .map(|(v, _)| v.as_deref().map(IExpr::var).unwrap_or(IExpr::c(0)))
        .collect()
}

/// `for var in 0..extent { body }`, serial (the schedule decides what runs in parallel).
pub(crate) fn serial_for(var: &str, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::For(Loop {
        var: var.to_string(),
        extent: extent as i64,
        kind: LoopKind::Serial,
        body,
    })
}

/// Wraps `body` in serial loops over `dims` (outermost first).
pub(crate) fn nest(dims: &[(Option<String>, usize)], body: Vec<Stmt>) -> Vec<Stmt> {
    dims.iter().rev().fold(body, |b, (v, e)| match v {
        Some(v) => vec![serial_for(v, *e, b)],
        None => b,
    })
}

/// The loop nest over `dims` that stores `value` at `index` of the output: the shape of most
/// lowerings (one output element per iteration).
pub(crate) fn store_nest(
    cx: &NodeCx,
    dims: &[(Option<String>, usize)],
    index: IExpr,
    value: VExpr,
) -> Vec<Stmt> {
    nest(
        dims,
        vec![Stmt::Store {
            buf: cx.out.clone(),
            index,
            value,
        }],
    )
}

/// `0 <= e < hi`: whether an index lies inside a dimension of size `hi`.
pub(crate) fn in_range(e: IExpr, hi: usize) -> VExpr {
    use tessera_ir::loops::{BinOp, CmpOp};
    VExpr::bin(
        BinOp::And,
        VExpr::ICmp(CmpOp::Ge, e.clone(), IExpr::c(0)),
        VExpr::ICmp(CmpOp::Lt, e, IExpr::c(hi as i64)),
    )
}

/// `e` clamped into `0..hi`: an in-bounds address for a load whose value may be masked.
pub(crate) fn clamp(e: IExpr, hi: usize) -> IExpr {
    IExpr::Min(
        Box::new(IExpr::Max(Box::new(e), Box::new(IExpr::c(0)))),
        Box::new(IExpr::c(hi as i64 - 1)),
    )
}

pub(crate) fn strides_of(shape: &[usize]) -> Vec<usize> {
    tessera_ir::tensor::strides(shape)
}

/// Lowers node `n`; `blocked`: the input position of a convolution weight whose argument is
/// its copy in blocks of rows instead, the copy, and the rows per block.
fn lower_node(
    g: &Graph,
    n: &Node,
    index: usize,
    cfg: &LowerConfig,
    blocked: Option<(usize, ValueId, i64)>,
) -> Result<Kernel, PassError> {
    let mut buffers = Vec::new();
    let mut args = Vec::new();
    let mut bufs = Vec::new();
    let mut in_shapes = Vec::new();
    let mut in_dtypes = Vec::new();
    let mut consts = Vec::new();
    for (i, inp) in n.inputs.iter().enumerate() {
        match inp {
            Some(v) => {
                let ty = g.ty_of(*v)?;
                let shape = ty.static_shape().ok_or_else(|| PassError::Lower {
                    node: n.name.clone(),
                    op: n.op.name().into(),
                    msg: format!("input {i} has a symbolic shape"),
                })?;
                let name = format!("x{i}");
                buffers.push(Buffer {
                    name: name.clone(),
                    dtype: ty.dtype,
                    len: tessera_ir::tensor::numel(&shape).max(1),
                    role: BufRole::Input,
                });
                match blocked {
                    Some((pos, copy, _)) if pos == i => {
                        args.push(copy);
                        consts.push(None);
                    }
                    _ => {
                        args.push(*v);
                        consts.push(g.initializers.get(v));
                    }
                }
                bufs.push(Some(name));
                in_shapes.push(Some(shape));
                in_dtypes.push(Some(ty.dtype));
            }
            None => {
                bufs.push(None);
                in_shapes.push(None);
                in_dtypes.push(None);
                consts.push(None);
            }
        }
    }
    let ov = n.outputs[0];
    let oty = g.ty_of(ov)?;
    let out_shape = oty.static_shape().ok_or_else(|| PassError::Lower {
        node: n.name.clone(),
        op: n.op.name().into(),
        msg: "output shape is symbolic".into(),
    })?;
    buffers.push(Buffer {
        name: "y".into(),
        dtype: oty.dtype,
        len: tessera_ir::tensor::numel(&out_shape).max(1),
        role: BufRole::Output,
    });
    args.push(ov);
    let cx = NodeCx {
        node: n,
        in_shapes,
        in_dtypes,
        consts,
        out_shape,
        out_dtype: oty.dtype,
        bufs,
        out: "y".into(),
        epilogue: None,
        prologue: None,
        weight_row_blocks: blocked.map_or(0, |(_, _, rows)| rows),
    };
    let mut b = Builder::new(cfg.clone());
    use OpKind::*;
    let body = match n.op {
        // Nothing to compute for an empty output.
        _ if cx.out_shape.contains(&0) => Vec::new(),
        MatMul => linalg::matmul(&cx, &mut b)?,
        Gemm => linalg::gemm(&cx, &mut b)?,
        Conv => conv::conv(&cx, &mut b)?,
        ConvTranspose => conv::conv_transpose(&cx, &mut b)?,
        MaxPool | AveragePool => pool::pool(&cx, &mut b)?,
        GlobalAveragePool => pool::global_avg_pool(&cx, &mut b)?,
        BatchNormalization => elementwise::batch_norm(&cx, &mut b)?,
        LayerNormalization => nn::layer_norm(&cx, &mut b)?,
        Softmax | LogSoftmax => nn::softmax(&cx, &mut b)?,
        LRN => nn::lrn(&cx, &mut b)?,
        k if k.is_reduction() => nn::reduce_op(&cx, &mut b)?,
        InstanceNormalization => nn::instance_norm(&cx, &mut b)?,
        Reshape | Flatten | Squeeze | Unsqueeze | Identity => data::copy(&cx, &mut b)?,
        Transpose => data::transpose(&cx, &mut b)?,
        Concat => data::concat(&cx, &mut b)?,
        Slice => data::slice(&cx, &mut b)?,
        Gather => data::gather(&cx, &mut b)?,
        GatherElements => data::gather_elements(&cx, &mut b)?,
        GatherND => data::gather_nd(&cx, &mut b)?,
        ScatterElements | ScatterND => data::scatter(&cx, &mut b)?,
        Expand => elementwise::expand(&cx, &mut b)?,
        ConstantOfShape => data::fill(&cx, &mut b)?,
        Range => data::range(&cx, &mut b)?,
        Pad => data::pad(&cx, &mut b)?,
        Tile => data::tile(&cx, &mut b)?,
        Trilu => data::trilu(&cx, &mut b)?,
        Resize => data::resize(&cx, &mut b)?,
        ArgMax | ArgMin => nn::arg_extreme(&cx, &mut b)?,
        DFT => signal::dft(&cx, &mut b)?,
        STFT => signal::stft(&cx, &mut b)?,
        AffineGrid => data::affine_grid(&cx, &mut b)?,
        Col2Im => data::col2im(&cx, &mut b)?,
        WinogradInput => winograd::input(&cx, &mut b)?,
        WinogradOutput => winograd::output(&cx, &mut b)?,
        Fused => fused::fused(&cx, &mut b)?,
        CumSum => data::cumsum(&cx, &mut b)?,
        Constant | Shape | Size => data::constant(&cx, &mut b)?,
        _ if n.op.is_elementwise() => elementwise::elementwise(&cx, &mut b)?,
        other => return Err(cx.err(format!("no lowering for {other}"))),
    };
    let program = LoopProgram {
        name: format!("k{index}_{}", sanitize(&n.name)),
        buffers,
        body,
    };
    Ok(Kernel {
        node: n.name.clone(),
        op: n.op,
        program,
        args,
        product: b.product,
    })
}

/// Makes a node name usable as a symbol: `[A-Za-z0-9_]`, at most 40 characters.
pub fn sanitize(s: &str) -> String {
    let mut o: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    if o.is_empty() {
        o.push('n');
    }
    o
}
