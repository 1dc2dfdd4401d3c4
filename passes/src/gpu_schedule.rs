//! The default GPU schedule: bind a kernel's independent outer loops to thread blocks and
//! threads (see `tessera_ir::loops::gpu` for what a bound loop means). Matrix products big
//! enough to share staged operands are rebuilt instead with shared-memory and register tiles
//! ([`crate::gpu_product`], chosen by [`schedule_gpu`]).
//!
//! The outer perfect nest of loops whose iterations write disjoint memory is fused into one
//! loop and split into `blocks × threads_per_block`; consecutive threads get consecutive
//! values of the innermost bound loop, so their loads and stores of a row-major output are
//! coalesced. What stays inside (reductions, inner loops) runs serially in each thread.
//! Several independent nests side by side share one grid ([`crate::gpu_siblings`]). A
//! kernel with no loop that can be bound safely runs as one GPU thread — slow, never wrong.
//!
//! Binding is only done when it is provably safe, by an interval argument on the store
//! indices (see `disjoint_stores`): two threads never write the same element, and a thread
//! never reads an element another thread writes ([`carries_dependence`]).

use crate::error::PassError;
use crate::gpu_mma::{GpuMmaTiling, MmaEngine, tile_mma, worth_mma};
use crate::gpu_product::{GpuProductTiling, tile_gpu, worth_gpu_tiling};
use crate::gpu_runs::{through_registers, vector_run};
use crate::product::ProductSpec;
use crate::schedule::{fuse, split};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tessera_ir::loops::gpu::{Launch, MAX_THREADS_PER_BLOCK, binds_gpu};
use tessera_ir::loops::mma::WGMMA_SM;
use tessera_ir::loops::{
    BufRole, GpuAxis, IExpr, Loop, LoopKind, LoopProgram, Stmt, carries_dependence,
};

/// The first compute capability with `mma.sync.m16n8k16` for f16 and bf16 (Ampere).
pub const MMA_MIN_SM: u32 = 80;

/// Knobs of the default GPU schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuScheduleConfig {
    /// Threads per block of the fused, bound loop (a multiple of the 32-thread warp).
    pub threads_per_block: i64,
    /// Rebuild matrix products (those that record a [`ProductSpec`] and are big enough, see
    /// [`worth_gpu_tiling`]) with shared-memory tiles ([`GpuProductTiling::default_for`]);
    /// off, they are bound like any kernel.
    pub tile_products: bool,
    /// Half-precision products (see [`worth_mma`]) get the tensor-core schedule
    /// ([`crate::gpu_mma`], `mma.sync` m16n8k16: sm_80 and later) instead of the CUDA-core
    /// one.
    #[serde(default)]
    pub tensor_cores: bool,
    /// Large elementwise kernels give each thread a 16-byte run of consecutive elements
    /// (see `vector_run`); off, one element per thread.
    #[serde(default = "yes")]
    pub vector_runs: bool,
    /// The GPU has warpgroup tensor-core steps (`wgmma`, sm_90a: Hopper), which the
    /// tensor-core schedule may use ([`crate::gpu_mma::MmaEngine::Warpgroup`]): a choice for
    /// the tuner, not (yet) the default.
    #[serde(default)]
    pub warpgroup_mma: bool,
    /// The tensor-core instruction of the default tiling: warps (`mma.sync`), or — where
    /// `warpgroup_mma` allows — warpgroups ([`GpuMmaTiling::warpgroup_default_for`]).
    #[serde(default)]
    pub mma_engine: MmaEngine,
    /// One tiling for every tensor-core product instead of the default for its size (a
    /// benchmark's sweep over tilings, as `examples/gpu_bundle.rs` runs): a product it does
    /// not fit, or a GPU without its engine, fails the schedule with the reason.
    #[serde(default)]
    pub mma_tiling: Option<GpuMmaTiling>,
}

fn yes() -> bool {
    true
}

