//! Warpgroup tensor-core steps on the GPU: `wgmma.mma_async` (sm_90a, Hopper).
//!
//! A warpgroup step (`mma m64nNk16`, see `tessera_ir::loops::mma`) reads both operand tiles
//! from shared memory through 64-bit *matrix descriptors* (start address, the leading and
//! stride byte offsets between core matrices, the layout: no swizzle, or the 128-byte
//! swizzle, whose tiles start 1024-byte aligned — `shared_alignment`) and adds into the
//! thread's `N / 2` f32 accumulators — asynchronously: the instruction only starts the
//! work. So each thread loop that holds such steps is bracketed, as PTX requires:
//!
//! ```text
//!   (accumulators pinned)  wgmma.fence            before the first step: earlier register
//!                                                 writes (the initial sums) are ordered
//!   wgmma.mma_async × steps                       (back to back on the tensor cores)
//!   wgmma.commit_group; wgmma.wait_group 0        the steps are done: sums readable, the
//!   (accumulators pinned)                         staged tiles free to overwrite
//! ```
//!
//! Steps that stay in flight across a barrier (`retires(2)`, see `tessera_ir::loops::mma`)
//! wait with `wgmma.wait_group 1` instead — the previous loop's group is done, this one may
//! run on — and are not pinned (their registers are the tensor core's until the wait); any
//! other thread loop of such a kernel (the epilogue) first waits for every group
//! (`wait_group 0`) and pins the sums.
//!
//! "Pinned" is an empty `asm volatile` that takes and returns each accumulator (CUTLASS's
//! `warpgroup_fence_operand`): LLVM cannot move a read or write of a sum across it, so no
//! read happens before the wait and no write after the fence. Shared memory written by
//! ordinary stores or `cp.async` (the generic proxy) is read by `wgmma` through the async
//! proxy: every barrier of a kernel with warpgroup steps is preceded by
//! `fence.proxy.async.shared::cta` (see `Em::barrier`).
//!
//! PTX: `wgmma` needs the arch-specific target `sm_90a` and PTX ISA 8.0; `crate::ptx`
//! picks both for a module with warpgroup steps (and refuses them for any other `sm`).

use super::Em;
use crate::error::CodegenError;
use tessera_ir::DType;
use tessera_ir::loops::mma::{Mma, MmaOperand};
use tessera_ir::loops::{LoopProgram, Stmt, any_stmt, each_stmt};

/// Descriptor bits 0–13 take the start address's bits 4–17 (`(x & 0x3FFFF) >> 4`).
const ADDRESS_BITS: i64 = 0x3FFFF;
/// The descriptor's layout type (bits 62–63) of the 128-byte swizzle (CUTLASS's
/// `LayoutType::B128`; 0 is no swizzle).
const SWIZZLE_128B: i64 = 1;

