//! The CUDA device: probe, PTX loading and whole-model execution through cudarc.
//!
//! cudarc loads libcuda dynamically and panics on first use when it is missing, so every entry
//! point checks for the library first and turns its absence into [`RuntimeError::NoCuda`].
//!
//! A [`GpuExecutable`] holds one PTX module (one kernel per plan step, launched with the
//! geometry the compiler recorded), the weights in device memory, one device workspace for
//! the intermediates (the same offsets as on the CPU) and device buffers for inputs and
//! outputs. Everything runs on one stream, in plan order, so no event tracking is needed.

use crate::error::RuntimeError;
use crate::executor::check_inputs;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;
use tessera_ir::Tensor;
use tessera_ir::plan::{ExecPlan, GpuKernel, Slot};

/// Name and count of the CUDA devices, or why there are none.
#[derive(Clone, Debug)]
pub struct CudaInfo {
    pub devices: usize,
    pub name: String,
    /// Compute capability as `major * 10 + minor` (90 for an H100).
    pub sm: u32,
}

fn no_cuda(e: impl std::fmt::Debug) -> RuntimeError {
    RuntimeError::NoCuda(format!("driver error: {e:?}"))
}

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> RuntimeError + '_ {
    move |e| RuntimeError::Cuda(format!("{what}: {e:?}"))
}

/// Opens device 0 and describes it, or says why not (no libcuda, no device, driver error) —
/// never panics.
fn open() -> Result<(Arc<CudaContext>, CudaInfo), RuntimeError> {
    // SAFETY: only tries to dlopen libcuda; no CUDA call is made if it is absent.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(RuntimeError::NoCuda(
            "no CUDA driver library (libcuda.so) on this machine".into(),
        ));
    }
    let n = CudaContext::device_count().map_err(no_cuda)?;
    if n <= 0 {
        return Err(RuntimeError::NoCuda("the driver reports no devices".into()));
    }
    let ctx = CudaContext::new(0)
        .map_err(|e| RuntimeError::NoCuda(format!("cannot open device 0: {e:?}")))?;
    let name = ctx.name().map_err(no_cuda)?;
    let (major, minor) = ctx.compute_capability().map_err(no_cuda)?;
    let info = CudaInfo {
        devices: n as usize,
        name,
        sm: (major * 10 + minor) as u32,
    };
    Ok((ctx, info))
}

pub fn probe() -> Result<CudaInfo, RuntimeError> {
    open().map(|(_, info)| info)
}

/// Options of a GPU run.
#[derive(Clone, Debug, Default)]
pub struct GpuConfig {
    /// Fill outputs and workspace with NaN bytes (0xFF) before every run (tests).
    pub poison: bool,
}

/// A compiled model loaded onto the GPU.
pub struct GpuExecutable {
    info: CudaInfo,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    /// Per step: its launch geometry and its arguments as device pointers (fixed at load:
    /// every buffer is allocated once).
    launches: Vec<LaunchConfig>,
    step_args: Vec<Vec<u64>>,
    plan: ExecPlan,
    cfg: GpuConfig,
    /// Owns the device weights the step arguments point into (never read directly).
    _weights: CudaSlice<u8>,
    workspace: CudaSlice<u8>,
    inputs: Vec<CudaSlice<u8>>,
    outputs: Vec<CudaSlice<u8>>,
    /// Owns the encoded tensor maps of the steps that take some (never read directly).
    _tensor_maps: Vec<CudaSlice<u8>>,
}

