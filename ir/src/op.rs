//! Graph operators and their schemas.
//!
//! Ops follow the semantics of the latest ONNX opset we support (21); the importer upgrades
//! older forms (e.g. `axes` as an attribute before opset 13) to this one. Each op's inputs,
//! outputs and attributes are described by a [`Schema`] — data, not code — which the importer,
//! the verifier and the text parser all check against.

use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::fmt;

macro_rules! ops {
    ($($name:ident),* $(,)?) => {
        /// A graph operator kind. Names match the ONNX operator names.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind { $($name),* }
        impl OpKind {
            pub const ALL: &'static [OpKind] = &[$(OpKind::$name),*];
            pub fn name(self) -> &'static str { match self { $(OpKind::$name => stringify!($name)),* } }
        }
    };
}

ops!(
    MatMul,
    Gemm,
    Conv,
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Relu,
    Sigmoid,
    Tanh,
    Erf,
    Gelu,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    Floor,
    Ceil,
    Clip,
    LeakyRelu,
    Softmax,
    LayerNormalization,
    BatchNormalization,
    MaxPool,
    AveragePool,
    GlobalAveragePool,
    ReduceSum,
    ReduceMean,
    ReduceMax,
    Reshape,
    Transpose,
    Flatten,
    Squeeze,
    Unsqueeze,
    Concat,
    Slice,
    Gather,
    Expand,
    Where,
    Cast,
    Constant,
    ConstantOfShape,
    Shape,
    Identity,
    Sum,
    Equal,
    Less,
    Greater,
    Not,
    And,
    Or,
    LRN,
    Sin,
    Cos,
    Softplus,
    HardSigmoid,
    HardSwish,
    PRelu,
    Range,
    Pad,
    Tile,
    Elu,
    Selu,
    Celu,
    ReduceMin,
    ReduceL2,
    ReduceSumSquare,
    InstanceNormalization,
    Trilu,
    CumSum,
    ArgMax,
    ArgMin,
    Resize,
    ConvTranspose,
    Size,
    LogSoftmax,
    Sign,
    Round,
    IsNaN,
    IsInf,
    Softsign,
    ThresholdedRelu,
    Shrink,
    BitwiseNot,
    GreaterOrEqual,
    LessOrEqual,
    Xor,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    Mod,
    ReduceProd,
    ReduceL1,
    ReduceLogSum,
    ReduceLogSumExp,
    GatherElements,
    GatherND,
    ScatterElements,
    ScatterND,
    HannWindow,
    HammingWindow,
    BlackmanWindow,
    MelWeightMatrix,
    NonZero,
    DFT,
    NonMaxSuppression,
    AffineGrid,
    STFT,
    Col2Im,
    DepthToSpace,
    SpaceToDepth,
    CastLike,
    Fused,
    // Not ONNX ops: the steps of a Winograd convolution (`crate::winograd`), made by the
    // compiler after the optimizer, never imported.
    WinogradInput,
    WinogradOutput,
);

impl OpKind {
    /// Input slots whose values (not only shapes) the compiler needs at compile time: they
    /// decide output shapes or index arithmetic (axes, pads, target shapes, slice bounds, …).
    pub fn value_inputs(self) -> &'static [usize] {
        use OpKind::*;
        match self {
            Reshape | Expand | Tile | Squeeze | Unsqueeze | CumSum => &[1],
            k if k.is_reduction() => &[1],
            Slice => &[1, 2, 3, 4],
            Pad => &[1, 2, 3],
            Range => &[0, 1, 2],
            Resize => &[1, 2, 3],
            ConstantOfShape => &[0],
            Trilu => &[1],
            // Generators: the output is a function of these inputs' values alone.
            HannWindow | HammingWindow | BlackmanWindow => &[0],
            MelWeightMatrix => &[0, 1, 2, 3, 4],
            // The output shape is the number of non-zero elements.
            NonZero => &[0],
            DFT => &[1, 2],
            NonMaxSuppression => &[0, 1, 2, 3, 4],
            AffineGrid => &[1],
            STFT => &[1, 3],
            Col2Im => &[1, 2],
            _ => &[],
        }
    }

    /// Ops the compiler makes and no model may contain: fused kernels and the steps of a
    /// Winograd convolution (the importer refuses them by name).
    pub fn is_internal(self) -> bool {
        matches!(
            self,
            OpKind::Fused | OpKind::WinogradInput | OpKind::WinogradOutput
        )
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL.iter().copied().find(|k| k.name() == s)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Str(String),
    Tensor(Tensor),
    /// A subgraph (the body of a fused kernel).
    Graph(SubGraph),
}

