//! The pipeline driver: Graph → prepared Graph → kernels (loop programs) → scheduled kernels
//! → machine code + execution plan → [`Executable`]. Each stage is a value the CLI can print.

use crate::error::CompileError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tessera_codegen::Target;
use tessera_codegen::jit::JitModule;
use tessera_ir::plan::{ExecPlan, Slot, Step, TensorSig, align_up};
use tessera_ir::{DType, Graph, Tensor, ValueId};
use tessera_passes::lower::Kernel;
use tessera_passes::schedule::{self, CpuScheduleConfig};
use tessera_passes::views::ViewKind;
use tessera_runtime::executor::Weights;
use tessera_runtime::memory::{AlignedBuf, BufferReq, plan_memory};
use tessera_runtime::{ExecConfig, Executor};

/// Options of a compilation.
#[derive(Clone, Debug)]
pub struct CompileConfig {
    /// Threads the executor uses for parallel loops.
    pub threads: usize,
    /// Apply the default CPU schedule (parallel + vectorize); off gives plain serial loops.
    pub schedule: bool,
    /// Poison outputs and workspace before each run (tests).
    pub poison: bool,
    /// Sizes for symbolic dimensions used when compiling ahead of time.
    pub bindings: BTreeMap<String, usize>,
    /// Run the e-graph optimizer (algebraic rewrites and fusion) before lowering.
    pub optimize: bool,
    /// Schedule large matrix products and convolutions as packed, register-tiled kernels.
    pub tile_products: bool,
    /// Tuned schedules by workload key (e.g. the best ones of a tuning database), used
    /// instead of the default schedule for the kernels they cover.
    pub tuned: Option<Arc<schedule::TunedSchedules>>,
    /// Copies replaced by views (`tessera_passes::views`): a concatenation's producers write
    /// straight into its output, a reshape reads its input's buffer; no copy kernels.
    pub views: tessera_passes::views::ViewConfig,
    /// Legalise for another target's products than this compiler's (None: its own). The
    /// fuzzers lower one graph for the CPU and for a GPU with the CPU's weight layouts, so
    /// that both kernels take the same buffers.
    pub legalize: Option<tessera_passes::legalize::LegalizeConfig>,
    /// Which 3×3 convolutions become Winograd convolutions after the optimizer (None: the
    /// target's default — on for CPUs, off for GPUs).
    pub winograd: Option<tessera_passes::winograd::WinogradConfig>,
    /// The GPU schedules' defaults (None: the target's,
    /// [`GpuScheduleConfig::for_sm`](tessera_passes::gpu_schedule::GpuScheduleConfig::for_sm)).
    pub gpu_schedule: Option<tessera_passes::gpu_schedule::GpuScheduleConfig>,
}

impl Default for CompileConfig {
    fn default() -> Self {
        CompileConfig {
            threads: tessera_runtime::pool::ThreadPool::default_threads(),
            schedule: true,
            poison: false,
            bindings: BTreeMap::new(),
            optimize: true,
            tile_products: true,
            tuned: None,
            views: Default::default(),
            legalize: None,
            winograd: None,
            gpu_schedule: None,
        }
    }
}

/// Compiles graphs for one target.
#[derive(Clone, Debug)]
pub struct Compiler {
    pub target: Target,
    pub config: CompileConfig,
}

/// Everything the pipeline produced up to code generation (inspectable by `--emit`).
pub struct Stages {
    /// Specialised, type-inferred, constant-folded graph (before the optimizer).
    pub prepared: Graph,
    /// The graph that is lowered: `prepared` after the e-graph optimizer (or `prepared`
    /// itself with the optimizer off) and the Winograd rewrite of its 3×3 convolutions.
    pub optimized: Graph,
    /// What the optimizer did (None when it is off).
    pub report: Option<tessera_passes::egraph::OptimizeReport>,
    /// One scheduled loop program per node, in execution order.
    pub kernels: Vec<Kernel>,
    /// How many kernels got a tuned schedule (the rest: the default one).
    pub tuned_kernels: usize,
    /// Values that live inside another value's buffer (a concatenation's pieces, a
    /// reshape's output), whose copy kernels were removed.
    pub views: tessera_passes::views::Views,
}