impl Default for GpuScheduleConfig {
    fn default() -> Self {
        GpuScheduleConfig {
            threads_per_block: 256,
            tile_products: true,
            tensor_cores: true,
            vector_runs: true,
            warpgroup_mma: false,
            mma_engine: MmaEngine::Warp,
            mma_tiling: None,
        }
    }
}

impl GpuScheduleConfig {
    /// The default schedule for a GPU of compute capability `sm` (`90` for sm_90).
    pub fn for_sm(sm: u32) -> GpuScheduleConfig {
        GpuScheduleConfig {
            tensor_cores: sm >= MMA_MIN_SM,
            warpgroup_mma: sm == WGMMA_SM,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<(), PassError> {
        let t = self.threads_per_block;
        if t <= 0 || t % 32 != 0 || t as u64 > MAX_THREADS_PER_BLOCK {
            return Err(PassError::Schedule(format!(
                "threads_per_block {t}: must be a multiple of 32 in 32..={MAX_THREADS_PER_BLOCK}"
            )));
        }
        Ok(())
    }
}

/// What the GPU schedule did to one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuBinding {
    /// The original loops bound (fused into the block × thread loops), outermost first;
    /// empty when the kernel runs as one thread or is a tiled product.
    pub bound: Vec<String>,
    /// The kernel is a matrix product rebuilt with shared-memory tiles
    /// ([`crate::gpu_product`], or [`crate::gpu_mma`] on tensor cores).
    pub tiled_product: bool,
    /// The kernel reduces rows, one thread block per row ([`crate::gpu_reduce`]).
    pub row_blocks: bool,
    pub launch: Launch,
}

/// One kernel's GPU schedule, as data: what [`schedule_gpu`] picks by default, what the
/// autotuner searches over and what a tuning database records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "gpu", rename_all = "snake_case")]
pub enum GpuKernelSchedule {
    /// The outer independent loops bound to blocks × threads ([`default_gpu`]).
    Bound {
        threads_per_block: i64,
        /// 16-byte runs per thread for large elementwise kernels.
        vector_runs: bool,
    },
    /// One block per row, at most `threads` threads, in 16-byte runs of the row where it
    /// allows ([`crate::gpu_reduce`]; records from before the choice existed had none).
    Rows {
        threads: i64,
        #[serde(default)]
        vector_runs: bool,
    },
    /// Shared-memory and register tiles on the CUDA cores ([`crate::gpu_product`]).
    Tiled { tiling: GpuProductTiling },
    /// Tensor-core tiles (`mma.sync`, [`crate::gpu_mma`]).
    TensorCores { tiling: GpuMmaTiling },
}

impl GpuKernelSchedule {
    /// The knobs of [`default_gpu`] that `cfg` sets.
    pub fn bound(cfg: &GpuScheduleConfig) -> GpuKernelSchedule {
        GpuKernelSchedule::Bound {
            threads_per_block: cfg.threads_per_block,
            vector_runs: cfg.vector_runs,
        }
    }
}

/// The schedule [`schedule_gpu`] gives a kernel by default: for a big enough matrix product
/// (`product` is its spec, when the lowering recorded one) the tensor-core tiles (half
/// precision, where `cfg` allows) or the CUDA-core ones; one block per row for a row
/// reduction; else the bound loops.
pub fn default_gpu_schedule(
    prog: &LoopProgram,
    product: Option<&ProductSpec>,
    cfg: &GpuScheduleConfig,
) -> Result<GpuKernelSchedule, PassError> {
    if let Some(spec) = product
        && cfg.tile_products
        && cfg.tensor_cores
        && worth_mma(spec)
    {
        if let Some(tiling) = cfg.mma_tiling {
            let refused = |why: String| {
                PassError::Schedule(format!("the fixed tensor-core tiling {tiling:?}: {why}"))
            };
            if tiling.engine == MmaEngine::Warpgroup && !cfg.warpgroup_mma {
                return Err(refused("warpgroup steps need sm_90".into()));
            }
            tiling.validate(spec).map_err(|e| refused(e.to_string()))?;
            return Ok(GpuKernelSchedule::TensorCores { tiling });
        }
        let warpgroups = GpuMmaTiling::warpgroup_default_for(spec);
        let tiling = match cfg.mma_engine {
            MmaEngine::Warpgroup if cfg.warpgroup_mma && warpgroups.validate(spec).is_ok() => {
                warpgroups
            }
            _ => GpuMmaTiling::default_for(spec),
        };
        return Ok(GpuKernelSchedule::TensorCores { tiling });
    }
    if let Some(spec) = product
        && cfg.tile_products
        && worth_gpu_tiling(spec)
    {
        let tiling = GpuProductTiling::default_for(spec);
        return Ok(GpuKernelSchedule::Tiled { tiling });
    }
    if is_row_reduction(prog)? {
        return Ok(GpuKernelSchedule::Rows {
            threads: crate::gpu_reduce::DEFAULT_ROW_THREADS,
            vector_runs: cfg.vector_runs,
        });
    }
    Ok(GpuKernelSchedule::bound(cfg))
}

/// Whether `prog` (unscheduled) has the shape of [`crate::gpu_reduce::row_reduction`].
pub fn is_row_reduction(prog: &LoopProgram) -> Result<bool, PassError> {
    Ok(!binds_gpu(&prog.body)
        && crate::gpu_reduce::row_reduction(prog, &crate::gpu_reduce::RowReduction::DEFAULT)?
            .is_some())
}

/// The default GPU schedule of one kernel ([`default_gpu_schedule`]), applied.
pub fn schedule_gpu(
    prog: &mut LoopProgram,
    product: Option<&ProductSpec>,
    cfg: &GpuScheduleConfig,
) -> Result<GpuBinding, PassError> {
    let schedule = default_gpu_schedule(prog, product, cfg)?;
    apply_gpu_schedule(prog, product, &schedule)
}

/// Applies `schedule` to the unscheduled kernel `prog` (`product`: its product spec, which
/// the tiled schedules need); a schedule that does not fit the kernel is an error.
pub fn apply_gpu_schedule(
    prog: &mut LoopProgram,
    product: Option<&ProductSpec>,
    schedule: &GpuKernelSchedule,
) -> Result<GpuBinding, PassError> {
    let rebuilt = |prog: &LoopProgram, tiled_product: bool| -> Result<GpuBinding, PassError> {
        let launch = tessera_ir::loops::gpu::launch(prog).map_err(|e| PassError::Verify {
            pass: "gpu schedule".into(),
            msg: e.to_string(),
        })?;
        Ok(GpuBinding {
            bound: vec![],
            tiled_product,
            row_blocks: !tiled_product,
            launch,
        })
    };
    let spec = || {
        product.ok_or_else(|| {
            PassError::Schedule(format!("kernel `{}` is not a matrix product", prog.name))
        })
    };
    match *schedule {
        GpuKernelSchedule::TensorCores { tiling } => {
            *prog = tile_mma(prog, spec()?, &tiling)?;
            rebuilt(prog, true)
        }
        GpuKernelSchedule::Tiled { tiling } => {
            *prog = tile_gpu(prog, spec()?, &tiling)?;
            rebuilt(prog, true)
        }
        GpuKernelSchedule::Rows {
            threads,
            vector_runs,
        } => {
            let shape = crate::gpu_reduce::RowReduction {
                max_threads: threads,
                vector_runs,
            };
            let rows = match binds_gpu(&prog.body) {
                true => None,
                false => crate::gpu_reduce::row_reduction(prog, &shape)?,
            };
            let Some(rows) = rows else {
                return Err(PassError::Schedule(format!(
                    "kernel `{}` is not a row reduction",
                    prog.name
                )));
            };
            *prog = rows;
            rebuilt(prog, false)
        }
        GpuKernelSchedule::Bound {
            threads_per_block,
            vector_runs,
        } => default_gpu(
            prog,
            &GpuScheduleConfig {
                threads_per_block,
                vector_runs,
                ..Default::default()
            },
        ),
    }
}

/// Schedules one lowered kernel for the GPU: the tuned schedule of its workload when `tuned`
/// has a GPU one, else the default ([`schedule_gpu`]).
pub fn schedule_gpu_kernel(
    k: &mut crate::lower::Kernel,
    cfg: &GpuScheduleConfig,
    tuned: Option<&crate::schedule::TunedSchedules>,
) -> Result<crate::schedule::ScheduleSource, PassError> {
    use crate::schedule::{KernelSchedule, ScheduleSource, workload_key};
    if let Some(KernelSchedule::Gpu(s)) = tuned.and_then(|t| t.get(&workload_key(&k.program))) {
        apply_gpu_schedule(&mut k.program, k.product.as_ref(), s)?;
        return Ok(ScheduleSource::Tuned);
    }
    schedule_gpu(&mut k.program, k.product.as_ref(), cfg)?;
    Ok(ScheduleSource::Default)
}

/// Binds `prog`'s outer independent loops to blocks and threads (see the module docs).
pub fn default_gpu(
    prog: &mut LoopProgram,
    cfg: &GpuScheduleConfig,
) -> Result<GpuBinding, PassError> {
    cfg.validate()?;
    if tessera_ir::loops::gpu::binds_gpu(&prog.body) || prog.parallel_extent() > 1 {
        return Err(PassError::Schedule(format!(
            "kernel `{}` is already scheduled",
            prog.name
        )));
    }
    if prog.body.len() > 1
        && let Some(body) = output_stationary(prog)
    {
        prog.body = body;
        crate::verify_after("gpu schedule (output-stationary)", prog)?;
    }
    if prog.body.len() > 1
        && let Some(binding) = crate::gpu_siblings::bind_siblings(prog, cfg)?
    {
        return Ok(binding);
    }
    let chain = outer_chain(&prog.body);
    // The longest prefix of the outer nest that is safe to run all at once.
    let Some(bound) = (1..=chain.len())
        .rev()
        .map(|n| &chain[..n])
        .find(|prefix| bindable(prog, prefix))
        .map(|p| p.iter().map(|l| l.var.clone()).collect::<Vec<_>>())
    else {
        return Ok(GpuBinding {
            bound: vec![],
            tiled_product: false,
            row_blocks: false,
            launch: Launch::SINGLE,
        });
    };
    let mut var = bound[0].clone();
    for inner in &bound[1..] {
        var = fuse(prog, &var, inner)?;
    }
    let mut extent = match prog.body.as_slice() {
        [Stmt::For(l)] => l.extent,
        _ => unreachable!("the bound nest is the only top-level statement"),
    };
    let run = if cfg.vector_runs {
        vector_run(prog, extent)
    } else {
        1
    };
    if run > 1 {
        // Each thread takes a run of consecutive elements, unrolled: with the arguments'
        // alignment known, LLVM merges its loads and stores into 16-byte accesses.
        let (outer, inner) = split(prog, &var, run)?;
        crate::schedule::annotate(prog, &inner, LoopKind::Unroll(run as u32))?;
        var = outer;
        extent /= run;
    }
    // A small kernel is one block of exactly its extent.
    let threads = cfg.threads_per_block.min(extent);
    split(prog, &var, threads)?;
    // Both annotations at once: with only one of them the program is not a valid GPU
    // program, and every primitive verifies its result.
    if let [Stmt::For(blocks)] = prog.body.as_mut_slice()
        && let [Stmt::For(lanes)] = blocks.body.as_mut_slice()
    {
        blocks.kind = LoopKind::Block(GpuAxis::X);
        lanes.kind = LoopKind::Thread(GpuAxis::X);
    }
    if run > 1
        && let [Stmt::For(blocks)] = prog.body.as_slice()
        && let [Stmt::For(lanes)] = blocks.body.as_slice()
        && let [Stmt::For(r)] = lanes.body.as_slice()
        && let Some(staged) = through_registers(prog, r, &mut |base| {
            crate::product::unused_name(prog, format!("{}_{base}", prog.name), &[])
        })
    {
        if let [Stmt::For(blocks)] = prog.body.as_mut_slice()
            && let [Stmt::For(lanes)] = blocks.body.as_mut_slice()
        {
            lanes.body = staged.body;
        }
        prog.buffers.extend(staged.registers);
    }
    let launch = tessera_ir::loops::gpu::launch(prog).map_err(|e| PassError::Verify {
        pass: "gpu schedule".into(),
        msg: e.to_string(),
    })?;
    crate::verify_after("gpu schedule", prog)?;
    Ok(GpuBinding {
        bound,
        tiled_product: false,
        row_blocks: false,
        launch,
    })
}

/// Rewrites a sequence of loop nests over the same output elements — a matrix product's
/// `y = init; for k { for j { y[j] += … } }; y = epilogue(y)` — into one nest over the output
/// with each statement's remaining work inside:
/// `for j { y[j] = init; for k { y[j] += … }; y[j] = epilogue(y[j]) }`, so that the output
/// loops can be bound. `None` when the pattern does not hold.
///
/// Sound because (checked): every statement is a perfect nest whose stores, after renaming its
/// output loops (those its store indices use) to the first statement's, are at the same index
/// `I(j)` per buffer, with equal output extents in the same order; and every load of a stored
/// buffer anywhere reads exactly `I(j)`. Then element `j` only ever touches its own elements,
/// nests over different `j` commute, and for one `j` the statements — and each statement's
/// reduction loops — still run in their original order (bit-exact results).
fn output_stationary(prog: &LoopProgram) -> Option<Vec<Stmt>> {
    struct Nest<'a> {
        outputs: Vec<&'a Loop>,
        reductions: Vec<&'a Loop>,
        body: &'a [Stmt],
    }
    let mut nests = Vec::new();
    for s in &prog.body {
        let Stmt::For(_) = s else { return None };
        let chain = outer_chain(std::slice::from_ref(s));
        let body = chain.last()?.body.as_slice();
        let mut stores = Vec::new();
        collect_stores(body, &mut HashMap::new(), &mut stores);
        if stores.is_empty() {
            return None;
        }
        let used = |v: &str| stores.iter().any(|(_, i, _)| i.coeff(v) != Some(0));
        let (outputs, reductions): (Vec<&Loop>, Vec<&Loop>) =
            chain.iter().partition(|l| used(&l.var));
        nests.push(Nest {
            outputs,
            reductions,
            body,
        });
    }
    let first = &nests[0];
    let shape: Vec<i64> = first.outputs.iter().map(|l| l.extent).collect();
    if shape.is_empty() {
        return None;
    }
    // Rename every nest's output loops to the first nest's, then check the index rule.
    let mut bodies: Vec<Vec<Stmt>> = Vec::new();
    let mut index_of: HashMap<String, IExpr> = HashMap::new();
    for n in &nests {
        if n.outputs.iter().map(|l| l.extent).collect::<Vec<_>>() != shape {
            return None;
        }
        let rename = |s: &Stmt| {
            n.outputs
                .iter()
                .zip(&first.outputs)
                .fold(s.clone(), |s, (from, to)| {
                    s.subst(&from.var, &IExpr::var(&to.var))
                })
        };
        let mut inner: Vec<Stmt> = n.body.iter().map(rename).collect();
        for l in n.reductions.iter().rev() {
            inner = vec![Stmt::For(Loop {
                var: l.var.clone(),
                extent: l.extent,
                kind: LoopKind::Serial,
                body: inner,
            })];
        }
        let mut stores = Vec::new();
        collect_stores(&inner, &mut HashMap::new(), &mut stores);
        for (buf, index, _) in stores {
            if index_of.entry(buf).or_insert_with(|| index.clone()) != &index {
                return None;
            }
        }
        bodies.push(inner);
    }
    let all: Vec<Stmt> = bodies.into_iter().flatten().collect();
    if !loads_only_at(&all, &index_of) {
        return None;
    }
    let mut body = all;
    for l in first.outputs.iter().rev() {
        body = vec![Stmt::For(Loop {
            var: l.var.clone(),
            extent: l.extent,
            kind: LoopKind::Serial,
            body,
        })];
    }
    Some(body)
}

