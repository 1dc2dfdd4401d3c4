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

use crate::error::PassError;
use tessera_ir::DType;
use tessera_ir::loops::{
    BinOp, BufRole, Buffer, CmpOp, IExpr, Loop, LoopKind, LoopProgram, MAX_SCRATCH_BYTES, Stmt,
    VExpr,
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
}

/// The knobs of the tiled product schedule (one point of its search space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProductTiling {
    /// Rows of the register tile (unrolled).
    pub mr: i64,
    /// Columns of the register tile and of a packed panel (vectorized).
    pub nr: i64,
    /// Length of a `k` block (the packed panel holds `kc x nr`).
    pub kc: i64,
    /// Rows per parallel task (a multiple of `mr`); fewer rows mean more tasks.
    pub row_block: i64,
    /// Vector width in elements.
    pub lanes: i64,
    /// Pack `B`'s panel into scratch; without, the register tile reads `B` in place (for
    /// products with a few rows, where packing would only copy `B` once more).
    pub pack_b: bool,
}

impl ProductTiling {
    /// Checks the knobs against each other and the product; a search proposes blindly and
    /// this rejects what cannot be built.
    pub fn validate(&self, spec: &ProductSpec) -> Result<(), PassError> {
        let bad = |m: String| Err(PassError::Schedule(format!("product tiling: {m}")));
        if self.lanes < 1 || self.mr < 1 || self.nr < 1 || self.kc < 1 {
            return bad(format!("non-positive knob in {self:?}"));
        }
        if self.nr % self.lanes != 0 {
            return bad(format!(
                "nr {} is not a multiple of {} lanes",
                self.nr, self.lanes
            ));
        }
        if self.row_block < self.mr || self.row_block % self.mr != 0 {
            return bad(format!(
                "row block {} is not a multiple of mr {}",
                self.row_block, self.mr
            ));
        }
        if self.mr * (self.nr / self.lanes) > 32 {
            return bad(format!(
                "{}x{} accumulators do not fit in registers",
                self.mr,
                self.nr / self.lanes
            ));
        }
        let scratch = (self.kc * self.nr) as usize * spec.dtype.size();
        if self.pack_b && scratch > MAX_SCRATCH_BYTES {
            return bad(format!("packed panel of {scratch} bytes"));
        }
        Ok(())
    }

    /// The default for a product on a machine with `lanes`-wide vectors: a 6-row tile of
    /// four vectors (24 accumulators) with 32 vector registers, two vectors with 16; `k`
    /// blocks of 256 (the panel fits L1); rows split so that two threads get work when
    /// there is only one column panel. A product with fewer rows than a tile (a
    /// matrix-vector product) reads `B` in place, all its rows in one tile.
    pub fn default_for(spec: &ProductSpec, lanes: i64) -> ProductTiling {
        let wide = lanes >= 16;
        let nr = lanes * if wide { 4 } else { 2 };
        let pack_b = spec.m >= 6;
        let mr = if pack_b { 6 } else { spec.m.max(1) };
        let panels = spec.batch * ((spec.n + nr - 1) / nr);
        // Rows are split only when there is a single column panel, so that two threads get
        // a task each: measured, splitting the rows of several panels costs up to 4x (a
        // 256x2304x256 product: 4.9 ms in two row blocks, 1.2 ms in one), more than any
        // load balance gains.
        let want = if panels >= 2 { 1 } else { 2 };
        let row_block = (spec.m + want - 1) / want;
        ProductTiling {
            mr,
            nr,
            // 512: measured faster than 256 on every product tried (the panel, 128 KB, lives
            // in L2; fewer passes over C).
            kc: 512,
            row_block: round_up(row_block.max(1), mr),
            lanes,
            pack_b,
        }
    }
}

fn round_up(x: i64, m: i64) -> i64 {
    (x + m - 1) / m * m
}

/// Whether tiling pays off for this product: a big enough product in f32 with at least a
/// vector of columns.
pub fn worth_tiling(spec: &ProductSpec, lanes: i64) -> bool {
    spec.dtype == DType::F32
        && spec.n >= lanes
        && spec.k >= 8
        && spec.batch * spec.m * spec.n * spec.k >= 1 << 15
}

