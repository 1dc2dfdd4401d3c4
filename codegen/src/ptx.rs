//! Loop programs → PTX for NVIDIA GPUs, through the same MLIR front half as the CPU and
//! LLVM's NVPTX back end.
//!
//! - MLIR: each program is emitted for [`Backend::Cuda`] (bound loops read `nvvm` special
//!   registers) and lowered with [`GPU_PIPELINE`] (math → libm calls).
//! - LLVM: every program gets a kernel `@<name>(ptr b0, ptr b1, …)` with the `ptx_kernel`
//!   calling convention that calls the (internal, inlined) `@<name>_impl`; libm calls are
//!   renamed to CUDA's libdevice (`expf` → `__nv_expf`) and libdevice's bitcode is linked in;
//!   everything but the kernels is internalised, so O3 drops what is not used.
//! - Out: one PTX module text plus, per kernel, its launch geometry and parameter count — what
//!   the runtime needs to launch it.
//!
//! Invariants: a kernel's parameters are the program's non-scratch buffers in order, as device
//! pointers; it is launched with exactly [`GpuKernel::launch`]; no function stays unresolved
//! (an unknown call is a typed error here, not a `ptxas` failure later).

use crate::error::CodegenError;
use crate::llvm::{GPU_PIPELINE, mlir_to_llvm};
use crate::mlir::{Backend, EmitConfig, emit_module};
use inkwell::AddressSpace;
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, TargetMachine, TargetTriple,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Once;
use tessera_ir::loops::LoopProgram;
use tessera_ir::loops::mma::WGMMA_SM;
pub use tessera_ir::plan::GpuKernel;
use tessera_ir::plan::GpuTensorMap;

/// LLVM's calling convention number for `ptx_kernel` (an entry point of a PTX module).
const PTX_KERNEL_CC: u32 = 71;

/// A PTX module for one compute capability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PtxModule {
    pub sm: u32,
    pub text: String,
    pub kernels: Vec<GpuKernel>,
}

/// The PTX ISA feature we emit for `sm`: 7.8 covers sm_70 … sm_90 and is accepted by every
/// CUDA 11.8+ driver; `sm_90a` (warpgroup steps) needs 8.0 (CUDA 12.0+).
pub fn ptx_feature(sm: u32, arch_specific: bool) -> &'static str {
    match (sm, arch_specific) {
        (100.., _) => "+ptx87",
        (_, true) => "+ptx80",
        _ => "+ptx78",
    }
}

/// The PTX target name: `sm_90`, or `sm_90a` for code with architecture-specific
/// instructions (`wgmma`), which runs on that one architecture only.
pub fn ptx_arch(sm: u32, arch_specific: bool) -> String {
    match arch_specific {
        true => format!("sm_{sm}a"),
        false => format!("sm_{sm}"),
    }
}

fn init_nvptx() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        inkwell::targets::Target::initialize_nvptx(&InitializationConfig::default());
    });
}

/// The NVPTX target machine for `sm_<sm>` (`sm_<sm>a` with `arch_specific`).
pub fn nvptx_machine(sm: u32, arch_specific: bool) -> Result<TargetMachine, CodegenError> {
    init_nvptx();
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let t = inkwell::targets::Target::from_triple(&triple)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let arch = ptx_arch(sm, arch_specific);
    t.create_target_machine(
        &triple,
        &arch,
        ptx_feature(sm, arch_specific),
        OptimizationLevel::Aggressive,
        RelocMode::Default,
        CodeModel::Default,
    )
    .ok_or_else(|| CodegenError::Target(format!("no NVPTX target machine for {arch}")))
}

/// What the caller guarantees about the kernels' arguments.
#[derive(Clone, Debug, Default)]
pub struct PtxConfig {
    /// Per kernel, the alignment in bytes each pointer parameter is guaranteed (a power of
    /// two); a kernel not listed, or a parameter past its list, is only known to be
    /// element-aligned. With 16, LLVM may merge a thread's contiguous loads and stores into
    /// one 16-byte access.
    pub param_align: HashMap<String, Vec<u32>>,
}