impl GpuExecutable {
    /// Loads `ptx` (one kernel per step of `plan`, described by `kernels`) and the weights.
    pub fn load(
        ptx: &str,
        kernels: &[GpuKernel],
        plan: ExecPlan,
        weights: &[u8],
        cfg: GpuConfig,
    ) -> Result<GpuExecutable, RuntimeError> {
        if kernels.len() != plan.steps.len() {
            return Err(RuntimeError::Cuda(format!(
                "{} kernels for {} plan steps",
                kernels.len(),
                plan.steps.len()
            )));
        }
        for (k, s) in kernels.iter().zip(&plan.steps) {
            if k.name != s.kernel || k.params != s.args.len() {
                return Err(RuntimeError::Cuda(format!(
                    "kernel `{}` ({} params) does not match step `{}` ({} args)",
                    k.name,
                    k.params,
                    s.kernel,
                    s.args.len()
                )));
            }
        }
        let (ctx, info) = open()?;
        // SAFETY: one stream, used in program order: cudarc need not track events between
        // our buffers (and launches with raw pointers would bypass its tracking anyway).
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver("loading the PTX module"))?;
        let functions = kernels
            .iter()
            .map(|k| {
                module
                    .load_function(&k.name)
                    .map_err(|e| RuntimeError::Cuda(format!("kernel `{}`: {e:?}", k.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let alloc = |bytes: usize| {
            stream
                .alloc_zeros::<u8>(bytes.max(1))
                .map_err(driver("allocating device memory"))
        };
        let mut dev_weights = alloc(weights.len())?;
        if !weights.is_empty() {
            stream
                .memcpy_htod(weights, &mut dev_weights)
                .map_err(driver("copying weights"))?;
        }
        let workspace = alloc(plan.workspace_bytes)?;
        let inputs = plan
            .inputs
            .iter()
            .map(|s| alloc(s.bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = plan
            .outputs
            .iter()
            .map(|s| alloc(s.bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let base = |buf: &CudaSlice<u8>| buf.device_ptr(&stream).0;
        let mut step_args: Vec<Vec<u64>> = plan
            .steps
            .iter()
            .map(|step| {
                step.args
                    .iter()
                    .map(|s| match *s {
                        Slot::Input { index } => base(&inputs[index]),
                        Slot::Output { index } => base(&outputs[index]),
                        Slot::Weight { offset } => base(&dev_weights) + offset as u64,
                        Slot::Workspace { offset } => base(&workspace) + offset as u64,
                    })
                    .collect()
            })
            .collect();
        // A kernel with tensor copies takes its maps, encoded for these arguments, last.
        let mut tensor_maps = Vec::new();
        for (k, args) in kernels.iter().zip(step_args.iter_mut()) {
            if k.tensor_maps.is_empty() {
                continue;
            }
            let mut bytes = Vec::new();
            for m in &k.tensor_maps {
                let base = *args.get(m.param).ok_or_else(|| {
                    RuntimeError::Cuda(format!(
                        "kernel `{}`: a tensor map over argument {} of {}",
                        k.name,
                        m.param,
                        args.len()
                    ))
                })?;
                bytes.extend(crate::tensor_map::encode(m, base)?);
            }
            let mut maps = alloc(bytes.len())?;
            stream
                .memcpy_htod(&bytes, &mut maps)
                .map_err(driver("copying tensor maps"))?;
            args.push(base(&maps));
            tensor_maps.push(maps);
        }
        // Kernels with more shared memory than the static 48 KB take it dynamically; beyond
        // that the function must first be allowed as much.
        for (k, f) in kernels.iter().zip(&functions) {
            if k.launch.dynamic_shared as usize > tessera_ir::loops::MAX_STATIC_SHARED_BYTES {
                f.set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    k.launch.dynamic_shared as i32,
                )
                .map_err(|e| {
                    RuntimeError::Cuda(format!(
                        "kernel `{}`: {} bytes of shared memory: {e:?}",
                        k.name, k.launch.dynamic_shared
                    ))
                })?;
            }
        }
        let launches = kernels
            .iter()
            .map(|k| LaunchConfig {
                grid_dim: k.launch.grid.into(),
                block_dim: k.launch.block.into(),
                shared_mem_bytes: k.launch.dynamic_shared,
            })
            .collect();
        let mut exe = GpuExecutable {
            info,
            stream,
            functions,
            launches,
            step_args,
            plan,
            cfg,
            _weights: dev_weights,
            workspace,
            inputs,
            outputs,
            _tensor_maps: tensor_maps,
        };
        // Run-once steps (they read only weights and each other's results) fill the
        // workspace's constant region now; runs leave it alone.
        exe.launch_steps(true)?;
        Ok(exe)
    }

    pub fn device(&self) -> &CudaInfo {
        &self.info
    }

    pub fn plan(&self) -> &ExecPlan {
        &self.plan
    }

    /// Copies `inputs` in, runs every step (but the run-once ones, see [`Self::load`]),
    /// copies the outputs back.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.upload(inputs)?;
        if self.cfg.poison {
            for buf in self.outputs.iter_mut() {
                let poison = vec![0xFFu8; buf.len()];
                self.stream
                    .memcpy_htod(&poison, buf)
                    .map_err(driver("poisoning"))?;
            }
            // All of the workspace but its constant region (the run-once steps' values).
            let constant = self.plan.constant_bytes.min(self.workspace.len());
            let mut rest = self.workspace.slice_mut(constant..);
            let poison = vec![0xFFu8; rest.len()];
            self.stream
                .memcpy_htod(&poison, &mut rest)
                .map_err(driver("poisoning"))?;
        }
        self.launch_all()?;
        self.download()
    }

    /// Copies the inputs to the device (checked against the plan's signatures).
    pub fn upload(&mut self, inputs: &[Tensor]) -> Result<(), RuntimeError> {
        check_inputs(&self.plan, inputs)?;
        for (t, buf) in inputs.iter().zip(&mut self.inputs) {
            if !t.bytes().is_empty() {
                self.stream
                    .memcpy_htod(t.bytes(), buf)
                    .map_err(driver("copying an input"))?;
            }
        }
        Ok(())
    }

    /// Copies the outputs back (waits for the stream).
    pub fn download(&mut self) -> Result<Vec<Tensor>, RuntimeError> {
        let mut out = Vec::with_capacity(self.outputs.len());
        for (sig, buf) in self.plan.outputs.iter().zip(&self.outputs) {
            let mut bytes = self
                .stream
                .clone_dtoh(buf)
                .map_err(driver("copying an output"))?;
            bytes.truncate(sig.shape.iter().product::<usize>() * sig.dtype.size());
            out.push(
                Tensor::from_bytes(sig.dtype, sig.shape.clone(), bytes)
                    .map_err(|e| RuntimeError::Cuda(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Launches every step of a run on the device's stream (asynchronously; see
    /// [`Self::synchronize`]).
    pub fn launch_all(&mut self) -> Result<(), RuntimeError> {
        self.launch_steps(false)
    }

    /// Launches the run-once steps (`once`), or the others.
    fn launch_steps(&mut self, once: bool) -> Result<(), RuntimeError> {
        for (((step, args), cfg), f) in self
            .plan
            .steps
            .iter()
            .zip(&self.step_args)
            .zip(&self.launches)
            .zip(&self.functions)
            .filter(|(((step, _), _), _)| step.once == once)
        {
            let mut launch = self.stream.launch_builder(f);
            for a in args {
                launch.arg(a);
            }
            // SAFETY: the kernel takes exactly `params` pointers (checked at load against the
            // step's arguments); each points into a device allocation this executable owns,
            // sized by the plan, and the geometry is the one the compiler derived from the
            // kernel's bound loops.
            unsafe { launch.launch(*cfg) }
                .map_err(|e| RuntimeError::Cuda(format!("launching `{}`: {e:?}", step.kernel)))?;
        }
        Ok(())
    }

    /// Device time of whole runs on the inputs already uploaded: `warmup` unmeasured runs,
    /// then `runs` (at least one), each the time between two events recorded on the stream
    /// before its first launch and after its last — as `scripts/gpu_baselines.py` times
    /// PyTorch (`torch.cuda.Event`), so that the ratios compare like with like: a host
    /// clock around launch and synchronisation would add the launch call and the
    /// synchronisation's wake-up (several µs: 5–15 % of a 0.06 ms kernel) to tessera's side
    /// only. In milliseconds, sorted.
    pub fn time_runs(&mut self, warmup: usize, runs: usize) -> Result<Vec<f64>, RuntimeError> {
        for _ in 0..warmup {
            self.launch_all()?;
        }
        self.synchronize()?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let event = || {
            self.stream
                .context()
                .new_event(timing)
                .map_err(driver("creating a timing event"))
        };
        let (start, end) = (event()?, event()?);
        let mut times = Vec::with_capacity(runs.max(1));
        for _ in 0..runs.max(1) {
            start
                .record(&self.stream)
                .map_err(driver("recording an event"))?;
            self.launch_all()?;
            end.record(&self.stream)
                .map_err(driver("recording an event"))?;
            let ms = start
                .elapsed_ms(&end)
                .map_err(driver("reading the time between two events"))?;
            times.push(f64::from(ms));
        }
        times.sort_by(f64::total_cmp);
        Ok(times)
    }

    /// Waits for everything launched so far.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(driver("synchronising"))
    }
}
