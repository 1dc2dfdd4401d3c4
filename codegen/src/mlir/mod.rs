//! Loop IR → MLIR text (func / scf / memref / arith / math / vector dialects).
//!
//! Each loop program becomes `func.func @<name>_impl(%start: index, %end: index, %b0:
//! memref<N x T>, …)`; buffers are flat, statically sized memrefs, lowered later with the
//! bare-pointer calling convention. Loops become `scf.for`, reductions `scf.for` with
//! `iter_args`, guards `scf.if`. A loop marked `vectorize(w)` — and an innermost parallel
//! loop — is emitted as a `w`-wide vector loop plus a scalar remainder when its body
//! qualifies (see [`vectorizable`]); otherwise it silently stays scalar, because
//! vectorization is an optimisation, never a change of meaning.
//!
//! For the GPU ([`Backend::Cuda`], see `mlir/gpu.rs`) the function takes only the buffers, loops
//! bound to blocks and threads read their index from the `nvvm` special registers, and nothing
//! is vectorized (a GPU thread is one lane).

mod gpu;
mod load;
mod math;
mod reduce;
mod tma;
mod value;
mod vectorize;
mod wgmma;

pub use wgmma::uses_warpgroup_mma;

/// The name of the global that holds shared buffer `buf` of GPU kernel `kernel`.
pub fn shared_global_name(kernel: &str, buf: &str) -> String {
    format!("{kernel}_{buf}_shared")
}

pub use vectorize::vectorizable;
use vectorize::{int_division, lane_value_ok, maskable};

use crate::error::CodegenError;
use std::collections::HashMap;
use std::fmt::Write;
use tessera_ir::DType;
use tessera_ir::loops::{BufRole, IExpr, Loop, LoopKind, LoopProgram, Stmt};

/// Options of MLIR emission.
#[derive(Clone, Debug)]
pub struct EmitConfig {
    /// Vector width in bytes used for innermost parallel loops (ignored on the GPU).
    pub vector_bytes: usize,
    /// Which kind of machine the function runs on.
    pub backend: Backend,
    /// Per kernel, the alignment in bytes each pointer parameter is guaranteed (GPU: where
    /// an asynchronous copy may read a run in one piece); a kernel not listed, or a
    /// parameter past its list, is only known to be element-aligned.
    pub param_align: HashMap<String, Vec<u32>>,
}

/// The machine a kernel function is emitted for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `@<name>_impl(%start, %end, buffers…)`; bound GPU loops run serially.
    #[default]
    Cpu,
    /// `@<name>_impl(buffers…)`, one call per GPU thread; bound loops read `blockIdx` /
    /// `threadIdx`.
    Cuda,
}

impl Default for EmitConfig {
    fn default() -> Self {
        EmitConfig {
            vector_bytes: 32,
            backend: Backend::Cpu,
            param_align: HashMap::new(),
        }
    }
}

/// Emits one MLIR module holding every program.
pub fn emit_module(progs: &[&LoopProgram], cfg: &EmitConfig) -> Result<String, CodegenError> {
    let mut out = String::from("module {\n");
    for p in progs {
        out.push_str(&emit_func(p, cfg)?);
    }
    out.push_str("}\n");
    Ok(out)
}

/// The scalar MLIR type of a dtype in registers.
fn scalar_ty(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::I64 => "i64",
        DType::I32 => "i32",
        DType::I8 | DType::U8 => "i8",
        DType::Bool => "i1",
    }
}

/// The MLIR element type of a dtype in memory (bool is a byte).
fn mem_ty(d: DType) -> &'static str {
    if d == DType::Bool { "i8" } else { scalar_ty(d) }
}

fn ty(d: DType, lanes: Option<u32>) -> String {
    match lanes {
        Some(w) => format!("vector<{w}x{}>", scalar_ty(d)),
        None => scalar_ty(d).to_string(),
    }
}

fn unsigned(d: DType) -> bool {
    matches!(d, DType::U8 | DType::Bool)
}

/// Float max / min may return either zero for `max(−0, +0)`: the two compare equal (also to
/// the oracle), and the NaN-propagating instruction sequence halves (x86: 3 instead of 6).
const NO_SIGNED_ZEROS: &str = " fastmath<nsz>";

struct Vec_ {
    var: String,
    width: u32,
    /// Lane mask of a tail iteration (`vector<w x i1>`): loads and stores are masked.
    mask: Option<String>,
    /// Number of active lanes of a tail iteration (an `index` value).
    active: Option<String>,
}

