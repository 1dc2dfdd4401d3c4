//! Schedule primitives on the loop IR, and the default CPU schedule.
//!
//! Each primitive names loops by their index variable and preserves meaning (a property the
//! tests check with the loop interpreter). Primitives refuse what they cannot do safely with a
//! [`PassError::Schedule`], so a search can try them blindly.

use crate::error::PassError;
use tessera_ir::loops::{IExpr, Loop, LoopKind, LoopProgram, Stmt, VExpr};
use tessera_ir::planted::{self, Bug};

/// Applies `f` to the loop named `var`, wherever it is; errors if there is no such loop.
fn with_loop(
    prog: &mut LoopProgram,
    var: &str,
    f: &mut dyn FnMut(Loop) -> Result<Vec<Stmt>, PassError>,
) -> Result<(), PassError> {
    fn walk(
        body: &mut Vec<Stmt>,
        var: &str,
        f: &mut dyn FnMut(Loop) -> Result<Vec<Stmt>, PassError>,
    ) -> Result<bool, PassError> {
        for i in 0..body.len() {
            match &mut body[i] {
                Stmt::For(l) if l.var == var => {
                    // `walk` runs on a copy of the program: on a refusal it is dropped.
                    let Stmt::For(l) = body.remove(i) else {
                        unreachable!("matched a loop")
                    };
                    let repl = f(l)?;
                    body.splice(i..i, repl);
                    return Ok(true);
                }
                s => {
                    if let Some(nested) = s.nested_mut()
                        && walk(nested, var, f)?
                    {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
    let mut next = prog.clone();
    if !walk(&mut next.body, var, f)? {
        return Err(PassError::Schedule(format!(
            "kernel `{}` has no loop `{var}`",
            prog.name
        )));
    }
    // Verified in every build, not only with debug assertions: asked for an invalid result
    // (a parallel loop inside another loop, a vectorized loop around one), the primitive
    // refuses and leaves the program as it was. Release builds (the autotuner, fuzzing)
    // used to keep the invalid program.
    tessera_ir::loops::verify::verify(&next).map_err(|e| PassError::Verify {
        pass: "schedule".into(),
        msg: e.to_string(),
    })?;
    *prog = next;
    Ok(())
}

/// Splits loop `var` into `var_o` (outer) and `var_i` (inner, extent `factor`). A tail that
/// does not divide evenly is guarded by an `if`.
pub fn split(
    prog: &mut LoopProgram,
    var: &str,
    factor: i64,
) -> Result<(String, String), PassError> {
    if factor <= 0 {
        return Err(PassError::Schedule(format!("split factor {factor}")));
    }
    let (o, i) = (format!("{var}_o"), format!("{var}_i"));
    let (o2, i2) = (o.clone(), i.clone());
    with_loop(prog, var, &mut |l| {
        let e = IExpr::var(&o2).times(factor).plus(IExpr::var(&i2));
        let mut body: Vec<Stmt> = l.body.iter().map(|s| s.subst(var, &e)).collect();
        if l.extent % factor != 0 {
            body = vec![Stmt::If {
                cond: VExpr::ICmp(tessera_ir::loops::CmpOp::Lt, e.clone(), IExpr::c(l.extent)),
                then: body,
            }];
        }
        let inner = Stmt::For(Loop {
            var: i2.clone(),
            extent: factor.min(l.extent),
            kind: LoopKind::Serial,
            body,
        });
        Ok(vec![Stmt::For(Loop {
            var: o2.clone(),
            extent: if planted::active(Bug::SplitTail) {
                (l.extent / factor).max(1)
            } else {
                (l.extent + factor - 1) / factor
            },
            kind: l.kind,
            body: vec![inner],
        })])
    })?;
    Ok((o, i))
}

/// Swaps two perfectly nested loops (`outer`'s body is exactly the loop `inner`). Refuses a
/// nest whose iterations may depend on each other through memory
/// ([`carries_dependence`](tessera_ir::loops::carries_dependence), conservative): a
/// recurrence reading `y[i - 1][j + 1]` is computed in the wrong order once `j` is outside.
pub fn reorder(prog: &mut LoopProgram, outer: &str, inner: &str) -> Result<(), PassError> {
    with_loop(prog, outer, &mut |l| match l.body.as_slice() {
        [Stmt::For(_)]
            if tessera_ir::loops::carries_dependence(&l.body)
                && !planted::active(Bug::ReorderDependence) =>
        {
            Err(PassError::Schedule(format!(
                "`{outer}` and `{inner}` carry a dependence: not interchanged"
            )))
        }
        [Stmt::For(il)] if il.var == inner => {
            let new_inner = Loop {
                var: l.var.clone(),
                extent: l.extent,
                kind: il.kind,
                body: il.body.clone(),
            };
            Ok(vec![Stmt::For(Loop {
                var: il.var.clone(),
                extent: il.extent,
                kind: l.kind,
                body: vec![Stmt::For(new_inner)],
            })])
        }
        _ => Err(PassError::Schedule(format!(
            "`{inner}` is not perfectly nested in `{outer}`"
        ))),
    })
}

/// Fuses perfectly nested `outer` and `inner` into one loop `outer_inner`.
pub fn fuse(prog: &mut LoopProgram, outer: &str, inner: &str) -> Result<String, PassError> {
    let fused = format!("{outer}_{inner}");
    let f2 = fused.clone();
    with_loop(prog, outer, &mut |l| match l.body.as_slice() {
        [Stmt::For(il)] if il.var == inner => {
            let v = IExpr::var(&f2);
            let divisor = if planted::active(Bug::FuseIndex) {
                l.extent
            } else {
                il.extent
            };
            let body = il
                .body
                .iter()
                .map(|s| {
                    s.subst(outer, &v.clone().floordiv(divisor))
                        .subst(inner, &v.clone().modulo(il.extent))
                })
                .collect();
            Ok(vec![Stmt::For(Loop {
                var: f2.clone(),
                extent: l.extent * il.extent,
                kind: l.kind,
                body,
            })])
        }
        _ => Err(PassError::Schedule(format!(
            "`{inner}` is not perfectly nested in `{outer}`"
        ))),
    })?;
    Ok(fused)
}

/// Splits both loops of a 2-deep perfect nest and orders them `a_o, b_o, a_i, b_i`.
pub fn tile(prog: &mut LoopProgram, a: &str, b: &str, fa: i64, fb: i64) -> Result<(), PassError> {
    let (ao, ai) = split(prog, a, fa)?;
    let (bo, _) = split(prog, b, fb)?;
    // Now: a_o { a_i { [if] b_o { b_i } } }; moving b_o out needs a_i's body to be b_o.
    reorder(prog, &ai, &bo).map_err(|_| {
        PassError::Schedule(format!("cannot tile `{a}` x `{b}`: `{a}` has a tail guard"))
    })?;
    let _ = ao;
    Ok(())
}

/// Sets the annotation of loop `var`. Refuses to make a loop parallel or vectorized when its
/// iterations may depend on each other through memory.
pub fn annotate(prog: &mut LoopProgram, var: &str, kind: LoopKind) -> Result<(), PassError> {
    with_loop(prog, var, &mut |mut l| {
        let concurrent = matches!(kind, LoopKind::Parallel | LoopKind::Vectorize(_));
        if concurrent && tessera_ir::loops::carries_dependence(&l.body) {
            return Err(PassError::Schedule(format!(
                "`{var}` carries a dependence: not {kind:?}"
            )));
        }
        l.kind = kind;
        Ok(vec![Stmt::For(l)])
    })
}

/// Options of the default CPU schedule.
#[derive(Clone, Debug)]
pub struct CpuScheduleConfig {
    /// Vector width in bytes (32 for AVX2, 64 for AVX-512).
    pub vector_bytes: usize,
    /// Outer loops are fused until the parallel loop has at least this many iterations.
    pub min_parallel_extent: i64,
    /// Rebuild large matrix products as packed, register-tiled kernels ([`crate::product`]).
    pub tile_products: bool,
    /// Tuned schedules by workload key ([`workload_key`]), e.g. the best ones of a tuning
    /// database; a kernel without an entry gets the default schedule.
    pub tuned: Option<std::sync::Arc<TunedSchedules>>,
    /// Threads the kernels' parallel loops will be split over: default tilings balance their
    /// tasks for it.
    pub threads: usize,
}

/// Tuned schedules by workload key.
pub type TunedSchedules = std::collections::HashMap<String, KernelSchedule>;

impl Default for CpuScheduleConfig {
    fn default() -> Self {
        CpuScheduleConfig {
            vector_bytes: 32,
            min_parallel_extent: 16,
            tile_products: true,
            tuned: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// One kernel's schedule as data: the knobs the autotuner searches and the tuning database
/// records. Applied to the unscheduled kernel by [`apply_schedule`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelSchedule {
    /// The tiled product schedule (only for kernels that record a product).
    Product(crate::product::ProductTiling),
    /// Parallelisation, vectorization and unrolling of the plain loop nest.
    Loops(LoopSchedule),
    /// A GPU schedule (see [`crate::gpu_schedule`]).
    Gpu(crate::gpu_schedule::GpuKernelSchedule),
}

/// The knobs of a plain loop nest's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LoopSchedule {
    /// Outer loops are fused until the parallel loop has at least this many iterations;
    /// 0 leaves the nest serial.
    pub parallel_min_extent: i64,
    /// Vector width in bytes of innermost loops that store contiguously; 0 keeps them scalar.
    pub vector_bytes: u32,
    /// Unroll factor of innermost loops left scalar (1: none).
    pub unroll: u32,
}

impl LoopSchedule {
    /// The default schedule's knobs for a target with `vector_bytes`-wide vectors.
    pub fn default_for(cfg: &CpuScheduleConfig) -> LoopSchedule {
        LoopSchedule {
            parallel_min_extent: cfg.min_parallel_extent,
            vector_bytes: cfg.vector_bytes as u32,
            unroll: 1,
        }
    }

    /// Refuses knob values that cannot be built.
    pub fn validate(&self) -> Result<(), PassError> {
        if self.parallel_min_extent < 0 || self.unroll == 0 || self.unroll > 64 {
            return Err(PassError::Schedule(format!(
                "loop schedule: bad knobs {self:?}"
            )));
        }
        if self.vector_bytes != 0 && !(4..=256).contains(&self.vector_bytes) {
            return Err(PassError::Schedule(format!(
                "loop schedule: vector width {} bytes",
                self.vector_bytes
            )));
        }
        Ok(())
    }
}

/// A stable key for a workload: FNV-1a (64-bit) of the unscheduled kernel's text with its
/// name left out, so the same computation in another model (or at another position) matches.
pub fn workload_key(prog: &LoopProgram) -> String {
    format!("{:016x}", program_hash(prog))
}

/// FNV-1a of a program's text with its name left out: the same loops under another name hash
/// alike (the workload key of an unscheduled kernel; the identity of a scheduled candidate).
pub fn program_hash(prog: &LoopProgram) -> u64 {
    let text = prog.to_string();
    let body = text.split_once('(').map_or(text.as_str(), |(_, rest)| rest);
    fnv1a(body.as_bytes())
}

/// FNV-1a, 64-bit: a small stable hash (the standard library's is not stable across builds).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Applies `schedule` to the unscheduled kernel `k`.
pub fn apply_schedule(
    k: &mut crate::lower::Kernel,
    schedule: &KernelSchedule,
) -> Result<(), PassError> {
    match schedule {
        KernelSchedule::Product(t) => {
            let spec = k.product.as_ref().ok_or_else(|| {
                PassError::Schedule(format!("kernel `{}` is not a matrix product", k.node))
            })?;
            k.program = crate::product::tile(&k.program, spec, t)?;
            Ok(())
        }
        KernelSchedule::Loops(s) => schedule_loops(&mut k.program, s),
        KernelSchedule::Gpu(s) => {
            crate::gpu_schedule::apply_gpu_schedule(&mut k.program, k.product.as_ref(), s)
                .map(|_| ())
        }
    }
}

/// Where a kernel's schedule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleSource {
    /// The tuned schedule recorded for its workload.
    Tuned,
    /// The default schedule.
    Default,
}

/// The default schedule of an unscheduled kernel: the tiled product schedule with its
/// default tiling for a large matrix product, the default loop schedule otherwise.
pub fn default_schedule(k: &crate::lower::Kernel, cfg: &CpuScheduleConfig) -> KernelSchedule {
    let lanes = (cfg.vector_bytes / 4).max(1) as i64;
    if cfg.tile_products
        && let Some(spec) = &k.product
        && crate::product::worth_tiling(spec, lanes)
    {
        let t = crate::product::ProductTiling::default_for(spec, lanes, cfg.threads as i64);
        if t.validate(spec).is_ok() {
            return KernelSchedule::Product(t);
        }
    }
    KernelSchedule::Loops(LoopSchedule::default_for(cfg))
}

/// Schedules one lowered kernel for the CPU: its tuned schedule when `cfg` has one for its
/// workload, else [`default_schedule`].
pub fn schedule_kernel(
    k: &mut crate::lower::Kernel,
    cfg: &CpuScheduleConfig,
) -> Result<ScheduleSource, PassError> {
    if let Some(tuned) = &cfg.tuned
        && let Some(s) = tuned.get(&workload_key(&k.program))
    {
        apply_schedule(k, s)?;
        return Ok(ScheduleSource::Tuned);
    }
    apply_schedule(k, &default_schedule(k, cfg))?;
    Ok(ScheduleSource::Default)
}

/// The default CPU schedule of a plain loop nest.
pub fn default_cpu(prog: &mut LoopProgram, cfg: &CpuScheduleConfig) -> Result<(), PassError> {
    schedule_loops(prog, &LoopSchedule::default_for(cfg))
}

/// Schedules a plain loop nest: fuse outer loops into one parallel loop, vectorize innermost
/// loops whose stores walk memory contiguously, unroll the innermost loops left scalar.
pub fn schedule_loops(prog: &mut LoopProgram, s: &LoopSchedule) -> Result<(), PassError> {
    s.validate()?;
    if s.parallel_min_extent > 0
        && let [Stmt::For(l)] = prog.body.as_slice()
    {
        let mut var = l.var.clone();
        // Fuse while the outer loop is too short to share out and wraps exactly one loop —
        // unless that loop is innermost: fusing it would trade its vectorization for
        // div/mod indexing.
        while let Some(Stmt::For(l)) = prog.body.first()
            && l.extent < s.parallel_min_extent
            && let [Stmt::For(il)] = l.body.as_slice()
            && !stores_without_loops(&il.body, &mut Vec::new())
        {
            let inner = il.var.clone();
            var = fuse(prog, &var, &inner)?;
        }
        // A lone loop that folds reductions and holds no other loop (a one-row product: one
        // reduction per column) is vectorized instead: parallel, it would run scalar.
        if let Some(Stmt::For(l)) = prog.body.first()
            && l.extent > 1
            && !tessera_ir::loops::carries_dependence(&l.body)
            && !(stores_without_loops(&l.body, &mut Vec::new()) && folds_along(&l.body, &l.var))
        {
            annotate(prog, &var, LoopKind::Parallel)?;
        }
    }
    let width =
        |d: tessera_ir::DType| (s.vector_bytes as usize / d.size().max(1)).clamp(2, 32) as u32;
    let mut innermost = Vec::new();
    collect_innermost(&prog.body, &mut innermost);
    for (var, extent, store_buf, folds) in innermost {
        let Some(buf) = prog.buffer(&store_buf) else {
            continue;
        };
        let w = width(buf.dtype);
        if s.vector_bytes > 0 && extent >= w as i64 {
            let chains = if folds { fold_chains(extent, w) } else { 1 };
            annotate(prog, &var, LoopKind::Vectorize(w * chains))?;
        } else if s.vector_bytes > 0 && extent >= SHORT_VECTOR_MIN {
            // A short row (a pooling window's interior columns on a 14- or 7-wide plane):
            // one masked vector just wide enough, instead of a scalar loop.
            let narrow = (extent as u32).next_power_of_two().min(w);
            annotate(prog, &var, LoopKind::Vectorize(narrow))?;
        } else if s.unroll > 1 && extent >= s.unroll as i64 {
            annotate(prog, &var, LoopKind::Unroll(s.unroll))?;
        }
    }
    if s.vector_bytes > 0 {
        vectorize_reductions(&mut prog.body, &width);
        tessera_ir::loops::verify::verify(prog).map_err(|e| PassError::Verify {
            pass: "vectorize reductions".into(),
            msg: e.to_string(),
        })?;
    }
    Ok(())
}

/// Innermost loops shorter than a vector but at least this long run as one masked vector of
/// the next power of two lanes.
const SHORT_VECTOR_MIN: i64 = 4;

/// Registers' worth of lanes a vector loop folding a reduction runs at once. Its accumulator
/// is one chain of dependent operations (a small product's `Σ_k a·b`: one FMA per `k`,
/// each waiting for the last); a vector `c` registers wide — LLVM splits it — runs `c`
/// chains side by side and hides the latency. `c` covers the loop's vectors (rounded up to
/// a power of two), at most [`MAX_FOLD_CHAINS`]: `[2×40]·[40×40]` went 0.79 → 0.33 µs
/// with the reduction form, and to 0.23 µs with four chains.
fn fold_chains(extent: i64, w: u32) -> u32 {
    let vectors = (extent as u64).div_ceil(w as u64) as u32;
    vectors.next_power_of_two().min(MAX_FOLD_CHAINS)
}

/// The most registers a folding vector loop spans ([`fold_chains`]).
const MAX_FOLD_CHAINS: u32 = 8;

/// Whether `body` folds a reduction whose every read walks `var` contiguously or not at all
/// (a product's `a[i, k]·b[k, j]` along `j`): a vector loop over `var` then folds one
/// accumulator per lane from plain vector loads. Reads strided along `var` (a pooling
/// reduction per channel, `x[c·784 + p]`) would be gathers: such a loop keeps its
/// parallel annotation and the reduction its own vectorization.
fn folds_along(body: &[Stmt], var: &str) -> bool {
    let mut any = false;
    let mut contiguous = true;
    for s in body {
        if let Stmt::Reduce(r) = s {
            any = true;
            r.value
                .visit_iexprs(&mut |i| contiguous &= matches!(i.coeff(var), Some(0 | 1)));
        }
    }
    any && contiguous
}

/// Marks `vectorize(w)` every reduction outside a vector loop (inside one it already folds
/// one accumulator per lane) whose innermost axis is at least `w` long and read with small
/// strides: row reductions — softmax's max and sum, a layer norm's mean and variance, a mean
/// over a contiguous axis — then run `w` lanes a step.
fn vectorize_reductions(body: &mut [Stmt], width: &dyn Fn(tessera_ir::DType) -> u32) {
    for s in body {
        match s {
            Stmt::For(l) if matches!(l.kind, LoopKind::Vectorize(_)) => {}
            Stmt::Reduce(r) => {
                let w = width(r.dtype);
                let cheap_lanes = r.axes.last().is_some_and(|(var, extent)| {
                    let mut strided = true;
                    r.value
                        .visit_iexprs(&mut |i| strided &= matches!(i.coeff(var), Some(0..=4)));
                    *extent >= w as i64 && strided
                });
                if cheap_lanes
                    && r.dtype != tessera_ir::DType::Bool
                    && r.op != tessera_ir::loops::ReduceOp::Prod
                {
                    r.vectorize = Some(w);
                }
                vectorize_reductions(&mut r.body, width);
            }
            s => {
                if let Some(nested) = s.nested_mut() {
                    vectorize_reductions(nested, width)
                }
            }
        }
    }
}

/// Innermost serial loops whose every store is contiguous in the loop variable:
/// (var, extent, buffer stored to, whether the body folds a reduction).
fn collect_innermost(body: &[Stmt], out: &mut Vec<(String, i64, String, bool)>) {
    for s in body {
        match s {
            Stmt::For(l) => {
                // Innermost: no loop inside (reductions are fine: they fold one accumulator
                // per lane). Every store, also inside reductions, must walk memory with step 1.
                let mut stores = Vec::new();
                let loop_free = stores_without_loops(&l.body, &mut stores);
                if loop_free
                    && l.kind == LoopKind::Serial
                    && !tessera_ir::loops::carries_dependence(&l.body)
                {
                    // Contiguous, or (top-level stores only) in interleaved groups that a
                    // vector loop stores as one run.
                    let contiguous = stores
                        .iter()
                        .all(|(_, index)| index.coeff(&l.var) == Some(1))
                        || (l.body.iter().all(|s| matches!(s, Stmt::Store { .. }))
                            && tessera_ir::loops::interleave::store_groups(&l.body, &l.var)
                                .is_some());
                    if contiguous && let Some((buf, _)) = stores.first() {
                        let folds = folds_along(&l.body, &l.var);
                        out.push((l.var.clone(), l.extent, buf.clone(), folds));
                    }
                } else {
                    collect_innermost(&l.body, out);
                }
            }
            s => collect_innermost(s.nested(), out),
        }
    }
}

/// Collects the stores of a body made only of stores and reductions; false if it has a loop
/// or a guard.
fn stores_without_loops(
    body: &[Stmt],
    stores: &mut Vec<(String, tessera_ir::loops::IExpr)>,
) -> bool {
    body.iter().all(|s| match s {
        Stmt::Store { buf, index, .. } => {
            stores.push((buf.clone(), index.clone()));
            true
        }
        Stmt::Reduce(r) => stores_without_loops(&r.body, stores),
        Stmt::For(_)
        | Stmt::If { .. }
        | Stmt::Mma(_)
        | Stmt::WarpFold(_)
        | Stmt::AsyncCopy(_)
        | Stmt::Mbarrier(_)
        | Stmt::SetMaxNReg(_)
        | Stmt::TensorCopy(_)
        | Stmt::TensorStore(_)
        | Stmt::AsyncProxy(_) => false,
    })
}
