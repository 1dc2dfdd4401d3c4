//! MLIR text → verified MLIR module → LLVM dialect → LLVM IR in an inkwell context → O3.

use crate::error::CodegenError;
use crate::target::Target;
use inkwell::AddressSpace;
use inkwell::OptimizationLevel;
use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, TargetMachine, TargetTriple};
use melior::dialect::DialectRegistry;
use melior::ir::Module as MlirModule;
use melior::ir::operation::OperationLike;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use std::sync::{Arc, Mutex, Once};
use tessera_ir::loops::LoopProgram;

/// The MLIR pipeline from our dialect mix down to the LLVM dialect.
pub const PIPELINE: &str = "builtin.module(canonicalize, cse, convert-math-to-llvm, convert-math-to-libm, \
convert-scf-to-cf, convert-vector-to-llvm, convert-arith-to-llvm, convert-index-to-llvm, \
finalize-memref-to-llvm, convert-func-to-llvm{use-bare-ptr-memref-call-conv=1}, convert-cf-to-llvm, \
reconcile-unrealized-casts)";

/// The same for GPU kernels: math functions become libm calls first (renamed to CUDA's
/// libdevice later, see [`crate::ptx`]) instead of LLVM intrinsics NVPTX cannot select, and
/// `nvvm` special-register reads become LLVM intrinsics.
pub const GPU_PIPELINE: &str = "builtin.module(canonicalize, cse, convert-math-to-libm, \
convert-math-to-llvm, convert-scf-to-cf, convert-arith-to-llvm, convert-index-to-llvm, \
finalize-memref-to-llvm, convert-func-to-llvm{use-bare-ptr-memref-call-conv=1}, convert-cf-to-llvm, \
convert-nvvm-to-llvm, reconcile-unrealized-casts)";

pub fn init_native() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        inkwell::targets::Target::initialize_native(&InitializationConfig::default())
            .expect("LLVM native target initialises");
    });
}

/// Parses and verifies MLIR text, runs `pipeline` ([`PIPELINE`] or [`GPU_PIPELINE`]), and
/// translates the result into an LLVM module in `ctx`.
pub fn mlir_to_llvm<'ctx>(
    mlir_text: &str,
    ctx: &'ctx Context,
    pipeline: &str,
) -> Result<Module<'ctx>, CodegenError> {
    register_all_passes();
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let mctx = melior::Context::new();
    mctx.append_dialect_registry(&registry);
    mctx.load_all_available_dialects();
    register_all_llvm_translations(&mctx);
    let diags: Arc<Mutex<Vec<String>>> = Arc::default();
    let d2 = diags.clone();
    mctx.attach_diagnostic_handler(move |d| {
        d2.lock()
            .unwrap()
            .push(format!("{} at {}", d, d.location()));
        true
    });
    let collect =
        |what: &str| CodegenError::Mlir(format!("{what}: {}", diags.lock().unwrap().join("; ")));
    let mut module = MlirModule::parse(&mctx, mlir_text).ok_or_else(|| collect("parse"))?;
    if !module.as_operation().verify() {
        return Err(collect("verify"));
    }
    let pm = PassManager::new(&mctx);
    parse_pass_pipeline(pm.as_operation_pass_manager(), pipeline)
        .map_err(|e| CodegenError::Mlir(e.to_string()))?;
    pm.run(&mut module)
        .map_err(|_| collect("lowering to the LLVM dialect"))?;
    // SAFETY: MLIR and inkwell link the same static LLVM (one LLVM per process), so the raw
    // LLVMContextRef types are layout-identical; the translated module is owned by `ctx`
    // from here on, and `Module::new` takes that ownership exactly once.
    let raw = unsafe {
        mlir_sys::mlirTranslateModuleToLLVMIR(module.as_operation().to_raw(), ctx.raw() as *mut _)
    };
    if raw.is_null() {
        return Err(collect("translation to LLVM IR"));
    }
    // SAFETY: `raw` is a freshly created, non-null module in `ctx` that nothing else owns.
    Ok(unsafe { Module::new(raw as *mut _) })
}

