//! LSTM, GRU and RNN imported as their recurrences unrolled over a static sequence, in existing
//! graph-IR ops (the ONNX spec's equations, default activations).
//!
//! The input projection of every time step is one product, `X·Wᵀ + bias` over all `T·B`
//! rows; each step then adds `h·Rᵀ`, slices the gates and runs the cell's elementwise update,
//! which fusion turns into a few kernels per step. The sequence length and batch must be
//! static (they decide how many steps exist); a layout, clip, activation list, forget-gate
//! coupling or per-sequence lengths other than the defaults is a typed error naming the
//! attribute.
//!
//! Like the other decompositions (`decompose.rs`), the reference interpreter runs the
//! unrolled graph; the model tests check the unrolling against onnxruntime.

use super::decompose::Decomposer;
use tessera_ir::{Attr, Attrs, AttrsExt, DType, OpKind, Tensor, ValueId};

/// A recurrent cell: LSTM (gates i, o, f, c; cell state), GRU (gates z, r, h) or the plain
/// RNN (`h = tanh(x·Wᵀ + h·Rᵀ + b)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cell {
    Lstm,
    Gru,
    Rnn,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn => 1,
        }
    }

    /// The `activations` attribute's default, one direction.
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Lstm => &["sigmoid", "tanh", "tanh"],
            Cell::Gru => &["sigmoid", "tanh"],
            Cell::Rnn => &["tanh"],
        }
    }
}

