//! Valid-by-construction random graphs from fuzzer bytes (NNSmith-style).
//!
//! A graph grows from one or two f32 inputs by appending ops whose operands come from a pool
//! of values with known static shapes; shapes are read back from type inference after every
//! op, so the pool never holds a value the next op could not take. The op mix aims at what
//! the passes rewrite: elementwise chains and broadcasting (fusion), reductions and softmax /
//! layer norm (map-reduce fusion), matmul and conv chains with epilogues (tiling, conv +
//! batch-norm folding), transposes and reshapes (layout rules), pooling with pads, and data
//! movement: Concat, Slice (windows, steps, reversal), Gather (negative indices), Where on a
//! comparison's mask.
//!
//! Sizes stay small (every dimension ≤ 8, every tensor ≤ [`MAX_ELEMENTS`]) so one case runs
//! in milliseconds; constants and inputs are drawn from a seed the bytes choose, never zeros.

use arbitrary::{Result, Unstructured};
use tessera_ir::{Attr, Attrs, DType, Graph, OpKind, Rng, Tensor, ValueId, ValueType};

/// The largest tensor the generator builds.
pub const MAX_ELEMENTS: usize = 4096;
/// The most ops one graph gets.
pub const MAX_OPS: usize = 10;

/// Why a byte string gave no graph (the fuzzer just moves on).
#[derive(Debug)]
pub struct Rejected(pub String);

struct Builder<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    g: Graph,
    rng: Rng,
    /// Values the next op may use, with their shapes.
    pool: Vec<(ValueId, Vec<usize>)>,
    consts: usize,
}

/// Builds a random graph from `u`. The graph verifies and infers; its inputs are f32.
pub fn arbitrary_graph(u: &mut Unstructured) -> std::result::Result<Graph, Rejected> {
    build(u).map_err(|e| Rejected(format!("out of bytes: {e}")))?
}

fn build(u: &mut Unstructured) -> Result<std::result::Result<Graph, Rejected>> {
    let seed = u.arbitrary::<u64>()?;
    let mut b = Builder {
        u,
        g: Graph::new("fuzz"),
        rng: Rng::new(seed),
        pool: Vec::new(),
        consts: 0,
    };
    let shape = b.first_shape()?;
    b.input(&shape);
    if b.u.ratio(1, 3)? {
        let s = b.broadcast_shape(&shape)?;
        b.input(&s);
    }
    let ops = b.u.int_in_range(1..=MAX_OPS)?;
    for _ in 0..ops {
        if let Err(e) = b.step()? {
            return Ok(Err(e));
        }
    }
    let last = b.pool.last().map(|p| p.0).expect("an input at least");
    b.g.outputs.push(last);
    // A second output keeps an intermediate alive (memory planning, fusion boundaries).
    if b.pool.len() > 2 && b.u.ratio(1, 3)? {
        let i = b.u.choose_index(b.pool.len() - 1)?;
        let v = b.pool[i].0;
        if !b.g.inputs.contains(&v) && !b.g.outputs.contains(&v) {
            b.g.outputs.push(v);
        }
    }
    b.g.eliminate_dead_code();
    Ok(match b.g.verify() {
        Ok(()) => Ok(b.g),
        Err(e) => Err(Rejected(format!("generated graph does not verify: {e}"))),
    })
}

