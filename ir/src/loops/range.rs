//! Static ranges of index expressions: the least and greatest value an index can take, given
//! the extents of the loops and reduction axes that bind its variables.
//!
//! Code generation asks it which loads can never leave their buffer. Those are evaluated
//! eagerly and unmasked; a load it cannot prove in bounds, in a branch of a `select`, is
//! evaluated only where its condition holds (a branch in scalar code, a masked load in vector
//! code) — so lowering can guard a padded window's reads with a condition instead of
//! clamping their addresses.

use super::{IExpr, LoopProgram, Stmt, VExpr};
use std::collections::HashMap;

/// Every loop variable and reduction axis of a program with its extent (the verifier keeps
/// the names unique across a program).
pub fn extents(prog: &LoopProgram) -> HashMap<String, i64> {
    body_extents(&prog.body)
}

/// Every loop variable and reduction axis bound in `body`, with its extent.
pub fn body_extents(body: &[Stmt]) -> HashMap<String, i64> {
    fn walk(body: &[Stmt], out: &mut HashMap<String, i64>) {
        for s in body {
            match s {
                Stmt::For(l) => {
                    out.insert(l.var.clone(), l.extent);
                    walk(&l.body, out);
                }
                Stmt::If { then, .. } => walk(then, out),
                Stmt::Reduce(r) => {
                    out.extend(r.axes.iter().cloned());
                    walk(&r.body, out);
                }
                s @ (Stmt::Mma(_)
                | Stmt::WarpFold(_)
                | Stmt::AsyncCopy(_)
                | Stmt::Mbarrier(_)
                | Stmt::SetMaxNReg(_)
                | Stmt::TensorCopy(_)
                | Stmt::TensorStore(_)
                | Stmt::AsyncProxy(_)) => walk(&s.expansion(), out),
                Stmt::Store { .. } => {}
            }
        }
    }
    let mut out = HashMap::new();
    walk(body, &mut out);
    out
}

impl IExpr {
    /// The closed range `(least, greatest)` of values this expression takes when each
    /// variable `v` ranges over `0..extent(v)`; `None` when unknown (a data-dependent index,
    /// an unbound variable, a divisor that may be zero or negative, an overflow).
    pub fn range(&self, extent: &dyn Fn(&str) -> Option<i64>) -> Option<(i64, i64)> {
        let r = |e: &IExpr| e.range(extent);
        match self {
            IExpr::Const(c) => Some((*c, *c)),
            IExpr::Var(v) => extent(v).filter(|&n| n > 0).map(|n| (0, n - 1)),
            IExpr::Add(a, b) => {
                let ((al, ah), (bl, bh)) = (r(a)?, r(b)?);
                Some((al.checked_add(bl)?, ah.checked_add(bh)?))
            }
            IExpr::Sub(a, b) => {
                let ((al, ah), (bl, bh)) = (r(a)?, r(b)?);
                Some((al.checked_sub(bh)?, ah.checked_sub(bl)?))
            }
            IExpr::Mul(a, b) => {
                let ((al, ah), (bl, bh)) = (r(a)?, r(b)?);
                corners([(al, bl), (al, bh), (ah, bl), (ah, bh)], i64::checked_mul)
            }
            // Floor division by a positive divisor is monotone in both operands (rising in
            // the dividend, towards zero in the divisor): the extremes are at the corners.
            IExpr::FloorDiv(a, b) => {
                let ((al, ah), (bl, bh)) = (r(a)?, r(b)?);
                if bl <= 0 {
                    return None;
                }
                corners([(al, bl), (al, bh), (ah, bl), (ah, bh)], |x, y| {
                    Some(x.div_euclid(y))
                })
            }
            IExpr::Mod(a, b) => {
                let ((al, ah), (bl, bh)) = (r(a)?, r(b)?);
                if bl <= 0 {
                    return None;
                }
                // A dividend already inside one period is its own remainder.
                if bl == bh && al >= 0 && ah < bl {
                    Some((al, ah))
                } else {
                    Some((0, bh - 1))
                }
            }
            IExpr::Min(a, b) => {
                let ((al, ah), (bl, bh)) = (r(a)?, r(b)?);
                Some((al.min(bl), ah.min(bh)))
            }
            IExpr::Max(a, b) => {
                let ((al, ah), (bl, bh)) = (r(a)?, r(b)?);
                Some((al.max(bl), ah.max(bh)))
            }
            IExpr::Xor(a, b) => xor_range(r(a)?, r(b)?),
            IExpr::Of(_) => None,
        }
    }
}

/// Bounds of `a ^ b` for non-negative `a`, `b`: below the next power of two above both.
pub fn xor_range((al, ah): (i64, i64), (bl, bh): (i64, i64)) -> Option<(i64, i64)> {
    if al < 0 || bl < 0 {
        return None;
    }
    // (Operands of 63 bits have no next power of two in an i64: unknown.)
    let bits = 64 - ah.max(bh).leading_zeros();
    Some((0, 1i64.checked_shl(bits).filter(|&p| p > 0)? - 1))
}