/// Whether every load of a buffer in `index_of` reads exactly that index.
fn loads_only_at(body: &[Stmt], index_of: &HashMap<String, IExpr>) -> bool {
    let mut ok = true;
    for s in body {
        s.visit_loads(&mut |buf, index| {
            ok &= index_of.get(buf).is_none_or(|i| i == index);
        });
    }
    ok
}

/// The loops of the outer perfect nest, outermost first.
pub(crate) fn outer_chain(body: &[Stmt]) -> Vec<&Loop> {
    let mut chain = Vec::new();
    let mut body = body;
    while let [Stmt::For(l)] = body {
        chain.push(l);
        body = &l.body;
    }
    chain
}

/// Whether the loops `nest` (a prefix of the outer perfect nest) may all run at once.
pub(crate) fn bindable(prog: &LoopProgram, nest: &[&Loop]) -> bool {
    let innermost = nest.last().expect("a non-empty prefix");
    let total = nest
        .iter()
        .try_fold(1i64, |acc, l| acc.checked_mul(l.extent));
    if total.is_none_or(|t| t > i32::MAX as i64) {
        return false;
    }
    nest.iter().all(|l| !carries_dependence(&l.body))
        && disjoint_stores(prog, nest, &innermost.body)
}

/// Whether distinct iterations of the bound loops `nest` store to disjoint elements.
///
/// Every store index must be affine in each bound variable, `Σ c_k·v_k + r`, with `r` free
/// of bound variables and its range `[lo, hi]` known from loop extents. Sorting the bound
/// variables by `|c|`, two different iterations differ in their bound part by at least
/// `|c_j| − Σ_{i<j} |c_i|·(e_i − 1)` for the highest differing `j`; when that is ≥ the width of
/// `r` (over every store to the same buffer) for every `j`, the written sets are disjoint.
/// Scratch buffers are private to a thread and exempt.
pub(crate) fn disjoint_stores(prog: &LoopProgram, nest: &[&Loop], body: &[Stmt]) -> bool {
    let mut extents: HashMap<String, i64> =
        nest.iter().map(|l| (l.var.clone(), l.extent)).collect();
    let mut stores: Vec<(String, IExpr, HashMap<String, i64>)> = Vec::new();
    collect_stores(body, &mut extents, &mut stores);
    let mut by_buf: HashMap<&str, (Vec<i64>, i64, i64)> = HashMap::new();
    for (buf, index, env) in &stores {
        if prog.buffer(buf).is_none_or(|b| b.role == BufRole::Scratch) {
            continue;
        }
        let mut coeffs = Vec::new();
        let mut rest = index.clone();
        for l in nest {
            match index.coeff(&l.var) {
                Some(c) if c != 0 => coeffs.push(c),
                _ => return false,
            }
            rest = rest.subst(&l.var, &IExpr::c(0));
        }
        let Some((lo, hi)) = span(&rest, env) else {
            return false;
        };
        let entry = by_buf
            .entry(buf.as_str())
            .or_insert_with(|| (coeffs.clone(), lo, hi));
        if entry.0 != coeffs {
            return false;
        }
        entry.1 = entry.1.min(lo);
        entry.2 = entry.2.max(hi);
    }
    by_buf.values().all(|(coeffs, lo, hi)| {
        let width = hi - lo + 1;
        let mut terms: Vec<(i64, i64)> = coeffs
            .iter()
            .zip(nest)
            .map(|(c, l)| (c.abs(), l.extent))
            .collect();
        terms.sort();
        let mut reach = 0i64;
        terms.iter().all(|&(c, e)| {
            let ok = c - reach >= width;
            reach = reach.saturating_add(c.saturating_mul(e - 1));
            ok
        })
    })
}