impl Em<'_> {
    /// One warpgroup step: both operand descriptors, the accumulators in, one
    /// `wgmma.mma_async` (accumulating: scale-d 1; `A` K-major, `B` N-major), the
    /// accumulators out.
    pub(super) fn wgmma(&mut self, m: &Mma, n: i64) -> Result<(), CodegenError> {
        let desc_a = self.descriptor(&m.a, true)?;
        let desc_b = self.descriptor(&m.b, false)?;
        let dtype = self.bufs[&m.a.buf].1;
        let ptx_type = match dtype {
            DType::BF16 => "bf16",
            _ => "f16",
        };
        let (slots, c) = self.accumulators_in(m)?;
        let sums = slots.len();
        let scale_d = self.i32_const(1);
        let d_regs: Vec<String> = (0..sums).map(|r| format!("${r}")).collect();
        let (desc_at, scale_at) = (2 * sums, 2 * sums + 2);
        let text = format!(
            "{{ .reg .pred p; setp.ne.b32 p, ${scale_at}, 0; \
             wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ptx_type}.{ptx_type} {{{}}}, \
             ${desc_at}, ${}, p, 1, 1, 0, 1; }}",
            d_regs.join(", "),
            desc_at + 1
        );
        let constraints: Vec<String> = (0..sums)
            .map(|_| "=f".to_string())
            .chain((0..sums).map(|r| r.to_string()))
            .chain(["l".into(), "l".into(), "r".into()])
            .collect();
        let result_ty = struct_of_f32(sums);
        let operand_tys: Vec<&str> = (0..sums)
            .map(|_| "f32")
            .chain(["i64", "i64", "i32"])
            .collect();
        let d = self.op(format!(
            "llvm.inline_asm has_side_effects asm_dialect = att \"{text}\", \"{}\" {}, \
             {desc_a}, {desc_b}, {scale_d} : ({}) -> {result_ty}",
            constraints.join(","),
            c.join(", "),
            operand_tys.join(", ")
        ));
        self.accumulators_out(m, &slots, &d, &result_ty);
        Ok(())
    }

    /// The matrix descriptor of operand `op` (`A`, read K-major, with `k_major`; else `B`,
    /// N-major): its base's shared address, the byte offsets between core matrices, the
    /// layout type. CUTLASS's `make_gmma_desc` (in 16-byte units):
    ///
    /// - no swizzle, K-major `((8,m),2):((1,SBO),LBO)`: `A`'s `blocks` `[R, C]` give
    ///   leading = `C` (along k), stride = `R` (along m); N-major `((1,n),(8,k)):((X,SBO),
    ///   (1,LBO))`: `B`'s leading = `R` (along k), stride = `C` (along n);
    /// - 128-byte swizzle (layout type 1, bits 62–63), K-major `((8,m),2):((8,SBO),1)`:
    ///   leading 1 (unused), stride 1024 bytes (8 rows of 128); N-major
    ///   `((8,n),(8,k)):((1,LBO),(8,SBO))`: leading = between atoms of 64 columns, stride
    ///   1024 bytes (8 rows along k).
    fn descriptor(&mut self, op: &MmaOperand, k_major: bool) -> Result<String, CodegenError> {
        let bytes = self.bufs[&op.buf].1.size() as i64;
        let (leading, stride, layout_type) = match (op.blocks, op.swizzle, k_major) {
            (Some([r, c]), None, true) => (c * bytes, r * bytes, 0),
            (Some([r, c]), None, false) => (r * bytes, c * bytes, 0),
            (None, Some(_), true) => (16, 8 * 128, SWIZZLE_128B),
            (None, Some(atoms), false) => (atoms * bytes, 8 * 128, SWIZZLE_128B),
            _ => {
                return Err(self.unsupported(
                    "a warpgroup mma operand neither of core matrices nor 128-byte swizzled",
                ));
            }
        };
        let ptr = self.pointer(&op.buf, &op.base)?;
        let addr = self.op(format!("llvm.ptrtoint {ptr} : !llvm.ptr<3> to i64"));
        let mask = self.op(format!("arith.constant {ADDRESS_BITS} : i64"));
        let addr = self.op(format!("arith.andi {addr}, {mask} : i64"));
        let four = self.op("arith.constant 4 : i64".into());
        let addr = self.op(format!("arith.shrui {addr}, {four} : i64"));
        let offsets = ((leading >> 4) << 16) | ((stride >> 4) << 32) | (layout_type << 62);
        let offsets = self.op(format!("arith.constant {offsets} : i64"));
        Ok(self.op(format!("arith.ori {addr}, {offsets} : i64")))
    }

    /// An `asm volatile` statement of `text`, without operands.
    pub(super) fn asm(&mut self, text: &str) {
        self.asm_with(text, &[]);
    }

    /// Pins every element of the accumulator buffers `accs` (see the module docs).
    fn pin_accumulators(&mut self, accs: &[String]) {
        for name in accs {
            let len = self.prog.buffer(name).map_or(0, |b| b.len);
            let (acc, _, acc_ty) = self.bufs[name].clone();
            for i in 0..len {
                let at = self.index_const(i as i64);
                let v = self.op(format!("memref.load {acc}[{at}] : {acc_ty}"));
                let pinned = self.op(format!(
                    "llvm.inline_asm has_side_effects asm_dialect = att \"\", \"=f,0\" {v} \
                     : (f32) -> f32"
                ));
                self.line(format!("memref.store {pinned}, {acc}[{at}] : {acc_ty}"));
            }
        }
    }

    /// Before a thread loop's statements `body`: where it holds warpgroup steps, fences
    /// (pinning their accumulators first unless steps of the kernel stay in flight across
    /// barriers, whose registers nothing else may touch); in a kernel whose steps stay in
    /// flight, any other thread loop first waits for them all and pins the sums. Returns
    /// what [`Em::end_warpgroup_steps`] needs.
    pub(super) fn begin_warpgroup_steps(&mut self, body: &[Stmt]) -> WarpgroupSteps {
        let steps = WarpgroupSteps::of(body);
        let Some(kernel) = self.warpgroup.clone() else {
            return steps;
        };
        if steps.accs.is_empty() {
            if kernel.stays_in_flight() {
                self.asm("wgmma.wait_group.sync.aligned 0;");
                self.pin_accumulators(&kernel.accs);
            }
        } else {
            if kernel.retires == 1 {
                self.pin_accumulators(&steps.accs);
            }
            self.asm("wgmma.fence.sync.aligned;");
        }
        steps
    }

    /// After the thread loop's statements: commits its warpgroup steps as a group and waits
    /// until at most `retires − 1` groups are pending (`retires`: the most barriers its steps
    /// stay in flight); when none is, pins the sums. A thread loop without steps in a kernel
    /// whose steps stay in flight pins the kernel's sums.
    pub(super) fn end_warpgroup_steps(&mut self, steps: &WarpgroupSteps) {
        if steps.accs.is_empty() {
            // In a kernel whose steps stay in flight, the sums leave any other thread loop
            // pinned: their initial values in registers of their own, not a constant that
            // LLVM shares with other uses (an accumulator register read elsewhere after the
            // first step's fence makes ptxas serialise the steps, C7519).
            if let Some(kernel) = self.warpgroup.clone()
                && kernel.stays_in_flight()
            {
                self.pin_accumulators(&kernel.accs);
            }
        } else {
            self.asm("wgmma.commit_group.sync.aligned;");
            self.asm(&format!(
                "wgmma.wait_group.sync.aligned {};",
                steps.retires - 1
            ));
            if steps.retires == 1 {
                self.pin_accumulators(&steps.accs);
            }
        }
    }
}

