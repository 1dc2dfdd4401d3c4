//! GPU-specific emission: loops bound to blocks and threads (`tessera_ir::loops::gpu`).
//!
//! A bound loop is not a loop on the GPU: its index is the block's or thread's own
//! coordinate, read from an `nvvm` special register. The grid has exactly as many blocks as a
//! block loop's extent, so block loops need no guard; a block has as many threads along an
//! axis as its longest thread loop, so shorter sibling thread loops are guarded. Sibling
//! thread loops of one block run one after another, separated by a barrier
//! (`bar.sync`), which also orders their memory accesses within the block; a uniform loop of
//! thread loops ends each iteration with one. Shared buffers are address-space-3 globals, local
//! ones a per-thread `alloca` (registers once LLVM promotes them). A tensor-core step
//! (`mma`) is one `mma.sync` of the warp, its fragments loaded by `ldmatrix` where the tiles'
//! rows allow, a warp fold (`warp_fold`) a butterfly of
//! `shfl.sync.bfly`; elsewhere each runs as its per-thread expansion.

use super::Em;
use crate::error::CodegenError;
use tessera_ir::DType;
use tessera_ir::loops::async_copy::AsyncCopy;
use tessera_ir::loops::gpu::is_uniform;
use tessera_ir::loops::mma::{Mma, MmaOperand};
use tessera_ir::loops::shuffle::WarpFold;
use tessera_ir::loops::{BufRole, IExpr, Loop, LoopKind, Stmt, VExpr};

/// Which operand of `mma.m16n8k16` an `ldmatrix` loads.
#[derive(Clone, Copy)]
enum Matrices {
    /// `A`: four 8×8 matrices.
    A,
    /// `B`: two 8×8 matrices, transposed.
    B,
}

/// The type `nvvm.mma.sync` returns: the thread's four f32 accumulators.
const MMA_RESULT: &str = "!llvm.struct<(f32, f32, f32, f32)>";

