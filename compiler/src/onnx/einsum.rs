//! Einsum imported as transposes, reshapes, reductions and batched matrix products.
//!
//! The operands contract pairwise, left to right. For a pair, a letter only one operand has
//! and nothing later needs is summed out of it first (ReduceSum); the rest are batch letters
//! (both operands, still needed), contracted letters (both, not needed) and each side's kept
//! letters. Each operand is transposed to `[batch, kept, contracted]` (`[batch, contracted,
//! kept]` on the right), reshaped to 3-D, multiplied by MatMul and reshaped back; a last
//! ReduceSum and Transpose give the output's letters in its order. Transposes that change
//! nothing and reshapes are views the optimizer removes. An ellipsis stands for the leading
//! dimensions its operands have beyond their letters (aligned from the right, as NumPy does);
//! a letter repeated within one operand (a diagonal) or sizes that differ for one letter are
//! typed errors.

use super::decompose::Decomposer;
use std::collections::BTreeMap;
use tessera_ir::{Attr, OpKind, ValueId};

/// One operand (or intermediate): its value and its dimensions' letters, in order.
struct Term {
    value: ValueId,
    letters: Vec<char>,
}

/// Writes `out = Einsum(equation, inputs)`.
pub(super) fn einsum(
    d: &mut Decomposer,
    equation: &str,
    inputs: &[ValueId],
    out: ValueId,
) -> Result<(), String> {
    let types = inputs
        .iter()
        .map(|&v| d.ty(v))
        .collect::<Result<Vec<_>, _>>()?;
    let ranks: Vec<usize> = types.iter().map(|t| t.rank()).collect();
    let (terms, output) = parse(equation, &ranks)?;
    let all_terms = terms.clone();
    let mut sizes: BTreeMap<char, usize> = BTreeMap::new();
    let mut operands = Vec::with_capacity(inputs.len());
    for ((&v, ty), letters) in inputs.iter().zip(&types).zip(terms) {
        for (i, &c) in letters.iter().enumerate() {
            if letters[..i].contains(&c) {
                return Err(format!(
                    "`{equation}`: a letter repeated within one operand (a diagonal) is not supported"
                ));
            }
            let n = ty.shape[i]
                .known()
                .ok_or_else(|| format!("`{equation}` needs static input shapes"))?;
            if *sizes.entry(c).or_insert(n) != n {
                return Err(format!(
                    "`{equation}`: letter `{}` has sizes {} and {n}",
                    shown(c),
                    sizes[&c]
                ));
            }
        }
        operands.push(Term { value: v, letters });
    }
    let mut acc = operands.remove(0);
    for (i, next) in operands.into_iter().enumerate() {
        // Letters the output and the operands after this pair still need.
        let mut need = output.clone();
        need.extend(all_terms[i + 2..].iter().flatten().copied());
        acc = contract(d, acc, next, &need, &sizes)?;
    }
    let acc = sum_out(d, acc, &output);
    let perm: Vec<i64> = output
        .iter()
        .map(|c| {
            acc.letters
                .iter()
                .position(|l| l == c)
                .expect("kept letter") as i64
        })
        .collect();
    d.op_to(
        OpKind::Transpose,
        &[Some(acc.value)],
        &[("perm", Attr::Ints(perm))],
        out,
    );
    Ok(())
}

/// `a` and `b` contracted, keeping the letters in `need`.
fn contract(
    d: &mut Decomposer,
    a: Term,
    b: Term,
    need: &[char],
    sizes: &BTreeMap<char, usize>,
) -> Result<Term, String> {
    // A letter one side has alone and nothing needs is summed out first.
    let a_keep: Vec<char> = a
        .letters
        .iter()
        .copied()
        .filter(|c| need.contains(c) || b.letters.contains(c))
        .collect();
    let b_keep: Vec<char> = b
        .letters
        .iter()
        .copied()
        .filter(|c| need.contains(c) || a.letters.contains(c))
        .collect();
    let (a, b) = (sum_out(d, a, &a_keep), sum_out(d, b, &b_keep));
    let shared = |c: &char| b.letters.contains(c);
    let batch: Vec<char> = a
        .letters
        .iter()
        .copied()
        .filter(|c| shared(c) && need.contains(c))
        .collect();
    let summed: Vec<char> = a
        .letters
        .iter()
        .copied()
        .filter(|c| shared(c) && !need.contains(c))
        .collect();
    let left: Vec<char> = a.letters.iter().copied().filter(|c| !shared(c)).collect();
    let right: Vec<char> = b
        .letters
        .iter()
        .copied()
        .filter(|c| !a.letters.contains(c))
        .collect();
    let size = |cs: &[char]| cs.iter().map(|c| sizes[c] as i64).product::<i64>();
    let a3 = arrange(
        d,
        &a,
        &[&batch, &left, &summed],
        &[size(&batch), size(&left), size(&summed)],
    );
    let b3 = arrange(
        d,
        &b,
        &[&batch, &summed, &right],
        &[size(&batch), size(&summed), size(&right)],
    );
    let product = d.op(OpKind::MatMul, &[a3, b3], &[]);
    let letters: Vec<char> = [batch, left, right].concat();
    let dims: Vec<i64> = letters.iter().map(|c| sizes[c] as i64).collect();
    let shape = d.ints("shape", &dims);
    Ok(Term {
        value: d.op(OpKind::Reshape, &[product, shape], &[]),
        letters,
    })
}

