//! TMA statements on the GPU (see `tessera_ir::loops::tma`): mbarriers as `mbarrier.*`
//! instructions on their shared objects, a tensor copy as one `cp.async.bulk.tensor` through
//! the kernel's tensor maps — an array of encoded `CUtensorMap`s in global memory that the
//! kernel takes after its buffers (the runtime encodes them, `tessera_ir::plan::GpuKernel::
//! tensor_maps`), each 64-byte aligned (the array is, and a map is 128 bytes).
//!
//! Shared addresses go to the instructions as 32-bit registers (`cvta`-free: a
//! `ptr addrspace(3)` is an offset into the block's shared window), the tensor map's as its
//! 64-bit generic address.

use super::Em;
use crate::error::CodegenError;
use tessera_ir::loops::regs::{RegisterChange, SetMaxNReg};
use tessera_ir::loops::tma::{
    AsyncProxy, Mbarrier, MbarrierOp, TENSOR_MAP_BYTES, TensorCopy, TensorMap, TensorStore,
};
use tessera_ir::loops::{IExpr, Stmt};

/// Whether a guarded block may run as predicated instructions: TMA statements that issue
/// (not waits, which loop).
pub(super) fn predicable(body: &[Stmt]) -> bool {
    !body.is_empty()
        && body.iter().all(|s| match s {
            Stmt::TensorCopy(_) | Stmt::TensorStore(_) | Stmt::AsyncProxy(_) => true,
            Stmt::Mbarrier(m) => !matches!(m.op, MbarrierOp::Wait { .. }),
            _ => false,
        })
}

/// Whether `s` is a TMA statement, or one thread's block of them.
pub(super) fn leads(s: &Stmt) -> bool {
    match s {
        Stmt::Mbarrier(_) | Stmt::TensorCopy(_) | Stmt::TensorStore(_) | Stmt::AsyncProxy(_) => {
            true
        }
        Stmt::If { then, .. } => predicable(then),
        _ => false,
    }
}

/// The kernel parameter holding the tensor maps.
pub(super) const TENSOR_MAPS_PARAM: &str = "%tensor_maps";