/// The unrolled LSTM or GRU writing `outputs` (`Y`, `Y_h`, and for an LSTM `Y_c`; each may
/// be absent).
pub(super) fn recurrent(
    d: &mut Decomposer,
    cell: Cell,
    inputs: &[Option<ValueId>],
    attrs: &Attrs,
    outputs: &[Option<ValueId>],
) -> Result<(), String> {
    let input = |i: usize| inputs.get(i).copied().flatten();
    let (x, w, r) = (
        input(0).ok_or("needs X")?,
        input(1).ok_or("needs W")?,
        input(2).ok_or("needs R")?,
    );
    check_defaults(cell, attrs)?;
    let xt = d.ty(x)?;
    let dims: Vec<usize> = xt.shape.iter().filter_map(|s| s.known()).collect();
    let [steps, batch, width] = dims[..] else {
        return Err(format!(
            "X must be [seq_length, batch_size, input_size] with static sizes, is {xt}"
        ));
    };
    if steps == 0 || steps > MAX_STEPS {
        return Err(format!(
            "a sequence of {steps} steps is outside 1..={MAX_STEPS} (each step is unrolled)"
        ));
    }
    if let Some(lens) = input(4) {
        let full = |t: &Tensor| t.to_i64_vec().iter().all(|&l| l == steps as i64);
        if !d.im.g.initializers.get(&lens).is_some_and(full) {
            return Err(
                "sequence_lens must be a constant equal to the sequence length for every batch entry"
                    .into(),
            );
        }
    }
    let dt = xt.dtype;
    let rt = d.ty(r)?;
    let hidden = match (
        attrs.int("hidden_size", 0)?,
        rt.shape.last().and_then(|s| s.known()),
    ) {
        (h, Some(rh)) if h <= 0 || h as usize == rh => rh,
        (h, rh) => {
            return Err(format!(
                "hidden_size {h} does not match R's last dim {rh:?}"
            ));
        }
    };
    let directions: &[bool] = match attrs.string("direction", "forward")?.as_str() {
        "forward" => &[false],
        "reverse" => &[true],
        "bidirectional" => &[false, true],
        other => {
            return Err(format!(
                "direction `{other}` is not forward, reverse or bidirectional"
            ));
        }
    };
    let linear_before_reset = attrs.int("linear_before_reset", 0)? != 0;
    let gh = (cell.gates() * hidden) as i64;
    let h = hidden as i64;
    let flat_shape = d.ints("rows", &[(steps * batch) as i64, width as i64]);
    let rows = d.op(OpKind::Reshape, &[x, flat_shape], &[]);
    let mut ys = Vec::new();
    let mut last_h = Vec::new();
    let mut last_c = Vec::new();
    for (di, &reverse) in directions.iter().enumerate() {
        let of_direction = |d: &mut Decomposer, v: ValueId| {
            let k = d.constant(
                "direction",
                Tensor::from_i64(DType::I64, vec![], &[di as i64]),
            );
            d.op(OpKind::Gather, &[v, k], &[("axis", Attr::Int(0))])
        };
        let transposed = |d: &mut Decomposer, v: ValueId| {
            d.op(OpKind::Transpose, &[v], &[("perm", Attr::Ints(vec![1, 0]))])
        };
        let wd = of_direction(d, w);
        let wt = transposed(d, wd); // [input, gates·hidden]
        let rd = of_direction(d, r);
        let rt = transposed(d, rd); // [hidden, gates·hidden]
        let mut projected = d.op(OpKind::MatMul, &[rows, wt], &[]);
        // Biases: LSTM adds Wb + Rb to every step's projection; GRU adds Wb and the z, r
        // parts of Rb there, its h part inside the reset gate's term.
        let mut reset_bias = None;
        if let Some(b) = input(3) {
            let bd = of_direction(d, b);
            let wb = slice(d, bd, 0, 0, gh);
            let rb = slice(d, bd, 0, gh, 2 * gh);
            let bias = match cell {
                Cell::Lstm | Cell::Rnn => d.op(OpKind::Add, &[wb, rb], &[]),
                Cell::Gru => {
                    let rb_zr = slice(d, rb, 0, 0, 2 * h);
                    let zeros = d.constant(
                        "zeros",
                        Tensor::from_f64(dt, vec![hidden], &vec![0.0; hidden]),
                    );
                    let rb_zr0 = d.op(OpKind::Concat, &[rb_zr, zeros], &[("axis", Attr::Int(0))]);
                    reset_bias = Some(slice(d, rb, 0, 2 * h, 3 * h));
                    d.op(OpKind::Add, &[wb, rb_zr0], &[])
                }
            };
            projected = d.op(OpKind::Add, &[projected, bias], &[]);
        }
        let steps_shape = d.ints("steps", &[steps as i64, batch as i64, gh]);
        let projected = d.op(OpKind::Reshape, &[projected, steps_shape], &[]);
        let zeros = |d: &mut Decomposer| {
            d.constant(
                "state0",
                Tensor::from_f64(dt, vec![batch, hidden], &vec![0.0; batch * hidden]),
            )
        };
        let mut hs = match input(5) {
            Some(h0) => of_direction(d, h0),
            None => zeros(d),
        };
        let mut cs = match (cell, input(6)) {
            (Cell::Lstm, Some(c0)) => Some(of_direction(d, c0)),
            (Cell::Lstm, None) => Some(zeros(d)),
            (Cell::Gru | Cell::Rnn, _) => None,
        };
        // GRU: `Rᵀ`'s z, r columns and its h columns, once for every step.
        let (rt_zr, rt_h) = match cell {
            Cell::Gru => (slice(d, rt, 1, 0, 2 * h), slice(d, rt, 1, 2 * h, 3 * h)),
            _ => (rt, rt),
        };
        let peep = match (cell, input(7)) {
            (Cell::Lstm, Some(p)) => {
                let pd = of_direction(d, p);
                Some([0, 1, 2].map(|k| slice(d, pd, 0, k * h, (k + 1) * h)))
            }
            _ => None,
        };
        let mut per_step = vec![None; steps];
        for s in 0..steps {
            let t = if reverse { steps - 1 - s } else { s };
            let tk = d.constant("t", Tensor::from_i64(DType::I64, vec![], &[t as i64]));
            let xw = d.op(OpKind::Gather, &[projected, tk], &[("axis", Attr::Int(0))]);
            let (h_new, c_new) = match cell {
                Cell::Lstm => {
                    let c_prev = cs.expect("an LSTM has a cell state");
                    let hr = d.op(OpKind::MatMul, &[hs, rt], &[]);
                    let pre = d.op(OpKind::Add, &[xw, hr], &[]);
                    let [i, o, f, g] = [0, 1, 2, 3].map(|k| slice(d, pre, 1, k * h, (k + 1) * h));
                    let peeped =
                        |d: &mut Decomposer, gate: ValueId, k: usize, c: ValueId| match peep {
                            Some(p) => {
                                let pc = d.op(OpKind::Mul, &[p[k], c], &[]);
                                d.op(OpKind::Add, &[gate, pc], &[])
                            }
                            None => gate,
                        };
                    let i = peeped(d, i, 0, c_prev);
                    let f = peeped(d, f, 2, c_prev);
                    let (i, f) = (
                        d.op(OpKind::Sigmoid, &[i], &[]),
                        d.op(OpKind::Sigmoid, &[f], &[]),
                    );
                    let g = d.op(OpKind::Tanh, &[g], &[]);
                    let kept = d.op(OpKind::Mul, &[f, c_prev], &[]);
                    let added = d.op(OpKind::Mul, &[i, g], &[]);
                    let c = d.op(OpKind::Add, &[kept, added], &[]);
                    let o = peeped(d, o, 1, c);
                    let o = d.op(OpKind::Sigmoid, &[o], &[]);
                    let tc = d.op(OpKind::Tanh, &[c], &[]);
                    (d.op(OpKind::Mul, &[o, tc], &[]), Some(c))
                }
                Cell::Rnn => {
                    let hr = d.op(OpKind::MatMul, &[hs, rt], &[]);
                    let pre = d.op(OpKind::Add, &[xw, hr], &[]);
                    (d.op(OpKind::Tanh, &[pre], &[]), None)
                }
                Cell::Gru => {
                    let hr = d.op(OpKind::MatMul, &[hs, rt_zr], &[]);
                    let xw_zr = slice(d, xw, 1, 0, 2 * h);
                    let zr = d.op(OpKind::Add, &[xw_zr, hr], &[]);
                    let zr = d.op(OpKind::Sigmoid, &[zr], &[]);
                    let (z, rg) = (slice(d, zr, 1, 0, h), slice(d, zr, 1, h, 2 * h));
                    let with_bias = |d: &mut Decomposer, v: ValueId| match reset_bias {
                        Some(b) => d.op(OpKind::Add, &[v, b], &[]),
                        None => v,
                    };
                    let recurrent_h = if linear_before_reset {
                        let hh = d.op(OpKind::MatMul, &[hs, rt_h], &[]);
                        let hh = with_bias(d, hh);
                        d.op(OpKind::Mul, &[rg, hh], &[])
                    } else {
                        let reset = d.op(OpKind::Mul, &[rg, hs], &[]);
                        let hh = d.op(OpKind::MatMul, &[reset, rt_h], &[]);
                        with_bias(d, hh)
                    };
                    let xw_h = slice(d, xw, 1, 2 * h, 3 * h);
                    let cand = d.op(OpKind::Add, &[xw_h, recurrent_h], &[]);
                    let cand = d.op(OpKind::Tanh, &[cand], &[]);
                    // (1 − z)·cand + z·h = cand + z·(h − cand)
                    let diff = d.op(OpKind::Sub, &[hs, cand], &[]);
                    let zd = d.op(OpKind::Mul, &[z, diff], &[]);
                    (d.op(OpKind::Add, &[cand, zd], &[]), None)
                }
            };
            hs = h_new;
            cs = c_new;
            per_step[t] = Some(h_new);
        }
        if outputs.first().copied().flatten().is_some() {
            let steps: Vec<ValueId> = per_step
                .into_iter()
                .map(|v| v.expect("every step ran"))
                .collect();
            let stacked = stack(d, &steps, 0, None);
            ys.push(stacked);
        }
        last_h.push(hs);
        last_c.extend(cs);
    }
    // Y [T, D, B, H]; Y_h and Y_c [D, B, H].
    if let Some(y) = outputs.first().copied().flatten() {
        stack(d, &ys, 1, Some(y));
    }
    if let Some(yh) = outputs.get(1).copied().flatten() {
        stack(d, &last_h, 0, Some(yh));
    }
    if let Some(yc) = outputs.get(2).copied().flatten() {
        if cell != Cell::Lstm {
            return Err("only an LSTM has a third output".into());
        }
        stack(d, &last_c, 0, Some(yc));
    }
    Ok(())
}