/// Adds the C-ABI entry `name(void **args, i64 start, i64 end)` for every program (see the
/// crate invariants), makes the `_impl` bodies internal, and tags functions with the CPU.
pub fn add_entry_points<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    progs: &[&LoopProgram],
    target: &Target,
) -> Result<(), CodegenError> {
    let ptr = ctx.ptr_type(AddressSpace::default());
    let i64t = ctx.i64_type();
    let fn_ty = ctx
        .void_type()
        .fn_type(&[ptr.into(), i64t.into(), i64t.into()], false);
    let b = ctx.create_builder();
    let llvm_err = |e: inkwell::builder::BuilderError| CodegenError::Llvm(e.to_string());
    for p in progs {
        let implf = internal_impl(module, p)?;
        let f = module.add_function(&p.name, fn_ty, None);
        let entry = ctx.append_basic_block(f, "entry");
        b.position_at_end(entry);
        let args = f.get_nth_param(0).unwrap().into_pointer_value();
        let mut call_args = vec![
            f.get_nth_param(1).unwrap().into(),
            f.get_nth_param(2).unwrap().into(),
        ];
        for i in 0..p.params().count() {
            // SAFETY: `args` points to one pointer per buffer (the kernel ABI); index i is in range.
            let slot = unsafe {
                b.build_in_bounds_gep(ptr, args, &[i64t.const_int(i as u64, false)], "slot")
            }
            .map_err(llvm_err)?;
            let p = b.build_load(ptr, slot, "buf").map_err(llvm_err)?;
            call_args.push(p.into());
        }
        b.build_call(implf, &call_args, "").map_err(llvm_err)?;
        b.build_return(None).map_err(llvm_err)?;
    }
    tag_cpu(ctx, module, target);
    Ok(())
}

/// A program's `@<name>_impl` body, made internal: only its entry point (CPU wrapper or GPU
/// kernel) is visible, so LLVM inlines it there.
pub(crate) fn internal_impl<'ctx>(
    module: &Module<'ctx>,
    p: &LoopProgram,
) -> Result<inkwell::values::FunctionValue<'ctx>, CodegenError> {
    let implf = module
        .get_function(&format!("{}_impl", p.name))
        .ok_or_else(|| CodegenError::Llvm(format!("missing {}_impl", p.name)))?;
    implf.set_linkage(Linkage::Internal);
    Ok(implf)
}

/// Puts `target-cpu` / `target-features` on every defined function, so that code generation
/// (also inside the JIT, which otherwise picks a generic CPU) uses the target's instructions.
pub fn tag_cpu<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, target: &Target) {
    let Target::Cpu { cpu, features } = target else {
        return;
    };
    for f in module.get_functions() {
        if f.count_basic_blocks() == 0 {
            continue;
        }
        f.add_attribute(
            AttributeLoc::Function,
            ctx.create_string_attribute("target-cpu", cpu),
        );
        if !features.is_empty() {
            f.add_attribute(
                AttributeLoc::Function,
                ctx.create_string_attribute("target-features", features),
            );
        }
    }
}

pub fn target_machine(target: &Target, reloc: RelocMode) -> Result<TargetMachine, CodegenError> {
    init_native();
    let Target::Cpu { cpu, features } = target else {
        return Err(CodegenError::Target(format!(
            "{} has no host machine code; compile it to PTX",
            target.describe()
        )));
    };
    let triple = TargetMachine::get_default_triple();
    let t = inkwell::targets::Target::from_triple(&triple)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    t.create_target_machine(
        &triple,
        cpu,
        features,
        OptimizationLevel::Aggressive,
        reloc,
        CodeModel::Default,
    )
    .ok_or_else(|| CodegenError::Llvm(format!("no target machine for cpu `{cpu}`")))
}

/// Sets the module's triple and data layout for `tm` and runs LLVM's O3 pipeline.
pub fn optimize(module: &Module, tm: &TargetMachine) -> Result<(), CodegenError> {
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
        .verify()
        .map_err(|e| CodegenError::Llvm(format!("invalid LLVM module: {e}")))?;
    module
        .run_passes("default<O3>", tm, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(e.to_string()))
}

pub fn host_triple() -> TargetTriple {
    TargetMachine::get_default_triple()
}

/// Compiles programs to an optimised LLVM module in `ctx` (the shared front half of the JIT
/// and AOT paths). Returns the module; `mlir_out`, if given, receives the MLIR text.
pub fn compile_to_llvm<'ctx>(
    ctx: &'ctx Context,
    progs: &[&LoopProgram],
    target: &Target,
    reloc: RelocMode,
) -> Result<(Module<'ctx>, TargetMachine), CodegenError> {
    let text = crate::mlir::emit_module(progs, &target.emit_config())?;
    let module = mlir_to_llvm(&text, ctx, PIPELINE)?;
    add_entry_points(ctx, &module, progs, target)?;
    let tm = target_machine(target, reloc)?;
    optimize(&module, &tm)?;
    Ok((module, tm))
}