impl Em<'_> {
    /// The 32-bit shared address of element `at` of shared buffer `buf`.
    fn shared_address(&mut self, buf: &str, at: &IExpr) -> Result<String, CodegenError> {
        let ptr = self.pointer(buf, at)?;
        Ok(self.op(format!("llvm.ptrtoint {ptr} : !llvm.ptr<3> to i32")))
    }

    /// `setmaxnreg.{dec,inc}.sync.aligned.u32 n` (see `tessera_ir::loops::regs`): the
    /// warpgroup's threads hold `n` registers each from here on (ptxas allocates the code
    /// after it within them).
    pub(super) fn set_max_nreg(&mut self, r: &SetMaxNReg) {
        let change = match r.change {
            RegisterChange::Release => "dec",
            RegisterChange::Claim => "inc",
        };
        self.asm(&format!(
            "setmaxnreg.{change}.sync.aligned.u32 {};",
            r.count
        ));
    }

    /// An `asm volatile` statement of `text` over `i32` / `i64` operands (`"r"` / `"l"`),
    /// under the enclosing predicate if any (the one emitter of operand-less inline PTX
    /// too: `Em::asm`).
    pub(super) fn asm_with(&mut self, text: &str, operands: &[(String, &str)]) {
        let mut operands = operands.to_vec();
        let text = match self.predicate.clone() {
            Some(p) => {
                operands.push((p, "i32"));
                format!(
                    "{{ .reg .pred tessera_p; setp.ne.b32 tessera_p, ${}, 0; @tessera_p {text} }}",
                    operands.len() - 1
                )
            }
            None => text.to_string(),
        };
        let constraints: Vec<&str> = operands
            .iter()
            .map(|(_, ty)| if *ty == "i64" { "l" } else { "r" })
            .collect();
        let values: Vec<&str> = operands.iter().map(|(v, _)| v.as_str()).collect();
        let types: Vec<&str> = operands.iter().map(|(_, ty)| *ty).collect();
        self.line(format!(
            "llvm.inline_asm has_side_effects asm_dialect = att \"{text}\", \"{}\" {} : ({}) \
             -> ()",
            constraints.join(","),
            values.join(", "),
            types.join(", ")
        ));
    }

    pub(super) fn mbarrier(&mut self, m: &Mbarrier) -> Result<(), CodegenError> {
        let bar = self.shared_address(&m.buf, &m.at)?;
        match &m.op {
            MbarrierOp::Init { count } => {
                let count = self.i32_const(*count);
                self.asm_with(
                    "mbarrier.init.shared::cta.b64 [$0], $1;",
                    &[(bar, "i32"), (count, "i32")],
                );
                // The initialisation is visible to the tensor copies' async proxy (and to
                // the other threads, after the barrier that follows).
                self.asm_with("fence.mbarrier_init.release.cluster;", &[]);
                self.asm_with("fence.proxy.async.shared::cta;", &[]);
            }
            MbarrierOp::ExpectTx { bytes } => {
                let bytes = self.i32_const(*bytes);
                self.asm_with(
                    "mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], $1;",
                    &[(bar, "i32"), (bytes, "i32")],
                );
            }
            MbarrierOp::Arrive => {
                self.asm_with("mbarrier.arrive.shared::cta.b64 _, [$0];", &[(bar, "i32")]);
            }
            MbarrierOp::Wait { parity } => {
                let parity = self.i32_operand(parity)?;
                self.asm_with(
                    "{ .reg .pred done; tessera_wait: mbarrier.try_wait.parity.shared::cta.b64 \
                     done, [$0], $1; @!done bra tessera_wait; }",
                    &[(bar, "i32"), (parity, "i32")],
                );
            }
        }
        Ok(())
    }

    /// The 64-bit generic address of the kernel's encoded tensor map `map`.
    fn tensor_map_address(&mut self, map: &TensorMap) -> Result<String, CodegenError> {
        let index = self
            .tensor_maps
            .iter()
            .position(|m| m == map)
            .ok_or_else(|| self.unsupported("a tensor statement whose map the kernel lacks"))?;
        let maps = self.op(format!(
            "memref.extract_aligned_pointer_as_index {TENSOR_MAPS_PARAM} : {} -> index",
            self.tensor_maps_type()
        ));
        let maps = self.op(format!("arith.index_cast {maps} : index to i64"));
        let offset = self.op(format!("arith.constant {} : i64", index * TENSOR_MAP_BYTES));
        Ok(self.op(format!("arith.addi {maps}, {offset} : i64")))
    }

    /// One `cp.async.bulk.tensor` of the copy's box through its tensor map.
    pub(super) fn tensor_copy(&mut self, c: &TensorCopy) -> Result<(), CodegenError> {
        let map = self.tensor_map_address(&c.map)?;
        let dst = self.shared_address(&c.dst, &c.dst_at)?;
        let bar = self.shared_address(&c.barrier, &c.barrier_at)?;
        let mut operands = vec![(dst, "i32"), (map, "i64")];
        for coord in &c.coords {
            operands.push((self.i32_operand(coord)?, "i32"));
        }
        operands.push((bar, "i32"));
        let rank = c.coords.len();
        let coords: Vec<String> = (0..rank).map(|d| format!("${}", d + 2)).collect();
        self.asm_with(
            &format!(
                "cp.async.bulk.tensor.{rank}d.shared::cluster.global.mbarrier::complete_tx::bytes \
                 [$0], [$1, {{{}}}], [${}];",
                coords.join(", "),
                rank + 2
            ),
            &operands,
        );
        Ok(())
    }

    /// One `cp.async.bulk.tensor` of the store's box from shared memory through its tensor
    /// map, committed as a bulk group of its own (what `bulk_wait_read` counts).
    pub(super) fn tensor_store(&mut self, c: &TensorStore) -> Result<(), CodegenError> {
        let map = self.tensor_map_address(&c.map)?;
        let src = self.shared_address(&c.src, &c.src_at)?;
        let mut operands = vec![(map, "i64"), (src, "i32")];
        for coord in &c.coords {
            operands.push((self.i32_operand(coord)?, "i32"));
        }
        let rank = c.coords.len();
        let coords: Vec<String> = (0..rank).map(|d| format!("${}", d + 2)).collect();
        self.asm_with(
            &format!(
                "cp.async.bulk.tensor.{rank}d.global.shared::cta.bulk_group [$0, {{{}}}], [$1];",
                coords.join(", ")
            ),
            &operands,
        );
        self.asm_with("cp.async.bulk.commit_group;", &[]);
        Ok(())
    }

    /// `fence.proxy.async.shared::cta` or `cp.async.bulk.wait_group.read n`.
    pub(super) fn async_proxy(&mut self, a: &AsyncProxy) {
        match a {
            AsyncProxy::Fence => self.asm_with("fence.proxy.async.shared::cta;", &[]),
            AsyncProxy::WaitRead { pending } => {
                self.asm_with(&format!("cp.async.bulk.wait_group.read {pending};"), &[])
            }
        }
    }

    /// The MLIR type of the tensor-map parameter.
    pub(super) fn tensor_maps_type(&self) -> String {
        format!("memref<{}xi8>", self.tensor_maps.len() * TENSOR_MAP_BYTES)
    }
}