struct Em<'a> {
    prog: &'a LoopProgram,
    out: String,
    next: usize,
    depth: usize,
    idx: HashMap<String, String>,
    /// Bound accumulators: name, SSA value, and whether it is a vector (bound in a vector loop).
    accs: Vec<(String, String, bool)>,
    /// Per buffer: its SSA value, dtype and memref type.
    bufs: HashMap<String, (String, DType, String)>,
    /// The enclosing thread loops: (axis, loop variable), outermost first.
    threads: Vec<(usize, String)>,
    vec: Option<Vec_>,
    /// Extent of every loop variable and reduction axis: the ranges that tell loads which
    /// cannot leave their buffer (see [`load`]).
    extents: HashMap<String, i64>,
    /// Inside a vector `select` branch: the lanes that take it (`vector<w x i1>`), to which
    /// loads that may leave their buffer are masked (see [`load`]).
    guard: Option<String>,
    cfg: &'a EmitConfig,
    /// Threads per block along each axis (GPU): a thread loop shorter than that is guarded.
    block_dims: [u32; 3],
    /// The fewest barriers an async copy of the kernel takes to land (GPU; `None`: no copy),
    /// which sets how many copy groups a barrier leaves in flight.
    async_lands: Option<i64>,
    /// The kernel's warpgroup tensor-core steps (GPU): every barrier first makes shared
    /// stores visible to them, thread loops wait for them (see [`wgmma`]).
    warpgroup: Option<wgmma::WarpgroupSteps>,
    /// Inside statements that read or write the warpgroup steps' sums, after the wait for
    /// every step in flight (GPU, see [`Em::nested_body`]): nothing more to wait for.
    sums_settled: bool,
    /// The kernel's tensor maps (GPU, see [`tma`]), the parameter after the buffers.
    tensor_maps: Vec<tessera_ir::loops::tma::TensorMap>,
    /// Inside a predicated block of TMA statements (GPU): the `i32` condition its
    /// instructions run under.
    predicate: Option<String>,
}

