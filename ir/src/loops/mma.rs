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
//! **Warpgroup steps.** `mma m64n{N}k16 acc[at] += a[base; 8, 1; R, C] * b[...] lane(t % 128)`
//! is the Hopper (sm_90a) form, `wgmma.mma_async`: the 128 threads of a *warpgroup* (four
//! consecutive warps) multiply a 64×16 tile of `A` by a 16×N tile of `B` (N a multiple of 8
//! up to 256), each thread holding N/2 of the f32 sums. Warp `w` of the group holds rows
//! `16w..16w+16` in the `m16n8` layout above, repeated along N: element `e` is row
//! `16·(l / 32) + (l % 32) / 4 + 8·((e % 4) / 2)`, column `8·(e / 4) + 2·(l % 4) + e % 2`.
//! The tensor core reads both tiles straight from shared memory through *matrix
//! descriptors*, which describe tiles made of 8×8 *core matrices* (8 rows of 16 contiguous
//! bytes, 128 bytes in all): the operand's `blocks` `[R, C]` say where the core matrices
//! are — element `(r, c)` at `base + (r % 8)·8 + (c % 8) + (r / 8)·R + (c / 8)·C`. `A` is
//! read *K-major* (its core rows run along `k`: `C` is the descriptor's leading byte
//! offset, `R` its stride byte offset), `B` *N-major* (`R` the leading, `C` the stride
//! offset) — PTX's "no swizzle" canonical layouts.
//!
//! A warpgroup step is asynchronous (`wgmma.mma_async`): `… lane(t % 128) retires(n)` may
//! read its tiles until the `n`-th barrier after it (default 1), so that the next `k` step's
//! steps can start before it completes. Its tiles must not be written before then — the
//! interpreter refuses any write to them (a store, an async copy) while it is in flight, as
//! for the elements of an async copy. Nested in a loop or guard of a thread loop whose
//! threads wait on mbarriers (a warp-specialised consumer's `k` loop, no barriers), it
//! reads them until the end of the `n`-th run of its warpgroup's steps from its own (the
//! run's `wgmma.wait_group n − 1`); the interpreter counts those reads as done only then
//! (`interp::happens`). Its sums are defined at once: the CUDA backend waits for every step
//! in flight before any other statement reads the accumulators.
//!
//! **Architecture invariant:** an `mma` sits directly in an x-axis thread loop whose extent
//! is a multiple of its group (32 threads, 128 for a warpgroup step; or in serial/unrolled
//! loops there; never under a reduction or a guard that splits a group: all threads of the
//! group execute it together), its `lane` is that loop's variable modulo the group, and its tile bases and
//! accumulator offset are *group-uniform*: they read the thread variable only as
//! `t // (g·k)`, so the group agrees on the tiles. A warpgroup step's operands are core
//! matrices at 16-byte-aligned bases. The verifier checks all of it.

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
/// The one compute capability with warpgroup steps (`wgmma`, as `sm_90a` code: Hopper only —
/// later GPUs have other instructions).
pub const WGMMA_SM: u32 = 90;
/// Threads of a warpgroup (four warps), which a `wgmma` step runs on.
pub const WARPGROUP: i64 = 128;
/// Rows of a warpgroup step's output tile; its columns are [`MmaShape::Warpgroup`]'s `n`.
pub const WGMMA_M: i64 = 64;
/// The widest warpgroup step.
pub const WGMMA_MAX_N: i64 = 256;
/// The most barriers a warpgroup step may stay in flight (`wgmma.wait_group` keeps at most
/// `MAX_RETIRES − 1` groups pending).
pub const MAX_RETIRES: i64 = 2;
/// Elements per row of a core matrix (16 bytes of f16 / bf16), and its rows.
pub const CORE: i64 = 8;

/// Which tensor-core step an [`Mma`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaShape {
    /// `mma.sync.m16n8k16` of one warp: 16×8 sums, four per thread.
    Warp,
    /// `wgmma.mma_async.m64nNk16` of one warpgroup: 64×`n` sums, `n / 2` per thread.
    Warpgroup { n: i64 },
}

impl MmaShape {
    /// Threads that run the step together.
    pub fn group(self) -> i64 {
        match self {
            MmaShape::Warp => WARP,
            MmaShape::Warpgroup { .. } => WARPGROUP,
        }
    }

    /// Accumulator elements each thread holds.
    pub fn acc_per_lane(self) -> i64 {
        match self {
            MmaShape::Warp => MMA_ACC_PER_LANE,
            MmaShape::Warpgroup { n } => n / 2,
        }
    }