/// Compiles programs (GPU-scheduled, or unscheduled: one thread each) to one PTX module.
pub fn compile_ptx(progs: &[&LoopProgram], sm: u32) -> Result<PtxModule, CodegenError> {
    compile_ptx_with(progs, sm, &PtxConfig::default())
}

/// [`compile_ptx`] with what the caller guarantees about the arguments.
pub fn compile_ptx_with(
    progs: &[&LoopProgram],
    sm: u32,
    cfg: &PtxConfig,
) -> Result<PtxModule, CodegenError> {
    let ctx = Context::create();
    let (module, tm) = compile_to_nvptx_module(&ctx, progs, sm, cfg)?;
    let buf = tm
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let text = String::from_utf8_lossy(buf.as_slice()).into_owned();
    let kernels = progs
        .iter()
        .map(|p| {
            Ok(GpuKernel {
                name: p.name.clone(),
                launch: tessera_ir::loops::gpu::launch(p).map_err(|e| {
                    CodegenError::Unsupported {
                        kernel: p.name.clone(),
                        msg: e.to_string(),
                    }
                })?,
                params: p.params().count(),
                tensor_maps: tessera_ir::loops::tma::tensor_maps(&p.body)
                    .into_iter()
                    .map(|map| {
                        let param =
                            p.params().position(|b| b.name == map.src).ok_or_else(|| {
                                CodegenError::Unsupported {
                                    kernel: p.name.clone(),
                                    msg: format!("tensor map over `{}`, not a parameter", map.src),
                                }
                            })?;
                        Ok(GpuTensorMap { param, map })
                    })
                    .collect::<Result<_, CodegenError>>()?,
            })
        })
        .collect::<Result<_, CodegenError>>()?;
    Ok(PtxModule { sm, text, kernels })
}

