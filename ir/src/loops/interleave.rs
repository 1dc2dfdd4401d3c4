//! Interleaved store groups: the stores of a loop body over `var` that together write a
//! contiguous run — `f` stores at `base + f·var + r` for every `r` in `0..f` — so that a
//! vector loop can compute their `f` vectors, interleave them lane by lane and store the
//! `f·w` elements at once. A Winograd output tile's columns (`y[2·tx]`, `y[2·tx + 1]`) are
//! one; so is any loop that writes several values per step into neighbouring places.
//!
//! [`store_groups`] is the analysis the default schedule (which loops to vectorize) and the
//! code generator (how to emit them) share.

use super::{IExpr, Stmt};

/// The interleaving factors a vector store group may have (`vector.shuffle` interleaves two
/// vectors at a time: 2, and 2 twice).
pub const FACTORS: [i64; 2] = [2, 4];

/// The top-level stores of `body` (statement positions) partitioned into groups: a
/// contiguous store alone (`[pos]`), or an interleaved group ordered by residue — `None` if
/// a store is neither, or a group member's value reads a buffer the body stores to (the
/// group's stores are emitted together, at the first member's place). Statements other than
/// stores are not grouped (their own stores must be contiguous: checked by the caller).
pub fn store_groups(body: &[Stmt], var: &str) -> Option<Vec<Vec<usize>>> {
    let stores: Vec<(usize, &str, &IExpr)> = body
        .iter()
        .enumerate()
        .filter_map(|(p, s)| match s {
            Stmt::Store { buf, index, .. } => Some((p, buf.as_str(), index)),
            _ => None,
        })
        .collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut taken = vec![false; body.len()];
    for &(p, buf, index) in &stores {
        if taken[p] {
            continue;
        }
        match index.coeff(var) {
            Some(1) => {
                taken[p] = true;
                groups.push(vec![p]);
            }
            Some(f) if FACTORS.contains(&f) => {
                // The members: same buffer and factor, at constant offsets 0..f from the
                // residue-0 store; `p` may be any of them.
                let offset = |i: &IExpr| match i.clone().minus(index.clone()).simplify() {
                    IExpr::Const(c) => Some(c),
                    _ => None,
                };
                let mut by_offset: Vec<(i64, usize)> = stores
                    .iter()
                    .filter(|&&(q, b, i)| !taken[q] && b == buf && i.coeff(var) == Some(f))
                    .filter_map(|&(q, _, i)| offset(i).map(|o| (o, q)))
                    .collect();
                by_offset.sort();
                by_offset.dedup_by_key(|(o, _)| *o);
                let low = by_offset
                    .iter()
                    .map(|(o, _)| *o)
                    .find(|&o| (0..f).all(|r| by_offset.iter().any(|&(x, _)| x == o + r)))?;
                let members: Vec<usize> = (0..f)
                    .map(|r| {
                        by_offset
                            .iter()
                            .find(|&&(x, _)| x == low + r)
                            .map(|&(_, q)| q)
                    })
                    .collect::<Option<_>>()?;
                for &q in &members {
                    taken[q] = true;
                }
                groups.push(members);
            }
            _ => return None,
        }
    }
    // Emitted together, the members' values must not read what the body writes.
    let written: Vec<&str> = stores.iter().map(|&(_, b, _)| b).collect();
    for g in groups.iter().filter(|g| g.len() > 1) {
        for &q in g {
            let mut reads_written = false;
            if let Stmt::Store { value, .. } = &body[q] {
                value.visit_loads(&mut |b, _| reads_written |= written.contains(&b));
            }
            if reads_written {
                return None;
            }
        }
    }
    Some(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loops::VExpr;

    fn store(index: IExpr) -> Stmt {
        Stmt::Store {
            buf: "y".into(),
            index,
            value: VExpr::load("x", IExpr::var("i")),
        }
    }
    fn at(f: i64, r: i64) -> IExpr {
        IExpr::var("i").times(f).plus(IExpr::c(r + 10))
    }

    #[test]
    fn pairs_and_quads_group_by_residue() {
        let body = vec![store(at(2, 1)), store(at(2, 0)), store(IExpr::var("i"))];
        assert_eq!(store_groups(&body, "i"), Some(vec![vec![1, 0], vec![2]]));
        let quad: Vec<Stmt> = [3, 1, 0, 2].iter().map(|&r| store(at(4, r))).collect();
        assert_eq!(store_groups(&quad, "i"), Some(vec![vec![2, 1, 3, 0]]));
    }

    #[test]
    fn incomplete_or_unsafe_groups_are_refused() {
        // A residue missing.
        assert_eq!(store_groups(&[store(at(2, 0))], "i"), None);
        // Factor 3 is not interleaved.
        let triple: Vec<Stmt> = (0..3).map(|r| store(at(3, r))).collect();
        assert_eq!(store_groups(&triple, "i"), None);
        // A member reads the buffer the body writes.
        let reads_y = Stmt::Store {
            buf: "y".into(),
            index: at(2, 1),
            value: VExpr::load("y", IExpr::c(0)),
        };
        assert_eq!(store_groups(&[store(at(2, 0)), reads_y], "i"), None);
    }
}