impl Compiler {
    pub fn new(target: Target) -> Compiler {
        Compiler {
            target,
            config: CompileConfig::default(),
        }
    }

    pub fn with_config(mut self, config: CompileConfig) -> Compiler {
        self.config = config;
        self
    }

    /// Front half of the pipeline: prepare, lower, schedule.
    pub fn stages(
        &self,
        graph: &Graph,
        bindings: &BTreeMap<String, usize>,
    ) -> Result<Stages, CompileError> {
        let legalize_cfg = match (self.config.legalize, self.target.is_gpu()) {
            (Some(cfg), _) => cfg,
            (None, true) => tessera_passes::legalize::LegalizeConfig::gpu(),
            (None, false) => tessera_passes::legalize::LegalizeConfig::cpu(),
        };
        let prepared = tessera_passes::fold::prepare_for(graph, bindings, &legalize_cfg)?;
        let (mut optimized, report) = if self.config.optimize {
            let (mut g, report) = tessera_passes::egraph::optimize(
                &prepared,
                &tessera_passes::egraph::OptimizeConfig::default(),
            )?;
            tessera_passes::fold::materialize_outputs(&mut g);
            g.infer_types()?;
            g.verify()?;
            (g, Some(report))
        } else {
            (prepared.clone(), None)
        };
        let winograd = match (self.config.winograd, self.target.is_gpu()) {
            (Some(cfg), _) => cfg,
            (None, true) => tessera_passes::winograd::WinogradConfig::off(),
            (None, false) => tessera_passes::winograd::WinogradConfig::cpu(),
        };
        if tessera_passes::winograd::winograd_convs(&mut optimized, &winograd)? > 0 {
            // The replaced weights: not kept in the executable beside their transforms.
            optimized.eliminate_dead_code();
            optimized.infer_types()?;
            optimized.verify()?;
        }
        let lower_cfg = match self.target.is_gpu() {
            true => tessera_passes::lower::LowerConfig::gpu(),
            false => tessera_passes::lower::LowerConfig {
                vector_lanes: Some((self.target.vector_bytes() / 4).max(1) as i64),
                ..tessera_passes::lower::LowerConfig::cpu()
            },
        };
        let mut kernels = tessera_passes::lower::lower_graph_with(&mut optimized, &lower_cfg)?;
        let mut tuned_kernels = 0;
        if self.config.schedule && self.target.is_gpu() {
            let cfg = match (&self.config.gpu_schedule, &self.target) {
                (Some(cfg), _) => cfg.clone(),
                (None, Target::Cuda { sm }) => {
                    tessera_passes::gpu_schedule::GpuScheduleConfig::for_sm(*sm)
                }
                _ => tessera_passes::gpu_schedule::GpuScheduleConfig::default(),
            };
            for k in &mut kernels {
                let source = tessera_passes::gpu_schedule::schedule_gpu_kernel(
                    k,
                    &cfg,
                    self.config.tuned.as_deref(),
                )?;
                if source == schedule::ScheduleSource::Tuned {
                    tuned_kernels += 1;
                }
            }
        } else if self.config.schedule {
            let cfg = self.schedule_config();
            for k in &mut kernels {
                if schedule::schedule_kernel(k, &cfg)? == schedule::ScheduleSource::Tuned {
                    tuned_kernels += 1;
                }
            }
        }
        let views =
            tessera_passes::views::elide_copies(&optimized, &mut kernels, &self.config.views);
        Ok(Stages {
            prepared,
            optimized,
            report,
            kernels,
            tuned_kernels,
            views,
        })
    }

    /// The CPU schedule configuration this compiler uses for its target.
    pub fn schedule_config(&self) -> CpuScheduleConfig {
        CpuScheduleConfig {
            vector_bytes: self.target.vector_bytes(),
            tile_products: self.config.tile_products,
            tuned: self.config.tuned.clone(),
            threads: self.config.threads,
            ..Default::default()
        }
    }

