//! GPU-specific emission: loops bound to blocks and threads (`tessera_ir::loops::gpu`).
//!
//! A bound loop is not a loop on the GPU: its index is the block's or thread's own
//! coordinate, read from an `nvvm` special register. The grid has exactly as many blocks as a
//! block loop's extent, so block loops need no guard; a block has as many threads along an
//! axis as its longest thread loop, so shorter sibling thread loops are guarded. Sibling
//! thread loops of one block run one after another, separated by a barrier
//! (`bar.sync`), which also orders their memory accesses within the block; a uniform loop of
//! thread loops ends each iteration with one. Shared buffers are address-space-3 globals, local
//! ones a per-thread `alloca` (registers once LLVM promotes them).

use super::Em;
use crate::error::CodegenError;
use tessera_ir::loops::gpu::is_uniform;
use tessera_ir::loops::{Loop, LoopKind, Stmt};

impl Em<'_> {
    /// The statements of a block loop (or of a whole GPU function): thread loops and uniform
    /// loops of them, a barrier between two consecutive ones (none after a uniform loop, whose
    /// iterations already end with one).
    pub(super) fn block_body(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        let uniform = |s: &Stmt| matches!(s, Stmt::For(l) if is_uniform(l.kind));
        for (i, s) in body.iter().enumerate() {
            if i > 0 && !uniform(&body[i - 1]) {
                self.line("nvvm.barrier0".into());
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
        self.line("nvvm.barrier0".into());
        self.idx.remove(&l.var);
        self.depth -= 1;
        self.line("}".into());
        Ok(())
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
            for s in &l.body {
                self.stmt(s)?;
            }
        }
        if guarded {
            self.depth -= 1;
            self.line("}".into());
        }
        self.idx.remove(&l.var);
        Ok(())
    }
}