/// A graph held by an attribute. Two subgraphs are equal when they print the same.
#[derive(Clone, Debug)]
pub struct SubGraph(pub Box<crate::graph::Graph>);

impl PartialEq for SubGraph {
    fn eq(&self, other: &Self) -> bool {
        crate::text::print_graph(&self.0) == crate::text::print_graph(&other.0)
    }
}

impl Attr {
    pub fn kind(&self) -> AttrKind {
        match self {
            Attr::Int(_) => AttrKind::Int,
            Attr::Float(_) => AttrKind::Float,
            Attr::Ints(_) => AttrKind::Ints,
            Attr::Floats(_) => AttrKind::Floats,
            Attr::Str(_) => AttrKind::Str,
            Attr::Tensor(_) => AttrKind::Tensor,
            Attr::Graph(_) => AttrKind::Graph,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    Int,
    Float,
    Ints,
    Floats,
    Str,
    Tensor,
    Graph,
}

pub type Attrs = BTreeMap<String, Attr>;

/// What an op accepts: input count range, output count, and its attributes with their kinds.
#[derive(Debug)]
pub struct Schema {
    pub min_inputs: usize,
    /// `usize::MAX` for variadic ops.
    pub max_inputs: usize,
    pub outputs: usize,
    pub attrs: &'static [(&'static str, AttrKind)],
}

const fn s(
    min_inputs: usize,
    max_inputs: usize,
    attrs: &'static [(&'static str, AttrKind)],
) -> Schema {
    Schema {
        min_inputs,
        max_inputs,
        outputs: 1,
        attrs,
    }
}

use AttrKind as K;
const NONE: &[(&str, AttrKind)] = &[];
const POOL: &[(&str, AttrKind)] = &[
    ("kernel_shape", K::Ints),
    ("strides", K::Ints),
    ("pads", K::Ints),
    ("dilations", K::Ints),
    ("ceil_mode", K::Int),
    ("count_include_pad", K::Int),
    ("auto_pad", K::Str),
    ("storage_order", K::Int),
];
const REDUCE: &[(&str, AttrKind)] = &[("keepdims", K::Int), ("noop_with_empty_axes", K::Int)];