    /// The output-tile row and column of accumulator element `e` of the thread at `lane`.
    pub fn acc_position(self, lane: &IExpr, e: i64) -> (IExpr, IExpr) {
        match self {
            MmaShape::Warp => acc_position(lane, e),
            MmaShape::Warpgroup { .. } => {
                let warp = lane.clone().floordiv(WARP);
                let (r, c) = acc_position(&lane.clone().modulo(WARP), e % MMA_ACC_PER_LANE);
                (
                    warp.times(MMA_M).plus(r),
                    c.plus(IExpr::c(MMA_N * (e / MMA_ACC_PER_LANE))),
                )
            }
        }
    }

    /// The text form's name: `m16n8k16`, `m64n128k16`.
    pub fn name(self) -> String {
        match self {
            MmaShape::Warp => "m16n8k16".into(),
            MmaShape::Warpgroup { n } => format!("m{WGMMA_M}n{n}k{MMA_K}"),
        }
    }

    /// The shape named `name` (see [`MmaShape::name`]).
    pub fn parse(name: &str) -> Option<MmaShape> {
        if name == "m16n8k16" {
            return Some(MmaShape::Warp);
        }
        let n = name
            .strip_prefix("m64n")?
            .strip_suffix("k16")?
            .parse()
            .ok()?;
        Some(MmaShape::Warpgroup { n })
    }
}

/// One operand tile: element `(r, c)` at `base + r·strides[0] + c·strides[1]` of `buf` —
/// or, made of core matrices (`blocks`), at `base + (r % 8)·strides[0] + (c % 8)·strides[1]
/// + (r / 8)·blocks[0] + (c / 8)·blocks[1]` — or, 128-byte swizzled (`swizzle`, see
/// [`swizzle_128`]), at `swizzle_128(base + r·strides[0] + (c % 64)·strides[1] + (c / 64)·atoms)`.
#[derive(Clone, Debug, PartialEq)]
pub struct MmaOperand {
    pub buf: String,
    pub base: IExpr,
    pub strides: [i64; 2],
    pub blocks: Option<[i64; 2]>,
    /// `Some(atoms)`: the tile's rows are 128-byte rows (64 elements, `strides` `[64, 1]`)
    /// swizzled by [`swizzle_128`] — PTX's "128B swizzle" canonical layouts, which TMA
    /// writes — and its columns past 64 continue in the next *atom* (64 columns × the
    /// tile's rows), `atoms` elements on. `base` is the unswizzled place of element
    /// `(0, 0)`: the swizzle applies to the whole buffer's element offsets.
    pub swizzle: Option<i64>,
}

/// 16-bit elements per 128-byte row of a swizzled tile.
pub const SWIZZLE_ROW: i64 = 64;
/// Elements a swizzle pattern repeats after: 8 rows of 128 bytes (1024 bytes, the alignment
/// swizzled tiles need).
pub const SWIZZLE_SPAN: i64 = 8 * SWIZZLE_ROW;

/// The 128-byte swizzle (CUTLASS's `Swizzle<3,4,3>` on byte addresses) of the 16-bit element
/// offset `o`: its 16-byte chunk within its 128-byte row (bits 3–5 of `o`) XOR the row
/// within its 8-row group (bits 6–8) — so that the 8 chunks of one column of 8 rows fall in
/// 8 different bank groups. Offsets are from a 1024-byte-aligned buffer start. A multiple
/// of 8 stays one, visibly ([`IExpr::is_multiple_of`]).
pub fn swizzle_128(o: IExpr) -> IExpr {
    let row = o.clone().floordiv(SWIZZLE_ROW).modulo(CORE);
    o.xor(row.times(CORE))
}

impl MmaOperand {
    /// The flat index of element `(r, c)`.
    pub fn at(&self, r: IExpr, c: IExpr) -> IExpr {
        match self.swizzle {
            Some(_) => swizzle_128(self.base.clone().plus(self.offset(r, c))),
            None => self.base.clone().plus(self.offset(r, c)),
        }
    }