/// The warpgroup steps of some statements: their accumulator buffers (each once) and the
/// most barriers one stays in flight.
#[derive(Clone, Debug, Default)]
pub(super) struct WarpgroupSteps {
    accs: Vec<String>,
    retires: i64,
}

impl WarpgroupSteps {
    /// Those standing in `body` itself (steps nested in its loops and guards are bracketed
    /// where they stand, see `Em::nested_body`).
    pub(super) fn of(body: &[Stmt]) -> WarpgroupSteps {
        let mut steps = WarpgroupSteps::default();
        body.iter().for_each(|s| steps.add(s));
        steps
    }

    /// `s`, if it is a warpgroup step.
    fn add(&mut self, s: &Stmt) {
        if let Stmt::Mma(m) = s
            && s.is_warpgroup_step()
        {
            if !self.accs.contains(&m.acc) {
                self.accs.push(m.acc.clone());
            }
            self.retires = self.retires.max(m.retires);
        }
    }

    /// Whether some step stays in flight across a barrier (or, nested, a run of steps).
    pub(super) fn stays_in_flight(&self) -> bool {
        self.retires > 1
    }

    /// Whether `s` reads or writes these steps' sums outside any step (and holds none).
    pub(super) fn sums_of(&self, s: &Stmt) -> bool {
        let body = std::slice::from_ref(s);
        if any_stmt(body, &Stmt::is_warpgroup_step) {
            return false;
        }
        let mut touches = any_stmt(
            body,
            &|s| matches!(s, Stmt::Store { buf, .. } if self.accs.contains(buf)),
        );
        s.visit_loads(&mut |buf, _| touches |= self.accs.iter().any(|a| a == buf));
        touches
    }

    /// Those of a kernel, at any depth: `None` without any.
    pub(super) fn of_kernel(prog: &LoopProgram) -> Option<WarpgroupSteps> {
        let mut steps = WarpgroupSteps::default();
        each_stmt(&prog.body, &mut |s| steps.add(s));
        Some(steps).filter(|s| !s.accs.is_empty())
    }
}

/// `!llvm.struct<(f32, …)>` of `n` fields: what a step's inline assembly returns.
fn struct_of_f32(n: usize) -> String {
    format!("!llvm.struct<({})>", vec!["f32"; n].join(", "))
}

/// Whether `prog` has warpgroup tensor-core steps (and so needs `sm_90a`).
pub fn uses_warpgroup_mma(prog: &LoopProgram) -> bool {
    WarpgroupSteps::of_kernel(prog).is_some()
}