impl OpKind {
    pub fn schema(self) -> Schema {
        use OpKind::*;
        match self {
            MatMul => s(2, 2, &[("b_perm", K::Ints)]),
            Gemm => s(
                2,
                3,
                &[
                    ("alpha", K::Float),
                    ("beta", K::Float),
                    ("transA", K::Int),
                    ("transB", K::Int),
                ],
            ),
            Conv => s(
                2,
                3,
                &[
                    ("kernel_shape", K::Ints),
                    ("strides", K::Ints),
                    ("pads", K::Ints),
                    ("dilations", K::Ints),
                    ("group", K::Int),
                    ("auto_pad", K::Str),
                ],
            ),
            Add | Sub | Mul | Div | Pow | Equal | Less | Greater | And | Or => s(2, 2, NONE),
            Max | Min | Sum => s(1, usize::MAX, NONE),
            Relu | Sigmoid | Tanh | Erf | Exp | Log | Sqrt | Reciprocal | Neg | Abs | Floor
            | Ceil | Not | Identity | GlobalAveragePool => s(1, 1, NONE),
            Gelu => s(1, 1, &[("approximate", K::Str)]),
            LeakyRelu => s(1, 1, &[("alpha", K::Float)]),
            Sin | Cos | Softplus | HardSwish => s(1, 1, NONE),
            Elu | Celu => s(1, 1, &[("alpha", K::Float)]),
            Selu => s(1, 1, &[("alpha", K::Float), ("gamma", K::Float)]),
            HardSigmoid => s(1, 1, &[("alpha", K::Float), ("beta", K::Float)]),
            PRelu => s(2, 2, NONE),
            Range => s(3, 3, NONE),
            Pad => s(2, 4, &[("mode", K::Str)]),
            Tile => s(2, 2, NONE),
            ConvTranspose => s(
                2,
                3,
                &[
                    ("kernel_shape", K::Ints),
                    ("strides", K::Ints),
                    ("pads", K::Ints),
                    ("dilations", K::Ints),
                    ("group", K::Int),
                    ("auto_pad", K::Str),
                    ("output_padding", K::Ints),
                    ("output_shape", K::Ints),
                ],
            ),
            Resize => s(
                1,
                4,
                &[
                    ("mode", K::Str),
                    ("coordinate_transformation_mode", K::Str),
                    ("nearest_mode", K::Str),
                    ("cubic_coeff_a", K::Float),
                    ("exclude_outside", K::Int),
                    ("extrapolation_value", K::Float),
                    ("antialias", K::Int),
                    ("axes", K::Ints),
                    ("keep_aspect_ratio_policy", K::Str),
                ],
            ),
            ArgMax | ArgMin => s(
                1,
                1,
                &[
                    ("axis", K::Int),
                    ("keepdims", K::Int),
                    ("select_last_index", K::Int),
                ],
            ),
            Trilu => s(1, 2, &[("upper", K::Int)]),
            CumSum => s(2, 2, &[("exclusive", K::Int), ("reverse", K::Int)]),
            LRN => s(
                1,
                1,
                &[
                    ("alpha", K::Float),
                    ("beta", K::Float),
                    ("bias", K::Float),
                    ("size", K::Int),
                ],
            ),
            Clip => s(1, 3, NONE),
            Softmax => s(1, 1, &[("axis", K::Int)]),
            LayerNormalization => s(
                2,
                3,
                &[
                    ("axis", K::Int),
                    ("epsilon", K::Float),
                    ("stash_type", K::Int),
                ],
            ),
            BatchNormalization => s(
                5,
                5,
                &[
                    ("epsilon", K::Float),
                    ("momentum", K::Float),
                    ("training_mode", K::Int),
                ],
            ),
            MaxPool | AveragePool => s(1, 1, POOL),
            // Listed, not guarded: this match stays exhaustive, so a new op needs a schema.
            ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceL2 | ReduceSumSquare
            | ReduceProd | ReduceL1 | ReduceLogSum | ReduceLogSumExp => s(1, 2, REDUCE),
            Size | Sign | Round | IsNaN | Softsign | BitwiseNot => s(1, 1, NONE),
            LogSoftmax => s(1, 1, &[("axis", K::Int)]),
            IsInf => s(
                1,
                1,
                &[("detect_negative", K::Int), ("detect_positive", K::Int)],
            ),
            ThresholdedRelu => s(1, 1, &[("alpha", K::Float)]),
            Shrink => s(1, 1, &[("bias", K::Float), ("lambd", K::Float)]),
            GreaterOrEqual | LessOrEqual | Xor | BitwiseAnd | BitwiseOr | BitwiseXor => {
                s(2, 2, NONE)
            }
            Mod => s(2, 2, &[("fmod", K::Int)]),
            HannWindow | HammingWindow | BlackmanWindow => {
                s(1, 1, &[("periodic", K::Int), ("output_datatype", K::Int)])
            }
            MelWeightMatrix => s(5, 5, &[("output_datatype", K::Int)]),
            NonZero => s(1, 1, NONE),
            NonMaxSuppression => s(2, 5, &[("center_point_box", K::Int)]),
            AffineGrid => s(2, 2, &[("align_corners", K::Int)]),
            CastLike => s(2, 2, &[("saturate", K::Int)]),
            // One kernel computing `body` (a graph of elementwise ops over the inputs).
            Fused => s(1, usize::MAX, &[("body", K::Graph)]),
            STFT => s(2, 4, &[("onesided", K::Int)]),
            Col2Im => s(
                3,
                3,
                &[
                    ("dilations", K::Ints),
                    ("pads", K::Ints),
                    ("strides", K::Ints),
                ],
            ),
            DepthToSpace => s(1, 1, &[("blocksize", K::Int), ("mode", K::Str)]),
            SpaceToDepth => s(1, 1, &[("blocksize", K::Int)]),
            WinogradInput => s(1, 1, &[("tile", K::Int), ("pads", K::Ints)]),
            WinogradOutput => s(1, 2, &[("tile", K::Int), ("output_shape", K::Ints)]),
            DFT => s(1, 3, &[("inverse", K::Int), ("onesided", K::Int)]),
            GatherElements | GatherND => s(2, 2, &[("axis", K::Int), ("batch_dims", K::Int)]),
            ScatterElements | ScatterND => s(3, 3, &[("axis", K::Int), ("reduction", K::Str)]),
            InstanceNormalization => s(3, 3, &[("epsilon", K::Float)]),
            Reshape => s(2, 2, &[("allowzero", K::Int)]),
            Transpose => s(1, 1, &[("perm", K::Ints)]),
            Flatten => s(1, 1, &[("axis", K::Int)]),
            Squeeze | Unsqueeze => s(1, 2, NONE),
            Concat => s(1, usize::MAX, &[("axis", K::Int)]),
            Slice => s(3, 5, NONE),
            Gather => s(2, 2, &[("axis", K::Int)]),
            Expand => s(2, 2, NONE),
            Where => s(3, 3, NONE),
            Cast => s(1, 1, &[("to", K::Int), ("saturate", K::Int)]),
            Constant => s(0, 0, &[("value", K::Tensor)]),
            ConstantOfShape => s(1, 1, &[("value", K::Tensor)]),
            Shape => s(1, 1, &[("start", K::Int), ("end", K::Int)]),
        }
    }

