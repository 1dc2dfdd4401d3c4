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

/// Opens device 0, or says why not (no libcuda, no device, driver error) — never panics.
fn open() -> Result<Arc<CudaContext>, RuntimeError> {
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
    CudaContext::new(0).map_err(|e| RuntimeError::NoCuda(format!("cannot open device 0: {e:?}")))
}

pub fn probe() -> Result<CudaInfo, RuntimeError> {
    let ctx = open()?;
    let n = CudaContext::device_count().map_err(no_cuda)?;
    let name = ctx.name().map_err(no_cuda)?;
    let (major, minor) = ctx.compute_capability().map_err(no_cuda)?;
    Ok(CudaInfo {
        devices: n as usize,
        name,
        sm: (major * 10 + minor) as u32,
    })
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
    kernels: Vec<GpuKernel>,
    plan: ExecPlan,
    cfg: GpuConfig,
    weights: CudaSlice<u8>,
    workspace: CudaSlice<u8>,
    inputs: Vec<CudaSlice<u8>>,
    outputs: Vec<CudaSlice<u8>>,
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
        let ctx = open()?;
        let info = probe()?;
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
            .collect::<Result<_, _>>()?;
        let outputs = plan
            .outputs
            .iter()
            .map(|s| alloc(s.bytes()))
            .collect::<Result<_, _>>()?;
        Ok(GpuExecutable {
            info,
            stream,
            functions,
            kernels: kernels.to_vec(),
            plan,
            cfg,
            weights: dev_weights,
            workspace,
            inputs,
            outputs,
        })
    }

    pub fn device(&self) -> &CudaInfo {
        &self.info
    }

    pub fn plan(&self) -> &ExecPlan {
        &self.plan
    }

    /// Copies `inputs` in, runs every step, copies the outputs back.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.upload(inputs)?;
        if self.cfg.poison {
            for buf in self.outputs.iter_mut().chain([&mut self.workspace]) {
                let poison = vec![0xFFu8; buf.len()];
                self.stream
                    .memcpy_htod(&poison, buf)
                    .map_err(driver("poisoning"))?;
            }
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

    /// Launches every step on the device's stream (asynchronously; see [`Self::synchronize`]).
    pub fn launch_all(&mut self) -> Result<(), RuntimeError> {
        let base = |buf: &CudaSlice<u8>| buf.device_ptr(&self.stream).0;
        let weights = base(&self.weights);
        let workspace = base(&self.workspace);
        let inputs: Vec<u64> = self.inputs.iter().map(base).collect();
        let outputs: Vec<u64> = self.outputs.iter().map(base).collect();
        for ((step, kernel), f) in self
            .plan
            .steps
            .iter()
            .zip(&self.kernels)
            .zip(&self.functions)
        {
            let args: Vec<u64> = step
                .args
                .iter()
                .map(|s| match *s {
                    Slot::Input { index } => inputs[index],
                    Slot::Output { index } => outputs[index],
                    Slot::Weight { offset } => weights + offset as u64,
                    Slot::Workspace { offset } => workspace + offset as u64,
                })
                .collect();
            let mut launch = self.stream.launch_builder(f);
            for a in &args {
                launch.arg(a);
            }
            let cfg = LaunchConfig {
                grid_dim: kernel.launch.grid.into(),
                block_dim: kernel.launch.block.into(),
                shared_mem_bytes: 0,
            };
            // SAFETY: the kernel takes exactly `params` pointers (checked at load against the
            // step's arguments); each points into a live device allocation sized by the plan,
            // and the geometry is the one the compiler derived from the kernel's bound loops.
            unsafe { launch.launch(cfg) }
                .map_err(|e| RuntimeError::Cuda(format!("launching `{}`: {e:?}", step.kernel)))?;
        }
        Ok(())
    }

    /// Waits for everything launched so far.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(driver("synchronising"))
    }
}