impl Em<'_> {
    /// The statements of a block loop (or of a whole GPU function): thread loops and uniform
    /// loops of them, a barrier between two consecutive ones (none after a uniform loop, whose
    /// iterations already end with one).
    pub(super) fn block_body(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        let uniform = |s: &Stmt| matches!(s, Stmt::For(l) if is_uniform(l.kind));
        for (i, s) in body.iter().enumerate() {
            if i > 0 && !uniform(&body[i - 1]) {
                self.barrier();
            }
            match s {
                Stmt::For(l) if is_uniform(l.kind) => self.uniform_loop(l)?,
                _ => self.stmt(s)?,
            }
        }
        Ok(())
    }

    /// A loop every thread of the block runs alike, holding thread loops: each iteration is a
    /// block body followed by a barrier (the next iteration may overwrite what this one read).
    fn uniform_loop(&mut self, l: &Loop) -> Result<(), CodegenError> {
        let (lo, hi, step) = (
            self.index_const(0),
            self.index_const(l.extent),
            self.index_const(1),
        );
        let iv = self.fresh();
        self.line(format!("scf.for {iv} = {lo} to {hi} step {step} {{"));
        self.depth += 1;
        self.idx.insert(l.var.clone(), iv);
        self.block_body(&l.body)?;
        self.barrier();
        self.idx.remove(&l.var);
        self.depth -= 1;
        self.line("}".into());
        Ok(())
    }

    /// A barrier of the block (`bar.sync`); in a kernel with asynchronous copies, each
    /// thread first commits the copies it issued since the last barrier as one group and
    /// waits until at most `n − 1` groups are pending (`cp.async.wait_group`), `n` the least
    /// number of barriers a copy of the kernel takes to land: after the barrier every copy
    /// issued `n` barriers back has landed (see `tessera_ir::loops::async_copy`).
    fn barrier(&mut self) {
        if let Some(lands) = self.async_lands {
            self.line("nvvm.cp.async.commit.group".into());
            self.line(format!("nvvm.cp.async.wait.group {}", lands - 1));
        }
        if self.warpgroup.is_some() {
            // Shared stores (and landed copies) become visible to `wgmma`'s reads.
            self.asm("fence.proxy.async.shared::cta;");
        }
        self.line("nvvm.barrier0".into());
    }

    /// A loop bound to a block or thread index.
    pub(super) fn bound_loop(&mut self, l: &Loop) -> Result<(), CodegenError> {
        let (register, axis) = match l.kind {
            LoopKind::Block(a) => ("ctaid", a),
            LoopKind::Thread(a) => ("tid", a),
            _ => unreachable!("called on bound loops only"),
        };
        let raw = self.op(format!(
            "nvvm.read.ptx.sreg.{register}.{} : i32",
            axis.name()
        ));
        let iv = self.op(format!("arith.index_cast {raw} : i32 to index"));
        self.idx.insert(l.var.clone(), iv.clone());
        let guarded = matches!(l.kind, LoopKind::Thread(_))
            && l.extent < self.block_dims[axis.index()] as i64;
        if guarded {
            let n = self.index_const(l.extent);
            let inside = self.op(format!("arith.cmpi slt, {iv}, {n} : index"));
            self.line(format!("scf.if {inside} {{"));
            self.depth += 1;
        }
        if matches!(l.kind, LoopKind::Block(_)) {
            self.block_body(&l.body)?;
        } else {
            // A thread loop's leading TMA statements (the next tile's copies, the wait for
            // this one's) come before its warpgroup steps' fence: between the fence and the
            // steps, the wait's loop would make ptxas serialise them (C7519).
            let lead = l.body.iter().take_while(|s| super::tma::leads(s)).count();
            for s in &l.body[..lead] {
                self.stmt(s)?;
            }
            let accs = self.begin_warpgroup_steps(&l.body[lead..]);
            for s in &l.body[lead..] {
                self.stmt(s)?;
            }
            self.end_warpgroup_steps(&accs);
        }
        if guarded {
            self.depth -= 1;
            self.line("}".into());
        }
        self.idx.remove(&l.var);
        Ok(())
    }

    /// The statements of a loop or guard nested in a thread loop (on the CPU: anywhere):
    /// on the GPU each run of consecutive warpgroup steps there is bracketed by itself — a
    /// warp-specialised consumer's `k` loop waits for a tile, multiplies it, and releases
    /// its buffer only once the steps have read it (see [`super::wgmma`]). In a kernel whose
    /// steps stay in flight, each run of statements that read or write their sums (and hold
    /// no step: a persistent consumer's stores of a tile's sums, the next tile's initial
    /// ones) first waits for every step and pins the sums, and pins them after — as a
    /// thread loop without steps does.
    pub(super) fn nested_body(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        let gpu = self.cfg.backend == super::Backend::Cuda && !self.threads.is_empty();
        let settle_sums = gpu && !self.sums_settled;
        let mut rest = body;
        while let Some(first) = rest.first() {
            let sums = match &self.warpgroup {
                Some(kernel) if settle_sums && kernel.stays_in_flight() => {
                    rest.iter().take_while(|s| kernel.sums_of(s)).count()
                }
                _ => 0,
            };
            if sums > 0 {
                let settle = self.begin_warpgroup_steps(&[]);
                self.sums_settled = true;
                for s in &rest[..sums] {
                    self.stmt(s)?;
                }
                self.sums_settled = false;
                self.end_warpgroup_steps(&settle);
                rest = &rest[sums..];
                continue;
            }
            let run = match gpu {
                true => rest.iter().take_while(|s| s.is_warpgroup_step()).count(),
                false => 0,
            };
            if run == 0 {
                self.stmt(first)?;
                rest = &rest[1..];
                continue;
            }
            let steps = self.begin_warpgroup_steps(&rest[..run]);
            for s in &rest[..run] {
                self.stmt(s)?;
            }
            self.end_warpgroup_steps(&steps);
            rest = &rest[run..];
        }
        Ok(())
    }

    /// A warp's tensor-core step on the GPU: the thread's fragments of `A` (four pairs of
    /// elements along `k`) and `B` (two pairs) loaded from shared memory in PTX's
    /// `m16n8k16` layout, one `mma.sync`, its four sums stored back to the accumulators.
    /// (The CPU runs the per-thread expansion, see `Em::stmt`.)
    pub(super) fn mma(&mut self, m: &Mma) -> Result<(), CodegenError> {
        let dtype = self.bufs[&m.a.buf].1;
        let (group, pair) = (
            m.lane.clone().floordiv(4),
            m.lane.clone().modulo(4).times(2),
        );
        // A register holds elements `(row, col)` and `(row, col + 1)` of its tile.
        let fragment = |em: &mut Self, op: &MmaOperand, regs: &[(IExpr, IExpr)]| {
            regs.iter()
                .map(|(row, col)| {
                    let lo = em.load(&op.buf, &op.at(row.clone(), col.clone()))?;
                    let hi =
                        em.load(&op.buf, &op.at(row.clone(), col.clone().plus(IExpr::c(1))))?;
                    // LLVM-dialect vector ops: the GPU pipeline lowers no `vector` dialect.
                    let pair = format!("vector<2x{}>", super::scalar_ty(dtype));
                    let mut v = em.op(format!("llvm.mlir.poison : {pair}"));
                    for (lane, x) in [lo, hi].into_iter().enumerate() {
                        let at = em.i32_const(lane as i64);
                        v = em.op(format!("llvm.insertelement {x}, {v}[{at} : i32] : {pair}"));
                    }
                    Ok(match dtype {
                        // The NVVM op takes bf16 pairs as 32-bit registers.
                        DType::BF16 => em.op(format!("llvm.bitcast {v} : vector<2xbf16> to i32")),
                        _ => v,
                    })
                })
                .collect::<Result<Vec<String>, CodegenError>>()
        };
        let eight = |e: &IExpr| e.clone().plus(IExpr::c(8));
        let a = match self.ldmatrix(&m.a, &m.lane, Matrices::A)? {
            Some(regs) => regs,
            None => fragment(
                self,
                &m.a,
                &[
                    (group.clone(), pair.clone()),
                    (eight(&group), pair.clone()),
                    (group.clone(), eight(&pair)),
                    (eight(&group), eight(&pair)),
                ],
            )?,
        };
        let b = match self.ldmatrix(&m.b, &m.lane, Matrices::B)? {
            Some(regs) => regs,
            None => {
                // `B`'s pairs run along `k`, its rows: (k, column) = (pair + {0, 1}, group).
                let b_t = MmaOperand {
                    strides: [m.b.strides[1], m.b.strides[0]],
                    ..m.b.clone()
                };
                fragment(
                    self,
                    &b_t,
                    &[(group.clone(), pair.clone()), (group, eight(&pair))],
                )?
            }
        };
        let (slots, c) = self.accumulators_in(m)?;
        let (operand_ty, ptx_types) = match dtype {
            DType::BF16 => (
                "i32",
                ", multiplicandAPtxType = #nvvm.mma_type<bf16>, \
                 multiplicandBPtxType = #nvvm.mma_type<bf16>",
            ),
            _ => ("vector<2xf16>", ""),
        };
        let d = self.op(format!(
            "nvvm.mma.sync A[{}] B[{}] C[{}] {{layoutA = #nvvm.mma_layout<row>, \
             layoutB = #nvvm.mma_layout<col>{ptx_types}, \
             shape = #nvvm.shape<m = 16, n = 8, k = 16>}} : ({operand_ty}, {operand_ty}, f32) \
             -> {MMA_RESULT}",
            a.join(", "),
            b.join(", "),
            c.join(", ")
        ));
        self.accumulators_out(m, &slots, &d, MMA_RESULT);
        Ok(())
    }

    /// The indices (SSA `index` values) of a tensor-core step's accumulators and their
    /// values, loaded.
    pub(super) fn accumulators_in(
        &mut self,
        m: &Mma,
    ) -> Result<(Vec<String>, Vec<String>), CodegenError> {
        let (acc, _, acc_ty) = self.bufs[&m.acc].clone();
        let slots = (0..m.shape.acc_per_lane())
            .map(|e| self.iexpr(&m.at.clone().plus(IExpr::c(e))))
            .collect::<Result<Vec<String>, CodegenError>>()?;
        let values = slots
            .iter()
            .map(|i| self.op(format!("memref.load {acc}[{i}] : {acc_ty}")))
            .collect();
        Ok((slots, values))
    }

    /// Stores the fields of `result` (a struct of type `ty`, the step's sums in order) back
    /// to the step's accumulators at `slots`.
    pub(super) fn accumulators_out(&mut self, m: &Mma, slots: &[String], result: &str, ty: &str) {
        let (acc, _, acc_ty) = self.bufs[&m.acc].clone();
        for (e, i) in slots.iter().enumerate() {
            let v = self.op(format!("llvm.extractvalue {result}[{e}] : {ty}"));
            self.line(format!("memref.store {v}, {acc}[{i}] : {acc_ty}"));
        }
    }

    /// The thread's fragment registers of `op` loaded by one `ldmatrix` of the warp, when its
    /// rows of 8 elements are 16 contiguous bytes at 16-byte-aligned shared addresses (the
    /// tensor-core schedule's padded tiles are): `None` otherwise (then element loads).
    ///
    /// `ldmatrix` reads 8×8 matrices of 16-bit elements; lane `l` gives the address of row
    /// `l % 8` of matrix `l / 8`, and receives, of each matrix, the pair (row `l / 4`, columns
    /// `2(l % 4)` and `+1`) — with `.trans`, of the transposed matrix. `A` (16×16, row-major
    /// along `k`) is four matrices, rows 0–7 / 8–15 × columns 0–7 / 8–15 in that order: the
    /// registers `a0a1, a2a3, a4a5, a6a7` of `mma.m16n8k16`. `B` (16×8, rows along `k`) is two
    /// matrices, `k` 0–7 and 8–15, transposed: each lane gets the pairs along `k` at column
    /// `l / 4`, the registers `b0b1, b2b3` (lanes 16–31 repeat lanes 0–15's addresses, which
    /// `.x2` ignores) — or, where the fragment's column is 16-aligned or 8 past, four
    /// matrices addressed as `A`'s from the aligned column: `b0b1, b2b3` of both neighbours.
    fn ldmatrix(
        &mut self,
        op: &MmaOperand,
        lane: &IExpr,
        which: Matrices,
    ) -> Result<Option<Vec<String>>, CodegenError> {
        const ROW: i64 = 8;
        let (_, dtype, memref) = self.bufs[&op.buf].clone();
        if !memref.ends_with(", 3>")
            || op.strides[1] != 1
            || op.strides[0] % ROW != 0
            || !op.base.is_multiple_of(ROW)
        {
            return Ok(None);
        }
        let matrix = lane.clone().floordiv(ROW);
        let row_in = lane.clone().modulo(ROW);
        // Four matrices: rows 0–7 / 8–15 × columns 0–7 / 8–15, in that order.
        let four = (
            matrix.clone().modulo(2).times(ROW).plus(row_in.clone()),
            matrix.clone().floordiv(2).times(ROW),
        );
        // `B` at a column 16-aligned in the tile, or 8 past one: one `.x4` loads it and its
        // neighbour (registers 0–1 and 2–3), the same instruction for both fragments —
        // LLVM keeps one of the two — where the pair's 16 columns stay inside the buffer.
        let len = self.prog.buffer(&op.buf).map_or(0, |b| b.len as i64);
        let pair_inside = |base: IExpr| {
            let last = base.plus(IExpr::c(15 * op.strides[0] + 15));
            last.range(&|v| self.extents.get(v).copied())
                .is_some_and(|(lo, hi)| lo >= 0 && hi < len)
        };
        let residue = match op.base.residue(16) {
            Some(0) if pair_inside(op.base.clone()) => Some(0),
            Some(8) if pair_inside(op.base.clone().minus(IExpr::c(8))) => Some(8),
            _ => None,
        };
        let (num, layout, (row, col), base, keep) = match (which, residue) {
            (Matrices::A, _) => (4, "row", four, op.base.clone(), 0..4),
            (Matrices::B, Some(0)) => (4, "col", four, op.base.clone(), 0..2),
            (Matrices::B, Some(8)) => (4, "col", four, op.base.clone().minus(IExpr::c(8)), 2..4),
            (Matrices::B, _) => (
                2,
                "col",
                (matrix.modulo(2).times(ROW).plus(row_in), IExpr::c(0)),
                op.base.clone(),
                0..2,
            ),
        };
        let at = MmaOperand { base, ..op.clone() };
        let ptr = self.pointer(&op.buf, &at.at(row, col))?;
        let regs = vec!["i32"; num].join(", ");
        let loaded = self.op(format!(
            "nvvm.ldmatrix {ptr} {{eltType = #nvvm.ld_st_matrix_elt_type<b16>, \
             layout = #nvvm.mma_layout<{layout}>, num = {num} : i32, \
             shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>}} : (!llvm.ptr<3>) \
             -> !llvm.struct<({regs})>"
        ));
        Ok(Some(
            keep.map(|r| {
                let x = self.op(format!(
                    "llvm.extractvalue {loaded}[{r}] : !llvm.struct<({regs})>"
                ));
                match dtype {
                    // The NVVM `mma` takes f16 pairs as vectors, bf16 pairs as i32.
                    DType::BF16 => x,
                    _ => self.op(format!("llvm.bitcast {x} : i32 to vector<2xf16>")),
                }
            })
            .collect(),
        ))
    }

    /// An LLVM pointer to element `at` of `buf`: `!llvm.ptr<3>` into a shared buffer,
    /// `!llvm.ptr<1>` into a parameter (global memory).
    pub(super) fn pointer(&mut self, buf: &str, at: &IExpr) -> Result<String, CodegenError> {
        let (value, dtype, memref) = self.bufs[buf].clone();
        let space = if memref.ends_with(", 3>") { 3 } else { 1 };
        let elem = super::mem_ty(dtype);
        let offset = self.iexpr(at)?;
        let offset = self.op(format!("arith.index_cast {offset} : index to i64"));
        let base = self.op(format!(
            "memref.extract_aligned_pointer_as_index {value} : {memref} -> index"
        ));
        let base = self.op(format!("arith.index_cast {base} : index to i64"));
        let base = match space {
            3 => self.op(format!("llvm.inttoptr {base} : i64 to !llvm.ptr<3>")),
            // A parameter is a generic address of global memory.
            _ => {
                let generic = self.op(format!("llvm.inttoptr {base} : i64 to !llvm.ptr"));
                self.op(format!(
                    "llvm.addrspacecast {generic} : !llvm.ptr to !llvm.ptr<1>"
                ))
            }
        };
        Ok(self.op(format!(
            "llvm.getelementptr {base}[{offset}] : (!llvm.ptr<{space}>, i64) -> \
             !llvm.ptr<{space}>, {elem}"
        )))
    }

    /// The alignment in bytes `buf`'s first element is known to have: 16 for shared
    /// buffers (their globals are declared so), what the caller guarantees for parameters
    /// (see `EmitConfig::param_align`), else the element's size.
    fn buffer_alignment(&self, buf: &str) -> i64 {
        let elem = self.bufs[buf].1.size() as i64;
        let Some(pos) = self.prog.buffers.iter().position(|b| b.name == buf) else {
            return elem;
        };
        match self.prog.buffers[pos].role {
            BufRole::Shared => 16,
            r if r.is_param() => self
                .cfg
                .param_align
                .get(&self.prog.name)
                .and_then(|aligns| aligns.get(pos))
                .map_or(elem, |&a| (a as i64).max(elem)),
            _ => elem,
        }
    }

    /// Whether element `at` of `buf` is known to sit at an address that is a multiple of
    /// `bytes` (a power of two).
    fn aligned(&self, buf: &str, at: &IExpr, bytes: i64) -> bool {
        let elem = self.bufs[buf].1.size() as i64;
        self.buffer_alignment(buf) >= bytes && bytes % elem == 0 && at.is_multiple_of(bytes / elem)
    }

    /// A thread's asynchronous copy on the GPU: one `cp.async` (`.cg` for 16 bytes, `.ca`
    /// for 4 or 8), its source size the valid elements' bytes (the rest zero-filled), where
    /// the run is 4, 8 or 16 bytes at addresses known to be aligned to that; otherwise the
    /// expansion's loads and stores (complete at once, as good as at the next barrier).
    pub(super) fn async_copy(&mut self, c: &AsyncCopy) -> Result<(), CodegenError> {
        let elem = c.dtype.size() as i64;
        let bytes = c.len * elem;
        if !matches!(bytes, 4 | 8 | 16)
            || !self.aligned(&c.dst, &c.dst_at, bytes)
            || !self.aligned(&c.src, &c.src_at, bytes)
        {
            for s in Stmt::AsyncCopy(c.clone()).expansion() {
                self.stmt(&s)?;
            }
            return Ok(());
        }
        let dst = self.pointer(&c.dst, &c.dst_at)?;
        let mut src = self.pointer(&c.src, &c.src_at)?;
        let valid = self.i32_operand(&c.valid.clone().clamp(0, c.len).times(elem))?;
        if !matches!(c.valid, IExpr::Const(v) if v > 0) {
            // A run wholly outside its matrix reads nothing, but its address may lie past
            // the buffer: give the copy the buffer's first element instead.
            let first = self.pointer(&c.src, &IExpr::c(0))?;
            let zero = self.i32_const(0);
            let any = self.op(format!("arith.cmpi sgt, {valid}, {zero} : i32"));
            src = self.op(format!(
                "llvm.select {any}, {src}, {first} : i1, !llvm.ptr<1>"
            ));
        }
        let cache = if bytes == 16 { "cg" } else { "ca" };
        self.line(format!(
            "nvvm.cp.async.shared.global {dst}, {src}, {bytes}, cache = {cache}, {valid} : \
             !llvm.ptr<3>, !llvm.ptr<1>, i32"
        ));
        Ok(())
    }

    /// A warp's fold of shared elements on the GPU: each lane loads element `lane % width`
    /// and, per level, combines its value (first) with its butterfly partner's
    /// (`shfl.sync.bfly`, full mask); lane 0's operations are the expansion's.
    pub(super) fn warp_fold(&mut self, w: &WarpFold) -> Result<(), CodegenError> {
        let dtype = self.bufs[&w.src].1;
        let ty = super::scalar_ty(dtype);
        let own = w.base.clone().plus(w.lane.clone().modulo(w.width));
        let mut v = self.load(&w.src, &own)?;
        let mask = self.i32_const(-1);
        let clamp = self.i32_const(31);
        // The two operands as accumulators, so that `vexpr` emits `op` for the dtype.
        let (mine, theirs) = ("warp_fold_own", "warp_fold_other");
        let combine = VExpr::bin(
            w.op,
            VExpr::Acc(mine.into(), dtype),
            VExpr::Acc(theirs.into(), dtype),
        );
        for half in w.halves() {
            let offset = self.i32_const(half);
            let other = self.op(format!(
                "nvvm.shfl.sync bfly {mask}, {v}, {offset}, {clamp} : {ty} -> {ty}"
            ));
            self.accs.push((mine.into(), v, false));
            self.accs.push((theirs.into(), other, false));
            let combined = self.vexpr(&combine);
            self.accs.truncate(self.accs.len() - 2);
            v = combined?;
        }
        let (dst, _, dst_ty) = self.bufs[&w.dst].clone();
        let i = self.iexpr(&w.at)?;
        self.line(format!("memref.store {v}, {dst}[{i}] : {dst_ty}"));
        Ok(())
    }
}

/// The fewest barriers an asynchronous copy in `body` takes to land; `None` without any.
pub(super) fn least_async_lands(body: &[Stmt]) -> Option<i64> {
    body.iter()
        .filter_map(|s| match s {
            Stmt::AsyncCopy(c) => Some(c.lands),
            Stmt::For(l) => least_async_lands(&l.body),
            Stmt::If { then, .. } => least_async_lands(then),
            Stmt::Reduce(r) => least_async_lands(&r.body),
            Stmt::Store { .. }
            | Stmt::Mma(_)
            | Stmt::WarpFold(_)
            | Stmt::Mbarrier(_)
            | Stmt::SetMaxNReg(_)
            | Stmt::TensorCopy(_)
            | Stmt::TensorStore(_)
            | Stmt::AsyncProxy(_) => None,
        })
        .min()
}
