//! Copies replaced by views (`tessera_passes::views`). Concatenation in place: where each
//! input is a contiguous piece of the output, the producers write into it and the copy
//! kernel disappears — also nested, DenseNet-style — and where that would be wrong (a model
//! input or output, a repeated input, a batch of two) the copy stays. Reshapes as views:
//! the output reads the input's buffer, also as a concatenation's piece or container. Every
//! graph runs compiled with poisoned memory and on the loop interpreter against the graph
//! interpreter.

use std::collections::BTreeMap;
use tessera::{CompileConfig, Compiler, Target};
use tessera_ir::{Attr, DType, Graph, Node, OpKind, Rng, ValueId, ValueType};
use tessera_passes::views::ViewConfig;
use tessera_tests::*;

struct Builder {
    g: Graph,
    rng: Rng,
}

impl Builder {
    fn new(name: &str, input: &[usize]) -> (Builder, ValueId) {
        let mut g = Graph::new(name);
        let x = g.add_input("x", ValueType::new(DType::F32, input));
        let b = Builder {
            g,
            rng: Rng::new(11),
        };
        (b, x)
    }

    fn node(
        &mut self,
        name: &str,
        op: OpKind,
        attrs: tessera_ir::Attrs,
        inputs: &[ValueId],
    ) -> ValueId {
        let y = self.g.value(name);
        self.g.add_node(Node {
            name: name.into(),
            op,
            attrs,
            inputs: inputs.iter().map(|&v| Some(v)).collect(),
            outputs: vec![y],
        });
        y
    }

    /// A convolution with `out` channels and a `k`×`k` kernel (same padding), then ReLU.
    fn conv(&mut self, name: &str, x: ValueId, cin: usize, out: usize, k: usize) -> ValueId {
        let w = self.g.add_initializer(
            &format!("{name}_w"),
            self.rng.tensor(DType::F32, vec![out, cin, k, k]),
        );
        let p = (k / 2) as i64;
        let c = self.node(
            &format!("{name}_conv"),
            OpKind::Conv,
            attrs(&[("pads", Attr::Ints(vec![p; 4]))]),
            &[x, w],
        );
        self.node(name, OpKind::Relu, attrs(&[]), &[c])
    }

    fn concat(&mut self, name: &str, inputs: &[ValueId]) -> ValueId {
        self.node(
            name,
            OpKind::Concat,
            attrs(&[("axis", Attr::Int(1))]),
            inputs,
        )
    }

    fn finish(mut self, outputs: &[ValueId]) -> Graph {
        self.g.outputs.extend_from_slice(outputs);
        self.g
    }
}

fn stages(g: &Graph) -> tessera::Stages {
    let cfg = CompileConfig {
        threads: 2,
        ..Default::default()
    };
    Compiler::new(Target::host())
        .with_config(cfg)
        .stages(g, &BTreeMap::new())
        .expect("pipeline")
}

/// Checks `g` against the interpreters and returns the nodes whose copies were removed.
fn elided(g: &Graph) -> Vec<String> {
    check_graph(&g.name, g, &random_inputs(g, 3), REDUCTION);
    let mut e = stages(g).views.elided;
    e.sort();
    e
}

#[test]
fn inception_branches_write_into_the_concatenation() {
    let (mut b, x) = Builder::new("inception", &[1, 4, 7, 7]);
    let a = b.conv("a", x, 4, 3, 1);
    let c = b.conv("c", x, 4, 5, 3);
    let m = b.node(
        "pool",
        OpKind::MaxPool,
        attrs(&[
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1; 4])),
        ]),
        &[x],
    );
    let cat = b.concat("cat", &[a, c, m]);
    let y = b.conv("after", cat, 12, 2, 1);
    // A piece with a reader of its own besides the concatenation.
    let s = b.node("side", OpKind::Sigmoid, attrs(&[]), &[c]);
    let g = b.finish(&[y, s]);
    assert_eq!(elided(&g), ["cat"]);
    let st = stages(&g);
    assert!(st.kernels.iter().all(|k| k.op != OpKind::Concat));
}

#[test]
fn dense_blocks_nest_views() {
    // x0 = relu(conv(x)); c1 = [x0, f1(x0)]; c2 = [c1, f2(c1)]; y = conv(c2).
    let (mut b, x) = Builder::new("dense", &[1, 3, 6, 6]);
    let x0 = b.conv("stem", x, 3, 4, 3);
    let f1 = b.conv("f1", x0, 4, 2, 3);
    let c1 = b.concat("c1", &[x0, f1]);
    let f2 = b.conv("f2", c1, 6, 2, 3);
    let c2 = b.concat("c2", &[c1, f2]);
    let y = b.conv("head", c2, 8, 3, 1);
    let g = b.finish(&[y]);
    assert_eq!(elided(&g), ["c1", "c2"]);
    // Four pieces (x0 and f1 in c1; c1 and f2 in c2), all inside c2's buffer; x0 first.
    let views = stages(&g).views;
    assert_eq!(views.views.len(), 4);
    let roots: std::collections::BTreeSet<_> =
        views.views.keys().map(|&v| views.root(v).0).collect();
    assert_eq!(roots.len(), 1);
    let at_zero = views
        .views
        .keys()
        .filter(|&&v| views.root(v).1 == 0)
        .count();
    assert_eq!(at_zero, 2, "x0 at 0 in c1, and c1 at 0 in c2");
}