/// The most time steps unrolled (each is a handful of kernels).
const MAX_STEPS: usize = 1024;

/// `v[.., start..end]` along `axis`.
fn slice(d: &mut Decomposer, v: ValueId, axis: i64, start: i64, end: i64) -> ValueId {
    let (s, e, a) = (
        d.ints("start", &[start]),
        d.ints("end", &[end]),
        d.ints("axis", &[axis]),
    );
    d.op(OpKind::Slice, &[v, s, e, a], &[])
}

/// `parts` stacked along a new `axis`, written to `out` (a new value if `None`).
fn stack(d: &mut Decomposer, parts: &[ValueId], axis: i64, out: Option<ValueId>) -> ValueId {
    let ax = d.ints("stack_axis", &[axis]);
    let lifted: Vec<ValueId> = parts
        .iter()
        .map(|&p| d.op(OpKind::Unsqueeze, &[p, ax], &[]))
        .collect();
    let concat = [("axis", Attr::Int(axis))];
    match out {
        Some(out) => {
            let lifted: Vec<Option<ValueId>> = lifted.into_iter().map(Some).collect();
            d.op_to(OpKind::Concat, &lifted, &concat, out);
            out
        }
        None => d.op(OpKind::Concat, &lifted, &concat),
    }
}

/// Refuses what the unrolling does not implement: another layout, clipping, non-default
/// activations, LSTM's coupled input and forget gates.
fn check_defaults(cell: Cell, attrs: &Attrs) -> Result<(), String> {
    if attrs.int("layout", 0)? != 0 {
        return Err("layout=1 (batch first) is not supported".into());
    }
    if attrs.contains_key("clip") {
        return Err("attribute `clip` is not supported".into());
    }
    if attrs.contains_key("activation_alpha") || attrs.contains_key("activation_beta") {
        return Err("attributes `activation_alpha`/`activation_beta` are not supported".into());
    }
    if cell == Cell::Lstm && attrs.int("input_forget", 0)? != 0 {
        return Err("input_forget=1 is not supported".into());
    }
    if let Some(Attr::Str(list)) = attrs.get("activations") {
        let given: Vec<String> = list.split(',').map(|s| s.trim().to_lowercase()).collect();
        let default = cell.default_activations();
        if given.is_empty()
            || !given.len().is_multiple_of(default.len())
            || given.chunks(default.len()).any(|c| c != default)
        {
            return Err(format!(
                "activations [{list}] are not supported (only the defaults {default:?})"
            ));
        }
    }
    Ok(())
}