/// Every store below `body` with the extents of the loops around it.
pub(crate) fn collect_stores(
    body: &[Stmt],
    extents: &mut HashMap<String, i64>,
    out: &mut Vec<(String, IExpr, HashMap<String, i64>)>,
) {
    for s in body {
        match s {
            Stmt::For(l) => {
                extents.insert(l.var.clone(), l.extent);
                collect_stores(&l.body, extents, out);
                extents.remove(&l.var);
            }
            Stmt::Store { buf, index, .. } => {
                out.push((buf.clone(), index.clone(), extents.clone()))
            }
            Stmt::If { then, .. } => collect_stores(then, extents, out),
            Stmt::Reduce(r) => {
                for (v, e) in &r.axes {
                    extents.insert(v.clone(), *e);
                }
                collect_stores(&r.body, extents, out);
                for (v, _) in &r.axes {
                    extents.remove(v);
                }
            }
            s @ (Stmt::Mma(_)
            | Stmt::WarpFold(_)
            | Stmt::AsyncCopy(_)
            | Stmt::Mbarrier(_)
            | Stmt::SetMaxNReg(_)
            | Stmt::TensorCopy(_)
            | Stmt::TensorStore(_)
            | Stmt::AsyncProxy(_)) => collect_stores(&s.expansion(), extents, out),
        }
    }
}