/// The optimised NVPTX LLVM module (`--emit llvm` for a GPU target) and the target machine
/// that emits its PTX.
pub fn compile_to_nvptx_module<'ctx>(
    ctx: &'ctx Context,
    progs: &[&LoopProgram],
    sm: u32,
    ptx: &PtxConfig,
) -> Result<(Module<'ctx>, TargetMachine), CodegenError> {
    let cfg = EmitConfig {
        vector_bytes: 0,
        backend: Backend::Cuda,
        param_align: ptx.param_align.clone(),
    };
    // Warpgroup tensor-core steps and register reallocation exist on sm_90 only, as
    // `sm_90a` code; tensor copies and mbarriers from sm_90 on (Hopper's code here, as
    // `sm_90a` too).
    let hopper = |p: &&&LoopProgram| {
        crate::mlir::uses_warpgroup_mma(p)
            || tessera_ir::loops::tma::uses_tma(&p.body)
            || tessera_ir::loops::regs::uses_setmaxnreg(&p.body)
    };
    let arch_specific = match progs.iter().find(hopper) {
        Some(p) if sm != WGMMA_SM => {
            return Err(CodegenError::Unsupported {
                kernel: p.name.clone(),
                msg: format!(
                    "warpgroup tensor-core steps (wgmma), tensor copies (TMA) and register \
                     reallocation (setmaxnreg) need sm_{WGMMA_SM} (sm_{WGMMA_SM}a), not sm_{sm}"
                ),
            });
        }
        found => found.is_some(),
    };
    let text = emit_module(progs, &cfg)?;
    let module = mlir_to_llvm(&text, ctx, GPU_PIPELINE)?;
    let tm = nvptx_machine(sm, arch_specific)?;
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    add_kernels(ctx, &module, progs, ptx)?;
    place_dynamic_shared(ctx, &module, progs, sm)?;
    if rename_libm(&module) {
        let path = find_libdevice()?;
        let lib = Module::parse_bitcode_from_path(&path, ctx)
            .map_err(|e| CodegenError::NoLibdevice(format!("{}: {e}", path.display())))?;
        lib.set_triple(&tm.get_triple());
        lib.set_data_layout(&tm.get_target_data().get_data_layout());
        module
            .link_in_module(lib)
            .map_err(|e| CodegenError::Llvm(format!("linking libdevice: {e}")))?;
    }
    internalize(&module, progs);
    module
        .verify()
        .map_err(|e| CodegenError::Llvm(format!("invalid NVPTX module: {e}")))?;
    module
        .run_passes("default<O3>", &tm, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    if let Some(f) = module.get_functions().find(|f| {
        f.count_basic_blocks() == 0 && !f.get_name().to_string_lossy().starts_with("llvm.")
    }) {
        return Err(CodegenError::Llvm(format!(
            "GPU code calls `{}`, which neither the kernels nor libdevice define",
            f.get_name().to_string_lossy()
        )));
    }
    Ok((module, tm))
}

/// `@<name>(ptr, …)` with the `ptx_kernel` calling convention for every program.
fn add_kernels<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    progs: &[&LoopProgram],
    ptx: &PtxConfig,
) -> Result<(), CodegenError> {
    let align_kind = inkwell::attributes::Attribute::get_named_enum_kind_id("align");
    let ptr = ctx.ptr_type(AddressSpace::default());
    let b = ctx.create_builder();
    let llvm_err = |e: inkwell::builder::BuilderError| CodegenError::Llvm(e.to_string());
    for p in progs {
        let implf = crate::llvm::internal_impl(module, p)?;
        // Always inlined into its kernel, however large: a call would cost the kernel its
        // parameters' alignment and, with warpgroup steps, serialise them (ptxas C7510: the
        // `wgmma` pipeline crosses a function boundary).
        let always = inkwell::attributes::Attribute::get_named_enum_kind_id("alwaysinline");
        implf.add_attribute(
            inkwell::attributes::AttributeLoc::Function,
            ctx.create_enum_attribute(always, 0),
        );
        // The buffers, then the tensor maps' array if the kernel has any.
        let n = p.params().count()
            + (!tessera_ir::loops::tma::tensor_maps(&p.body).is_empty()) as usize;
        let fn_ty = ctx.void_type().fn_type(&vec![ptr.into(); n], false);
        let f = module.add_function(&p.name, fn_ty, None);
        f.set_call_conventions(PTX_KERNEL_CC);
        // `.maxntid`: the block it is launched with, so that ptxas keeps to the registers
        // such a block can have (65 536 per multiprocessor: 170 a thread at 384 threads) —
        // without it a kernel may take more than a block of it can launch with. (A launch
        // that `launch` refuses is refused below with its reason.)
        if let Ok(launch) = tessera_ir::loops::gpu::launch(p) {
            let [x, y, z] = launch.block;
            f.add_attribute(
                inkwell::attributes::AttributeLoc::Function,
                ctx.create_string_attribute("nvvm.maxntid", &format!("{x},{y},{z}")),
            );
        }
        // Register reallocation needs the registers at entry fixed: one block per
        // multiprocessor (`.minnctapersm 1`), each thread its share — else ptxas may ignore
        // `setmaxnreg` (C7508, "unable to determine register count at entry").
        if tessera_ir::loops::regs::uses_setmaxnreg(&p.body) {
            f.add_attribute(
                inkwell::attributes::AttributeLoc::Function,
                ctx.create_string_attribute("nvvm.minctasm", "1"),
            );
        }
        for (i, &align) in ptx
            .param_align
            .get(&p.name)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if align > 1 && i < n {
                let attr = ctx.create_enum_attribute(align_kind, align as u64);
                f.add_attribute(inkwell::attributes::AttributeLoc::Param(i as u32), attr);
            }
        }
        b.position_at_end(ctx.append_basic_block(f, "entry"));
        let args: Vec<_> = f.get_params().into_iter().map(Into::into).collect();
        b.build_call(implf, &args, "").map_err(llvm_err)?;
        b.build_return(None).map_err(llvm_err)?;
    }
    Ok(())
}

