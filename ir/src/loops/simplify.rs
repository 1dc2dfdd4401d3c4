//! Algebraic simplification of index expressions: a sum of integer multiples of "atoms"
//! (variables and the non-linear forms: `//`, `%`, `min`, `max`, data-dependent indices), with
//! `c·(e // c) + (e % c)` folded back into `e`.
//!
//! Why: lowering writes multi-dimensional coordinates as divisions and remainders of a flat
//! index and then re-linearises them — a 1×1 convolution reads `x[(ci·h + j // w)·w + j % w]`
//! where `j` is the flat pixel — and only the simplified `x[ci·h·w + j]` is visibly contiguous
//! in `j`, which is what the vectorizer and the GPU schedules look for.
//!
//! Exact for every integer value: floor division and remainder satisfy
//! `c·(e // c) + e % c = e` for `c > 0`, and the rest is commutativity and distribution of
//! constant multiples, which wrap-around arithmetic also respects.

use super::{IExpr, VExpr};
use std::collections::BTreeMap;

/// `constant + Σ coefficient · atom`, atoms keyed by their printed form (deterministic order).
#[derive(Clone, Default)]
struct Linear {
    constant: i64,
    terms: BTreeMap<String, (IExpr, i64)>,
}

impl Linear {
    fn atom(e: IExpr) -> Linear {
        let mut l = Linear::default();
        l.add_atom(e, 1);
        l
    }

    fn add_atom(&mut self, e: IExpr, k: i64) {
        if k == 0 {
            return;
        }
        let entry = self.terms.entry(e.to_string()).or_insert((e, 0));
        entry.1 = entry.1.wrapping_add(k);
    }

    fn add(mut self, o: Linear, k: i64) -> Linear {
        self.constant = self.constant.wrapping_add(o.constant.wrapping_mul(k));
        for (_, (e, c)) in o.terms {
            self.add_atom(e, c.wrapping_mul(k));
        }
        self
    }

    fn as_const(&self) -> Option<i64> {
        self.terms
            .values()
            .all(|(_, c)| *c == 0)
            .then_some(self.constant)
    }

    /// Folds every `k·c·(e // c) + k·(e % c)` into `k·e` until none is left.
    fn fold_div_mod(mut self) -> Linear {
        loop {
            let found = self.terms.values().find_map(|(atom, k)| match atom {
                IExpr::Mod(e, c) if *k != 0 => match c.as_ref() {
                    IExpr::Const(c) if *c > 0 => {
                        let div = IExpr::FloorDiv(e.clone(), Box::new(IExpr::Const(*c)));
                        let kd = self.terms.get(&div.to_string()).map_or(0, |(_, kd)| *kd);
                        (kd == k.wrapping_mul(*c)).then(|| (atom.clone(), div, e.clone(), *k))
                    }
                    _ => None,
                },
                _ => None,
            });
            let Some((rem, div, e, k)) = found else {
                return self;
            };
            self.terms.remove(&rem.to_string());
            self.terms.remove(&div.to_string());
            self = self.add(linear(&e), k);
        }
    }

    fn rebuild(self) -> IExpr {
        let mut out: Option<IExpr> = None;
        for (_, (atom, k)) in self.terms {
            if k == 0 {
                continue;
            }
            let term = atom.times(k);
            out = Some(match out {
                Some(acc) => acc.plus(term),
                None => term,
            });
        }
        match out {
            Some(e) => e.plus(IExpr::c(self.constant)),
            None => IExpr::c(self.constant),
        }
    }
}

/// The linear form of `e`, its non-linear parts simplified inside.
fn linear(e: &IExpr) -> Linear {
    match e {
        IExpr::Const(c) => Linear {
            constant: *c,
            ..Default::default()
        },
        IExpr::Var(_) => Linear::atom(e.clone()),
        IExpr::Add(a, b) => linear(a).add(linear(b), 1),
        IExpr::Sub(a, b) => linear(a).add(linear(b), -1),
        IExpr::Mul(a, b) => {
            let (la, lb) = (linear(a), linear(b));
            match (la.as_const(), lb.as_const()) {
                (Some(k), _) => Linear::default().add(lb, k),
                (_, Some(k)) => Linear::default().add(la, k),
                _ => Linear::atom(IExpr::Mul(
                    Box::new(la.fold_div_mod().rebuild()),
                    Box::new(lb.fold_div_mod().rebuild()),
                )),
            }
        }
        // Non-linear forms are atoms, their operands simplified inside.
        IExpr::FloorDiv(..)
        | IExpr::Mod(..)
        | IExpr::Min(..)
        | IExpr::Max(..)
        | IExpr::Xor(..)
        | IExpr::Of(_) => Linear::atom(e.map_children(&IExpr::simplify, &simplify_value)),
    }
}