/// `t` transposed to the letter groups `groups` (in order) and reshaped to their sizes.
fn arrange(d: &mut Decomposer, t: &Term, groups: &[&Vec<char>], dims: &[i64]) -> ValueId {
    let perm: Vec<i64> = groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|c| {
            t.letters
                .iter()
                .position(|l| l == c)
                .expect("letter of the term") as i64
        })
        .collect();
    let moved = d.op(OpKind::Transpose, &[t.value], &[("perm", Attr::Ints(perm))]);
    let shape = d.ints("shape", dims);
    d.op(OpKind::Reshape, &[moved, shape], &[])
}

/// `t` with every letter not in `keep` summed out.
fn sum_out(d: &mut Decomposer, t: Term, keep: &[char]) -> Term {
    let axes: Vec<i64> = (0..t.letters.len())
        .filter(|&i| !keep.contains(&t.letters[i]))
        .map(|i| i as i64)
        .collect();
    if axes.is_empty() {
        return t;
    }
    let axes_v = d.ints("axes", &axes);
    let value = d.op(
        OpKind::ReduceSum,
        &[t.value, axes_v],
        &[("keepdims", Attr::Int(0))],
    );
    let letters = t.letters.into_iter().filter(|c| keep.contains(c)).collect();
    Term { value, letters }
}

/// The first letter standing for an ellipsis dimension (outside any equation's alphabet).
const ELLIPSIS: u32 = 0x100;

/// How a letter reads in an error message.
fn shown(c: char) -> String {
    if (c as u32) >= ELLIPSIS {
        format!("...[{}]", c as u32 - ELLIPSIS)
    } else {
        c.to_string()
    }
}

/// The operands' letters and the output's, with ellipses expanded (`ranks`: each operand's
/// rank). Without `->` the output is the ellipsis' dimensions, then the letters used once,
/// in alphabetical order.
fn parse(equation: &str, ranks: &[usize]) -> Result<(Vec<Vec<char>>, Vec<char>), String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let specs: Vec<&str> = lhs.split(',').collect();
    if specs.len() != ranks.len() {
        return Err(format!(
            "`{equation}` names {} operands, the node has {}",
            specs.len(),
            ranks.len()
        ));
    }
    let letters_of = |s: &str| -> Result<Vec<char>, String> {
        let s = s.replace("...", "\u{1}");
        s.chars()
            .map(|c| match c {
                '\u{1}' => Ok(c),
                c if c.is_ascii_alphabetic() => Ok(c),
                c => Err(format!("`{equation}`: `{c}` is not a letter")),
            })
            .collect()
    };
    // Each operand's ellipsis covers its dimensions beyond its letters, aligned right.
    let mut most = 0;
    let mut parsed = Vec::new();
    for (s, &rank) in specs.iter().zip(ranks) {
        let l = letters_of(s)?;
        let named = l.iter().filter(|&&c| c != '\u{1}').count();
        let dots = l.iter().filter(|&&c| c == '\u{1}').count();
        if dots > 1 || (dots == 0 && named != rank) || named > rank {
            return Err(format!(
                "`{equation}`: operand `{s}` does not fit its rank {rank}"
            ));
        }
        let extra = rank - named;
        most = most.max(extra);
        parsed.push((l, extra));
    }
    let ellipsis = |extra: usize| -> Vec<char> {
        (most - extra..most)
            .map(|i| char::from_u32(ELLIPSIS + i as u32).expect("valid char"))
            .collect()
    };
    let expand = |l: &[char], extra: usize| -> Vec<char> {
        l.iter()
            .flat_map(|&c| match c {
                '\u{1}' => ellipsis(extra),
                c => vec![c],
            })
            .collect()
    };
    let terms: Vec<Vec<char>> = parsed.iter().map(|(l, e)| expand(l, *e)).collect();
    let output = match rhs {
        Some(r) => {
            let l = letters_of(r)?;
            let out = expand(&l, most);
            for c in &out {
                if !terms.iter().any(|t| t.contains(c)) {
                    return Err(format!(
                        "`{equation}`: output letter `{}` is on no operand",
                        shown(*c)
                    ));
                }
            }
            out
        }
        None => {
            let mut once: Vec<char> = terms
                .iter()
                .flatten()
                .copied()
                .filter(|&c| (c as u32) < ELLIPSIS)
                .filter(|c| terms.iter().flatten().filter(|x| *x == c).count() == 1)
                .collect();
            once.sort();
            [ellipsis(most), once].concat()
        }
    };
    Ok((terms, output))
}