/// The dynamic shared memory of a launch: `.extern .shared .align 1024 .b8 <name>[]`.
const DYNAMIC_SHARED: &str = "tessera_dynamic_shared";

/// The most shared memory one block may have on `sm_<sm>` (static and dynamic together).
pub use tessera_ir::loops::gpu::max_shared_bytes;

/// Moves the shared buffers of each kernel with more than the static limit into the
/// launch's dynamic shared memory, at the offsets of
/// [`shared_layout`](tessera_ir::loops::gpu::shared_layout) — the bytes its
/// [`GpuKernel::launch`] asks for — and refuses a kernel with more than `sm` allows.
fn place_dynamic_shared<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    progs: &[&LoopProgram],
    sm: u32,
) -> Result<(), CodegenError> {
    let limit = max_shared_bytes(sm);
    let mut dynamic = None;
    for p in progs {
        let (offsets, bytes) = tessera_ir::loops::gpu::shared_layout(p);
        if bytes <= tessera_ir::loops::MAX_STATIC_SHARED_BYTES {
            continue;
        }
        if bytes > limit {
            return Err(CodegenError::Unsupported {
                kernel: p.name.clone(),
                msg: format!("{bytes} bytes of shared memory (sm_{sm} blocks have {limit})"),
            });
        }
        let base = *dynamic.get_or_insert_with(|| {
            let g = module.add_global(
                ctx.i8_type().array_type(0),
                Some(AddressSpace::from(3u16)),
                DYNAMIC_SHARED,
            );
            g.set_linkage(Linkage::External);
            // `shared_layout`'s offsets are aligned to at most this.
            g.set_alignment(tessera_ir::loops::gpu::SWIZZLE_ALIGNMENT as u32);
            g
        });
        for (buf, at) in offsets {
            let name = crate::mlir::shared_global_name(&p.name, &buf);
            let global = module.get_global(&name).ok_or_else(|| {
                CodegenError::Llvm(format!("no shared global `{name}` in the module"))
            })?;
            let offset = ctx.i64_type().const_int(at as u64, false);
            // SAFETY: the offset stays inside the dynamic shared memory the launch gives
            // (`shared_layout` counted every buffer), an in-bounds byte offset.
            let place = unsafe { base.as_pointer_value().const_gep(ctx.i8_type(), &[offset]) };
            global.as_pointer_value().replace_all_uses_with(place);
            // SAFETY: every use was just replaced; nothing refers to the global any more.
            unsafe { global.delete() };
        }
    }
    Ok(())
}

/// Renames declared libm functions to their libdevice names; true when there was one.
fn rename_libm(module: &Module) -> bool {
    let mut any = false;
    for f in module.get_functions() {
        let name = f.get_name().to_string_lossy().into_owned();
        if f.count_basic_blocks() == 0 && LIBM.contains(&name.as_str()) {
            // libdevice has no roundeven: rint rounds half to even in the default mode.
            let base = match name.as_str() {
                "roundevenf" => "rintf",
                "roundeven" => "rint",
                n => n,
            };
            f.as_global_value().set_name(&format!("__nv_{base}"));
            any = true;
        }
    }
    any
}