fn emit_func(p: &LoopProgram, cfg: &EmitConfig) -> Result<String, CodegenError> {
    let mut em = Em {
        prog: p,
        out: String::new(),
        next: 0,
        depth: 2,
        idx: HashMap::new(),
        accs: vec![],
        bufs: HashMap::new(),
        vec: None,
        extents: tessera_ir::loops::range::extents(p),
        guard: None,
        cfg,
        block_dims: [1; 3],
        threads: vec![],
        async_lands: gpu::least_async_lands(&p.body),
        warpgroup: wgmma::WarpgroupSteps::of_kernel(p),
        sums_settled: false,
        tensor_maps: tessera_ir::loops::tma::tensor_maps(&p.body),
        predicate: None,
    };
    let gpu = cfg.backend == Backend::Cuda;
    if !gpu && tessera_ir::loops::tma::hands_over(&p.body) {
        // Its consumers wait for a producer that comes later in the thread loop.
        return Err(em.unsupported(
            "a warp-specialised kernel (threads release buffers to others through mbarrier \
             arrivals): the CPU runs a thread loop's threads one after another",
        ));
    }
    if tessera_ir::loops::gpu::binds_gpu(&p.body) {
        em.block_dims = tessera_ir::loops::gpu::launch(p)
            .map_err(|e| em.unsupported(e.to_string()))?
            .block;
    }
    let threads_per_block: usize = em.block_dims.iter().map(|&d| d as usize).product();
    let mut params = if gpu {
        vec![]
    } else {
        vec!["%start: index".to_string(), "%end: index".to_string()]
    };
    let (mut globals, mut locals) = (String::new(), String::new());
    for (i, b) in p.buffers.iter().enumerate() {
        let name = format!("%b{i}");
        let elem = mem_ty(b.dtype);
        let mut memref = format!("memref<{}x{elem}>", b.len);
        let alloca = |out: &mut String, memref: &str| {
            writeln!(
                out,
                "    {name} = memref.alloca() {{alignment = 64 : i64}} : {memref}"
            )
            .unwrap()
        };
        match b.role {
            BufRole::Input | BufRole::Output => {
                // Buffers never overlap (the memory plan keeps every kernel's buffers apart),
                // so they are `noalias`: LLVM may keep accumulators in registers across loops.
                params.push(format!("{name}: {memref} {{llvm.noalias}}"));
            }
            // On the stack of this call: private to the thread running this share of the
            // parallel loop (on the GPU: to the GPU thread), freed on return. The verifier
            // bounds the sizes.
            BufRole::Scratch => alloca(&mut locals, &memref),
            BufRole::Local if gpu => alloca(&mut locals, &memref),
            // Serially, one copy per thread of the block, indexed by the thread (see
            // `thread_private_index`).
            BufRole::Local => {
                memref = format!("memref<{}x{elem}>", b.len * threads_per_block);
                alloca(&mut locals, &memref)
            }
            BufRole::Shared if gpu => {
                // Address space 3: the block's shared memory.
                let global = shared_global_name(&p.name, &b.name);
                memref = format!("memref<{}x{elem}, 3>", b.len);
                let align = tessera_ir::loops::gpu::shared_alignment(b.len * b.dtype.size());
                writeln!(
                    globals,
                    "  memref.global \"private\" @{global} : {memref} {{alignment = {align} : i64}}"
                )
                .unwrap();
                writeln!(
                    locals,
                    "    {name} = memref.get_global @{global} : {memref}"
                )
                .unwrap();
            }
            // Serially, blocks run one at a time: one copy serves them all.
            BufRole::Shared => alloca(&mut locals, &memref),
        }
        em.bufs.insert(b.name.clone(), (name, b.dtype, memref));
    }
    if gpu && !em.tensor_maps.is_empty() {
        params.push(format!(
            "{}: {} {{llvm.noalias}}",
            tma::TENSOR_MAPS_PARAM,
            em.tensor_maps_type()
        ));
    }
    let mut head = globals;
    writeln!(
        head,
        "  func.func @{}_impl({}) {{",
        p.name,
        params.join(", ")
    )
    .unwrap();
    head.push_str(&locals);
    if gpu {
        em.block_body(&p.body)?;
    } else {
        let par = p.parallel_extent() > 1;
        for (i, s) in p.body.iter().enumerate() {
            match s {
                Stmt::For(l) if i == 0 && par => {
                    em.for_loop(l, Some(("%start".into(), "%end".into())))?
                }
                _ => em.stmt(s)?,
            }
        }
    }
    em.line("return".into());
    Ok(head + &em.out + "  }\n")
}

