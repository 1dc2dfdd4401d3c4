//! Einsum, imported as transposes, reductions and batched products, against a brute-force
//! sum over every assignment of its letters — on the reference interpreter and compiled.

mod common;

use common::{A, FLOAT, attr, one_node};
use tessera::onnx::import;
use tessera::{Compiler, Target};
use tessera_ir::{DType, Rng, Tensor};

fn einsum_model(equation: &str, shapes: &[&[usize]]) -> Vec<u8> {
    let names: Vec<String> = (0..shapes.len()).map(|i| format!("x{i}")).collect();
    let inputs: Vec<(&str, i32, &[usize])> = names
        .iter()
        .zip(shapes)
        .map(|(n, s)| (n.as_str(), FLOAT, *s))
        .collect();
    one_node(
        "Einsum",
        vec![attr("equation", A::Str(equation))],
        &inputs,
        vec![],
        12,
    )
}

/// `explicit` (every letter named, `->` given) summed over every assignment of its letters.
fn brute_force(explicit: &str, inputs: &[Tensor]) -> Vec<f64> {
    let (lhs, out) = explicit.split_once("->").unwrap();
    let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
    let out: Vec<char> = out.chars().collect();
    let mut letters: Vec<char> = terms.iter().flatten().copied().collect();
    letters.sort();
    letters.dedup();
    let size = |c: char| {
        terms
            .iter()
            .zip(inputs)
            .find_map(|(t, x)| t.iter().position(|&l| l == c).map(|i| x.shape()[i]))
            .unwrap()
    };
    let sizes: Vec<usize> = letters.iter().map(|&c| size(c)).collect();
    let flat = |letters_of: &[char], at: &[usize]| {
        letters_of.iter().fold(0, |acc, c| {
            let i = letters.iter().position(|l| l == c).unwrap();
            acc * sizes[i] + at[i]
        })
    };
    let values: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec()).collect();
    let mut result = vec![0.0; out.iter().map(|&c| size(c)).product()];
    let mut at = vec![0; letters.len()];
    'all: loop {
        let p: f64 = terms
            .iter()
            .zip(&values)
            .map(|(t, v)| v[flat(t, &at)])
            .product();
        result[flat(&out, &at)] += p;
        for i in (0..at.len()).rev() {
            at[i] += 1;
            if at[i] < sizes[i] {
                continue 'all;
            }
            at[i] = 0;
        }
        break;
    }
    result
}

#[test]
fn einsum_matches_a_brute_force_sum() {
    // (equation, the same with every letter named and the output given, shapes)
    let cases: &[(&str, &str, &[&[usize]])] = &[
        (
            "bqhd,bkhd->bhqk",
            "bqhd,bkhd->bhqk",
            &[&[2, 5, 3, 4], &[2, 6, 3, 4]],
        ),
        (
            "bhqk,bkhd->bqhd",
            "bhqk,bkhd->bqhd",
            &[&[2, 3, 5, 6], &[2, 6, 3, 4]],
        ),
        ("ij,jk", "ij,jk->ik", &[&[3, 4], &[4, 5]]),
        ("ij->ji", "ij->ji", &[&[3, 4]]),
        ("ij->", "ij->", &[&[3, 4]]),
        ("i,j->ij", "i,j->ij", &[&[3], &[4]]),
        (
            "...ij,...jk->...ik",
            "abij,abjk->abik",
            &[&[2, 3, 4, 5], &[2, 3, 5, 6]],
        ),
        (
            "bij,bjk,bkl->bil",
            "bij,bjk,bkl->bil",
            &[&[2, 3, 4], &[2, 4, 5], &[2, 5, 6]],
        ),
        ("nchw,kc->nkhw", "nchw,kc->nkhw", &[&[1, 8, 5, 6], &[3, 8]]),
        ("ijk,ikl->jl", "ijk,ikl->jl", &[&[3, 4, 5], &[3, 5, 2]]),
        (
            "bn,anm,bm->ba",
            "bn,anm,bm->ba",
            &[&[2, 3], &[4, 3, 5], &[2, 5]],
        ),
    ];
    let mut rng = Rng::new(9);
    for (equation, explicit, shapes) in cases {
        let g =
            import(&einsum_model(equation, shapes)).unwrap_or_else(|e| panic!("{equation}: {e}"));
        let inputs: Vec<Tensor> = shapes
            .iter()
            .map(|s| rng.tensor(DType::F32, s.to_vec()))
            .collect();
        let want = brute_force(explicit, &inputs);
        let interpreted = tessera_ir::interp::run_graph(&g, &inputs)
            .unwrap()
            .remove(0);
        let compiled = Compiler::new(Target::host())
            .compile(&g)
            .unwrap_or_else(|e| panic!("{equation}: {e}"))
            .run(&inputs)
            .unwrap()
            .remove(0);
        for (what, got) in [("interpreter", interpreted), ("compiled", compiled)] {
            let got = got.to_f64_vec();
            assert_eq!(got.len(), want.len(), "{equation} ({what})");
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{equation} ({what}): {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn einsum_refuses_what_it_does_not_decompose() {
    for (equation, shapes, says) in [
        ("ii->i", &[&[3usize, 3][..]][..], "diagonal"),
        ("ij,jk->ik", &[&[3, 4][..], &[5, 6][..]][..], "sizes"),
        ("ij,jk->iz", &[&[3, 4][..], &[4, 6][..]][..], "no operand"),
        ("ijk->i", &[&[3, 4][..]][..], "rank"),
    ] {
        let msg = import(&einsum_model(equation, shapes))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("einsum_1") && msg.contains(says),
            "{equation}: {msg}"
        );
    }
}