/// The libm functions MLIR's `convert-math-to-libm` may call; libdevice defines each as
/// `__nv_<name>` (but `roundeven[f]`, mapped to `rint[f]`).
const LIBM: &[&str] = &[
    "acosf",
    "acos",
    "acoshf",
    "acosh",
    "asinf",
    "asin",
    "asinhf",
    "asinh",
    "atanf",
    "atan",
    "atan2f",
    "atan2",
    "atanhf",
    "atanh",
    "cbrtf",
    "cbrt",
    "ceilf",
    "ceil",
    "cosf",
    "cos",
    "coshf",
    "cosh",
    "erff",
    "erf",
    "erfcf",
    "erfc",
    "expf",
    "exp",
    "exp2f",
    "exp2",
    "expm1f",
    "expm1",
    "fabsf",
    "fabs",
    "floorf",
    "floor",
    "fmaf",
    "fma",
    "fmodf",
    "fmod",
    "logf",
    "log",
    "log10f",
    "log10",
    "log1pf",
    "log1p",
    "log2f",
    "log2",
    "powf",
    "pow",
    "roundf",
    "round",
    "roundevenf",
    "roundeven",
    "rintf",
    "rint",
    "rsqrtf",
    "rsqrt",
    "sinf",
    "sin",
    "sinhf",
    "sinh",
    "sqrtf",
    "sqrt",
    "tanf",
    "tan",
    "tanhf",
    "tanh",
    "truncf",
    "trunc",
];

/// Makes everything but the kernels internal, so that unused libdevice code is dropped.
fn internalize(module: &Module, progs: &[&LoopProgram]) {
    for f in module.get_functions() {
        let name = f.get_name().to_string_lossy();
        if f.count_basic_blocks() > 0 && !progs.iter().any(|p| p.name == name) {
            f.set_linkage(Linkage::Internal);
        }
    }
    for g in module.get_globals() {
        if g.get_initializer().is_some() {
            g.set_linkage(Linkage::Internal);
        }
    }
}

/// CUDA's libdevice bitcode: `$TESSERA_LIBDEVICE`, else the first of `nvcc_candidates`.
pub fn find_libdevice() -> Result<PathBuf, CodegenError> {
    if let Ok(p) = std::env::var("TESSERA_LIBDEVICE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(CodegenError::NoLibdevice(format!(
                "TESSERA_LIBDEVICE={} is not a file",
                p.display()
            )))
        };
    }
    let candidates = nvcc_candidates("nvvm/libdevice/libdevice.10.bc");
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(CodegenError::NoLibdevice(format!(
        "looked in {}",
        tried.join(", ")
    )))
}

/// Where a file of NVIDIA's CUDA compiler may be, in search order: `<rel>` inside the
/// `nvidia-cuda-nvcc-cu12` package of each of [`python_envs`], then inside a CUDA toolkit
/// (`$CUDA_HOME`, `/usr/local/cuda`).
fn nvcc_candidates(rel: &str) -> Vec<PathBuf> {
    let in_envs = python_envs().into_iter().map(|env| {
        site_packages(&env)
            .unwrap_or_else(|| env.join("lib/python3.*/site-packages"))
            .join("nvidia/cuda_nvcc")
            .join(rel)
    });
    let toolkits = [
        std::env::var("CUDA_HOME").ok(),
        Some("/usr/local/cuda".into()),
    ]
    .into_iter()
    .flatten()
    .map(|c| Path::new(&c).join(rel));
    in_envs.chain(toolkits).collect()
}

/// Python environments that may hold NVIDIA's PyPI packages: `$TESSERA_VENV`, `$VIRTUAL_ENV`,
/// the project's `.venv`, tessera's CI cache.
pub fn python_envs() -> Vec<PathBuf> {
    let mut envs: Vec<PathBuf> = ["TESSERA_VENV", "VIRTUAL_ENV"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(PathBuf::from))
        .collect();
    envs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    if let Ok(home) = std::env::var("HOME") {
        envs.push(Path::new(&home).join(".cache/tessera/venv"));
    }
    envs
}

/// `<env>/lib/python3.*/site-packages`.
pub fn site_packages(env: &Path) -> Option<PathBuf> {
    std::fs::read_dir(env.join("lib"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
}

/// NVIDIA's PTX assembler: `$TESSERA_PTXAS`, else the first of `nvcc_candidates`, else
/// `ptxas` on the `PATH`.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TESSERA_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var("PATH")
        .ok()
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("ptxas"));
    nvcc_candidates("bin/ptxas")
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
}