impl Em<'_> {
    fn unsupported(&self, msg: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported {
            kernel: self.prog.name.clone(),
            msg: msg.into(),
        }
    }
    fn line(&mut self, s: String) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(&s);
        self.out.push('\n');
    }
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%t{}", self.next)
    }
    /// `%x = <rhs>`; returns `%x`.
    fn op(&mut self, rhs: String) -> String {
        let v = self.fresh();
        self.line(format!("{v} = {rhs}"));
        v
    }
    fn index_const(&mut self, c: i64) -> String {
        self.op(format!("arith.constant {c} : index"))
    }
    fn i32_const(&mut self, c: i64) -> String {
        self.op(format!("llvm.mlir.constant({c} : i32) : i32"))
    }

    /// An index expression as an `i32` value (a GPU instruction's operand).
    fn i32_operand(&mut self, e: &IExpr) -> Result<String, CodegenError> {
        let v = self.iexpr(e)?;
        Ok(self.op(format!("arith.index_cast {v} : index to i32")))
    }

    /// The element of a buffer a thread means by `i`: on the CPU, where one function runs
    /// every thread of a block, a `local` buffer holds one copy per thread, so the running
    /// thread's linear index selects its copy; elsewhere `i` itself.
    fn thread_private_index(&mut self, buf: &str, i: String) -> String {
        let Some(b) = self.prog.buffer(buf) else {
            return i;
        };
        if b.role != BufRole::Local || self.cfg.backend == Backend::Cuda {
            return i;
        }
        // x + dx * (y + dy * z): the enclosing thread loops' indices (absent axes are 0).
        let mut linear: Option<String> = None;
        for axis in (0..3).rev() {
            let coord = self
                .threads
                .iter()
                .rev()
                .find(|(a, _)| *a == axis)
                .map(|(_, var)| self.idx[var].clone());
            let scaled = match linear.take() {
                Some(acc) => {
                    let d = self.index_const(self.block_dims[axis] as i64);
                    Some(self.op(format!("arith.muli {acc}, {d} : index")))
                }
                None => None,
            };
            linear = match (scaled, coord) {
                (Some(a), Some(c)) => Some(self.op(format!("arith.addi {a}, {c} : index"))),
                (a, c) => a.or(c),
            };
        }
        let Some(tid) = linear else { return i };
        let len = self.index_const(b.len as i64);
        let base = self.op(format!("arith.muli {tid}, {len} : index"));
        self.op(format!("arith.addi {base}, {i} : index"))
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), CodegenError> {
        match s {
            Stmt::For(l) => {
                let thread = match l.kind {
                    LoopKind::Thread(a) => Some(a.index()),
                    _ => None,
                };
                if let Some(a) = thread {
                    self.threads.push((a, l.var.clone()));
                }
                let r = self.for_loop(l, None);
                if thread.is_some() {
                    self.threads.pop();
                }
                r
            }
            Stmt::Store { buf, index, value } => {
                let (b, d, mt) = self.bufs[buf].clone();
                let i = self.iexpr(index)?;
                let i = self.thread_private_index(buf, i);
                let lanes = self.vec.as_ref().map(|v| v.width);
                let mut v = self.vexpr(value)?;
                if d == DType::Bool {
                    v = self.op(format!(
                        "arith.extui {v} : {} to {}",
                        ty(DType::Bool, lanes),
                        ty(DType::I8, lanes)
                    ));
                }
                let t = ty(d, lanes);
                match (lanes, self.vec.as_ref().and_then(|v| v.mask.clone())) {
                    (Some(w), Some(mask)) => self.line(format!(
                        "vector.maskedstore {b}[{i}], {mask}, {v} : {mt}, vector<{w}xi1>, {t}"
                    )),
                    (Some(_), None) => self.line(format!("vector.store {v}, {b}[{i}] : {mt}, {t}")),
                    (None, _) => self.line(format!("memref.store {v}, {b}[{i}] : {mt}")),
                }
                Ok(())
            }
            // One thread's TMA statements: predicated instructions, not a branch (a branch
            // among in-flight warpgroup steps makes ptxas serialise them, C7519).
            Stmt::If { cond, then }
                if self.cfg.backend == Backend::Cuda && tma::predicable(then) =>
            {
                let c = self.vexpr(cond)?;
                let c = self.op(format!("arith.extui {c} : i1 to i32"));
                let outer = self.predicate.replace(c);
                let done = then.iter().try_for_each(|t| self.stmt(t));
                self.predicate = outer;
                done
            }
            Stmt::If { cond, then } => {
                if self.vec.is_some() {
                    return Err(self.unsupported("`if` inside a vector loop"));
                }
                let c = self.vexpr(cond)?;
                self.line(format!("scf.if {c} {{"));
                self.depth += 1;
                self.nested_body(then)?;
                self.depth -= 1;
                self.line("}".into());
                Ok(())
            }
            Stmt::Reduce(r) => self.reduce(r),
            // The CPU runs a warp's statements thread by thread: their per-thread meaning.
            // (An async copy is complete before the next barrier: at once is as good.)
            s @ (Stmt::Mma(_)
            | Stmt::WarpFold(_)
            | Stmt::AsyncCopy(_)
            | Stmt::Mbarrier(_)
            | Stmt::SetMaxNReg(_)
            | Stmt::TensorCopy(_)
            | Stmt::TensorStore(_)
            | Stmt::AsyncProxy(_))
                if self.cfg.backend != Backend::Cuda =>
            {
                for s in s.expansion() {
                    self.stmt(&s)?;
                }
                Ok(())
            }
            Stmt::Mma(m) => match m.shape {
                tessera_ir::loops::mma::MmaShape::Warp => self.mma(m),
                tessera_ir::loops::mma::MmaShape::Warpgroup { n } => self.wgmma(m, n),
            },
            Stmt::WarpFold(w) => self.warp_fold(w),
            Stmt::AsyncCopy(c) => self.async_copy(c),
            Stmt::Mbarrier(m) => self.mbarrier(m),
            Stmt::TensorCopy(c) => self.tensor_copy(c),
            Stmt::TensorStore(c) => self.tensor_store(c),
            Stmt::AsyncProxy(a) => {
                self.async_proxy(a);
                Ok(())
            }
            Stmt::SetMaxNReg(r) => {
                self.set_max_nreg(r);
                Ok(())
            }
        }
    }

    fn for_loop(&mut self, l: &Loop, bounds: Option<(String, String)>) -> Result<(), CodegenError> {
        if self.cfg.backend == Backend::Cuda && l.kind.is_gpu() {
            return self.bound_loop(l);
        }
        let (lo, hi) = match bounds {
            Some(b) => b,
            None => (self.index_const(0), self.index_const(l.extent)),
        };
        let innermost = l.body.iter().all(|s| matches!(s, Stmt::Store { .. }));
        let want_width = match l.kind {
            _ if self.cfg.backend == Backend::Cuda => None,
            LoopKind::Vectorize(w) => Some(w),
            LoopKind::Parallel if innermost => self.natural_width(&l.body),
            _ => None,
        };
        if let Some(w) = want_width
            .filter(|&w| w > 1 && self.vec.is_none() && vectorizable(self.prog, &l.body, &l.var))
        {
            // Vector main loop over [lo, lo + floor((hi-lo)/w)*w), then the tail: one masked
            // vector iteration, or a scalar loop when the body must not see inactive lanes.
            let cw = self.index_const(w as i64);
            let span = self.op(format!("arith.subi {hi}, {lo} : index"));
            let q = self.op(format!("arith.divui {span}, {cw} : index"));
            let main = self.op(format!("arith.muli {q}, {cw} : index"));
            let mid = self.op(format!("arith.addi {lo}, {main} : index"));
            self.vec = Some(Vec_ {
                var: l.var.clone(),
                width: w,
                mask: None,
                active: None,
            });
            self.simple_for(&l.var, &lo, &mid, &cw, &l.body)?;
            self.vec = None;
            if !maskable(self.prog, &l.body) {
                let c1 = self.index_const(1);
                return self.simple_for(&l.var, &mid, &hi, &c1, &l.body);
            }
            let rem = self.op(format!("arith.subi {hi}, {mid} : index"));
            let c0 = self.index_const(0);
            let any = if tessera_ir::planted::active(tessera_ir::planted::Bug::VectorTail) {
                let c1 = self.index_const(1);
                self.op(format!("arith.cmpi sgt, {rem}, {c1} : index"))
            } else {
                self.op(format!("arith.cmpi sgt, {rem}, {c0} : index"))
            };
            self.line(format!("scf.if {any} {{"));
            self.depth += 1;
            let mask = self.op(format!("vector.create_mask {rem} : vector<{w}xi1>"));
            self.vec = Some(Vec_ {
                var: l.var.clone(),
                width: w,
                mask: Some(mask),
                active: Some(rem),
            });
            self.idx.insert(l.var.clone(), mid);
            self.vector_body(&l.body)?;
            self.idx.remove(&l.var);
            self.vec = None;
            self.depth -= 1;
            self.line("}".into());
            return Ok(());
        }
        if let LoopKind::Unroll(n) = l.kind
            && n > 1
            && self.vec.is_none()
        {
            let cn = self.index_const(n as i64);
            let span = self.op(format!("arith.subi {hi}, {lo} : index"));
            let q = self.op(format!("arith.divui {span}, {cn} : index"));
            let main = self.op(format!("arith.muli {q}, {cn} : index"));
            let mid = self.op(format!("arith.addi {lo}, {main} : index"));
            let iv = self.fresh();
            self.line(format!("scf.for {iv} = {lo} to {mid} step {cn} {{"));
            self.depth += 1;
            for k in 0..n {
                let ck = self.index_const(k as i64);
                let v = self.op(format!("arith.addi {iv}, {ck} : index"));
                self.idx.insert(l.var.clone(), v);
                for s in &l.body {
                    self.stmt(s)?;
                }
            }
            self.depth -= 1;
            self.line("}".into());
            if tessera_ir::planted::active(tessera_ir::planted::Bug::UnrollRemainder) {
                return Ok(());
            }
            let c1 = self.index_const(1);
            return self.simple_for(&l.var, &mid, &hi, &c1, &l.body);
        }
        let c1 = self.index_const(1);
        self.simple_for(&l.var, &lo, &hi, &c1, &l.body)
    }

    /// A vector loop's body: its statements in order, except that an interleaved store
    /// group ([`tessera_ir::loops::interleave`]) is emitted at its first member's place —
    /// its `f` vectors interleaved lane by lane (`vector.shuffle`) and stored as one
    /// contiguous run of `f·w` elements (masked to `f·active` in a tail).
    fn vector_body(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        let var = self.vec.as_ref().map(|v| v.var.clone()).unwrap_or_default();
        let groups = tessera_ir::loops::interleave::store_groups(body, &var)
            .ok_or_else(|| self.unsupported("a strided store outside an interleaved group"))?;
        let groups: Vec<Vec<usize>> = groups.into_iter().filter(|g| g.len() > 1).collect();
        for (p, s) in body.iter().enumerate() {
            match groups.iter().find(|g| g.contains(&p)) {
                Some(g) if g.iter().min() == Some(&p) => self.interleaved_store(body, g)?,
                Some(_) => {}
                None => self.stmt(s)?,
            }
        }
        Ok(())
    }

    /// The stores `members` of `body` (ordered by residue) as one interleaved vector store.
    fn interleaved_store(&mut self, body: &[Stmt], members: &[usize]) -> Result<(), CodegenError> {
        let (w, active) = match self.vec.as_ref() {
            Some(v) => (v.width as usize, v.active.clone()),
            None => return Err(self.unsupported("an interleaved store outside a vector loop")),
        };
        let mut values = Vec::with_capacity(members.len());
        let mut first = None;
        for &m in members {
            let Stmt::Store { buf, index, value } = &body[m] else {
                return Err(self.unsupported("an interleaved group member is not a store"));
            };
            first.get_or_insert((buf.clone(), index.clone()));
            values.push(self.vexpr(value)?);
        }
        let (buf, index) = first.expect("a group has members");
        let (b, d, mt) = self.bufs[&buf].clone();
        // Interleave pairs: `[a0, b0, a1, b1, …]`; four are pairs of pairs.
        let zip = |s: &mut Self, a: &str, c: &str, lanes: usize| -> String {
            let order: Vec<String> = (0..lanes)
                .flat_map(|l| [l.to_string(), (l + lanes).to_string()])
                .collect();
            let t = ty(d, Some(lanes as u32));
            s.op(format!(
                "vector.shuffle {a}, {c} [{}] : {t}, {t}",
                order.join(", ")
            ))
        };
        let run = match values.as_slice() {
            [a, c] => zip(self, a, c, w),
            [a, b1, c, d1] => {
                let (even, odd) = (zip(self, a, c, w), zip(self, b1, d1, w));
                zip(self, &even, &odd, 2 * w)
            }
            _ => return Err(self.unsupported("an interleaved group of other than 2 or 4")),
        };
        let wide = members.len() * w;
        let i = self.iexpr(&index)?;
        let i = self.thread_private_index(&buf, i);
        let t = ty(d, Some(wide as u32));
        match active {
            Some(n) => {
                let f = self.index_const(members.len() as i64);
                let n = self.op(format!("arith.muli {n}, {f} : index"));
                let mask = self.op(format!("vector.create_mask {n} : vector<{wide}xi1>"));
                self.line(format!(
                    "vector.maskedstore {b}[{i}], {mask}, {run} : {mt}, vector<{wide}xi1>, {t}"
                ));
            }
            None => self.line(format!("vector.store {run}, {b}[{i}] : {mt}, {t}")),
        }
        Ok(())
    }

    /// The vector width for an innermost parallel loop: the configured register width over
    /// the widest stored element.
    fn natural_width(&self, body: &[Stmt]) -> Option<u32> {
        let size = body
            .iter()
            .filter_map(|s| match s {
                Stmt::Store { buf, .. } => self.prog.buffer(buf).map(|b| b.dtype.size()),
                _ => None,
            })
            .max()?;
        Some((self.cfg.vector_bytes / size).clamp(1, 64) as u32)
    }

    fn simple_for(
        &mut self,
        var: &str,
        lo: &str,
        hi: &str,
        step: &str,
        body: &[Stmt],
    ) -> Result<(), CodegenError> {
        let iv = self.fresh();
        self.line(format!("scf.for {iv} = {lo} to {hi} step {step} {{"));
        self.depth += 1;
        self.idx.insert(var.to_string(), iv);
        match self.vec.is_some() {
            true => self.vector_body(body)?,
            false => self.nested_body(body)?,
        }
        self.idx.remove(var);
        self.depth -= 1;
        self.line("}".into());
        Ok(())
    }

    /// Emits an index expression (always scalar: in a vector loop it is the index of lane 0).
    fn iexpr(&mut self, e: &IExpr) -> Result<String, CodegenError> {
        let bin = |s: &mut Self, op: &str, a: &IExpr, b: &IExpr| -> Result<String, CodegenError> {
            let (x, y) = (s.iexpr(a)?, s.iexpr(b)?);
            Ok(s.op(format!("{op} {x}, {y} : index")))
        };
        if let Some((op, a, b)) = index_binop(e) {
            return bin(self, op, a, b);
        }
        match e {
            IExpr::Const(c) => Ok(self.index_const(*c)),
            IExpr::Var(v) => self
                .idx
                .get(v)
                .cloned()
                .ok_or_else(|| self.unsupported(format!("unbound index `{v}`"))),
            IExpr::Mod(a, b) => {
                let (x, y) = (self.iexpr(a)?, self.iexpr(b)?);
                Ok(self.floor_mod(&x, &y, "index"))
            }
            IExpr::Of(v) => {
                let saved = self.vec.take();
                let x = self.vexpr(v);
                self.vec = saved;
                let x = x?;
                let d = self.dtype_of(v)?;
                let w = if d == DType::I64 {
                    x
                } else if unsigned(d) {
                    self.op(format!("arith.extui {x} : {} to i64", scalar_ty(d)))
                } else {
                    self.op(format!("arith.extsi {x} : {} to i64", scalar_ty(d)))
                };
                Ok(self.op(format!("arith.index_cast {w} : i64 to index")))
            }
            _ => unreachable!("binary index forms are handled above"),
        }
    }

    /// `e` for each of the `w` lanes of the vector loop, as `vector<w x index>`: its variable
    /// is `base + lane`, other variables and constants are the same in every lane.
    fn iexpr_lanes(&mut self, e: &IExpr, w: u32) -> Result<String, CodegenError> {
        let vt = format!("vector<{w}xindex>");
        let var = self.vec.as_ref().map(|v| v.var.clone()).unwrap_or_default();
        if e.coeff(&var) == Some(0) {
            let x = self.iexpr(e)?;
            return Ok(self.op(format!("vector.broadcast {x} : index to {vt}")));
        }
        let bin = |s: &mut Self, op: &str, a: &IExpr, b: &IExpr| -> Result<String, CodegenError> {
            let (x, y) = (s.iexpr_lanes(a, w)?, s.iexpr_lanes(b, w)?);
            Ok(s.op(format!("{op} {x}, {y} : {vt}")))
        };
        if let Some((op, a, b)) = index_binop(e) {
            return bin(self, op, a, b);
        }
        match e {
            IExpr::Var(_) => {
                let base = self.iexpr(e)?;
                let base = self.op(format!("vector.broadcast {base} : index to {vt}"));
                let lane = self.op(format!("vector.step : {vt}"));
                Ok(self.op(format!("arith.addi {base}, {lane} : {vt}")))
            }
            IExpr::Mod(a, b) => {
                let (x, y) = (self.iexpr_lanes(a, w)?, self.iexpr_lanes(b, w)?);
                Ok(self.floor_mod(&x, &y, &vt))
            }
            // Constants are lane-invariant (above); binary forms went through `index_binop`.
            _ => Err(self.unsupported(format!("index `{e}` cannot be computed lane by lane"))),
        }
    }

    /// `x mod y` rounding toward negative infinity (the loop IR's `%`), on `t` values.
    fn floor_mod(&mut self, x: &str, y: &str, t: &str) -> String {
        let q = self.op(format!("arith.floordivsi {x}, {y} : {t}"));
        let m = self.op(format!("arith.muli {q}, {y} : {t}"));
        self.op(format!("arith.subi {x}, {m} : {t}"))
    }
}

/// The `arith` operation of a binary index expression with a direct one (all but `%`), and
/// its operands: shared by scalar and lane-wise index code.
fn index_binop(e: &IExpr) -> Option<(&'static str, &IExpr, &IExpr)> {
    Some(match e {
        IExpr::Add(a, b) => ("arith.addi", a, b),
        IExpr::Sub(a, b) => ("arith.subi", a, b),
        IExpr::Mul(a, b) => ("arith.muli", a, b),
        IExpr::FloorDiv(a, b) => ("arith.floordivsi", a, b),
        IExpr::Min(a, b) => ("arith.minsi", a, b),
        IExpr::Max(a, b) => ("arith.maxsi", a, b),
        IExpr::Xor(a, b) => ("arith.xori", a, b),
        _ => return None,
    })
}
