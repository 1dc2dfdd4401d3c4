//! The tiled schedule of matrix products: packed operand panels and register tiles.
//!
//! The lowering writes a product (MatMul, Gemm, a convolution seen as a product) as a plain
//! `i, k, j` nest and also records it as data, a [`ProductSpec`]: the extents and the
//! expressions of `A(b, i, k)`, `B(b, k, j)`, the initial value, the output index and the
//! value stored once the sum is complete (a fused epilogue). [`tile`] rebuilds the kernel
//! from that spec and a [`ProductTiling`] — the knobs the autotuner searches — in the
//! structure of a BLIS-style GEMM:
//!
//! ```text
//! parallel over (batch, column panel of nr, row block):
//!   C[rows, panel] = init
//!   for each k block of kc:
//!     scratch bp[kc][nr] = B[k block, panel]            (packed: contiguous, in L1)
//!     for each tile of mr rows, for k in block:         (the micro-kernel)
//!       C[mr rows, nr cols] += A[row, k] * bp[k, :]     (mr x nr/lanes vector accumulators)
//!   C[rows, panel] = finish(C)                          (epilogue while the panel is in L2)
//! ```
//!
//! The micro-kernel's accumulators live in registers: rows are unrolled, columns vectorized,
//! and the buffers are `noalias`, so LLVM keeps `C`'s tile in registers across the `k` loop.
//! Tails (rows, columns, `k`) get the same code with smaller constant extents.
//!
//! The order of the sum over `k` is the plain nest's (ascending, one accumulator per
//! element), so tiling changes results only by the fused multiply-adds LLVM may form.

mod conv;
mod dot;
mod lanes;
mod tiling;

use tiling::round_up;
pub use tiling::{
    ProductTiling, balanced_row_block, dots_along_k_everywhere, matmul_rows, packs_b,
    packs_b_everywhere, rows_along_lanes_pay, worth_tiling,
};

/// Whether a product suits [`ProductTiling::k_lanes`] (see `dot.rs`).
pub use dot::suits as suits_k_lanes;
/// Whether a product's `A` allows [`ProductTiling::row_lanes`] (see `lanes.rs`).
pub use lanes::suits as suits_row_lanes;

use crate::error::PassError;
pub use conv::{ConvGeometry, valid_outputs};
use tessera_ir::DType;
use tessera_ir::loops::simplify::simplify_value;
use tessera_ir::loops::{
    BinOp, BufRole, Buffer, CmpOp, IExpr, Loop, LoopKind, LoopProgram, Stmt, VExpr,
};

/// A matrix product as data: `C[b, i, j] = finish(init + sum_k A(b, i, k) * B(b, k, j))`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductSpec {
    pub batch: i64,
    pub m: i64,
    pub n: i64,
    pub k: i64,
    /// The output buffer.
    pub out: String,
    pub dtype: DType,
    /// The free index variables of the expressions below: batch, row, column, reduction.
    pub vars: [String; 4],
    /// Flat index of `C[b, i, j]` in `out`.
    pub c_index: IExpr,
    /// `A(b, i, k)`.
    pub a: VExpr,
    /// `B(b, k, j)`.
    pub b: VExpr,
    /// The value the sum starts from, `init(b, i, j)` (zero, or a bias).
    pub init: VExpr,
    /// What is stored once the sum is complete, reading the sum from `out[c_index]`
    /// (a fused epilogue); `None` keeps the sum.
    pub finish: Option<VExpr>,
    /// For a convolution: its geometry, which lets panels of whole output rows be packed
    /// with contiguous loads ([`ProductTiling::conv_rows`]).
    pub conv: Option<ConvGeometry>,
    /// How `A` is stored when in blocks of rows, k-major within a block (a convolution's
    /// constant weights, rearranged at compile time), which lets the register tile put the rows along
    /// the vector lanes ([`ProductTiling::row_lanes`]).
    pub a_blocks: Option<RowBlocks>,
}