    /// The reductions over `axes` (an input from opset 18 on; ReduceSum's from 13).
    pub fn is_reduction(self) -> bool {
        use OpKind::*;
        matches!(
            self,
            ReduceSum
                | ReduceMean
                | ReduceMax
                | ReduceMin
                | ReduceL2
                | ReduceSumSquare
                | ReduceL1
                | ReduceLogSum
                | ReduceLogSumExp
                | ReduceProd
        )
    }

    /// Elementwise ops whose output shape is the broadcast of their inputs.
    pub fn is_elementwise(self) -> bool {
        use OpKind::*;
        matches!(
            self,
            Add | Sub
                | Mul
                | Div
                | Pow
                | Max
                | Min
                | Sum
                | Relu
                | Sigmoid
                | Tanh
                | Erf
                | Gelu
                | Exp
                | Log
                | Sqrt
                | Reciprocal
                | Neg
                | Abs
                | Floor
                | Ceil
                | Clip
                | LeakyRelu
                | Where
                | Sign
                | Round
                | IsNaN
                | IsInf
                | Softsign
                | ThresholdedRelu
                | Shrink
                | BitwiseNot
                | GreaterOrEqual
                | LessOrEqual
                | Xor
                | BitwiseAnd
                | BitwiseOr
                | BitwiseXor
                | Mod
                | CastLike
                | Cast
                | Identity
                | Equal
                | Less
                | Greater
                | Not
                | And
                | Or
                | Sin
                | Elu
                | Selu
                | Celu
                | Cos
                | Softplus
                | HardSigmoid
                | HardSwish
                | PRelu
        )
    }
}

/// Typed attribute accessors with defaults; a present attribute of the wrong kind is an error.
pub trait AttrsExt {
    fn int(&self, name: &str, default: i64) -> Result<i64, String>;
    fn float(&self, name: &str, default: f64) -> Result<f64, String>;
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String>;
    fn string(&self, name: &str, default: &str) -> Result<String, String>;
    fn tensor(&self, name: &str) -> Result<Option<Tensor>, String>;
    fn graph(&self, name: &str) -> Result<&crate::graph::Graph, String>;
}

impl AttrsExt for Attrs {
    fn graph(&self, name: &str) -> Result<&crate::graph::Graph, String> {
        match self.get(name) {
            Some(Attr::Graph(g)) => Ok(&g.0),
            Some(a) => Err(format!(
                "attribute `{name}` must be a graph, got {:?}",
                a.kind()
            )),
            None => Err(format!("missing attribute `{name}`")),
        }
    }
    fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(a) => Err(format!(
                "attribute `{name}` must be an int, got {:?}",
                a.kind()
            )),
        }
    }
    fn float(&self, name: &str, default: f64) -> Result<f64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f64),
            Some(a) => Err(format!(
                "attribute `{name}` must be a float, got {:?}",
                a.kind()
            )),
        }
    }
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(a) => Err(format!(
                "attribute `{name}` must be ints, got {:?}",
                a.kind()
            )),
        }
    }
    fn string(&self, name: &str, default: &str) -> Result<String, String> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(Attr::Str(v)) => Ok(v.clone()),
            Some(a) => Err(format!(
                "attribute `{name}` must be a string, got {:?}",
                a.kind()
            )),
        }
    }
    fn tensor(&self, name: &str) -> Result<Option<Tensor>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t.clone())),
            Some(a) => Err(format!(
                "attribute `{name}` must be a tensor, got {:?}",
                a.kind()
            )),
        }
    }
}