/// The least and greatest of `f` over four operand pairs (`None` if any overflows).
fn corners(pairs: [(i64, i64); 4], f: impl Fn(i64, i64) -> Option<i64>) -> Option<(i64, i64)> {
    let mut vals = Vec::with_capacity(4);
    for (x, y) in pairs {
        vals.push(f(x, y)?);
    }
    Some((*vals.iter().min()?, *vals.iter().max()?))
}

impl VExpr {
    /// Whether every load inside (also loads nested in indices) provably stays inside its
    /// buffer, given the loop extents and each buffer's length.
    pub fn loads_in_bounds(
        &self,
        extent: &dyn Fn(&str) -> Option<i64>,
        len: &dyn Fn(&str) -> Option<usize>,
    ) -> bool {
        let mut ok = true;
        self.visit_loads(&mut |buf, index| {
            ok &= match (index.range(extent), len(buf)) {
                (Some((lo, hi)), Some(n)) => lo >= 0 && hi < n as i64,
                _ => false,
            };
        });
        ok
    }
}

impl IExpr {
    /// This expression with every `e % c` and `e // c` (`c > 0`) whose `e` provably lies in
    /// `0..c` replaced by `e` and `0`: the wrap of a broadcast index (a layer norm's scale
    /// read at `j % n`) over a loop that never wraps, so that the access is visibly
    /// contiguous. Exact wherever the extents hold.
    pub fn unwrap_in_range(&self, extent: &dyn Fn(&str) -> Option<i64>) -> IExpr {
        // Whether `a` stays in `0..c`.
        let inside = |a: &IExpr, c: &IExpr| match (c, a.range(extent)) {
            (IExpr::Const(c), Some((lo, hi))) => *c > 0 && lo >= 0 && hi < *c,
            _ => false,
        };
        let unwrapped = self.map_children(&|x| x.unwrap_in_range(extent), &|v| {
            v.unwrap_in_range(extent)
        });
        match unwrapped {
            IExpr::Mod(a, c) if inside(&a, &c) => *a,
            IExpr::FloorDiv(a, c) if inside(&a, &c) => IExpr::c(0),
            other => other,
        }
    }
}

impl VExpr {
    /// [`IExpr::unwrap_in_range`] on every index expression inside.
    pub fn unwrap_in_range(&self, extent: &dyn Fn(&str) -> Option<i64>) -> VExpr {
        self.map_children(&|x| x.unwrap_in_range(extent), &|i| {
            i.unwrap_in_range(extent)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(v: &str) -> Option<i64> {
        match v {
            "i" => Some(28),
            "j" => Some(5),
            _ => None,
        }
    }

    fn v(n: &str) -> IExpr {
        IExpr::var(n)
    }

    #[test]
    fn padded_window_reads_reach_below_zero_and_clamps_bring_them_back() {
        let ix = v("i").plus(v("j")).minus(IExpr::c(2));
        assert_eq!(ix.range(&ext), Some((-2, 29)));
        let clamped = IExpr::Min(
            Box::new(IExpr::Max(Box::new(ix), Box::new(IExpr::c(0)))),
            Box::new(IExpr::c(27)),
        );
        assert_eq!(clamped.range(&ext), Some((0, 27)));
    }

    #[test]
    fn an_exclusive_or_stays_below_the_next_power_of_two() {
        // A swizzle: `i` (0..28) XOR 8·(`j` % 8), below 64.
        let x = v("i").xor(v("j").modulo(8).times(8));
        assert_eq!(x.range(&ext), Some((0, 63)));
        assert_eq!(xor_range((0, 7), (0, 8)), Some((0, 15)));
        // Negative operands, or ones too wide for a next power of two: unknown.
        assert_eq!(xor_range((-1, 7), (0, 8)), None);
        assert_eq!(xor_range((0, i64::MAX), (0, 1)), None);
    }

    #[test]
    fn wraps_that_never_wrap_are_dropped() {
        // `i` in 0..28: `i % 28` is `i`, `i // 28` is 0; `i % 16` wraps and stays.
        let e = v("i").modulo(28).plus(v("i").floordiv(28).times(100));
        assert_eq!(e.unwrap_in_range(&ext).simplify(), v("i"));
        assert_eq!(v("i").modulo(16).unwrap_in_range(&ext), v("i").modulo(16));
        assert_eq!(v("k").modulo(8).unwrap_in_range(&ext), v("k").modulo(8));
    }

    #[test]
    fn division_and_remainder_follow_the_divisor() {
        assert_eq!(v("i").floordiv(4).range(&ext), Some((0, 6)));
        assert_eq!(
            v("i").minus(IExpr::c(3)).floordiv(4).range(&ext),
            Some((-1, 6))
        );
        assert_eq!(v("i").modulo(5).range(&ext), Some((0, 4)));
        assert_eq!(v("j").modulo(7).range(&ext), Some((0, 4)));
        assert_eq!(v("i").times(-3).range(&ext), Some((-81, 0)));
        // A divisor that may be zero is unknown.
        let by_j = IExpr::FloorDiv(Box::new(v("i")), Box::new(v("j")));
        assert_eq!(by_j.range(&ext), None);
        assert_eq!(v("k").range(&ext), None);
        assert_eq!(IExpr::c(i64::MAX).plus(v("i")).range(&ext), None);
    }
}