impl ProductSpec {
    /// `e` (one of the spec's expressions) at batch `b`, row `i`, column `j` and reduction
    /// index `k`: the spec's variables substituted.
    pub fn at(&self, e: &VExpr, b: &IExpr, i: &IExpr, j: &IExpr, k: &IExpr) -> VExpr {
        let [vb, vi, vj, vk] = &self.vars;
        e.subst(vb, b).subst(vi, i).subst(vj, j).subst(vk, k)
    }

    /// The flat index of `C[b, i, j]` in the output.
    pub fn c_at(&self, b: &IExpr, i: &IExpr, j: &IExpr) -> IExpr {
        let [vb, vi, vj, _] = &self.vars;
        self.c_index.subst(vb, b).subst(vi, i).subst(vj, j)
    }

    /// The store of `C[b, i, j]` given its sum over `k` (`sum`, in the element dtype):
    /// through the product's finishing expression where it has one.
    pub fn store_finished(&self, b: &IExpr, i: &IExpr, j: &IExpr, sum: VExpr) -> Stmt {
        let index = self.c_at(b, i, j);
        let value = match &self.finish {
            Some(fin) => self
                .at(fin, b, i, j, &IExpr::c(0))
                .replace_load(&self.out, &index, &sum),
            None => sum,
        };
        Stmt::Store {
            buf: self.out.clone(),
            index,
            value,
        }
    }

    /// The dtype the sum over `k` is kept in: f32 for half-precision elements (as tensor
    /// cores, cuBLAS and onnxruntime do: an f16 sum of thousands of products loses most of
    /// its digits), else the elements' own.
    pub fn acc_dtype(&self) -> DType {
        accumulation_dtype(self.dtype)
    }
}

/// See [`ProductSpec::acc_dtype`].
pub fn accumulation_dtype(elements: DType) -> DType {
    match elements {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// `v` (of dtype `from`) as `to`: a cast where they differ.
pub fn convert(v: VExpr, from: DType, to: DType) -> VExpr {
    match from == to {
        true => v,
        false => VExpr::Cast(to, Box::new(v)),
    }
}

/// `A` in blocks of `rows` rows, k-major within each: `A(b, i, k) = buf[(i / rows) · k_len ·
/// rows + k · rows + i % rows]` (the same for every batch): each block's `k` steps are one
/// contiguous stream of `rows`-wide vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct RowBlocks {
    pub buf: String,
    pub rows: i64,
}

/// Rebuilds `prog` (whose body computes `spec`) as the tiled product. The program keeps its
/// parameters; a scratch buffer for the packed panel is added.
pub fn tile(
    prog: &LoopProgram,
    spec: &ProductSpec,
    t: &ProductTiling,
) -> Result<LoopProgram, PassError> {
    t.validate(spec)?;
    let panel = unused_name(prog, format!("{}_bp", spec.out), &[]);
    let acc = unused_name(prog, format!("{}_acc", spec.out), &[&panel]);
    let sums = unused_name(prog, format!("{}_sums", spec.out), &[&panel, &acc]);
    let mut g = Gen {
        spec,
        t: *t,
        next: 0,
        panel,
        acc,
        sums,
    };
    let body = g.program();
    let mut buffers: Vec<Buffer> = prog.params().cloned().collect();
    let tile_len = match t.row_lanes {
        0 => t.mr * t.nr,
        rows => t.mr * rows,
    };
    buffers.push(Buffer {
        name: g.acc.clone(),
        dtype: spec.dtype,
        len: tile_len as usize,
        role: BufRole::Scratch,
    });
    if t.row_lanes > 0 {
        buffers.push(Buffer {
            name: g.sums.clone(),
            dtype: spec.dtype,
            len: (t.panel_columns(spec) * t.task_rows(spec)) as usize,
            role: BufRole::Scratch,
        });
    }
    if t.pack_b {
        buffers.push(Buffer {
            name: g.panel.clone(),
            dtype: spec.dtype,
            len: (t.kc.min(spec.k) * t.nr) as usize,
            role: BufRole::Scratch,
        });
    }
    let tiled = LoopProgram {
        name: prog.name.clone(),
        buffers,
        body,
    };
    crate::verify_after("tile-product", &tiled)?;
    Ok(tiled)
}

/// `name`, with underscores appended until no buffer of `prog` and none of `taken` has it.
pub(crate) fn unused_name(prog: &LoopProgram, mut name: String, taken: &[&str]) -> String {
    while prog.buffer(&name).is_some() || taken.contains(&name.as_str()) {
        name.push('_');
    }
    name
}

struct Gen<'a> {
    spec: &'a ProductSpec,
    t: ProductTiling,
    next: usize,
    panel: String,
    /// The register tile's accumulators (scratch, `mr x nr`).
    acc: String,
    /// Rows along the lanes: the task's partial sums, transposed (scratch, see `lanes.rs`).
    sums: String,
}

