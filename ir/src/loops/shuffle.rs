//! Warp-level reduction through register shuffles: the step a GPU row reduction combines its
//! threads' partial results with, instead of a tree of barriers through shared memory.
//!
//! `warp_fold add(32) part[0] = red[base] lane(t % 32)` — the warp folds the `width` elements
//! `red[base .. base + width]` (shared memory, written by an earlier thread loop) with `op`,
//! and every thread of the warp receives the result in its local `part[0]`.
//!
//! **What it means, per thread** (as [`super::mma`], so that the interpreter and the CPU
//! backend can run it one thread at a time): the thread stores into its local element the
//! butterfly fold of the `width` elements — level by level, element `i` combined with
//! element `i + half` (`half` = `width/2`, …, 1), element 0 left. [`WarpFold::expand`] is
//! that store. On the GPU each lane loads element `lane % width` and combines it with its
//! partner's value from `shfl.sync.bfly` at each level: lane 0 computes exactly the expansion,
//! and every other lane the same operations with the operands of some steps swapped — the
//! same bits for the commutative `op`s allowed (sum, product, max, min).
//!
//! **Architecture invariant:** the same as `mma`'s: in an x-axis thread loop of whole warps
//! (the only thread loop), never under a guard or a reduction there; `lane` is `t % 32`;
//! `base` and `at` are warp-uniform. The verifier checks it, and that `src` is shared, `dst`
//! local, both of one 32-bit dtype (f32 or i32: what one shuffle moves).

use super::{BinOp, IExpr, Stmt, VExpr};

/// A warp's fold of `width` shared elements into every thread's local `dst[at]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WarpFold {
    pub op: BinOp,
    /// How many elements: a power of two, 2 to 32.
    pub width: i64,
    /// The running thread's lane in its warp: `t % 32` of the enclosing thread loop.
    pub lane: IExpr,
    pub src: String,
    pub base: IExpr,
    pub dst: String,
    pub at: IExpr,
}

/// The operations a warp may fold with: commutative, so that every lane's butterfly gives
/// the same bits.
pub fn foldable(op: BinOp) -> bool {
    matches!(op, BinOp::Add | BinOp::Mul | BinOp::Max | BinOp::Min)
}

/// The name an operation has in the text format.
pub fn op_name(op: BinOp) -> Option<&'static str> {
    Some(match op {
        BinOp::Add => "add",
        BinOp::Mul => "mul",
        BinOp::Max => "max",
        BinOp::Min => "min",
        _ => return None,
    })
}

pub fn op_of(name: &str) -> Option<BinOp> {
    [BinOp::Add, BinOp::Mul, BinOp::Max, BinOp::Min]
        .into_iter()
        .find(|&op| op_name(op) == Some(name))
}

impl WarpFold {
    /// The levels' distances, outermost first: `width/2`, …, 1.
    pub fn halves(&self) -> impl Iterator<Item = i64> {
        let width = self.width;
        std::iter::successors(Some(width / 2), |h| Some(h / 2)).take_while(|&h| h >= 1)
    }

    /// The statement as ordinary loop IR: one store of the butterfly fold (see the module
    /// docs).
    pub fn expand(&self) -> Vec<Stmt> {
        let mut level: Vec<VExpr> = (0..self.width)
            .map(|i| VExpr::load(&self.src, self.base.clone().plus(IExpr::c(i))))
            .collect();
        for half in self.halves() {
            let (lo, hi) = level.split_at(half as usize);
            level = lo
                .iter()
                .zip(hi)
                .map(|(a, b)| VExpr::bin(self.op, a.clone(), b.clone()))
                .collect();
        }
        vec![Stmt::Store {
            buf: self.dst.clone(),
            index: self.at.clone(),
            value: level.pop().expect("a fold of at least one element"),
        }]
    }

    /// Every index expression of the statement.
    pub fn iexprs(&self) -> [&IExpr; 3] {
        [&self.lane, &self.base, &self.at]
    }

    /// The statement with `f` applied to each of its index expressions.
    pub fn map_iexprs(&self, f: &dyn Fn(&IExpr) -> IExpr) -> WarpFold {
        WarpFold {
            lane: f(&self.lane),
            base: f(&self.base),
            at: f(&self.at),
            ..self.clone()
        }
    }
}