    /// Compiles `graph`. Symbolic dimensions are bound from the inputs at run time; each new
    /// binding is compiled once and cached.
    pub fn compile(&self, graph: &Graph) -> Result<Executable, CompileError> {
        let mut g = graph.clone();
        g.verify()?;
        tessera_passes::fold::infer_and_fold(&mut g, tessera_passes::fold::Inference::Lenient)?;
        let value_inputs = g
            .value_dependent_inputs()
            .iter()
            .filter_map(|v| g.inputs.iter().position(|i| i == v))
            .collect::<Vec<_>>();
        let exe = Executable {
            graph: g,
            compiler: self.clone(),
            value_inputs,
            cache: Mutex::new(HashMap::new()),
        };
        // A GPU target compiles when asked to (`Executable::gpu_program`): the JIT is CPU-only.
        if exe.value_inputs.is_empty()
            && !self.target.is_gpu()
            && exe
                .graph
                .symbols()
                .iter()
                .all(|s| self.config.bindings.contains_key(s))
        {
            exe.compiled_for(&self.config.bindings)?;
        }
        Ok(exe)
    }
}

/// A model compiled for the CPU, ready to run.
pub struct Executable {
    graph: Graph,
    compiler: Compiler,
    /// Positions (in the graph's inputs) of the inputs whose values code generation needs.
    value_inputs: Vec<usize>,
    cache: Mutex<HashMap<SpecKey, Arc<Executor>>>,
}

/// What one compiled specialisation is for: sizes of symbolic dimensions, and the values of
/// the value-dependent inputs (position, dtype, shape, bytes).
type SpecKey = (
    BTreeMap<String, usize>,
    Vec<(usize, DType, Vec<usize>, Vec<u8>)>,
);