/// Rebuilds `prog` (whose body computes `spec`) as the tiled product. The program keeps its
/// parameters; a scratch buffer for the packed panel is added.
pub fn tile(
    prog: &LoopProgram,
    spec: &ProductSpec,
    t: &ProductTiling,
) -> Result<LoopProgram, PassError> {
    t.validate(spec)?;
    let mut g = Gen {
        spec,
        t: *t,
        next: 0,
        panel: format!("{}_bp", spec.out),
        acc: format!("{}_acc", spec.out),
    };
    while prog.buffer(&g.panel).is_some() {
        g.panel.push('_');
    }
    while prog.buffer(&g.acc).is_some() || g.acc == g.panel {
        g.acc.push('_');
    }
    let body = g.program();
    let mut buffers: Vec<Buffer> = prog.params().cloned().collect();
    buffers.push(Buffer {
        name: g.acc.clone(),
        dtype: spec.dtype,
        len: (t.mr * t.nr) as usize,
        role: BufRole::Scratch,
    });
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

struct Gen<'a> {
    spec: &'a ProductSpec,
    t: ProductTiling,
    next: usize,
    panel: String,
    /// The register tile's accumulators (scratch, `mr x nr`).
    acc: String,
}

/// Where one task works: the batch index, the first row and the first column.
struct Origin {
    b: IExpr,
    i0: IExpr,
    j0: IExpr,
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
        let [vb, vi, vj, vk] = &self.spec.vars;
        e.subst(vb, b).subst(vi, i).subst(vj, j).subst(vk, k)
    }
    fn c_at(&self, b: &IExpr, i: &IExpr, j: &IExpr) -> IExpr {
        let [vb, vi, vj, _] = &self.spec.vars;
        self.spec.c_index.subst(vb, b).subst(vi, i).subst(vj, j)
    }

    fn program(&mut self) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let panels = (s.n + t.nr - 1) / t.nr;
        let blocks = (s.m + t.row_block - 1) / t.row_block;
        let tasks = s.batch * panels * blocks;
        let (last_w, last_r) = (s.n - (panels - 1) * t.nr, s.m - (blocks - 1) * t.row_block);
        let task = self.for_(tasks, LoopKind::Serial, |g, p| {
            let panel = p.clone().floordiv(blocks).modulo(panels);
            let block = p.clone().modulo(blocks);
            let o = Origin {
                b: if s.batch > 1 {
                    p.floordiv(blocks * panels)
                } else {
                    IExpr::c(0)
                },
                i0: block.clone().times(t.row_block),
                j0: panel.clone().times(t.nr),
            };
            // Full panels and row blocks, and the last (possibly narrower / shorter) ones.
            let rows = |g: &mut Gen, o: &Origin, w: i64| -> Vec<Stmt> {
                if blocks == 1 || last_r == t.row_block {
                    return g.task(o, w, last_r);
                }
                let mut v = guarded(
                    block.clone(),
                    CmpOp::Lt,
                    blocks - 1,
                    g.task(o, w, t.row_block),
                );
                v.extend(guarded(
                    block.clone(),
                    CmpOp::Ge,
                    blocks - 1,
                    g.task(o, w, last_r),
                ));
                v
            };
            if panels == 1 || last_w == t.nr {
                return rows(g, &o, last_w);
            }
            let mut v = guarded(panel.clone(), CmpOp::Lt, panels - 1, rows(g, &o, t.nr));
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

    /// One task: `rows` rows and `w` columns of `C` from `o`.
    fn task(&mut self, o: &Origin, w: i64, rows: i64) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let mut out = vec![self.store_rows(o, w, rows, &s.init)];
        let full = s.k / t.kc;
        if full > 0 {
            out.push(self.for_(full, LoopKind::Serial, |g, kb| {
                g.k_block(o, w, rows, kb.times(t.kc), t.kc)
            }));
        }
        if s.k % t.kc != 0 && !tessera_ir::planted::active(tessera_ir::planted::Bug::ProductKTail) {
            out.extend(self.k_block(o, w, rows, IExpr::c(full * t.kc), s.k % t.kc));
        }
        if let Some(fin) = &s.finish {
            out.push(self.store_rows(o, w, rows, fin));
        }
        out
    }

    /// `C[i, j] = value(i, j)` over the task's rows and columns (the init, the epilogue).
    fn store_rows(&mut self, o: &Origin, w: i64, rows: i64, value: &VExpr) -> Stmt {
        let (out, lanes) = (&self.spec.out, LoopKind::Vectorize(self.t.lanes as u32));
        self.for_(rows, LoopKind::Serial, |g, r| {
            vec![g.for_(w, lanes, |g, c| {
                let (i, j) = (o.i0.clone().plus(r.clone()), o.j0.clone().plus(c));
                vec![Stmt::Store {
                    buf: out.clone(),
                    index: g.c_at(&o.b, &i, &j),
                    value: g.at(value, &o.b, &i, &j, &IExpr::c(0)),
                }]
            })]
        })
    }

    /// Packs `B[k0 .. k0+kc, panel]` (if the tiling packs) and runs the micro-kernel over the
    /// task's rows.
    fn k_block(&mut self, o: &Origin, w: i64, rows: i64, k0: IExpr, kc: i64) -> Vec<Stmt> {
        let (s, t) = (self.spec, self.t);
        let lanes = LoopKind::Vectorize(t.lanes as u32);
        let panel = self.panel.clone();
        let mut out = Vec::new();
        if t.pack_b {
            out.push(self.for_(kc, LoopKind::Serial, |g, kk| {
                vec![g.for_(w, lanes, |g, c| {
                    let (k, j) = (k0.clone().plus(kk.clone()), o.j0.clone().plus(c.clone()));
                    vec![Stmt::Store {
                        buf: panel.clone(),
                        index: kk.clone().times(t.nr).plus(c),
                        value: g.at(&s.b, &o.b, &IExpr::c(0), &j, &k),
                    }]
                })]
            }));
        }
        let tiles = rows / t.mr;
        // The register tile lives in an explicit accumulator (scratch, promoted to vector
        // registers): loaded from C, updated every k step, stored back. Relying on LLVM to
        // promote C itself failed in tasks that start at a computed row (3-4x slower).
        let acc = self.acc.clone();
        let micro = |g: &mut Gen, first_row: IExpr, mr: i64| -> Vec<Stmt> {
            let tile = |g: &mut Gen, body: &dyn Fn(&mut Gen, &IExpr, &IExpr, IExpr) -> Stmt| {
                g.for_(mr, LoopKind::Unroll(mr as u32), |g, r| {
                    vec![g.for_(w, lanes, |g, c| {
                        let i = o.i0.clone().plus(first_row.clone()).plus(r.clone());
                        let ci = g.c_at(&o.b, &i, &o.j0.clone().plus(c.clone()));
                        vec![body(g, &r, &c, ci)]
                    })]
                })
            };
            let at = |r: &IExpr, c: &IExpr| r.clone().times(t.nr).plus(c.clone());
            let load = tile(g, &|_, r, c, ci| Stmt::Store {
                buf: acc.clone(),
                index: at(r, c),
                value: VExpr::load(&s.out, ci),
            });
            let steps = g.for_(kc, LoopKind::Serial, |g, kk| {
                vec![g.for_(mr, LoopKind::Unroll(mr as u32), |g, r| {
                    vec![g.for_(w, lanes, |g, c| {
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
            let store = tile(g, &|_, r, c, ci| Stmt::Store {
                buf: s.out.clone(),
                index: ci,
                value: VExpr::load(&acc, at(r, c)),
            });
            vec![load, steps, store]
        };
        if tiles > 0 {
            out.push(self.for_(tiles, LoopKind::Serial, |g, tile| {
                micro(g, tile.times(t.mr), t.mr)
            }));
        }
        if rows % t.mr != 0 {
            out.extend(micro(self, IExpr::c(tiles * t.mr), rows % t.mr));
        }
        out
    }
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