    /// Where element `(r, c)` is relative to `base`, before any swizzle: a step's operand
    /// tile inside a staged tile has its base here.
    pub fn offset(&self, r: IExpr, c: IExpr) -> IExpr {
        let [rs, cs] = self.strides;
        match (self.blocks, self.swizzle) {
            (_, Some(atoms)) => {
                // (A step's column is a constant: folded, so that its base's residues show.)
                let (within, atom) = match c {
                    IExpr::Const(c) => (IExpr::c(c % SWIZZLE_ROW), IExpr::c(c / SWIZZLE_ROW)),
                    c => (c.clone().modulo(SWIZZLE_ROW), c.floordiv(SWIZZLE_ROW)),
                };
                r.times(rs).plus(within.times(cs)).plus(atom.times(atoms))
            }
            (None, None) => r.times(rs).plus(c.times(cs)),
            (Some([rb, cb]), None) => r
                .clone()
                .modulo(CORE)
                .times(rs)
                .plus(c.clone().modulo(CORE).times(cs))
                .plus(r.floordiv(CORE).times(rb))
                .plus(c.floordiv(CORE).times(cb)),
        }
    }
}

/// `acc[at..at+4] += (A · B)[the lane's four elements]`, the 16×8×16 tensor-core step (or
/// the warpgroup's 64×N×16 one, see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Mma {
    pub shape: MmaShape,
    /// A warpgroup step runs asynchronously: it may read its operand tiles until the
    /// `retires`-th barrier after it (1: the next) — or the end of the `retires`-th run of
    /// its warpgroup's steps, nested in a loop of a thread loop with mbarrier waits — and
    /// nobody may write them before (see the module docs). Always 1 for a warp's step.
    pub retires: i64,
    /// The running thread's lane in its group: `t % 32` (`t % 128`) of the enclosing thread
    /// loop.
    pub lane: IExpr,
    /// A local f32 buffer: the thread's accumulator fragments.
    pub acc: String,
    /// The first of the accumulator elements this step adds to.
    pub at: IExpr,
    /// The 16×16 (64×16) `A` tile (rows × reduction) and the 16×8 (16×N) `B` tile
    /// (reduction × columns).
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
        (0..self.shape.acc_per_lane())
            .map(|e| {
                let (row, col) = self.shape.acc_position(&self.lane, e);
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
            shape: self.shape,
            retires: self.retires,
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

/// Whether `e` is the same for every thread of a group of `group` consecutive threads (a
/// warp, a warpgroup) of the thread loop over `t`: it reads `t` only as `t // d` or
/// `(t % a) // d` (the group's place in a team of `a` threads) with `a` and `d` multiples
/// of `group`.
pub fn group_uniform(e: &IExpr, t: &str, group: i64) -> bool {
    let multiple = |x: &IExpr| matches!(x, IExpr::Const(x) if *x > 0 && x % group == 0);
    match e {
        IExpr::FloorDiv(a, d) if matches!(a.as_ref(), IExpr::Var(v) if v == t) => multiple(d),
        IExpr::FloorDiv(a, d)
            if matches!(a.as_ref(), IExpr::Mod(x, m)
                if matches!(x.as_ref(), IExpr::Var(v) if v == t) && multiple(m)) =>
        {
            multiple(d)
        }
        IExpr::Var(v) => v != t,
        IExpr::Const(_) => true,
        // A loaded index could differ between threads.
        IExpr::Of(_) => false,
        _ => e
            .operands()
            .is_some_and(|(a, b)| group_uniform(a, t, group) && group_uniform(b, t, group)),
    }
}

/// Whether `e` is the same for every thread of a warp of the thread loop over `t`.
pub fn warp_uniform(e: &IExpr, t: &str) -> bool {
    group_uniform(e, t, WARP)
}

/// Whether `lane` is `t % group`.
pub fn is_lane_of(lane: &IExpr, t: &str, group: i64) -> bool {
    matches!(lane, IExpr::Mod(a, m)
        if matches!(a.as_ref(), IExpr::Var(v) if v == t) && matches!(m.as_ref(), IExpr::Const(g) if *g == group))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of an index expression over constants.
    fn value(e: &IExpr) -> i64 {
        e.value(&|_| None)
            .unwrap_or_else(|| panic!("unexpected `{e}`"))
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
    fn a_warpgroup_step_covers_its_tile_once() {
        for n in [8, 64, 256] {
            let shape = MmaShape::Warpgroup { n };
            let mut seen = vec![0; (WGMMA_M * n) as usize];
            for lane in 0..WARPGROUP {
                for e in 0..shape.acc_per_lane() {
                    let (r, c) = shape.acc_position(&IExpr::c(lane), e);
                    seen[(value(&r) * n + value(&c)) as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&k| k == 1), "n = {n}");
            assert_eq!(MmaShape::parse(&shape.name()), Some(shape));
        }
        // Thread 37 (warp 1, lane 5): element 6 is row 16 + 1 + 8, column 8 + 2 + 0.
        let (r, c) = MmaShape::Warpgroup { n: 16 }.acc_position(&IExpr::c(37), 6);
        assert_eq!((value(&r), value(&c)), (25, 10));
    }

    #[test]
    fn core_matrix_operands_place_8x8_blocks() {
        // A K-major 64×16 tile, core matrices along k 64 elements apart, along rows 128.
        let a = MmaOperand {
            buf: "as".into(),
            base: IExpr::c(0),
            strides: [CORE, 1],
            blocks: Some([128, 64]),
            swizzle: None,
        };
        assert_eq!(value(&a.at(IExpr::c(3), IExpr::c(5))), 3 * 8 + 5);
        assert_eq!(value(&a.at(IExpr::c(9), IExpr::c(13))), 8 + 5 + 128 + 64);
    }

    #[test]
    fn the_128_byte_swizzle_xors_the_chunk_with_the_row() {
        for o in 0..4 * SWIZZLE_SPAN {
            let expected = o ^ (((o >> 6) & 7) << 3);
            assert_eq!(value(&swizzle_128(IExpr::c(o))), expected, "offset {o}");
        }
        // A run of 8 elements stays a run, and a multiple of 8 visibly one.
        assert!(swizzle_128(IExpr::var("x").times(8)).is_multiple_of(8));
    }

    #[test]
    fn swizzled_operands_permute_each_atom() {
        // A 64×64 tile of 128-byte rows (one atom), then the next atom of 64 columns.
        let b = MmaOperand {
            buf: "bs".into(),
            base: IExpr::c(0),
            strides: [SWIZZLE_ROW, 1],
            blocks: None,
            swizzle: Some(64 * SWIZZLE_ROW),
        };
        let mut seen = vec![0; (2 * 64 * SWIZZLE_ROW) as usize];
        for r in 0..64 {
            for c in 0..2 * SWIZZLE_ROW {
                let at = value(&b.at(IExpr::c(r), IExpr::c(c)));
                // Row `r` stays in its 128 bytes; the 8 elements of a chunk stay together.
                let atom = c / SWIZZLE_ROW;
                assert_eq!(at / SWIZZLE_ROW, atom * 64 + r);
                assert_eq!(at % 8, c % 8);
                seen[at as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&k| k == 1));
        // Row 3, chunk 1 lands in chunk 1 ^ 3 = 2.
        assert_eq!(value(&b.at(IExpr::c(3), IExpr::c(9))), 3 * 64 + 2 * 8 + 1);
        // A step's tile inside it: its base is the unswizzled place of its first element.
        let step = MmaOperand {
            base: b.offset(IExpr::c(16), IExpr::c(64)),
            ..b.clone()
        };
        assert_eq!(
            value(&step.at(IExpr::c(5), IExpr::c(20))),
            value(&b.at(IExpr::c(21), IExpr::c(84)))
        );
    }

    #[test]
    fn warp_uniformity_is_structural() {
        let t = IExpr::var("t");
        assert!(warp_uniform(&t.clone().floordiv(64).times(16), "t"));
        assert!(!warp_uniform(&t.clone().floordiv(16), "t"));
        assert!(!warp_uniform(&t.clone().plus(IExpr::c(1)), "t"));
        assert!(warp_uniform(&IExpr::var("k").times(8), "t"));
        assert!(is_lane_of(&t.clone().modulo(32), "t", WARP));
        assert!(!is_lane_of(&t.clone().modulo(16), "t", WARP));
        assert!(is_lane_of(&t.clone().modulo(128), "t", WARPGROUP));
        assert!(group_uniform(&t.clone().floordiv(256), "t", WARPGROUP));
        assert!(!group_uniform(&t.clone().floordiv(64), "t", WARPGROUP));
        // A warpgroup's place in a team of two (ping-pong consumers).
        let in_team =
            |team: i64| IExpr::FloorDiv(Box::new(t.clone().modulo(team)), Box::new(IExpr::c(128)));
        assert!(group_uniform(&in_team(256), "t", WARPGROUP));
        assert!(!group_uniform(&in_team(192), "t", WARPGROUP));
        assert!(!group_uniform(
            &IExpr::FloorDiv(Box::new(t.clone().modulo(256)), Box::new(IExpr::c(64))),
            "t",
            WARPGROUP
        ));
        // Its lane, and its place in a team of one (simplified away).
        assert!(is_lane_of(
            &t.clone().modulo(256).modulo(128),
            "t",
            WARPGROUP
        ));
        assert_eq!(t.clone().modulo(128).floordiv(128), IExpr::c(0));
        assert!(!is_lane_of(&t.modulo(64).modulo(128), "t", WARPGROUP));
    }
}