/// `g` with every MatMul computed in `dtype` (f16 or bf16): its operands cast to it and its
/// result cast back to f32, so that the rest of the graph is unchanged. The `schedule` target
/// checks half-precision product kernels — the tensor-core schedule — with it. `None` when
/// `g` has no MatMul.
pub fn with_half_products(g: &Graph, dtype: DType) -> Option<Graph> {
    let mut h = g.clone();
    let products: Vec<_> = h
        .nodes()
        .filter(|(_, n)| n.op == OpKind::MatMul && n.outputs.len() == 1)
        .map(|(ix, _)| ix)
        .collect();
    if products.is_empty() {
        return None;
    }
    let cast = |to: DType| {
        let mut a = Attrs::new();
        a.insert("to".into(), Attr::Int(to.onnx_code() as i64));
        a
    };
    for ix in products {
        let node = h.remove_node(ix)?;
        let inputs = node
            .inputs
            .iter()
            .map(|v| v.map(|v| h.op(OpKind::Cast, &[v], cast(dtype))))
            .collect();
        let out = node.outputs[0];
        let half = h.fresh_value(&format!("{}_half", node.name));
        let back = tessera_ir::Node {
            name: format!("{}_back", node.name),
            op: OpKind::Cast,
            attrs: cast(DType::F32),
            inputs: vec![Some(half)],
            outputs: vec![out],
        };
        h.add_node(tessera_ir::Node {
            inputs,
            outputs: vec![half],
            ..node
        });
        let back = h.add_node(back);
        h.connect_consumers(back);
    }
    h.infer_types().ok()?;
    h.verify().ok()?;
    Some(h)
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

impl Builder<'_, '_> {
    fn first_shape(&mut self) -> Result<Vec<usize>> {
        Ok(if self.u.ratio(1, 2)? {
            // NCHW, for convolutions and pooling.
            vec![
                self.u.int_in_range(1..=2)?,
                self.u.int_in_range(1..=4)?,
                self.u.int_in_range(2..=8)?,
                self.u.int_in_range(2..=8)?,
            ]
        } else {
            let rank = self.u.int_in_range(1..=3)?;
            (0..rank)
                .map(|_| self.u.int_in_range(1..=8))
                .collect::<Result<_>>()?
        })
    }

    fn input(&mut self, shape: &[usize]) -> ValueId {
        let name = format!("x{}", self.g.inputs.len());
        let v = self.g.add_input(&name, ValueType::new(DType::F32, shape));
        self.pool.push((v, shape.to_vec()));
        v
    }

    /// A constant of random values in ±[lo, hi] (never zero).
    fn constant(&mut self, shape: &[usize], lo: f64, hi: f64, signed: bool) -> ValueId {
        let n: usize = shape.iter().product();
        let vals: Vec<f64> = (0..n)
            .map(|_| {
                let m = self.rng.range(lo, hi);
                if signed && self.rng.next_u64() & 1 == 0 {
                    -m
                } else {
                    m
                }
            })
            .collect();
        self.consts += 1;
        let name = format!("c{}", self.consts);
        self.g
            .add_initializer(&name, Tensor::from_f64(DType::F32, shape.to_vec(), &vals))
    }

    fn int_constant(&mut self, v: &[i64]) -> ValueId {
        self.int_tensor(vec![v.len()], v)
    }

    /// An i64 constant of shape `shape` holding `v`.
    fn int_tensor(&mut self, shape: Vec<usize>, v: &[i64]) -> ValueId {
        self.consts += 1;
        let name = format!("c{}", self.consts);
        self.g
            .add_initializer(&name, Tensor::from_i64(DType::I64, shape, v))
    }

    /// A shape `shape` broadcasts with: some dims 1, maybe fewer leading dims.
    fn broadcast_shape(&mut self, shape: &[usize]) -> Result<Vec<usize>> {
        let drop = self.u.int_in_range(0..=shape.len().saturating_sub(1))?;
        shape[drop..]
            .iter()
            .map(|&d| Ok(if self.u.ratio(1, 3)? { 1 } else { d }))
            .collect()
    }

    /// Appends `op(inputs)` and adds its output to the pool if its shape is usable.
    fn push(
        &mut self,
        op: OpKind,
        inputs: &[ValueId],
        attrs: Attrs,
    ) -> std::result::Result<(), Rejected> {
        let v = self.g.op(op, inputs, attrs);
        self.g
            .infer_types()
            .map_err(|e| Rejected(format!("{op}: {e}")))?;
        let shape = self
            .g
            .ty(v)
            .and_then(|t| t.static_shape())
            .ok_or_else(|| Rejected(format!("{op}: no static shape")))?;
        let n: usize = shape.iter().product();
        if n == 0 || n > MAX_ELEMENTS {
            return Err(Rejected(format!("{op}: {n} elements")));
        }
        self.pool.push((v, shape));
        Ok(())
    }

    /// One random op on random pool values.
    fn step(&mut self) -> Result<std::result::Result<(), Rejected>> {
        // Recent values are likelier operands: chains are what fusion sees.
        let i = if self.u.ratio(2, 3)? {
            self.pool.len() - 1
        } else {
            self.u.choose_index(self.pool.len())?
        };
        let (x, shape) = self.pool[i].clone();
        let rank = shape.len();
        let mut attrs = Attrs::new();
        let kind = self.u.int_in_range(0..=15)?;
        Ok(match kind {
            0 | 1 => {
                let op = *self.u.choose(&[
                    OpKind::Relu,
                    OpKind::Neg,
                    OpKind::Abs,
                    OpKind::Tanh,
                    OpKind::Sigmoid,
                    OpKind::Exp,
                ])?;
                self.push(op, &[x], attrs)
            }
            2 | 3 => {
                let op = *self.u.choose(&[
                    OpKind::Add,
                    OpKind::Sub,
                    OpKind::Mul,
                    OpKind::Max,
                    OpKind::Min,
                ])?;
                let other = self.partner(&shape)?;
                let ops = if self.u.ratio(1, 2)? {
                    [x, other]
                } else {
                    [other, x]
                };
                self.push(op, &ops, attrs)
            }
            4 if rank > 0 => {
                let op =
                    *self
                        .u
                        .choose(&[OpKind::ReduceSum, OpKind::ReduceMean, OpKind::ReduceMax])?;
                let mut axes = Vec::new();
                for a in 0..rank {
                    if self.u.ratio(1, 2)? {
                        axes.push(if self.u.ratio(1, 4)? {
                            a as i64 - rank as i64
                        } else {
                            a as i64
                        });
                    }
                }
                if axes.is_empty() {
                    axes.push(rank as i64 - 1);
                }
                attrs.insert("keepdims".into(), Attr::Int(self.u.int_in_range(0..=1)?));
                let ax = self.int_constant(&axes);
                self.push(op, &[x, ax], attrs)
            }
            5 if rank > 0 => {
                let axis = self.u.int_in_range(0..=rank - 1)? as i64;
                match self.u.int_in_range(0..=2)? {
                    // As an exporter writes it out (the composite rules' target).
                    1 => self.written_out_softmax(x, axis, false)?,
                    2 => self.written_out_softmax(x, axis, true)?,
                    _ => {
                        attrs.insert("axis".into(), Attr::Int(axis));
                        self.push(OpKind::Softmax, &[x], attrs)
                    }
                }
            }
            6 if rank >= 2 && self.u.ratio(1, 3)? => {
                // x · xᵀ over the last two axes, as attention's Q·Kᵀ (the layout rule
                // `transpose-into-matmul` reads the transposed operand in place).
                let mut perm: Vec<i64> = (0..rank as i64).collect();
                perm.swap(rank - 2, rank - 1);
                let mut at = Attrs::new();
                at.insert("perm".into(), ints(&perm));
                let t = match self.then(OpKind::Transpose, &[x], at) {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(e)),
                };
                self.push(OpKind::MatMul, &[x, t], attrs)
            }
            6 if rank > 0 => {
                // Now and then a long `k`: the last two axes merged (up to 64), so that tiled
                // products take several `k` tiles — a pipeline's prologue, steady loop and
                // drain — which axes of at most 8 never give.
                let (x, k) = if rank >= 3 && self.u.ratio(1, 3)? {
                    let mut merged: Vec<i64> =
                        shape[..rank - 2].iter().map(|&d| d as i64).collect();
                    merged.push((shape[rank - 2] * shape[rank - 1]) as i64);
                    let s = self.int_constant(&merged);
                    match self.then(OpKind::Reshape, &[x, s], Attrs::new()) {
                        Ok(y) => (y, shape[rank - 2] * shape[rank - 1]),
                        Err(e) => return Ok(Err(e)),
                    }
                } else {
                    (x, shape[rank - 1])
                };
                // Now and then wide (40, 64 or 72 columns): warpgroup steps of 64 columns,
                // which 128-byte-swizzled tiles need, fit only such products. (One draw, as
                // before there were wide ones: the bytes decode into the same graphs
                // otherwise.)
                let n = match self.u.int_in_range(1..=15)? {
                    13 => 40,
                    14 => 64,
                    15 => 72,
                    n => n,
                };
                let w = self.constant(&[k, n], 0.1, 1.0, true);
                let y = match self.then(OpKind::MatMul, &[x, w], attrs) {
                    Ok(y) => y,
                    Err(e) => return Ok(Err(e)),
                };
                // A bias: the matmul epilogue fusion.
                if self.u.ratio(1, 2)? {
                    let bias = self.constant(&[n], 0.1, 1.0, true);
                    self.push(OpKind::Add, &[y, bias], Attrs::new())
                } else {
                    Ok(())
                }
            }
            7 if rank >= 2 => {
                // One or two transposes in a row (the layout rules compose chains).
                let times = self.u.int_in_range(1..=2)?;
                let mut cur = x;
                for _ in 0..times {
                    let mut perm: Vec<i64> = (0..rank as i64).collect();
                    for j in (1..rank).rev() {
                        let k = self.u.int_in_range(0..=j)?;
                        perm.swap(j, k);
                    }
                    let mut at = Attrs::new();
                    at.insert("perm".into(), ints(&perm));
                    cur = match self.then(OpKind::Transpose, &[cur], at) {
                        Ok(t) => t,
                        Err(e) => return Ok(Err(e)),
                    };
                }
                Ok(())
            }
            8 if rank > 0 => {
                let target = self.reshape_target(&shape)?;
                let s = self.int_constant(&target);
                self.push(OpKind::Reshape, &[x, s], attrs)
            }
            9 if rank == 4 => self.conv(x, &shape)?,
            10 if rank == 4 => {
                let op = *self.u.choose(&[OpKind::MaxPool, OpKind::AveragePool])?;
                let (kh, kw) = (
                    self.u.int_in_range(1..=3.min(shape[2]))?,
                    self.u.int_in_range(1..=3.min(shape[3]))?,
                );
                let pads = [
                    self.u.int_in_range(0..=kh - 1)?,
                    self.u.int_in_range(0..=kw - 1)?,
                    self.u.int_in_range(0..=kh - 1)?,
                    self.u.int_in_range(0..=kw - 1)?,
                ];
                attrs.insert("kernel_shape".into(), ints(&[kh as i64, kw as i64]));
                attrs.insert("pads".into(), ints(&pads.map(|p| p as i64)));
                let s = self.u.int_in_range(1..=2)? as i64;
                attrs.insert("strides".into(), ints(&[s, s]));
                if op == OpKind::AveragePool {
                    attrs.insert(
                        "count_include_pad".into(),
                        Attr::Int(self.u.int_in_range(0..=1)?),
                    );
                }
                self.push(op, &[x], attrs)
            }
            11 if rank > 0 && self.u.ratio(1, 2)? => self.written_out_layer_norm(x, &shape)?,
            11 if rank > 0 => {
                let n = shape[rank - 1];
                let scale = self.constant(&[n], 0.5, 1.5, false);
                let bias = self.constant(&[n], 0.1, 1.0, true);
                attrs.insert("axis".into(), Attr::Int(-1));
                self.push(OpKind::LayerNormalization, &[x, scale, bias], attrs)
            }
            12 if rank > 0 => self.concat(x, &shape)?,
            13 if rank > 0 => self.slice(x, &shape)?,
            14 => {
                // Where(x > t, x, other): a bool mask, the select it steers.
                let t = self.constant(&[1], 0.0, 0.5, true);
                let cmp = *self.u.choose(&[OpKind::Greater, OpKind::Less])?;
                if let Err(e) = self.push(cmp, &[x, t], Attrs::new()) {
                    return Ok(Err(e));
                }
                // The mask is not a float operand for later ops.
                let (mask, _) = self.pool.pop().expect("just pushed");
                let other = self.partner(&shape)?;
                self.push(OpKind::Where, &[mask, x, other], attrs)
            }
            15 if rank > 0 => {
                // Gather along an axis, indices in [-d, d) (negative ones count from the end).
                let axis = self.u.int_in_range(0..=rank - 1)?;
                let d = shape[axis] as i64;
                let count = self.u.int_in_range(1..=6)?;
                let idx: Vec<i64> = (0..count)
                    .map(|_| self.u.int_in_range(-d..=d - 1))
                    .collect::<Result<_>>()?;
                // One index is a view a fused body reads through; as a scalar, it also
                // drops the axis.
                let indices = if count == 1 && self.u.arbitrary()? {
                    self.int_tensor(vec![], &idx)
                } else {
                    self.int_constant(&idx)
                };
                attrs.insert("axis".into(), Attr::Int(axis as i64));
                self.push(OpKind::Gather, &[x, indices], attrs)
            }
            _ => self.push(OpKind::Relu, &[x], attrs),
        })
    }

    /// Appends `op(inputs)` as [`Self::push`] does, returning its output (for chains).
    fn then(
        &mut self,
        op: OpKind,
        inputs: &[ValueId],
        attrs: Attrs,
    ) -> std::result::Result<ValueId, Rejected> {
        self.push(op, inputs, attrs)?;
        Ok(self.pool.last().expect("just pushed").0)
    }

    /// A reduction over `axes` that keeps the reduced dimensions.
    fn kept_reduction(
        &mut self,
        op: OpKind,
        x: ValueId,
        axes: &[i64],
    ) -> std::result::Result<ValueId, Rejected> {
        let ax = self.int_constant(axes);
        let mut attrs = Attrs::new();
        attrs.insert("keepdims".into(), Attr::Int(1));
        self.then(op, &[x, ax], attrs)
    }

    /// A softmax (or log-softmax) over `axis` written out as exporters do:
    /// `exp(x - max) / sum(exp(x - max))`, or `(x - max) - log(sum(exp(x - max)))`.
    fn written_out_softmax(
        &mut self,
        x: ValueId,
        axis: i64,
        log: bool,
    ) -> Result<std::result::Result<(), Rejected>> {
        let chain = |b: &mut Self| -> std::result::Result<(), Rejected> {
            let none = Attrs::new;
            let max = b.kept_reduction(OpKind::ReduceMax, x, &[axis])?;
            let shifted = b.then(OpKind::Sub, &[x, max], none())?;
            let e = b.then(OpKind::Exp, &[shifted], none())?;
            let sum = b.kept_reduction(OpKind::ReduceSum, e, &[axis])?;
            if log {
                let l = b.then(OpKind::Log, &[sum], none())?;
                b.push(OpKind::Sub, &[shifted, l], none())
            } else {
                b.push(OpKind::Div, &[e, sum], none())
            }
        };
        Ok(chain(self))
    }

    /// A layer norm over trailing axes written out as PyTorch exports it before opset 17:
    /// mean, centre, `Pow(c, 2)` (or `c * c`), mean, `+ eps`, `Sqrt`, `Div` (or a
    /// `Reciprocal` and `Mul`), then maybe a weight and a bias.
    fn written_out_layer_norm(
        &mut self,
        x: ValueId,
        shape: &[usize],
    ) -> Result<std::result::Result<(), Rejected>> {
        let rank = shape.len();
        let first = self.u.int_in_range(0..=rank - 1)?;
        let axes: Vec<i64> = (first as i64..rank as i64).collect();
        let (pow, rsqrt) = (self.u.ratio(1, 2)?, self.u.ratio(1, 3)?);
        let (weight, bias) = (self.u.ratio(2, 3)?, self.u.ratio(1, 2)?);
        let last = shape[rank - 1];
        let chain = |b: &mut Self| -> std::result::Result<(), Rejected> {
            let none = Attrs::new;
            let mean = b.kept_reduction(OpKind::ReduceMean, x, &axes)?;
            let c = b.then(OpKind::Sub, &[x, mean], none())?;
            let sq = if pow {
                let two = b.constant(&[], 2.0, 2.0, false);
                b.then(OpKind::Pow, &[c, two], none())?
            } else {
                b.then(OpKind::Mul, &[c, c], none())?
            };
            let var = b.kept_reduction(OpKind::ReduceMean, sq, &axes)?;
            let eps = b.constant(&[], 1e-5, 1e-2, false);
            let ve = b.then(OpKind::Add, &[var, eps], none())?;
            let sd = b.then(OpKind::Sqrt, &[ve], none())?;
            let mut y = if rsqrt {
                let r = b.then(OpKind::Reciprocal, &[sd], none())?;
                b.then(OpKind::Mul, &[c, r], none())?
            } else {
                b.then(OpKind::Div, &[c, sd], none())?
            };
            if weight {
                let w = b.constant(&[last], 0.5, 1.5, false);
                y = b.then(OpKind::Mul, &[y, w], none())?;
            }
            if bias {
                let k = b.constant(&[last], 0.1, 1.0, true);
                b.then(OpKind::Add, &[y, k], none())?;
            }
            Ok(())
        };
        Ok(chain(self))
    }

    /// Concat of `x` with a pool value, an input or a constant that matches it on every axis
    /// but the one joined — or, Inception-style, of two computed branches along an axis
    /// with nothing but 1s before it, read by a later op: the case whose copy the compiler
    /// removes (`tessera_passes::views`).
    fn concat(&mut self, x: ValueId, shape: &[usize]) -> Result<std::result::Result<(), Rejected>> {
        if self.u.ratio(1, 3)? {
            return Ok(self.concat_branches(x, shape));
        }
        let axis = self.u.int_in_range(0..=shape.len() - 1)?;
        let fits = |s: &[usize]| {
            s.len() == shape.len()
                && s.iter()
                    .zip(shape)
                    .enumerate()
                    .all(|(a, (p, q))| a == axis || p == q)
        };
        let candidates: Vec<ValueId> = self
            .pool
            .iter()
            .filter(|(_, s)| fits(s))
            .map(|(v, _)| *v)
            .collect();
        let other = if self.u.ratio(1, 2)? {
            *self.u.choose(&candidates)?
        } else {
            let mut s = shape.to_vec();
            s[axis] = self.u.int_in_range(1..=4)?;
            self.constant(&s, 0.1, 1.0, true)
        };
        let mut attrs = Attrs::new();
        attrs.insert("axis".into(), Attr::Int(axis as i64));
        let ops = if self.u.ratio(1, 2)? {
            [x, other]
        } else {
            [other, x]
        };
        Ok(self.push(OpKind::Concat, &ops, attrs))
    }

    /// `relu(concat(a, sigmoid(a)))` with `a` computed from `x` (see [`Self::concat`]).
    fn concat_branches(
        &mut self,
        x: ValueId,
        shape: &[usize],
    ) -> std::result::Result<(), Rejected> {
        let a = match self.g.inputs.contains(&x) {
            true => self.then(OpKind::Neg, &[x], Attrs::new())?,
            false => x,
        };
        let b = self.then(OpKind::Sigmoid, &[a], Attrs::new())?;
        let axis = (0..shape.len())
            .rev()
            .find(|&k| shape[..k].iter().all(|&d| d == 1))
            .unwrap_or(0);
        let mut attrs = Attrs::new();
        attrs.insert("axis".into(), Attr::Int(axis as i64));
        let joined = self.then(OpKind::Concat, &[a, b], attrs)?;
        self.push(OpKind::Relu, &[joined], Attrs::new())
    }

    /// Slice of `x` on one or two axes: a window with step 1 or 2, or the axis reversed.
    fn slice(&mut self, x: ValueId, shape: &[usize]) -> Result<std::result::Result<(), Rejected>> {
        let (mut starts, mut ends, mut axes, mut steps) = (vec![], vec![], vec![], vec![]);
        for (a, &d) in shape.iter().enumerate() {
            if !self.u.ratio(1, 2)? {
                continue;
            }
            let d = d as i64;
            if self.u.ratio(1, 4)? {
                // Reversed: from the last element down past the first.
                starts.push(-1);
                ends.push(i64::MIN);
                steps.push(-1);
            } else {
                let start = self.u.int_in_range(0..=d - 1)?;
                let end = self.u.int_in_range(start + 1..=d)?;
                starts.push(start);
                ends.push(end);
                steps.push(self.u.int_in_range(1..=2)?);
            }
            axes.push(a as i64);
        }
        if axes.is_empty() {
            return Ok(self.push(OpKind::Identity, &[x], Attrs::new()));
        }
        let inputs = [
            x,
            self.int_constant(&starts),
            self.int_constant(&ends),
            self.int_constant(&axes),
            self.int_constant(&steps),
        ];
        Ok(self.push(OpKind::Slice, &inputs, Attrs::new()))
    }

    /// A second operand for a binary op on `shape`: a pool value of a compatible shape, or
    /// a new input or constant of a broadcasting shape.
    fn partner(&mut self, shape: &[usize]) -> Result<ValueId> {
        let same: Vec<ValueId> = self
            .pool
            .iter()
            .filter(|(_, s)| s == shape)
            .map(|(v, _)| *v)
            .collect();
        if !same.is_empty() && self.u.ratio(1, 3)? {
            return Ok(*self.u.choose(&same)?);
        }
        let s = self.broadcast_shape(shape)?;
        Ok(if self.u.ratio(1, 2)? && self.g.inputs.len() < 4 {
            self.input(&s)
        } else {
            self.constant(&s, 0.1, 1.0, true)
        })
    }

    /// Another shape with the same element count: all flat, two dims merged, or one split.
    fn reshape_target(&mut self, shape: &[usize]) -> Result<Vec<i64>> {
        let mut s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        match self.u.int_in_range(0..=2)? {
            0 => Ok(vec![s.iter().product()]),
            1 if s.len() >= 2 => {
                let i = self.u.int_in_range(0..=s.len() - 2)?;
                let merged = s[i] * s[i + 1];
                s.splice(i..i + 2, [merged]);
                Ok(s)
            }
            _ => {
                let i = self.u.int_in_range(0..=s.len() - 1)?;
                let d = s[i];
                let f = (2..=d).find(|f| d % f == 0 && *f < d).unwrap_or(1);
                s.splice(i..=i, [f, d / f]);
                Ok(s)
            }
        }
    }

    /// A convolution with random geometry, maybe with a bias, maybe followed by a batch norm
    /// with constant parameters (the folding rule's target).
    fn conv(&mut self, x: ValueId, shape: &[usize]) -> Result<std::result::Result<(), Rejected>> {
        let ci = shape[1];
        // Half of them the common case — 3×3, stride 1, one group — which the Winograd
        // rewrite takes (when the case asks for it).
        let square3 = self.u.ratio(1, 2)? && shape[2] >= 3 && shape[3] >= 3;
        let groups: Vec<usize> = (1..=ci).filter(|g| ci.is_multiple_of(*g)).collect();
        let group = match square3 {
            true => 1,
            false => *self.u.choose(&groups)?,
        };
        let co = group * self.u.int_in_range(1..=3)?;
        let (kh, kw) = match square3 {
            true => (3, 3),
            false => (
                self.u.int_in_range(1..=3.min(shape[2]))?,
                self.u.int_in_range(1..=3.min(shape[3]))?,
            ),
        };
        let w = self.constant(&[co, ci / group, kh, kw], 0.1, 1.0, true);
        let mut attrs = Attrs::new();
        attrs.insert("kernel_shape".into(), ints(&[kh as i64, kw as i64]));
        attrs.insert("group".into(), Attr::Int(group as i64));
        let p = [
            self.u.int_in_range(0..=kh - 1)? as i64,
            self.u.int_in_range(0..=kw - 1)? as i64,
        ];
        attrs.insert("pads".into(), ints(&[p[0], p[1], p[0], p[1]]));
        let s = match square3 {
            true => 1,
            false => self.u.int_in_range(1..=2)? as i64,
        };
        attrs.insert("strides".into(), ints(&[s, s]));
        let mut inputs = vec![x, w];
        if self.u.ratio(1, 2)? {
            inputs.push(self.constant(&[co], 0.1, 1.0, true));
        }
        let y = match self.then(OpKind::Conv, &inputs, attrs) {
            Ok(y) => y,
            Err(e) => return Ok(Err(e)),
        };
        if self.u.ratio(1, 2)? {
            let scale = self.constant(&[co], 0.5, 1.5, false);
            let beta = self.constant(&[co], 0.1, 1.0, true);
            let mean = self.constant(&[co], 0.1, 1.0, true);
            let var = self.constant(&[co], 0.2, 3.0, false);
            return Ok(self.push(
                OpKind::BatchNormalization,
                &[y, scale, beta, mean, var],
                Attrs::new(),
            ));
        }
        Ok(Ok(()))
    }
}
