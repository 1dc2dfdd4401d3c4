//! Warp-level matrix multiply-accumulate: the statement a tensor-core schedule is made of.
//!
//! `mma m16n8k16 acc[at] += a[base; rs, cs] * b[base; rs, cs] lane(t % 32)` — the warp's 32
//! threads together multiply a 16×16 tile of `A` by a 16×8 tile of `B` (f16 or bf16 elements,
//! both in shared memory) into a 16×8 tile of f32 sums; each thread holds four of them, in its
//! local accumulator `acc[at..at+4]`. Element `(r, c)` of an operand tile is at
//! `base + r·rs + c·cs` of its buffer.
//!
//! **What it means, per thread.** The statement is defined thread by thread, so that the
//! interpreter and the CPU backend (which run thread loops one thread at a time) can run it:
//! the thread whose lane is `l` adds to `acc[at + e]` (e = 0..4) the dot product of row
//! `l / 4 + 8·(e / 2)` of the `A` tile with column `2·(l % 4) + e % 2` of the `B` tile — the
//! accumulator fragment layout of PTX's `mma.m16n8k16` with f32 accumulators. That reads
//! only shared memory and writes only the thread's own registers, so it means the same
//! whether the threads run one after another or together. [`Mma::expand`] spells it out as
//! ordinary loop IR (products of f32 conversions summed in f32); the interpreter and the CPU
//! backend run that expansion, the CUDA backend one `mma.sync` per warp. Tensor cores sum
//! the 16 products in their own order and precision: results agree within the float
//! tolerance, not to the bit.
//!
//! **Architecture invariant:** an `mma` sits directly in an x-axis thread loop whose extent
//! is a multiple of 32 (or in serial/unrolled loops there; never under a guard or a
//! reduction: all 32 threads of a warp execute it together), its `lane` is that loop's
//! variable modulo 32, and its tile bases and accumulator offset are *warp-uniform*: they
//! read the thread variable only as `t // (32·k)`, so the warp agrees on the tiles. The
//! verifier checks all of it.

use super::{BinOp, IExpr, Reduce, ReduceOp, Stmt, VExpr};
use crate::dtype::DType;

/// Rows of the output tile, columns, and the reduction depth of one `mma`.
pub const MMA_M: i64 = 16;
pub const MMA_N: i64 = 8;
pub const MMA_K: i64 = 16;
/// Accumulator elements each of the warp's 32 threads holds.
pub const MMA_ACC_PER_LANE: i64 = 4;
/// Threads of a warp.
pub const WARP: i64 = 32;

/// One operand tile: element `(r, c)` at `base + r·strides[0] + c·strides[1]` of `buf`.
#[derive(Clone, Debug, PartialEq)]
pub struct MmaOperand {
    pub buf: String,
    pub base: IExpr,
    pub strides: [i64; 2],
}

impl MmaOperand {
    /// The flat index of element `(r, c)`.
    pub fn at(&self, r: IExpr, c: IExpr) -> IExpr {
        self.base
            .clone()
            .plus(r.times(self.strides[0]))
            .plus(c.times(self.strides[1]))
    }
}

/// `acc[at..at+4] += (A · B)[the lane's four elements]`, the 16×8×16 tensor-core step.
#[derive(Clone, Debug, PartialEq)]
pub struct Mma {
    /// The running thread's lane in its warp: `t % 32` of the enclosing thread loop.
    pub lane: IExpr,
    /// A local f32 buffer: the thread's accumulator fragments.
    pub acc: String,
    /// The first of the four accumulator elements this step adds to.
    pub at: IExpr,
    /// The 16×16 `A` tile (rows × reduction) and the 16×8 `B` tile (reduction × columns).
    pub a: MmaOperand,
    pub b: MmaOperand,
}

/// The output-tile row and column of accumulator element `e` of the thread at `lane`.
pub fn acc_position(lane: &IExpr, e: i64) -> (IExpr, IExpr) {
    let row = lane.clone().floordiv(4).plus(IExpr::c(8 * (e / 2)));
    let col = lane.clone().modulo(4).times(2).plus(IExpr::c(e % 2));
    (row, col)
}

/// The name of the reduction variable [`Mma::expand`] binds.
pub const EXPANSION_K: &str = "mma_k";
const EXPANSION_ACC: &str = "mma_dot";

