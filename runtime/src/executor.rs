//! The executor: runs an [`ExecPlan`] step by step, splitting parallel kernels across the
//! thread pool.

use crate::error::RuntimeError;
use crate::memory::AlignedBuf;
use crate::pool::ThreadPool;
use std::any::Any;
use std::sync::{Arc, Mutex};
use tessera_ir::Tensor;
use tessera_ir::plan::{ExecPlan, KernelFn, Slot, Step};

/// Kernels estimated to do less work than this run on the calling thread: waking the pool
/// costs microseconds, more than such a kernel takes.
pub const PARALLEL_MIN_WORK: u64 = 1 << 16;

/// Options of an executor.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Threads for parallel loops (the calling thread included).
    pub threads: usize,
    /// Fill outputs and the workspace (past its constant region) with NaN bytes before every
    /// run, so an element a kernel forgets to write cannot pass a comparison. For tests; costs
    /// a memset per run.
    pub poison: bool,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            threads: ThreadPool::default_threads(),
            poison: false,
        }
    }
}

/// Where the weights live: owned by the executor (JIT) or inside a loaded library (AOT).
pub enum Weights {
    Owned(AlignedBuf),
    /// A pointer into memory kept alive by the executor's `keep_alive` handle.
    Borrowed(*const u8),
}

// SAFETY: weights are immutable after construction.
unsafe impl Send for Weights {}
// SAFETY: weights are immutable after construction.
unsafe impl Sync for Weights {}

impl Weights {
    fn ptr(&self) -> *const u8 {
        match self {
            Weights::Owned(b) => b.as_ptr(),
            Weights::Borrowed(p) => *p,
        }
    }
}

pub struct Executor {
    plan: ExecPlan,
    kernels: Vec<KernelFn>,
    weights: Weights,
    pool: ThreadPool,
    workspace: Mutex<AlignedBuf>,
    poison: bool,
    /// Keeps the code (a JIT module or a loaded library) alive as long as the executor.
    _keep_alive: Arc<dyn Any + Send + Sync>,
}

/// Pointer array handed to kernels; raw pointers are not `Sync`, the memory they point to is
/// partitioned between chunks by the kernel's parallel loop.
struct Args<'a>(&'a [*mut u8]);
// SAFETY: see the type doc: chunks of a parallel loop write disjoint elements.
unsafe impl Sync for Args<'_> {}

impl Args<'_> {
    /// A method, so that closures capture the whole (`Sync`) wrapper, not its field.
    fn ptr(&self) -> *const *mut u8 {
        self.0.as_ptr()
    }
}

/// Runs one kernel over its whole parallel range `0..extent`: on the calling thread when it
/// does less `work` than [`PARALLEL_MIN_WORK`], else split over `pool`.
///
/// # Safety
/// `args` must hold one valid pointer per parameter buffer of `kernel`, each to memory of the
/// size the kernel declares; inputs are only read; `extent` is the kernel's parallel extent.
pub unsafe fn launch(
    pool: &ThreadPool,
    kernel: KernelFn,
    args: &[*mut u8],
    extent: i64,
    work: u64,
) {
    let args = Args(args);
    let run = |start: i64, end: i64| {
        // SAFETY: the caller's contract; [start, end) lies within the parallel extent.
        unsafe { kernel(args.ptr(), start, end) }
    };
    if work < PARALLEL_MIN_WORK {
        run(0, extent);
    } else {
        pool.parallel_for(extent, &run);
    }
}

impl Executor {
    /// `kernels[i]` must be the compiled function for `plan.steps[i]`. Runs the plan's
    /// run-once steps (their values stay in the workspace's constant region).
    pub fn new(
        plan: ExecPlan,
        kernels: Vec<KernelFn>,
        weights: Weights,
        keep_alive: Arc<dyn Any + Send + Sync>,
        cfg: &ExecConfig,
    ) -> Executor {
        let mut workspace = AlignedBuf::zeroed(plan.workspace_bytes);
        if cfg.poison {
            workspace.as_mut_slice().fill(0xFF);
        }
        let exe = Executor {
            kernels,
            weights,
            pool: ThreadPool::new(cfg.threads),
            workspace: Mutex::new(workspace),
            poison: cfg.poison,
            _keep_alive: keep_alive,
            plan,
        };
        {
            let mut ws = exe.workspace.lock().unwrap_or_else(|e| e.into_inner());
            let ws_ptr = ws.as_mut_slice().as_mut_ptr();
            let mut args = Vec::new();
            for (step, kernel) in exe.plan.steps.iter().zip(&exe.kernels) {
                if step.once {
                    // SAFETY: a run-once step reads only weights and the constant region and
                    // writes the constant region, all sized by the plan (`step_args`).
                    unsafe { exe.launch_step(step, *kernel, &[], &[], ws_ptr, &mut args) };
                }
            }
        }
        exe
    }

