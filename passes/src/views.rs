//! Copies that need no kernel: concatenation in place, and reshapes as views.
//!
//! **Concatenation in place**: the producers of a `Concat`'s inputs write straight into their
//! pieces of its output, and the copy kernel disappears.
//!
//! When every dimension before the concatenation axis is 1 (batch-1 channel concatenation,
//! the Inception / SqueezeNet / DenseNet pattern), each input is one contiguous range of the
//! output. Such an input becomes a [`View`] — `offset` bytes into the output's buffer — and
//! the memory plan places it there instead of in a buffer of its own. A view's value is
//! written once, by its producer, and never changed (the output range it occupies belongs to
//! it alone), so every other reader of it sees the same bytes as before.
//!
//! **Reshapes as views**: `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze` and `Identity` keep
//! every element where it is, so their output is a view at offset 0 into their input's
//! buffer, and their copy kernel disappears too.
//!
//! **Architecture invariant:** every byte of a view is written once, by the producer of the
//! value that holds it, in a range nothing else writes. A concatenation's piece or a
//! reshape's input is a value a kernel computes on every run (it depends on a model input),
//! never a model input, output or weight; a value is a view into one container only; a
//! concatenation or reshape output that becomes a container or a view is no model output.

use crate::lower::Kernel;
use std::collections::{HashMap, HashSet};
use tessera_ir::loops::BufRole;
use tessera_ir::{AttrsExt, Graph, Node, OpKind, ValueId};

/// A value that lives inside another value's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// The value whose buffer holds this one.
    pub within: ValueId,
    /// Where, in bytes from the start of `within`.
    pub offset: usize,
    pub kind: ViewKind,
}

/// How a view's bytes come to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    /// A concatenation's piece: its producer writes it, and so part of the container.
    Piece,
    /// A reshape's output: the container's bytes, read under another shape.
    Reshape,
}

/// What [`elide_copies`] did: the views, and the nodes whose copy kernels it removed.
#[derive(Clone, Debug, Default)]
pub struct Views {
    pub views: HashMap<ValueId, View>,
    pub elided: Vec<String>,
}

impl Views {
    /// The value whose own buffer holds `v`, and `v`'s offset in it (following views of
    /// views); `v` itself at offset 0 if it is not a view.
    pub fn root(&self, mut v: ValueId) -> (ValueId, usize) {
        let mut offset = 0;
        while let Some(view) = self.views.get(&v) {
            offset += view.offset;
            v = view.within;
        }
        (v, offset)
    }
}

/// Which copy kernels [`elide_copies`] replaces by views.
#[derive(Clone, Copy, Debug)]
pub struct ViewConfig {
    /// Concatenations whose inputs are contiguous pieces of the output.
    pub concat: bool,
    /// Reshape, Flatten, Squeeze, Unsqueeze and Identity.
    pub reshape: bool,
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            concat: true,
            reshape: true,
        }
    }
}

/// Removes every copy kernel of `kernels` that `cfg` allows and whose values can be views
/// (see the module doc), and returns the views.
pub fn elide_copies(g: &Graph, kernels: &mut Vec<Kernel>, cfg: &ViewConfig) -> Views {
    let computed = computed_every_run(g, kernels);
    let boundary: HashSet<ValueId> = g
        .inputs
        .iter()
        .chain(&g.outputs)
        .chain(g.initializers.keys())
        .copied()
        .collect();
    let nodes: HashMap<&str, &Node> = g.nodes().map(|(_, n)| (n.name.as_str(), n)).collect();
    let mut out = Views::default();
    let mut keep = Vec::with_capacity(kernels.len());
    for k in kernels.drain(..) {
        let views = match (nodes.get(k.node.as_str()).copied(), k.op) {
            (Some(n), OpKind::Concat) if cfg.concat => {
                in_place_pieces(g, n, &computed, &boundary, &out)
            }
            (Some(n), op) if cfg.reshape && is_pure_copy(op) => {
                reshape_view(n, &computed, &boundary, &out)
            }
            _ => None,
        };
        match views {
            Some(pieces) => {
                out.elided.push(k.node.clone());
                out.views.extend(pieces);
            }
            None => keep.push(k),
        }
    }
    *kernels = keep;
    out
}

/// Ops whose output holds its input's elements in the same order.
fn is_pure_copy(op: OpKind) -> bool {
    use OpKind::*;
    matches!(op, Reshape | Flatten | Squeeze | Unsqueeze | Identity)
}

/// The view that replaces reshape-like `node`'s copy: its output at offset 0 in its input.
fn reshape_view(
    node: &Node,
    computed: &HashSet<ValueId>,
    boundary: &HashSet<ValueId>,
    done: &Views,
) -> Option<Vec<(ValueId, View)>> {
    let (Some(Some(input)), &[output]) = (node.inputs.first(), node.outputs.as_slice()) else {
        return None;
    };
    let placeable = computed.contains(input)
        && !boundary.contains(input)
        && !boundary.contains(&output)
        && !done.views.contains_key(&output);
    placeable.then(|| {
        vec![(
            output,
            View {
                within: *input,
                offset: 0,
                kind: ViewKind::Reshape,
            },
        )]
    })
}

/// The views that replace concatenation `node`'s copy, or None if it must stay a copy.
fn in_place_pieces(
    g: &Graph,
    node: &Node,
    computed: &HashSet<ValueId>,
    boundary: &HashSet<ValueId>,
    done: &Views,
) -> Option<Vec<(ValueId, View)>> {
    let (&[output], inputs) = (node.outputs.as_slice(), &node.inputs) else {
        return None;
    };
    let shape = g.ty_of(output).ok()?.static_shape()?;
    let axis = tessera_ir::infer::norm_axis(node.attrs.int("axis", 0).ok()?, shape.len()).ok()?;
    if shape[..axis].iter().product::<usize>() != 1 || boundary.contains(&output) {
        return None;
    }
    let mut seen = HashSet::new();
    let mut pieces = Vec::new();
    let mut offset = 0;
    for v in inputs {
        let v = (*v)?;
        let ty = g.ty_of(v).ok()?;
        let bytes = ty.static_shape()?.iter().product::<usize>() * ty.dtype.size();
        let placeable = computed.contains(&v)
            && !boundary.contains(&v)
            && !done.views.contains_key(&v)
            && seen.insert(v);
        if !placeable {
            return None;
        }
        pieces.push((
            v,
            View {
                within: output,
                offset,
                kind: ViewKind::Piece,
            },
        ));
        offset += match tessera_ir::planted::active(tessera_ir::planted::Bug::ConcatViewOffset) {
            true => bytes / ty.dtype.size(),
            false => bytes,
        };
    }
    Some(pieces)
}

/// Values some kernel computes on every run: everything downstream of a model input (the
/// rest is computed once, from weights alone).
fn computed_every_run(g: &Graph, kernels: &[Kernel]) -> HashSet<ValueId> {
    let mut dynamic: HashSet<ValueId> = g.inputs.iter().copied().collect();
    let mut computed = HashSet::new();
    for k in kernels {
        let roles: Vec<BufRole> = k.program.params().map(|b| b.role).collect();
        let reads_input = k
            .args
            .iter()
            .zip(&roles)
            .any(|(v, r)| *r == BufRole::Input && dynamic.contains(v));
        if reads_input {
            for (v, r) in k.args.iter().zip(&roles) {
                if *r == BufRole::Output {
                    dynamic.insert(*v);
                    computed.insert(*v);
                }
            }
        }
    }
    computed
}
