//! GPU-specific emission: loops bound to blocks and threads (`tessera_ir::loops::gpu`).
//!
//! A bound loop is not a loop on the GPU: its index is the block's or thread's own
//! coordinate, read from an `nvvm` special register. The grid has exactly as many blocks as a
//! block loop's extent, so block loops need no guard; a block has as many threads along an
//! axis as its longest thread loop, so shorter sibling thread loops are guarded. Sibling
//! thread loops of one block run one after another, separated by a barrier
//! (`bar.sync`), which also orders their memory accesses within the block.

use super::Em;
use crate::error::CodegenError;
use tessera_ir::loops::{Loop, LoopKind, Stmt};

impl Em<'_> {
    /// The statements of a block loop (or of a whole GPU function): a barrier between two
    /// consecutive thread loops.
    pub(super) fn block_body(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        let is_thread_loop =
            |s: &Stmt| matches!(s, Stmt::For(l) if matches!(l.kind, LoopKind::Thread(_)));
        for (i, s) in body.iter().enumerate() {
            if i > 0 && is_thread_loop(s) && is_thread_loop(&body[i - 1]) {
                self.line("nvvm.barrier0".into());
            }
            self.stmt(s)?;
        }
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
