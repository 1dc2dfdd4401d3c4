//! Ahead-of-time compilation: an object file and a shared library holding the kernels, the
//! weights, and a C entry point that runs the whole plan.
//!
//! Exported symbols:
//! - every kernel, with the kernel ABI (see the crate docs);
//! - `tessera_weights`: the constant weight blob (64-byte aligned);
//! - `int tessera_run(void *const *inputs, void *const *outputs, void *workspace)`: runs every
//!   step of the plan in order on one thread, run-once steps included (the library is
//!   stateless; the runtime's loader runs them once); `workspace` must hold `workspace_bytes`
//!   bytes aligned to 64. Returns 0.

use crate::error::CodegenError;
use crate::target::Target;
use inkwell::AddressSpace;
use inkwell::context::Context;
use inkwell::module::Linkage;
use inkwell::targets::{FileType, RelocMode};
use std::path::Path;
use tessera_ir::loops::LoopProgram;
use tessera_ir::plan::{ExecPlan, Slot};

/// Compiles `progs` plus the plan's entry point and `weights` into a relocatable object.
pub fn compile_object(
    progs: &[&LoopProgram],
    target: &Target,
    plan: &ExecPlan,
    weights: &[u8],
) -> Result<Vec<u8>, CodegenError> {
    let ctx = Context::create();
    let (module, tm) = crate::llvm::compile_to_llvm(&ctx, progs, target, RelocMode::PIC)?;
    let llvm_err = |e: inkwell::builder::BuilderError| CodegenError::Llvm(e.to_string());
    let i8t = ctx.i8_type();
    let i64t = ctx.i64_type();
    let ptr = ctx.ptr_type(AddressSpace::default());
    let blob = ctx.const_string(weights, false);
    let gw = module.add_global(blob.get_type(), None, "tessera_weights");
    gw.set_initializer(&blob);
    gw.set_constant(true);
    gw.set_alignment(tessera_ir::plan::ALIGN as u32);
    gw.set_linkage(Linkage::External);

    let fn_ty = ctx
        .i32_type()
        .fn_type(&[ptr.into(), ptr.into(), ptr.into()], false);
    let run = module.add_function("tessera_run", fn_ty, None);
    let b = ctx.create_builder();
    b.position_at_end(ctx.append_basic_block(run, "entry"));
    let (inputs, outputs, ws) = (
        run.get_nth_param(0).unwrap().into_pointer_value(),
        run.get_nth_param(1).unwrap().into_pointer_value(),
        run.get_nth_param(2).unwrap().into_pointer_value(),
    );
    let max_args = plan
        .steps
        .iter()
        .map(|s| s.args.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let arr_ty = ptr.array_type(max_args as u32);
    let args = b.build_alloca(arr_ty, "args").map_err(llvm_err)?;
    let kernel_ty = ctx
        .void_type()
        .fn_type(&[ptr.into(), i64t.into(), i64t.into()], false);
    for step in &plan.steps {
        for (i, slot) in step.args.iter().enumerate() {
            // SAFETY (all GEPs below): offsets and indices come from the plan, which sizes the
            // weight blob, the workspace and the input/output arrays to contain them.
            let p = match *slot {
                Slot::Input { index } | Slot::Output { index } => {
                    let base = if matches!(slot, Slot::Input { .. }) {
                        inputs
                    } else {
                        outputs
                    };
                    let at = unsafe {
                        b.build_in_bounds_gep(
                            ptr,
                            base,
                            &[i64t.const_int(index as u64, false)],
                            "io",
                        )
                    }
                    .map_err(llvm_err)?;
                    b.build_load(ptr, at, "p")
                        .map_err(llvm_err)?
                        .into_pointer_value()
                }
                Slot::Weight { offset } => unsafe {
                    b.build_in_bounds_gep(
                        i8t,
                        gw.as_pointer_value(),
                        &[i64t.const_int(offset as u64, false)],
                        "w",
                    )
                }
                .map_err(llvm_err)?,
                Slot::Workspace { offset } => unsafe {
                    b.build_in_bounds_gep(i8t, ws, &[i64t.const_int(offset as u64, false)], "t")
                }
                .map_err(llvm_err)?,
            };
            let dst = unsafe {
                b.build_in_bounds_gep(
                    arr_ty,
                    args,
                    &[i64t.const_zero(), i64t.const_int(i as u64, false)],
                    "a",
                )
            }
            .map_err(llvm_err)?;
            b.build_store(dst, p).map_err(llvm_err)?;
        }
        let kf = module
            .get_function(&step.kernel)
            .unwrap_or_else(|| module.add_function(&step.kernel, kernel_ty, None));
        b.build_call(
            kf,
            &[
                args.into(),
                i64t.const_zero().into(),
                i64t.const_int(step.parallel_extent as u64, false).into(),
            ],
            "",
        )
        .map_err(llvm_err)?;
    }
    b.build_return(Some(&ctx.i32_type().const_zero()))
        .map_err(llvm_err)?;
    crate::llvm::tag_cpu(&ctx, &module, target);
    module
        .verify()
        .map_err(|e| CodegenError::Llvm(format!("invalid entry point: {e}")))?;
    let buf = tm
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    Ok(buf.as_slice().to_vec())
}

/// Links an object into a shared library with the system C compiler driver (`cc`).
pub fn link_shared(object: &[u8], out: &Path) -> Result<(), CodegenError> {
    let tmp = out.with_extension("o.tmp");
    std::fs::write(&tmp, object)?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let res = std::process::Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .arg(&tmp)
        .arg("-lm")
        .output();
    let _ = std::fs::remove_file(&tmp);
    let res = res.map_err(|e| CodegenError::Link(format!("could not run `{cc}`: {e}")))?;
    if !res.status.success() {
        return Err(CodegenError::Link(
            String::from_utf8_lossy(&res.stderr).into_owned(),
        ));
    }
    Ok(())
}

/// Emits the LLVM IR text of the optimised kernels (for `--emit llvm`).
pub fn llvm_text(progs: &[&LoopProgram], target: &Target) -> Result<String, CodegenError> {
    let ctx = Context::create();
    let (module, _) = crate::llvm::compile_to_llvm(&ctx, progs, target, RelocMode::PIC)?;
    Ok(module.print_to_string().to_string())
}