/// Where one task works: the batch index, the first row and the first column.
struct Origin {
    b: IExpr,
    i0: IExpr,
    j0: IExpr,
    /// The output row of the first column, for panels of whole convolution rows.
    row0: IExpr,
    /// Which segment of its row the panel is, for rows split into segments.
    seg: IExpr,
}

impl Gen<'_> {
    fn var(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    fn for_(
        &mut self,
        extent: i64,
        kind: LoopKind,
        body: impl FnOnce(&mut Self, IExpr) -> Vec<Stmt>,
    ) -> Stmt {
        let v = self.var();
        let inner = body(self, IExpr::var(&v));
        Stmt::For(Loop {
            var: v,
            extent,
            kind,
            body: inner,
        })
    }

    /// Substitutes the spec's variables in `e`: batch, row, column, reduction index.
    fn at(&self, e: &VExpr, b: &IExpr, i: &IExpr, j: &IExpr, k: &IExpr) -> VExpr {
        // Simplified: an epilogue's coordinates (`oy = j // ow`, `ox = j % ow`) re-linearised
        // fold back to `j`, contiguous in the vectorized column.
        simplify_value(&self.spec.at(e, b, i, j, k))
    }

    fn program(&mut self) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let cols = t.panel_columns(s);
        let panels = (s.n + cols - 1) / cols;
        let blocks = (s.m + t.row_block - 1) / t.row_block;
        let tasks = s.batch * panels * blocks;
        let (last_w, last_r) = (s.n - (panels - 1) * cols, s.m - (blocks - 1) * t.row_block);
        // Row blocks outermost: the threads' contiguous shares of the tasks are then whole row
        // blocks where there are as many as threads (see `balanced_row_block`), each reading
        // its block of `A` again and again from its own cache.
        let task = self.for_(tasks, LoopKind::Serial, |g, p| {
            let panel = p.clone().modulo(panels);
            let block = p.clone().floordiv(s.batch * panels);
            let o = Origin {
                b: if s.batch > 1 {
                    p.floordiv(panels).modulo(s.batch)
                } else {
                    IExpr::c(0)
                },
                i0: block.clone().times(t.row_block),
                j0: panel.clone().times(cols),
                row0: match t.conv_segments > 1 {
                    true => panel.clone().floordiv(t.conv_segments),
                    false => panel.clone().times(t.conv_rows),
                },
                seg: panel.clone().modulo(t.conv_segments.max(1)),
            };
            // Full panels and row blocks, and the last (possibly narrower / shorter) ones.
            let rows = |g: &mut Gen, o: &Origin, w: i64| -> Vec<Stmt> {
                let task = |g: &mut Gen, w: i64, rows: i64| match t.k_lanes {
                    true => g.dot_task(o, w, rows),
                    false => g.task(o, w, rows),
                };
                if blocks == 1 || last_r == t.row_block {
                    return task(g, w, last_r);
                }
                let mut v = guarded(
                    block.clone(),
                    CmpOp::Lt,
                    blocks - 1,
                    task(g, w, t.row_block),
                );
                v.extend(guarded(
                    block.clone(),
                    CmpOp::Ge,
                    blocks - 1,
                    task(g, w, last_r),
                ));
                v
            };
            if panels == 1 || last_w == cols {
                return rows(g, &o, last_w);
            }
            let mut v = guarded(panel.clone(), CmpOp::Lt, panels - 1, rows(g, &o, cols));
            v.extend(guarded(panel, CmpOp::Ge, panels - 1, rows(g, &o, last_w)));
            v
        });
        let Stmt::For(mut l) = task else {
            unreachable!()
        };
        if tasks > 1 {
            l.kind = LoopKind::Parallel;
        }
        vec![Stmt::For(l)]
    }

    /// One task: `rows` rows and `w` columns of `C` from `o`. The first `k` block starts
    /// the register tile from `init` and the last stores `finish` of it, so that `C` is
    /// written once when `k` fits one block (no init pass, no epilogue pass over `C`); the
    /// blocks between load and store `C`'s tile.
    fn task(&mut self, o: &Origin, w: i64, rows: i64) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        if self.k_block_counts().1 == 0 {
            let mut out = vec![self.store_rows(o, w, rows, &s.init)];
            out.extend(s.finish.as_ref().map(|f| self.store_rows(o, w, rows, f)));
            return out;
        }
        if t.row_lanes > 0 {
            return self.lanes_task(o, w, rows);
        }
        let finish = self.finish_from_acc();
        let mut out = self.k_blocks(&|g, block, first, last| {
            let ends = Ends {
                first,
                finish: if last { finish.clone() } else { None },
            };
            g.k_block(o, w, rows, block, &ends)
        });
        if let (Some(fin), None) = (&s.finish, &finish) {
            out.push(self.store_rows(o, w, rows, fin));
        }
        out
    }

    /// The full `k` blocks, and all blocks with the tail.
    fn k_block_counts(&self) -> (i64, i64) {
        let (s, t) = (self.spec, self.t);
        let full = s.k / t.kc;
        let tail =
            s.k % t.kc != 0 && !tessera_ir::planted::active(tessera_ir::planted::Bug::ProductKTail);
        (full, full + tail as i64)
    }

    /// `body(block, first, last)` for each `k` block in order: the first, a loop over the
    /// full ones between, the last (a shorter tail when `kc` does not divide `k`). At least
    /// one block: the caller handles `k = 0`.
    fn k_blocks(&mut self, body: &dyn Fn(&mut Gen, &KBlock, bool, bool) -> Vec<Stmt>) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let (full, blocks) = self.k_block_counts();
        // k blocks of a convolution's row panels hold whole channels: `taps` divides kc.
        let taps = s.conv.as_ref().map_or(1, ConvGeometry::taps);
        let full_block = |kb: IExpr| KBlock {
            k0: kb.clone().times(t.kc),
            c0: kb.times(t.kc / taps),
            kc: t.kc,
        };
        let block_at = |b: i64| match b < full {
            true => full_block(IExpr::c(b)),
            false => KBlock {
                k0: IExpr::c(full * t.kc),
                c0: IExpr::c(full * t.kc / taps),
                kc: s.k % t.kc,
            },
        };
        let mut out = body(self, &block_at(0), true, blocks == 1);
        if blocks > 2 {
            out.push(self.for_(blocks - 2, LoopKind::Serial, |g, kb| {
                body(g, &full_block(kb.plus(IExpr::c(1))), false, false)
            }));
        }
        if blocks > 1 {
            out.extend(body(self, &block_at(blocks - 1), false, true));
        }
        out
    }

    /// The epilogue as a function of the register tile: `finish` with its read of the sum
    /// replaced by a read of the accumulator at [`ACC_INDEX`]; `None` when there is no
    /// epilogue or it reads `C` elsewhere (then it runs as a pass over `C`).
    fn finish_from_acc(&self) -> Option<VExpr> {
        self.finish_of(&VExpr::load(&self.acc, IExpr::var(ACC_INDEX)))
    }

    /// The epilogue with its read of the sum replaced by `sum`; `None` when there is no
    /// epilogue or it reads `C` elsewhere.
    fn finish_of(&self, sum: &VExpr) -> Option<VExpr> {
        let s = self.spec;
        let f = s.finish.as_ref()?.replace_load(&s.out, &s.c_index, sum);
        let mut reads_c = false;
        f.visit_loads(&mut |b, _| reads_c |= b == s.out);
        (!reads_c).then_some(f)
    }

    /// `C[i, j] = value(i, j)` over the task's rows and columns (the init, the epilogue).
    fn store_rows(&mut self, o: &Origin, w: i64, rows: i64, value: &VExpr) -> Stmt {
        let (out, lanes) = (&self.spec.out, LoopKind::Vectorize(self.t.lanes as u32));
        self.for_(rows, LoopKind::Serial, |g, r| {
            vec![g.for_(w, lanes, |g, c| {
                let (i, j) = (o.i0.clone().plus(r.clone()), o.j0.clone().plus(c));
                vec![Stmt::Store {
                    buf: out.clone(),
                    index: g.spec.c_at(&o.b, &i, &j),
                    value: g.at(value, &o.b, &i, &j, &IExpr::c(0)),
                }]
            })]
        })
    }

    /// Packs `B[k0 .. k0+kc, panel]` (if the tiling packs) and runs the micro-kernel over the
    /// task's rows.
    fn k_block(&mut self, o: &Origin, w: i64, rows: i64, block: &KBlock, ends: &Ends) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let (k0, kc) = (block.k0.clone(), block.kc);
        let lanes = LoopKind::Vectorize(t.lanes as u32);
        let panel = self.panel.clone();
        let mut out = self.pack(o, w, block);
        // The register tile lives in an explicit accumulator (scratch, promoted to vector
        // registers): loaded from C, updated every k step, stored back. Relying on LLVM to
        // promote C itself failed in tasks that start at a computed row (3-4x slower).
        let acc = self.acc.clone();
        let micro = |g: &mut Gen, first_row: IExpr, mr: i64| -> Vec<Stmt> {
            type Body<'b> = &'b dyn Fn(&mut Gen, &IExpr, &IExpr, &IExpr, &IExpr) -> Stmt;
            let tile = |g: &mut Gen, body: Body| {
                g.for_(mr, LoopKind::Unroll(mr as u32), |g, r| {
                    vec![g.for_(w, lanes, |g, c| {
                        let i = o.i0.clone().plus(first_row.clone()).plus(r.clone());
                        vec![body(g, &r, &c, &i, &o.j0.clone().plus(c.clone()))]
                    })]
                })
            };
            let at = |r: &IExpr, c: &IExpr| r.clone().times(t.nr).plus(c.clone());
            let load = tile(g, &|g, r, c, i, j| Stmt::Store {
                buf: acc.clone(),
                index: at(r, c),
                value: match ends.first {
                    true => g.at(&s.init, &o.b, i, j, &IExpr::c(0)),
                    false => VExpr::load(&s.out, g.spec.c_at(&o.b, i, j)),
                },
            });
            // From a packed panel the k steps run over whole vectors: the lanes past `w`
            // read the panel's unwritten tail into accumulators that are never stored —
            // full vectors instead of a masked or scalar tail on every k step.
            let step_w = match t.pack_b {
                true => round_up(w, t.lanes),
                false => w,
            };
            let steps = g.for_(kc, LoopKind::Serial, |g, kk| {
                vec![g.for_(mr, LoopKind::Unroll(mr as u32), |g, r| {
                    vec![g.for_(step_w, lanes, |g, c| {
                        let i = o.i0.clone().plus(first_row.clone()).plus(r.clone());
                        let (j, k) = (o.j0.clone().plus(c.clone()), k0.clone().plus(kk.clone()));
                        let a = g.at(&s.a, &o.b, &i, &IExpr::c(0), &k);
                        let bp = if t.pack_b {
                            VExpr::load(&panel, kk.clone().times(t.nr).plus(c.clone()))
                        } else {
                            g.at(&s.b, &o.b, &IExpr::c(0), &j, &k)
                        };
                        vec![Stmt::Store {
                            buf: acc.clone(),
                            index: at(&r, &c),
                            value: VExpr::bin(
                                BinOp::Add,
                                VExpr::load(&acc, at(&r, &c)),
                                VExpr::bin(BinOp::Mul, a, bp),
                            ),
                        }]
                    })]
                })]
            });
            let store = tile(g, &|g, r, c, i, j| Stmt::Store {
                buf: s.out.clone(),
                index: g.spec.c_at(&o.b, i, j),
                value: match &ends.finish {
                    Some(f) => g.at(&f.subst(ACC_INDEX, &at(r, c)), &o.b, i, j, &IExpr::c(0)),
                    None => VExpr::load(&acc, at(r, c)),
                },
            });
            vec![load, steps, store]
        };
        out.extend(self.row_tiles(rows, t.mr, &micro));
        out
    }

    /// Packs `B[k0 .. k0+kc, panel]` into the panel scratch, if the tiling packs.
    fn pack(&mut self, o: &Origin, w: i64, block: &KBlock) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let (k0, kc) = (block.k0.clone(), block.kc);
        let panel = self.panel.clone();
        match &s.conv {
            Some(conv) if t.pack_b && t.conv_rows > 0 => self.pack_conv_rows(conv, o, w, block),
            _ if t.pack_b => vec![self.for_(kc, LoopKind::Serial, |g, kk| {
                vec![g.for_(w, LoopKind::Vectorize(t.lanes as u32), |g, c| {
                    let (k, j) = (k0.clone().plus(kk.clone()), o.j0.clone().plus(c.clone()));
                    vec![Stmt::Store {
                        buf: panel.clone(),
                        index: kk.clone().times(t.nr).plus(c),
                        value: g.at(&s.b, &o.b, &IExpr::c(0), &j, &k),
                    }]
                })]
            })],
            _ => Vec::new(),
        }
    }

    /// `rows` rows in register tiles of `mr`: a loop over the whole tiles, then the last,
    /// shorter tile; `tile(g, first_row, rows)` builds one.
    fn row_tiles(
        &mut self,
        rows: i64,
        mr: i64,
        tile: &dyn Fn(&mut Gen, IExpr, i64) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let mut out = Vec::new();
        if rows / mr > 0 {
            out.push(self.for_(rows / mr, LoopKind::Serial, |g, t| tile(g, t.times(mr), mr)));
        }
        if rows % mr != 0 {
            out.extend(tile(self, IExpr::c(rows / mr * mr), rows % mr));
        }
        out
    }
}

/// What a `k` block does at the ends of the reduction: the first starts the register tile
/// from `init` instead of `C`; the last may store the epilogue of the tile instead of it.
struct Ends {
    first: bool,
    finish: Option<VExpr>,
}

/// The index variable standing for the accumulator's element in an epilogue read from the
/// register tile (substituted before use; no loop binds it).
const ACC_INDEX: &str = "$acc";

/// One block of the reduction: `k0 .. k0 + kc`; for a convolution's row panels it starts at
/// channel `c0` (`k0 = c0 · taps`, kept apart so that no index divides).
struct KBlock {
    k0: IExpr,
    c0: IExpr,
    kc: i64,
}

/// `if (e op bound) { body }`, or nothing when the body is empty.
fn guarded(e: IExpr, op: CmpOp, bound: i64, body: Vec<Stmt>) -> Vec<Stmt> {
    if body.is_empty() {
        return body;
    }
    vec![Stmt::If {
        cond: VExpr::ICmp(op, e, IExpr::c(bound)),
        then: body,
    }]
}