/// The range `[lo, hi]` of an index expression over the loop extents in `env` (`None` when a
/// variable is unknown or the expression reads memory).
fn span(e: &IExpr, env: &HashMap<String, i64>) -> Option<(i64, i64)> {
    let pair = |a: &IExpr, b: &IExpr| Some((span(a, env)?, span(b, env)?));
    Some(match e {
        IExpr::Const(c) => (*c, *c),
        IExpr::Var(v) => (0, env.get(v)? - 1),
        IExpr::Add(a, b) => {
            let ((al, ah), (bl, bh)) = pair(a, b)?;
            (al.checked_add(bl)?, ah.checked_add(bh)?)
        }
        IExpr::Sub(a, b) => {
            let ((al, ah), (bl, bh)) = pair(a, b)?;
            (al.checked_sub(bh)?, ah.checked_sub(bl)?)
        }
        IExpr::Mul(a, b) => {
            let ((al, ah), (bl, bh)) = pair(a, b)?;
            let p = [
                al.checked_mul(bl)?,
                al.checked_mul(bh)?,
                ah.checked_mul(bl)?,
                ah.checked_mul(bh)?,
            ];
            (*p.iter().min()?, *p.iter().max()?)
        }
        IExpr::FloorDiv(a, b) => match (span(a, env)?, b.as_ref()) {
            ((l, h), IExpr::Const(k)) if *k > 0 => (l.div_euclid(*k), h.div_euclid(*k)),
            _ => return None,
        },
        IExpr::Mod(a, b) => match (span(a, env)?, b.as_ref()) {
            ((l, h), IExpr::Const(k)) if *k > 0 && l >= 0 && h < *k => (l, h),
            (_, IExpr::Const(k)) if *k > 0 => (0, k - 1),
            _ => return None,
        },
        IExpr::Min(a, b) => {
            let ((al, ah), (bl, bh)) = pair(a, b)?;
            (al.min(bl), ah.min(bh))
        }
        IExpr::Max(a, b) => {
            let ((al, ah), (bl, bh)) = pair(a, b)?;
            (al.max(bl), ah.max(bh))
        }
        IExpr::Xor(a, b) => {
            let (a, b) = pair(a, b)?;
            tessera_ir::loops::range::xor_range(a, b)?
        }
        IExpr::Of(_) => return None,
    })
}
