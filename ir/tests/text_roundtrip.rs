//! Property: printing a graph and parsing it back gives the same graph (names, types,
//! initializer bytes, nodes, attributes of every kind, omitted inputs, outputs).

use proptest::prelude::*;
use tessera_ir::text::{parse_graph, print_graph};
use tessera_ir::{Attr, Attrs, DType, Dim, Graph, Node, OpKind, Tensor, ValueType};

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,6}",
        "[a-z/.:\\-]{1,6}\"?[ a-z\\\\]{0,3}", // names that need quoting and escaping
    ]
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![4 => (1usize..5).prop_map(Dim::Known), 1 => Just(Dim::Sym("N".into()))]
}

fn tensor() -> impl Strategy<Value = Tensor> {
    (
        dtype(),
        prop::collection::vec(1usize..4, 0..3),
        any::<u64>(),
    )
        .prop_map(|(d, s, seed)| tessera_ir::Rng::new(seed).tensor(d, s))
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6f64..1e6,
        Just(0.5),
        Just(1e-30),
        Just(f64::INFINITY),
        Just(-0.0)
    ]
}

fn attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        any::<i64>().prop_map(Attr::Int),
        finite().prop_map(Attr::Float),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(Attr::Ints),
        prop::collection::vec(finite(), 0..4).prop_map(Attr::Floats),
        name().prop_map(Attr::Str),
        tensor().prop_map(Attr::Tensor),
    ]
}

/// A random node: op index, attributes, input picks (None = omitted), name, typed output.
type NodeSpec = (usize, Vec<(String, Attr)>, Vec<Option<usize>>, String, bool);
/// A node as compared after the round trip: name, op, attributes, input and output names.
type NodeView = (String, OpKind, Attrs, Vec<Option<String>>, Vec<String>);

#[derive(Debug, Clone)]
struct Spec {
    inputs: Vec<(DType, Vec<Dim>)>,
    inits: Vec<Tensor>,
    nodes: Vec<NodeSpec>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec((dtype(), prop::collection::vec(dim(), 0..3)), 1..3),
        prop::collection::vec(tensor(), 0..3),
        prop::collection::vec(
            (
                0usize..OpKind::ALL.len(),
                prop::collection::vec(("[a-z_]{1,6}", attr()), 0..3),
                prop::collection::vec(prop::option::weighted(0.85, 0usize..100), 0..4),
                name(),
                any::<bool>(),
            ),
            0..6,
        ),
    )
        .prop_map(|(inputs, inits, nodes)| Spec {
            inputs,
            inits,
            nodes,
        })
}

fn build(s: &Spec) -> Graph {
    let mut g = Graph::new("g \"quoted\"");
    let mut vals = Vec::new();
    for (i, (d, shape)) in s.inputs.iter().enumerate() {
        vals.push(g.add_input(
            &format!("in{i}"),
            ValueType {
                dtype: *d,
                shape: shape.clone(),
            },
        ));
    }
    for (i, t) in s.inits.iter().enumerate() {
        vals.push(g.add_initializer(&format!("w.{i}"), t.clone()));
    }
    for (k, (op, attrs, ins, nname, typed)) in s.nodes.iter().enumerate() {
        let inputs = ins
            .iter()
            .map(|i| i.map(|i| vals[i % vals.len()]))
            .collect();
        let out = g.fresh_value(&format!("{nname}_{k}"));
        if *typed {
            g.set_ty(out, ValueType::new(DType::F32, &[k + 1]));
        }
        let attrs: Attrs = attrs.iter().cloned().collect();
        g.add_node(Node {
            name: format!("{nname}#{k}"),
            op: OpKind::ALL[*op],
            attrs,
            inputs,
            outputs: vec![out],
        });
        vals.push(out);
    }
    g.outputs.push(*vals.last().unwrap());
    g
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn print_parse_is_identity(s in spec()) {
        let g = build(&s);
        let text = print_graph(&g);
        let back = parse_graph(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(print_graph(&back), text.clone());
        // Structural equality, not only textual: nodes, attributes, initializer bytes, types.
        let nodes = |g: &Graph| -> Vec<NodeView> {
            g.topo_order().unwrap().into_iter().map(|ix| {
                let n = g.node(ix);
                (n.name.clone(), n.op, n.attrs.clone(), n.inputs.iter().map(|i| i.map(|v| g.name_of(v).to_string())).collect(), n.outputs.iter().map(|&v| g.name_of(v).to_string()).collect())
            }).collect()
        };
        prop_assert_eq!(nodes(&back), nodes(&g));
        prop_assert_eq!(back.initializers.values().collect::<Vec<_>>(), g.initializers.values().collect::<Vec<_>>());
        for (&a, &b) in g.inputs.iter().zip(&back.inputs) {
            prop_assert_eq!(g.ty(a), back.ty(b));
        }
        prop_assert_eq!(back.name.clone(), g.name.clone());
    }
}

#[test]
fn parse_errors_name_the_line() {
    let err = parse_graph(
        "graph \"g\" opset 21 {\n  input x: f32[2]\n  node \"n\" Frobnicate(x) -> (y)\n}\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("line 3") && err.to_string().contains("Frobnicate"),
        "{err}"
    );
    let err =
        parse_graph("graph \"g\" opset 21 {\n  node \"n\" Relu(nope) -> (y)\n}\n").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