impl IExpr {
    /// The same value, written as a sum of constant multiples of its non-linear parts, with
    /// `c·(e // c) + e % c` folded into `e` (see the module docs).
    pub fn simplify(&self) -> IExpr {
        linear(self).fold_div_mod().rebuild()
    }
}

/// Every index expression inside `e` simplified.
pub fn simplify_value(e: &VExpr) -> VExpr {
    e.map_children(&simplify_value, &|i| i.simplify())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn eval(e: &IExpr, env: &[i64; 3]) -> i64 {
        e.value(&|v| Some(env[(v.as_bytes()[0] - b'a') as usize]))
            .expect("generated expressions divide by non-zero constants")
    }

    /// A random expression over `a`, `b`, `c`, rich in the div/mod pairs lowering writes.
    fn random(rng: &mut Rng, depth: u32) -> IExpr {
        let leaf = |rng: &mut Rng| match rng.below(3) {
            0 => IExpr::c(rng.below(9) as i64 - 4),
            _ => IExpr::var(["a", "b", "c"][rng.below(3) as usize]),
        };
        if depth == 0 {
            return leaf(rng);
        }
        let sub = |rng: &mut Rng| Box::new(random(rng, depth - 1));
        let k = 1 + rng.below(7) as i64;
        match rng.below(9) {
            // a swizzle: the chunk XOR the row (operands kept non-negative)
            8 => {
                let e = IExpr::Mod(sub(rng), Box::new(IExpr::c(64)));
                e.clone().xor(e.floordiv(8).modulo(8).times(8))
            }
            0 => IExpr::Add(sub(rng), sub(rng)),
            1 => IExpr::Sub(sub(rng), sub(rng)),
            2 => IExpr::Mul(sub(rng), Box::new(IExpr::c(k))),
            3 => IExpr::Mul(sub(rng), sub(rng)),
            4 => IExpr::Min(sub(rng), sub(rng)),
            // c·(e // c) + e % c, maybe scaled, inside something else
            5 | 6 => {
                let e = random(rng, depth - 1);
                let s = rng.below(3) as i64 + 1;
                IExpr::Add(
                    Box::new(e.clone().floordiv(k).times(k * s)),
                    Box::new(e.modulo(k).times(s)),
                )
            }
            _ => IExpr::Mod(sub(rng), Box::new(IExpr::c(k))),
        }
    }

    #[test]
    fn simplification_keeps_the_value() {
        let mut rng = Rng::new(7);
        for _ in 0..3000 {
            let depth = 1 + rng.below(4) as u32;
            let e = random(&mut rng, depth);
            let s = e.simplify();
            for _ in 0..8 {
                let env = [0; 3].map(|_| rng.below(41) as i64 - 20);
                assert_eq!(eval(&e, &env), eval(&s, &env), "{e} vs {s} at {env:?}");
            }
        }
    }

    #[test]
    fn relinearised_coordinates_fold_to_the_flat_index() {
        // ((ci·h + j // w)·w + j % w) with h = 7, w = 5: a 1×1 convolution's input index.
        let (ci, j) = (IExpr::var("ci"), IExpr::var("j"));
        let e = ci
            .clone()
            .times(7)
            .plus(j.clone().floordiv(5))
            .times(5)
            .plus(j.clone().modulo(5));
        let s = e.simplify();
        assert_eq!(s.coeff("j"), Some(1), "{s}");
        assert_eq!(s.coeff("ci"), Some(35), "{s}");
        assert_eq!(s.to_string(), "(ci*35 + j)");
    }
}