impl Mma {
    /// The statement as ordinary loop IR (see the module docs): per accumulator element,
    /// a 16-step f32 sum of products of the operands converted to f32, added to it.
    pub fn expand(&self) -> Vec<Stmt> {
        let f32_of =
            |buf: &str, index: IExpr| VExpr::Cast(DType::F32, Box::new(VExpr::load(buf, index)));
        let k = IExpr::var(EXPANSION_K);
        (0..MMA_ACC_PER_LANE)
            .map(|e| {
                let (row, col) = acc_position(&self.lane, e);
                let slot = self.at.clone().plus(IExpr::c(e));
                Stmt::Reduce(Reduce {
                    acc: EXPANSION_ACC.into(),
                    dtype: DType::F32,
                    op: ReduceOp::Sum,
                    init: VExpr::lit(0.0, DType::F32),
                    axes: vec![(EXPANSION_K.into(), MMA_K)],
                    value: VExpr::bin(
                        BinOp::Mul,
                        f32_of(&self.a.buf, self.a.at(row, k.clone())),
                        f32_of(&self.b.buf, self.b.at(k.clone(), col)),
                    ),
                    body: vec![Stmt::Store {
                        buf: self.acc.clone(),
                        index: slot.clone(),
                        value: VExpr::bin(
                            BinOp::Add,
                            VExpr::load(&self.acc, slot),
                            VExpr::Acc(EXPANSION_ACC.into(), DType::F32),
                        ),
                    }],
                    vectorize: None,
                })
            })
            .collect()
    }

    /// Every index expression of the statement.
    pub fn iexprs(&self) -> [&IExpr; 4] {
        [&self.lane, &self.at, &self.a.base, &self.b.base]
    }

    /// The statement with `f` applied to each of its index expressions.
    pub fn map_iexprs(&self, f: &dyn Fn(&IExpr) -> IExpr) -> Mma {
        Mma {
            lane: f(&self.lane),
            acc: self.acc.clone(),
            at: f(&self.at),
            a: MmaOperand {
                base: f(&self.a.base),
                ..self.a.clone()
            },
            b: MmaOperand {
                base: f(&self.b.base),
                ..self.b.clone()
            },
        }
    }
}

/// Whether `e` is the same for every thread of a warp of the thread loop over `t`: it reads
/// `t` only as `t // d` with `d` a multiple of 32.
pub fn warp_uniform(e: &IExpr, t: &str) -> bool {
    match e {
        IExpr::FloorDiv(a, d) if matches!(a.as_ref(), IExpr::Var(v) if v == t) => {
            matches!(d.as_ref(), IExpr::Const(d) if *d > 0 && d % WARP == 0)
        }
        IExpr::Var(v) => v != t,
        IExpr::Const(_) => true,
        // A loaded index could differ between threads.
        IExpr::Of(_) => false,
        _ => e
            .operands()
            .is_some_and(|(a, b)| warp_uniform(a, t) && warp_uniform(b, t)),
    }
}

/// Whether `lane` is `t % 32`.
pub fn is_lane_of(lane: &IExpr, t: &str) -> bool {
    matches!(lane, IExpr::Mod(a, m)
        if matches!(a.as_ref(), IExpr::Var(v) if v == t) && matches!(m.as_ref(), IExpr::Const(WARP)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of an index expression over constants and `+ * // %` only.
    fn value(e: &IExpr) -> i64 {
        match e {
            IExpr::Const(c) => *c,
            IExpr::Add(a, b) => value(a) + value(b),
            IExpr::Mul(a, b) => value(a) * value(b),
            IExpr::FloorDiv(a, b) => value(a).div_euclid(value(b)),
            IExpr::Mod(a, b) => value(a).rem_euclid(value(b)),
            _ => panic!("unexpected `{e}`"),
        }
    }

    #[test]
    fn the_four_accumulators_of_a_warp_cover_the_tile_once() {
        let mut seen = vec![0; (MMA_M * MMA_N) as usize];
        for lane in 0..WARP {
            for e in 0..MMA_ACC_PER_LANE {
                let (r, c) = acc_position(&IExpr::c(lane), e);
                let (r, c) = (value(&r), value(&c));
                seen[(r * MMA_N + c) as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn warp_uniformity_is_structural() {
        let t = IExpr::var("t");
        assert!(warp_uniform(&t.clone().floordiv(64).times(16), "t"));
        assert!(!warp_uniform(&t.clone().floordiv(16), "t"));
        assert!(!warp_uniform(&t.clone().plus(IExpr::c(1)), "t"));
        assert!(warp_uniform(&IExpr::var("k").times(8), "t"));
        assert!(is_lane_of(&t.clone().modulo(32), "t"));
        assert!(!is_lane_of(&t.modulo(16), "t"));
    }
}