#[test]
fn copies_stay_where_a_view_would_be_wrong() {
    // A model input as a piece.
    let (mut b, x) = Builder::new("input_piece", &[1, 2, 5, 5]);
    let a = b.conv("a", x, 2, 3, 1);
    let cat = b.concat("cat", &[x, a]);
    let y = b.conv("after", cat, 5, 2, 1);
    assert!(elided(&b.finish(&[y])).is_empty());

    // The concatenation is a model output.
    let (mut b, x) = Builder::new("output_cat", &[1, 2, 5, 5]);
    let a = b.conv("a", x, 2, 3, 1);
    let c = b.conv("c", x, 2, 1, 3);
    let cat = b.concat("cat", &[a, c]);
    assert!(elided(&b.finish(&[cat])).is_empty());

    // A piece is a model output (it lives in the caller's tensor, not in the workspace).
    let (mut b, x) = Builder::new("output_piece", &[1, 2, 5, 5]);
    let a = b.conv("a", x, 2, 3, 1);
    let c = b.conv("c", x, 2, 1, 3);
    let cat = b.concat("cat", &[a, c]);
    let y = b.conv("after", cat, 4, 2, 1);
    assert!(elided(&b.finish(&[y, a])).is_empty());

    // One value twice.
    let (mut b, x) = Builder::new("twice", &[1, 2, 5, 5]);
    let a = b.conv("a", x, 2, 3, 1);
    let cat = b.concat("cat", &[a, a]);
    let y = b.conv("after", cat, 6, 2, 1);
    assert!(elided(&b.finish(&[y])).is_empty());

    // A batch of two: each input is two separate ranges of the output.
    let (mut b, x) = Builder::new("batch2", &[2, 2, 5, 5]);
    let a = b.conv("a", x, 2, 3, 1);
    let c = b.conv("c", x, 2, 1, 3);
    let cat = b.concat("cat", &[a, c]);
    let y = b.conv("after", cat, 4, 2, 1);
    assert!(elided(&b.finish(&[y])).is_empty());

    // A piece of two concatenations: a view into the first only; the second copies.
    let (mut b, x) = Builder::new("shared_piece", &[1, 2, 5, 5]);
    let a = b.conv("a", x, 2, 3, 1);
    let c = b.conv("c", x, 2, 1, 3);
    let d = b.conv("d", x, 2, 2, 1);
    let cat1 = b.concat("cat1", &[a, c]);
    let cat2 = b.concat("cat2", &[a, d]);
    let y1 = b.conv("after1", cat1, 4, 2, 1);
    let y2 = b.conv("after2", cat2, 5, 2, 1);
    assert_eq!(elided(&b.finish(&[y1, y2])), ["cat1"]);
}

#[test]
fn the_option_turns_it_off() {
    let (mut b, x) = Builder::new("off", &[1, 2, 5, 5]);
    let a = b.conv("a", x, 2, 3, 1);
    let c = b.conv("c", x, 2, 1, 3);
    let cat = b.concat("cat", &[a, c]);
    let y = b.conv("after", cat, 4, 2, 1);
    let g = b.finish(&[y]);
    let cfg = CompileConfig {
        views: ViewConfig {
            concat: false,
            reshape: true,
        },
        ..Default::default()
    };
    let st = Compiler::new(Target::host())
        .with_config(cfg)
        .stages(&g, &BTreeMap::new())
        .unwrap();
    assert!(st.views.elided.is_empty());
    assert!(st.kernels.iter().any(|k| k.op == OpKind::Concat));
}

#[test]
fn reshapes_read_their_input_in_place() {
    // conv → Reshape (a view) → Flatten of that (a view of a view) → Gemm; a Squeeze of a
    // concatenation (a view into a container); a reshape of a model input and one that is a
    // model output keep their copies.
    let (mut b, x) = Builder::new("reshapes", &[1, 2, 4, 4]);
    let a = b.conv("a", x, 2, 3, 3);
    let shape = b.g.add_initializer(
        "shape",
        tessera_ir::Tensor::from_i64(DType::I64, vec![3], &[1, 3, 16]),
    );
    let r = b.node("r", OpKind::Reshape, attrs(&[]), &[a, shape]);
    let f = b.node("f", OpKind::Flatten, attrs(&[("axis", Attr::Int(1))]), &[r]);
    let w =
        b.g.add_initializer("fc_w", Rng::new(5).tensor(DType::F32, vec![48, 5]));
    let y = b.node("fc", OpKind::MatMul, attrs(&[]), &[f, w]);
    let c = b.conv("c", x, 2, 2, 1);
    let cat = b.concat("cat", &[a, c]);
    let axes = b.g.add_initializer(
        "axes",
        tessera_ir::Tensor::from_i64(DType::I64, vec![1], &[0]),
    );
    let sq = b.node("sq", OpKind::Squeeze, attrs(&[]), &[cat, axes]);
    let z = b.node("z", OpKind::Sigmoid, attrs(&[]), &[sq]);
    let shape_in = b.g.add_initializer(
        "shape_in",
        tessera_ir::Tensor::from_i64(DType::I64, vec![2], &[2, 16]),
    );
    let xin = b.node("xin", OpKind::Reshape, attrs(&[]), &[x, shape_in]);
    let out = b.node("out", OpKind::Flatten, attrs(&[]), &[c]);
    let g = b.finish(&[y, z, xin, out]);
    // (The optimizer merges `r` and `f` into one reshape first.)
    let e = elided(&g);
    for node in ["sq", "cat"] {
        assert!(
            e.iter().any(|n| n == node),
            "{node} should be a view: {e:?}"
        );
    }
    let copies: Vec<String> = stages(&g)
        .kernels
        .iter()
        .filter(|k| matches!(k.op, OpKind::Reshape | OpKind::Flatten | OpKind::Squeeze))
        .map(|k| k.node.clone())
        .collect();
    assert_eq!(
        copies,
        ["xin", "out"],
        "only these keep their copies (elided: {e:?})"
    );
}