    /// The pointer of every argument of `step`, into `args` (cleared first; one buffer reused
    /// for every step, as a model may run hundreds of tiny kernels).
    fn step_args(
        &self,
        step: &Step,
        inputs: &[*mut u8],
        outputs: &[*mut u8],
        ws_ptr: *mut u8,
        args: &mut Vec<*mut u8>,
    ) {
        args.clear();
        args.extend(step.args.iter().map(|s| match *s {
            Slot::Input { index } => inputs[index],
            Slot::Output { index } => outputs[index],
            // SAFETY (both): offsets were planned inside the blob / workspace sizes.
            Slot::Weight { offset } => unsafe { self.weights.ptr().add(offset) as *mut u8 },
            Slot::Workspace { offset } => unsafe { ws_ptr.add(offset) },
        }));
    }

    /// Runs one step.
    ///
    /// # Safety
    /// `inputs`, `outputs` and `ws_ptr` must point to the model's inputs, outputs and a
    /// workspace of the sizes the plan gives (and hold what the step reads).
    unsafe fn launch_step(
        &self,
        step: &Step,
        kernel: KernelFn,
        inputs: &[*mut u8],
        outputs: &[*mut u8],
        ws_ptr: *mut u8,
        args: &mut Vec<*mut u8>,
    ) {
        self.step_args(step, inputs, outputs, ws_ptr, args);
        // SAFETY: `args` holds one valid pointer per kernel buffer, sized by the plan; inputs
        // are only read (the caller's contract).
        unsafe { launch(&self.pool, kernel, args, step.parallel_extent, step.work) };
    }

    pub fn plan(&self) -> &ExecPlan {
        &self.plan
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Checks the inputs against the plan, runs every step, and returns the outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.run_timed(inputs, None)
    }

    /// Like [`Executor::run`], also recording each step's wall time (in the plan's order).
    pub fn run_profiled(
        &self,
        inputs: &[Tensor],
    ) -> Result<(Vec<Tensor>, Vec<std::time::Duration>), RuntimeError> {
        let mut times = Vec::with_capacity(self.plan.steps.len());
        let out = self.run_timed(inputs, Some(&mut times))?;
        Ok((out, times))
    }

    fn run_timed(
        &self,
        inputs: &[Tensor],
        mut times: Option<&mut Vec<std::time::Duration>>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        check_inputs(&self.plan, inputs)?;
        let mut outputs: Vec<Tensor> = self
            .plan
            .outputs
            .iter()
            .map(|s| {
                if self.poison {
                    Tensor::poisoned(s.dtype, s.shape.clone())
                } else {
                    Tensor::zeros(s.dtype, s.shape.clone())
                }
            })
            .collect();
        let mut ws = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        if self.poison {
            ws.as_mut_slice()[self.plan.constant_bytes..].fill(0xFF);
        }
        let ws_ptr = ws.as_mut_slice().as_mut_ptr();
        let in_ptrs: Vec<*mut u8> = inputs
            .iter()
            .map(|t| t.bytes().as_ptr() as *mut u8)
            .collect();
        let out_ptrs: Vec<*mut u8> = outputs
            .iter_mut()
            .map(|t| t.bytes_mut().as_mut_ptr())
            .collect();
        let mut args = Vec::with_capacity(
            self.plan
                .steps
                .iter()
                .map(|s| s.args.len())
                .max()
                .unwrap_or(0),
        );
        for (step, kernel) in self.plan.steps.iter().zip(&self.kernels) {
            let t0 = times.is_some().then(std::time::Instant::now);
            if !step.once {
                // SAFETY: the pointers are the checked inputs, the outputs and the workspace,
                // all of the plan's sizes; run-once values were computed in `new`.
                unsafe { self.launch_step(step, *kernel, &in_ptrs, &out_ptrs, ws_ptr, &mut args) };
            }
            if let (Some(t), Some(t0)) = (times.as_deref_mut(), t0) {
                t.push(t0.elapsed());
            }
        }
        drop(ws);
        Ok(outputs)
    }
}

/// Checks that `inputs` match the plan's input signatures (count, dtype, shape).
pub(crate) fn check_inputs(plan: &ExecPlan, inputs: &[Tensor]) -> Result<(), RuntimeError> {
    if inputs.len() != plan.inputs.len() {
        return Err(RuntimeError::InputCount {
            expected: plan.inputs.len(),
            got: inputs.len(),
        });
    }
    for (i, (t, sig)) in inputs.iter().zip(&plan.inputs).enumerate() {
        if t.dtype() != sig.dtype || t.shape() != sig.shape.as_slice() {
            return Err(RuntimeError::BadInput {
                index: i,
                name: sig.name.clone(),
                expected: format!("{}{:?}", sig.dtype, sig.shape),
                got: format!("{}{:?}", t.dtype(), t.shape()),
            });
        }
    }
    Ok(())
}