/// Assembles `ptx` for `sm_<sm>` with `ptxas` (found by [`find_ptxas`]); `Err` carries
/// ptxas's diagnostics. This is the offline check that a PTX module will load on a GPU.
pub fn check_with_ptxas(ptx: &str, sm: u32) -> Result<(), CodegenError> {
    ptxas_report(ptx, sm).map(|_| ())
}

/// What `ptxas -v` says of a module it accepted: per kernel registers, spills, shared
/// memory, and its performance notes — a register spill or a serialised warpgroup step is
/// visible here long before a GPU runs the code.
#[derive(Clone, Debug)]
pub struct PtxasReport {
    /// ptxas's messages (its standard error), as printed.
    pub text: String,
}

impl PtxasReport {
    /// The most registers any kernel of the module uses.
    pub fn max_registers(&self) -> u32 {
        self.text
            .lines()
            .filter_map(|l| {
                let (_, used) = l.split_once("Used ")?;
                used.split_whitespace().next()?.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    /// Bytes of spill stores and loads, over every kernel.
    pub fn spill_bytes(&self) -> u64 {
        let words: Vec<&str> = self.text.split_whitespace().collect();
        words
            .windows(3)
            .filter(|w| w[1] == "bytes" && w[2] == "spill")
            .filter_map(|w| w[0].parse::<u64>().ok())
            .sum()
    }

    /// Whether ptxas had to serialise warpgroup steps (it injects `warpgroup.arrive` or
    /// waits where the accumulators' registers are touched while steps are in flight:
    /// notes C7510 and C7519, each costing the pipelining the schedule asked for).
    pub fn serialises_warpgroup_steps(&self) -> bool {
        ["C7510", "C7519"].iter().any(|c| self.text.contains(c))
    }

    /// Whether ptxas ignored `setmaxnreg` (note C7508: it could not tell the registers at
    /// entry) — the registers stay where they started, the consumers' claims lost.
    pub fn ignores_setmaxnreg(&self) -> bool {
        self.text.contains("C7508")
    }
}

/// [`check_with_ptxas`], with `-v`: what ptxas says of the accepted module.
pub fn ptxas_report(ptx: &str, sm: u32) -> Result<PtxasReport, CodegenError> {
    let ptxas = find_ptxas().ok_or_else(|| {
        CodegenError::Target(
            "ptxas not found: install nvidia-cuda-nvcc-cu12 (scripts/setup.sh does) or set \
             TESSERA_PTXAS"
                .into(),
        )
    })?;
    let dir = std::env::temp_dir().join(format!(
        "tessera-ptxas-{}-{}",
        std::process::id(),
        PTXAS_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("module.ptx");
    std::fs::write(&src, ptx)?;
    let arch = module_arch(ptx).unwrap_or_else(|| format!("sm_{sm}"));
    let out = std::process::Command::new(&ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(&src)
        .arg("-o")
        .arg(dir.join("module.cubin"))
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        Ok(PtxasReport { text })
    } else {
        Err(CodegenError::Target(format!(
            "ptxas -arch={arch} rejected the module: {text}"
        )))
    }
}

/// The architecture a PTX module's `.target` directive names (`sm_90`, `sm_90a`).
pub fn module_arch(ptx: &str) -> Option<String> {
    ptx.lines()
        .find_map(|l| l.trim().strip_prefix(".target "))
        .and_then(|t| t.split([',', ' ']).next())
        .map(str::to_string)
}

static PTXAS_RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The optimised NVPTX LLVM module as text (`--emit llvm` for a CUDA target).
pub fn nvptx_llvm_text(
    progs: &[&LoopProgram],
    sm: u32,
    cfg: &PtxConfig,
) -> Result<String, CodegenError> {
    let ctx = Context::create();
    let (module, _) = compile_to_nvptx_module(&ctx, progs, sm, cfg)?;
    Ok(module.print_to_string().to_string())
}
