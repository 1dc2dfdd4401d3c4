//! The ops imported as short compositions (`onnx/composed.rs`) and the plain RNN
//! (`onnx/recurrent.rs`), against values computed here from their ONNX definitions — on
//! the reference interpreter and compiled.

mod common;

use common::{A, FLOAT, INT64, attr, floats, ints, one_node, one_node_outputs};
use tessera::onnx::import;
use tessera::{Compiler, Target};
use tessera_ir::{DType, Rng, Tensor};

/// The model's output on `inputs` from the interpreter and from compiled code, each
/// compared with `want`.
fn check(what: &str, model: &[u8], inputs: &[Tensor], want: &[f64]) {
    let g = import(model).unwrap_or_else(|e| panic!("{what}: {e}"));
    let interpreted = tessera_ir::interp::run_graph(&g, inputs).unwrap().remove(0);
    let compiled = Compiler::new(Target::host())
        .compile(&g)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .run(inputs)
        .unwrap()
        .remove(0);
    for (backend, got) in [("interpreter", interpreted), ("compiled", compiled)] {
        let got = got.to_f64_vec();
        assert_eq!(got.len(), want.len(), "{what} ({backend})");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what} ({backend}) at {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn composed_ops_follow_their_definitions() {
    let mut rng = Rng::new(4);
    let x = rng.tensor(DType::F32, vec![2, 3, 5, 7]);
    let v = x.to_f64_vec();
    let planes: Vec<&[f64]> = v.chunks(35).collect();
    let input = [("x", FLOAT, &[2usize, 3, 5, 7][..])];
    let max: Vec<f64> = planes
        .iter()
        .map(|p| p.iter().copied().fold(f64::MIN, f64::max))
        .collect();
    check(
        "GlobalMaxPool",
        &one_node("GlobalMaxPool", vec![], &input, vec![], 17),
        std::slice::from_ref(&x),
        &max,
    );
    let l2: Vec<f64> = planes
        .iter()
        .map(|p| p.iter().map(|a| a * a).sum::<f64>().sqrt())
        .collect();
    check(
        "GlobalLpPool",
        &one_node("GlobalLpPool", vec![], &input, vec![], 17),
        std::slice::from_ref(&x),
        &l2,
    );
    // LpNormalization along axis 1 of [3, 5, 4]: each (i, ·, k) column divided by its norm.
    let x = rng.tensor(DType::F32, vec![3, 5, 4]);
    let v = x.to_f64_vec();
    let mut want = vec![0.0; 60];
    for i in 0..3 {
        for k in 0..4 {
            let at = |j: usize| i * 20 + j * 4 + k;
            let norm = (0..5).map(|j| v[at(j)] * v[at(j)]).sum::<f64>().sqrt();
            (0..5).for_each(|j| want[at(j)] = v[at(j)] / norm);
        }
    }
    let model = one_node(
        "LpNormalization",
        vec![attr("axis", A::Int(1))],
        &[("x", FLOAT, &[3, 5, 4])],
        vec![],
        17,
    );
    check("LpNormalization", &model, &[x], &want);
    let x = rng.tensor(DType::F32, vec![40]);
    let v = x.to_f64_vec();
    type Unary = (&'static str, fn(f64) -> f64, i64);
    let unary: [Unary; 4] = [
        ("Mish", |a: f64| a * a.exp().ln_1p().tanh(), 18),
        ("Tan", f64::tan, 17),
        ("Sinh", f64::sinh, 17),
        ("Cosh", f64::cosh, 17),
    ];
    for (op, f, opset) in unary {
        let want: Vec<f64> = v.iter().map(|&a| f(a)).collect();
        let model = one_node(op, vec![], &[("x", FLOAT, &[40])], vec![], opset);
        check(op, &model, std::slice::from_ref(&x), &want);
    }
}

#[test]
fn one_hot_wraps_negative_indices_and_ignores_out_of_range_ones() {
    let idx = [0i64, 4, -1, -5, 5, 2, -6, 3];
    let indices = Tensor::from_i64(DType::I64, vec![2, 4], &idx);
    let (depth, off, on) = (5i64, -1.5, 2.0);
    // axis=1: out[i, d, j] = on where the wrapped index (i, j) is d.
    let mut want = vec![off; 2 * 5 * 4];
    for i in 0..2 {
        for j in 0..4 {
            let k = idx[i * 4 + j];
            let k = if k < 0 { k + depth } else { k };
            if (0..depth).contains(&k) {
                want[(i * 5 + k as usize) * 4 + j] = on;
            }
        }
    }
    let model = one_node(
        "OneHot",
        vec![attr("axis", A::Int(1))],
        &[("x", INT64, &[2, 4])],
        vec![
            ints("depth", &[], &[depth]),
            floats("values", &[2], &[off as f32, on as f32]),
        ],
        17,
    );
    check("OneHot", &model, &[indices], &want);
}

#[test]
fn a_plain_rnn_is_its_recurrence() {
    let (steps, batch, width, hidden) = (5usize, 2usize, 3usize, 4usize);
    let mut rng = Rng::new(6);
    let x = rng.tensor(DType::F32, vec![steps, batch, width]);
    let w = rng.tensor(DType::F32, vec![1, hidden, width]);
    let r = rng.tensor(DType::F32, vec![1, hidden, hidden]);
    let b = rng.tensor(DType::F32, vec![1, 2 * hidden]);
    let (xv, wv, rv, bv) = (
        x.to_f64_vec(),
        w.to_f64_vec(),
        r.to_f64_vec(),
        b.to_f64_vec(),
    );
    let mut h = vec![0.0; batch * hidden];
    let mut want = Vec::new();
    for t in 0..steps {
        let mut next = vec![0.0; batch * hidden];
        for n in 0..batch {
            for o in 0..hidden {
                let mut s = bv[o] + bv[hidden + o];
                s += (0..width)
                    .map(|i| wv[o * width + i] * xv[(t * batch + n) * width + i])
                    .sum::<f64>();
                s += (0..hidden)
                    .map(|i| rv[o * hidden + i] * h[n * hidden + i])
                    .sum::<f64>();
                next[n * hidden + o] = s.tanh();
            }
        }
        h = next;
        want.extend_from_slice(&h); // Y[t, 0, n, o]
    }
    let as_proto = |name: &str, t: &Tensor| {
        let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        let v: Vec<f32> = t.to_f64_vec().iter().map(|&a| a as f32).collect();
        floats(name, &dims, &v)
    };
    let model = one_node(
        "RNN",
        vec![attr("hidden_size", A::Int(hidden as i64))],
        &[("x", FLOAT, &[steps, batch, width])],
        vec![as_proto("w", &w), as_proto("r", &r), as_proto("b", &b)],
        14,
    );
    check("RNN", &model, &[x], &want);
}

#[test]
fn top_k_picks_in_order_and_the_first_of_equals() {
    // Rows of 9 with ties; k = 4 along the last axis, largest and smallest.
    let rows: [[f64; 9]; 2] = [
        [0.5, 2.0, -1.0, 2.0, 7.0, 0.5, 2.0, -3.0, 0.0],
        [1.0, 1.0, 1.0, 1.0, -2.0, 9.0, 1.0, 1.0, -2.0],
    ];
    let x = Tensor::from_f64(DType::F32, vec![2, 9], &rows.concat());
    for largest in [1, 0] {
        let (mut want_v, mut want_i) = (Vec::new(), Vec::new());
        for row in &rows {
            let mut order: Vec<usize> = (0..9).collect();
            // Stable: equal values keep their index order.
            order.sort_by(|&a, &b| match largest {
                1 => row[b].partial_cmp(&row[a]).unwrap(),
                _ => row[a].partial_cmp(&row[b]).unwrap(),
            });
            want_v.extend(order[..4].iter().map(|&i| row[i]));
            want_i.extend(order[..4].iter().map(|&i| i as f64));
        }
        let model = one_node_outputs(
            "TopK",
            vec![attr("largest", A::Int(largest))],
            &[("x", FLOAT, &[2, 9])],
            vec![ints("k", &[1], &[4])],
            17,
            &[("y", FLOAT), ("i", INT64)],
        );
        check(
            &format!("TopK largest={largest}"),
            &model,
            std::slice::from_ref(&x),
            &want_v,
        );
        let g = import(&model).unwrap();
        let got = tessera_ir::interp::run_graph(&g, std::slice::from_ref(&x)).unwrap();
        assert_eq!(
            got[1].to_f64_vec(),
            want_i,
            "TopK largest={largest}: indices"
        );
        let compiled = Compiler::new(Target::host()).compile(&g).unwrap();
        let got = compiled.run(std::slice::from_ref(&x)).unwrap();
        assert_eq!(
            got[1].to_f64_vec(),
            want_i,
            "TopK largest={largest}: compiled indices"
        );
    }
}