impl Executable {
    /// Runs the model; `inputs` follow the graph's input order.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, CompileError> {
        if let Target::Cuda { sm } = self.compiler.target {
            // Compiled for these inputs, loaded, run once (see `crate::gpu` to keep a loaded
            // model around).
            let program = crate::gpu::gpu_program(&self.stages_for(inputs)?, sm)?;
            let cfg = tessera_runtime::cuda::GpuConfig {
                poison: self.compiler.config.poison,
            };
            return Ok(program.load(cfg)?.run(inputs)?);
        }
        let bindings = self.bind(inputs)?;
        self.compiled_for_values(&bindings, &self.values_of(inputs))?
            .run(inputs)
            .map_err(Into::into)
    }

    /// The stages of the specialisation for `inputs` (symbol sizes and the values of
    /// value-dependent inputs taken from them).
    pub fn stages_for(&self, inputs: &[Tensor]) -> Result<Stages, CompileError> {
        self.specialised_stages(&self.bind(inputs)?, &self.values_of(inputs))
    }

    /// The value-dependent inputs among `inputs`: (position, tensor).
    fn values_of(&self, inputs: &[Tensor]) -> Vec<(usize, Tensor)> {
        self.value_inputs
            .iter()
            .map(|&i| (i, inputs[i].clone()))
            .collect()
    }

    /// The stages of the graph with `values` bound and the symbol sizes `bindings`.
    fn specialised_stages(
        &self,
        bindings: &BTreeMap<String, usize>,
        values: &[(usize, Tensor)],
    ) -> Result<Stages, CompileError> {
        let mut graph = self.graph.clone();
        for (i, t) in values {
            graph.bind_value(graph.inputs[*i], t.clone());
        }
        self.compiler.stages(&graph, bindings)
    }

    /// Whether some inputs' values (not only their shapes) decide the compiled code, so that
    /// each new value compiles a new specialisation (e.g. a runtime `axes` or `pads` input).
    pub fn value_dependent(&self) -> bool {
        !self.value_inputs.is_empty()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The sizes of symbolic dimensions implied by `inputs`.
    pub fn bind(&self, inputs: &[Tensor]) -> Result<BTreeMap<String, usize>, CompileError> {
        let mut b = self.compiler.config.bindings.clone();
        if inputs.len() != self.graph.inputs.len() {
            return Err(CompileError::Usage(format!(
                "the model takes {} inputs, got {}",
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        for (&v, t) in self.graph.inputs.iter().zip(inputs) {
            let ty = self.graph.ty_of(v)?;
            tessera_ir::interp::check_input(self.graph.name_of(v), ty, t)?;
            for (d, &n) in ty.shape.iter().zip(t.shape()) {
                if let tessera_ir::Dim::Sym(s) = d
                    && b.insert(s.clone(), n).is_some_and(|old| {
                        old != n && !self.compiler.config.bindings.contains_key(s)
                    })
                {
                    return Err(CompileError::Usage(format!(
                        "symbol `{s}` is bound to two sizes by the inputs"
                    )));
                }
            }
        }
        Ok(b)
    }

    /// The executor for one binding of the symbolic dimensions, compiling it on first use.
    pub fn compiled_for(
        &self,
        bindings: &BTreeMap<String, usize>,
    ) -> Result<Arc<Executor>, CompileError> {
        if let Some(&i) = self.value_inputs.first() {
            return Err(CompileError::Usage(format!(
                "input `{}` decides shapes or indices: the model compiles once its value is known",
                self.graph.name_of(self.graph.inputs[i])
            )));
        }
        self.compiled_for_values(bindings, &[])
    }

    /// The executor for one binding of the symbolic dimensions and one set of values of the
    /// value-dependent inputs (position in the inputs, tensor), compiling it on first use.
    pub fn compiled_for_values(
        &self,
        bindings: &BTreeMap<String, usize>,
        values: &[(usize, Tensor)],
    ) -> Result<Arc<Executor>, CompileError> {
        let key: SpecKey = (
            bindings.clone(),
            values
                .iter()
                .map(|(i, t)| (*i, t.dtype(), t.shape().to_vec(), t.bytes().to_vec()))
                .collect(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = cache.get(&key) {
            return Ok(e.clone());
        }
        let stages = self.specialised_stages(bindings, values)?;
        let (plan, weights) = build_plan(&stages)?;
        let progs: Vec<&tessera_ir::loops::LoopProgram> =
            stages.kernels.iter().map(|k| &k.program).collect();
        let jit = JitModule::compile(&progs, &self.compiler.target)?;
        let kernels = plan
            .steps
            .iter()
            .map(|s| {
                jit.function(&s.kernel)
                    .ok_or_else(|| CompileError::Usage(format!("kernel `{}` missing", s.kernel)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = ExecConfig {
            threads: self.compiler.config.threads,
            poison: self.compiler.config.poison,
        };
        let exe = Arc::new(Executor::new(
            plan,
            kernels,
            Weights::Owned(AlignedBuf::from_bytes(&weights)),
            Arc::new(jit),
            &cfg,
        ));
        cache.insert(key, exe.clone());
        Ok(exe)
    }
}

/// `given` sizes of symbolic dimensions, completed with 1 for every other symbol of `g` (for
/// compiling ahead of time, displaying, tuning).
pub fn bind_symbols(g: &Graph, given: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    let mut b = given.clone();
    for s in g.symbols() {
        b.entry(s).or_insert(1);
    }
    b
}

/// Builds the execution plan of scheduled kernels: weight blob layout, input/output slots,
/// and workspace offsets for intermediates (reused by liveness).
pub fn build_plan(st: &Stages) -> Result<(ExecPlan, Vec<u8>), CompileError> {
    let g = &st.optimized;
    let sig = |v: ValueId| -> Result<TensorSig, CompileError> {
        let ty = g.ty_of(v)?;
        Ok(TensorSig {
            name: g.name_of(v).to_string(),
            dtype: ty.dtype,
            shape: ty.static_shape().unwrap_or_default(),
        })
    };
    let inputs = g
        .inputs
        .iter()
        .map(|&v| sig(v))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = g
        .outputs
        .iter()
        .map(|&v| sig(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut slots: HashMap<ValueId, Slot> = HashMap::new();
    for (i, &v) in g.inputs.iter().enumerate() {
        slots.insert(v, Slot::Input { index: i });
    }
    for (i, &v) in g.outputs.iter().enumerate() {
        slots.insert(v, Slot::Output { index: i });
    }
    let mut weights: Vec<u8> = Vec::new();
    for k in &st.kernels {
        for v in &k.args {
            if let (Some(t), false) = (g.initializers.get(v), slots.contains_key(v)) {
                let off = weights.len();
                weights.extend_from_slice(t.bytes());
                weights.resize(align_up(weights.len().max(off + 1)), 0);
                slots.insert(*v, Slot::Weight { offset: off });
            }
        }
    }
    // Run-once steps (a step reading only weights and values of earlier run-once steps) keep
    // their values in the constant region at the start of the workspace, bump-allocated.
    let once = run_once_steps(st, &slots);
    let mut constant_bytes = 0;
    for (k, _) in st.kernels.iter().zip(&once).filter(|(_, o)| **o) {
        for (b, v) in k.program.params().zip(&k.args) {
            if b.role == tessera_ir::loops::BufRole::Output && !slots.contains_key(v) {
                slots.insert(
                    *v,
                    Slot::Workspace {
                        offset: constant_bytes,
                    },
                );
                let bytes = b.len * g.ty_of(*v)?.dtype.size();
                constant_bytes += align_up(bytes.max(1));
            }
        }
    }
    // Intermediates: live from the producing step to the last consuming step. A view (a
    // piece of a concatenation's output) has no buffer of its own: it keeps the buffer that
    // holds it alive, from the first piece's producer to the last reader of any piece.
    let mut live: Vec<(ValueId, BufferReq)> = Vec::new();
    for (si, k) in st.kernels.iter().enumerate() {
        for v in &k.args {
            if slots.contains_key(v) {
                continue;
            }
            let (root, _) = st.views.root(*v);
            match live.iter_mut().find(|(x, _)| *x == root) {
                Some((_, r)) => r.last = si,
                None => {
                    let bytes = match root == *v {
                        true => {
                            let pos = k.args.iter().position(|a| a == v).unwrap();
                            k.program.params().nth(pos).map_or(0, |b| b.len)
                                * g.ty_of(*v)?.dtype.size()
                        }
                        false => {
                            let ty = g.ty_of(root)?;
                            let shape = ty.static_shape().unwrap_or_default();
                            shape.iter().product::<usize>() * ty.dtype.size()
                        }
                    };
                    live.push((
                        root,
                        BufferReq {
                            bytes,
                            first: si,
                            last: si,
                        },
                    ));
                }
            }
        }
    }
    let reqs: Vec<BufferReq> = live.iter().map(|(_, r)| *r).collect();
    let (offsets, per_run_bytes) = plan_memory(&reqs);
    let root_offset: HashMap<ValueId, usize> = live.iter().map(|(v, _)| *v).zip(offsets).collect();
    for k in &st.kernels {
        for v in &k.args {
            let (root, within) = st.views.root(*v);
            if let (false, Some(off)) = (slots.contains_key(v), root_offset.get(&root)) {
                slots.insert(
                    *v,
                    Slot::Workspace {
                        offset: constant_bytes + off + within,
                    },
                );
            }
        }
    }
    let steps = st
        .kernels
        .iter()
        .zip(once)
        .map(|(k, once)| Step {
            kernel: k.program.name.clone(),
            node: k.node.clone(),
            args: k.args.iter().map(|v| slots[v]).collect(),
            parallel_extent: k.program.parallel_extent(),
            work: k.program.work(),
            once,
            product_flops: k.product.as_ref().map_or(0, |p| {
                [p.batch, p.m, p.n, p.k]
                    .iter()
                    .fold(2u64, |f, &d| f.saturating_mul(d.max(0) as u64))
            }),
        })
        .collect();
    Ok((
        ExecPlan {
            inputs,
            outputs,
            weight_bytes: weights.len(),
            workspace_bytes: constant_bytes + per_run_bytes,
            constant_bytes,
            steps,
        },
        weights,
    ))
}

/// Which kernels are run-once steps: every input a weight or a value of an earlier run-once
/// step, and no output a model output (`slots` holds the inputs, outputs and weights).
fn run_once_steps(st: &Stages, slots: &HashMap<ValueId, Slot>) -> Vec<bool> {
    let mut constant: HashSet<ValueId> = HashSet::new();
    st.kernels
        .iter()
        .map(|k| {
            let is_const = |v: &ValueId| {
                matches!(slots.get(v), Some(Slot::Weight { .. })) || constant.contains(v)
            };
            let once = k.program.params().zip(&k.args).all(|(b, v)| match b.role {
                tessera_ir::loops::BufRole::Output => !slots.contains_key(v),
                _ => is_const(v),
            });
            if once {
                constant.extend(k.args.iter().copied());
            }
            once
        })
        .collect()
}

/// A value whose copy kernel was removed ([`Stages::views`]), from the values computed so
/// far: a concatenation from its pieces laid side by side, a view (`up`) from its range of
/// the value that holds it. Pieces are looked up without going up again, so a cycle cannot
/// form. None if something it needs is missing.
fn materialize(
    stages: &Stages,
    env: &HashMap<ValueId, Tensor>,
    v: ValueId,
    up: bool,
) -> Option<Tensor> {
    if let Some(t) = env.get(&v) {
        return Some(t.clone());
    }
    let g = &stages.optimized;
    let ty = g.ty_of(v).ok()?;
    let shape = ty.static_shape()?;
    let len = shape.iter().product::<usize>() * ty.dtype.size();
    let views = &stages.views.views;
    let mut pieces: Vec<_> = views
        .iter()
        .filter(|(_, w)| w.within == v && w.kind == ViewKind::Piece)
        .collect();
    pieces.sort_by_key(|(_, w)| w.offset);
    let bytes = if !pieces.is_empty() {
        let mut bytes = vec![0u8; len];
        for (piece, w) in pieces {
            let src = materialize(stages, env, *piece, false)?;
            let src = src.bytes();
            bytes
                .get_mut(w.offset..w.offset + src.len())?
                .copy_from_slice(src);
        }
        bytes
    } else {
        let w = views.get(&v).filter(|_| up)?;
        let holder = materialize(stages, env, w.within, true)?;
        holder.bytes().get(w.offset..w.offset + len)?.to_vec()
    };
    Tensor::from_bytes(ty.dtype, shape, bytes).ok()
}

/// Runs prepared, lowered kernels on the loop-IR interpreter, value by value — the reference
/// for "lowering and scheduling preserve meaning". Outputs are poisoned before each kernel.
pub fn interpret_kernels(stages: &Stages, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let g = &stages.optimized;
    let mut env: HashMap<ValueId, Tensor> = g
        .initializers
        .iter()
        .map(|(v, t)| (*v, t.clone()))
        .collect();
    for (v, t) in g.inputs.iter().zip(inputs) {
        env.insert(*v, t.clone());
    }
    for k in &stages.kernels {
        let mut bufs = Vec::new();
        for (b, v) in k.program.params().zip(&k.args) {
            let t = match b.role {
                tessera_ir::loops::BufRole::Input => env
                    .get(v)
                    .cloned()
                    .or_else(|| materialize(stages, &env, *v, true))
                    .ok_or_else(|| format!("kernel {}: value not computed", k.program.name))?,
                _ => Tensor::poisoned(b.dtype, vec![b.len]),
            };
            // Buffers hold at least one element; an empty tensor gets a poisoned one.
            let flat = if t.is_empty() {
                Tensor::poisoned(b.dtype, vec![b.len])
            } else {
                t.clone().reshaped(vec![b.len]).map_err(|e| e.to_string())?
            };
            bufs.push(flat);
        }
        tessera_ir::loops::interp::run(&k.program, &mut bufs).map_err(|e| e.to_string())?;
        let out_v = *k.args.last().unwrap();
        let shape = g
            .ty_of(out_v)
            .map_err(|e| e.to_string())?
            .static_shape()
            .unwrap_or_default();
        let out = bufs.pop().unwrap();
        let out = if shape.contains(&0) {
            Tensor::zeros(out.dtype(), shape)
        } else {
            out.reshaped(shape).map_err(|e| e.to_string())?
        };
        env.insert(out_v, out);
    }
    g.outputs
        .iter()
        .map(|v| {
            env.get(v)
                .cloned()
                .ok_or_else(|| "output not computed".to_string())
        })
        .collect()
}
