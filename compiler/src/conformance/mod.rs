//! The ONNX backend node-test conformance runner.
//!
//! Reads the node suite in the layout of onnx's backend data folders (`<dir>/<test>/model.onnx`,
//! `test_data_set_<k>/input_<i>.pb`, `output_<i>.pb`, plus the `meta.json` our generator writes
//! with the tested operator; see `scripts/gen_node_suite.py`), classifies each test as in or out
//! of scope, runs the in-scope ones on each [`Backend`], and compares with the expected outputs
//! the way onnx's own runner does: same number of outputs, exact dtype and shape, and
//! `|actual − expected| ≤ atol + rtol·|expected|` (NaN matches NaN) with rtol 1e-3 / atol 1e-7
//! unless [`TOLERANCE_OVERRIDES`] names the test and says why. [`report()`] renders the results.
//!
//! Invariant: "unsupported operator" is a failure, never out of scope; out of scope is decided
//! from the model file alone, before anything of ours runs.

pub mod report;

pub use report::report;

use crate::onnx::proto::{ModelProto, TensorProto, type_proto};
use crate::{CompileConfig, Compiler, Target};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tessera_ir::{DType, Tensor};

/// The default tolerances of onnx's backend runner for node tests.
pub const DEFAULT_RTOL: f64 = 1e-3;
pub const DEFAULT_ATOL: f64 = 1e-7;

/// Tests that need a looser tolerance than the default: (test name, rtol, atol, why).
pub const TOLERANCE_OVERRIDES: &[(&str, f64, f64, &str)] = &[
    (
        "test_dft_inverse",
        DEFAULT_RTOL,
        1e-6,
        "the expected output is numpy's float32 FFT, whose round-off (~2e-7) sits where the \
         exact value is 0; tessera sums in f64, so those entries differ by more than atol 1e-7",
    ),
    (
        "test_dft_inverse_opset19",
        DEFAULT_RTOL,
        1e-6,
        "as test_dft_inverse (the same data at opset 19)",
    ),
];

/// Highest default-domain opset in scope (the importer's).
pub const MAX_OPSET: i64 = crate::onnx::MAX_OPSET;

/// Where a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// The graph reference interpreter (`tessera_ir::interp`).
    Interpreter,
    /// The compiled CPU backend (JIT through MLIR and LLVM).
    Cpu,
    /// The GPU backend without a GPU: the GPU-scheduled kernels run on the loop interpreter
    /// (the binding preserves meaning), and their PTX must be accepted by `ptxas` for every
    /// architecture in [`PTX_CHECK_SMS`].
    Ptx,
    /// The GPU backend on a CUDA device (fails with a typed error where there is none).
    Cuda,
}

/// The architectures the `ptx` backend assembles for.
pub const PTX_CHECK_SMS: [u32; 2] = [80, 90];

impl Backend {
    /// The backends `all` means: the ones that run on any machine.
    pub const ALL: [Backend; 3] = [Backend::Cpu, Backend::Interpreter, Backend::Ptx];
    /// Every backend, including the one that needs a GPU.
    pub const EVERY: [Backend; 4] = [
        Backend::Cpu,
        Backend::Interpreter,
        Backend::Ptx,
        Backend::Cuda,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Interpreter => "interpreter",
            Backend::Cpu => "cpu",
            Backend::Ptx => "ptx",
            Backend::Cuda => "cuda",
        }
    }

    pub fn parse(s: &str) -> Option<Backend> {
        Backend::EVERY.into_iter().find(|b| b.name() == s)
    }
}

/// Why a test is out of scope (decided from the model alone).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutOfScope {
    /// The model imports a domain other than the default one (ai.onnx.ml, preview, training).
    Domain(String),
    /// The default-domain opset is newer than [`MAX_OPSET`].
    NewerOpset(i64),
    /// An input or output is a sequence, optional or map.
    NonTensorType(String),
    /// An input or output is a string tensor.
    StringTensor,
    /// An input or output has an element type outside tessera's dtypes (e.g. uint16, float8).
    UnsupportedDtype(String),
    /// The tested operator draws random numbers.
    RandomOp(String),
}

impl OutOfScope {
    /// The category's name in the report.
    pub fn category(&self) -> String {
        match self {
            OutOfScope::Domain(d) => format!("domain `{d}`"),
            OutOfScope::NewerOpset(_) => format!("needs opset > {MAX_OPSET}"),
            OutOfScope::NonTensorType(k) => format!("{k} inputs/outputs"),
            OutOfScope::StringTensor => "string tensors".into(),
            OutOfScope::UnsupportedDtype(d) => format!("element type {d}"),
            OutOfScope::RandomOp(_) => "random-number ops".into(),
        }
    }
}

/// Operators whose outputs are random draws (no expected output to compare with).
const RANDOM_OPS: &[&str] = &[
    "Bernoulli",
    "Multinomial",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
];

/// The result of one test on one backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
}

/// One test of the suite with its results.
#[derive(Clone, Debug)]
pub struct TestResult {
    pub name: String,
    /// The operator under test (for an `_expanded` test: the op whose function body it runs).
    pub op: String,
    pub scope: Result<(), OutOfScope>,
    /// One entry per backend run (empty when out of scope).
    pub outcomes: Vec<(Backend, Outcome)>,
}

/// Options of a conformance run.
#[derive(Clone, Debug)]
pub struct ConformanceConfig {
    pub backends: Vec<Backend>,
    /// Only tests whose name contains this string.
    pub filter: Option<String>,
    /// Worker threads running tests side by side.
    pub jobs: usize,
}

impl Default for ConformanceConfig {
    fn default() -> Self {
        ConformanceConfig {
            backends: Backend::ALL.to_vec(),
            filter: None,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Test folders under `dir`, sorted by name.
pub fn discover(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut tests: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    tests.sort();
    Ok(tests)
}

/// Runs every test under `dir` on the configured backends.
pub fn run_suite(dir: &Path, cfg: &ConformanceConfig) -> std::io::Result<Vec<TestResult>> {
    let tests: Vec<PathBuf> = discover(dir)?
        .into_iter()
        .filter(|p| {
            cfg.filter.as_deref().is_none_or(|f| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(f))
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<TestResult>> = vec![None; tests.len()];
    let slots: Vec<std::sync::Mutex<&mut Option<TestResult>>> =
        results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|s| {
        for _ in 0..cfg.jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = tests.get(i) else { break };
                    let r = run_test(path, &cfg.backends);
                    **slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    drop(slots);
    Ok(results.into_iter().flatten().collect())
}

/// Runs one test folder on `backends`.
pub fn run_test(path: &Path, backends: &[Backend]) -> TestResult {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let meta: serde_json::Value = std::fs::read_to_string(path.join("meta.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let bytes = std::fs::read(path.join("model.onnx")).unwrap_or_default();
    let model = ModelProto::decode(bytes.as_slice()).ok();
    let op = meta["op"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            let g = model.as_ref()?.graph.as_ref()?;
            g.node.first()?.op_type.clone()
        })
        .unwrap_or_default();
    let scope = match &model {
        Some(m) => classify(m, &op),
        None => Ok(()),
    };
    let mut outcomes = Vec::new();
    if scope.is_ok() {
        for &b in backends {
            let outcome = std::panic::catch_unwind(|| run_on(path, &bytes, &name, b))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Outcome::Fail(format!("panic: {msg}"))
                });
            outcomes.push((b, outcome));
        }
    }
    TestResult {
        name,
        op,
        scope,
        outcomes,
    }
}

/// Decides from the model alone whether a test is in scope.
pub fn classify(m: &ModelProto, op: &str) -> Result<(), OutOfScope> {
    let mut opset = 0;
    for o in &m.opset_import {
        let d = o.domain.as_deref().unwrap_or("");
        if d.is_empty() || d == "ai.onnx" {
            opset = o.version.unwrap_or(0);
        } else {
            return Err(OutOfScope::Domain(d.to_string()));
        }
    }
    if opset > MAX_OPSET {
        return Err(OutOfScope::NewerOpset(opset));
    }
    if let Some(g) = &m.graph {
        for vi in g.input.iter().chain(&g.output) {
            match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(type_proto::Value::TensorType(tt)) => {
                    let code = tt.elem_type.unwrap_or(0);
                    if code == 8 {
                        return Err(OutOfScope::StringTensor);
                    }
                    if DType::from_onnx_code(code).is_none() {
                        return Err(OutOfScope::UnsupportedDtype(onnx_type_name(code)));
                    }
                }
                Some(type_proto::Value::SequenceType(_)) => {
                    return Err(OutOfScope::NonTensorType("sequence".into()));
                }
                Some(type_proto::Value::OptionalType(_)) => {
                    return Err(OutOfScope::NonTensorType("optional".into()));
                }
                Some(type_proto::Value::MapType(_)) => {
                    return Err(OutOfScope::NonTensorType("map".into()));
                }
                _ => return Err(OutOfScope::NonTensorType("untyped".into())),
            }
        }
        let random = g
            .node
            .iter()
            .filter_map(|n| n.op_type.as_deref())
            .chain([op])
            .find(|o| RANDOM_OPS.contains(o));
        if let Some(r) = random {
            return Err(OutOfScope::RandomOp(r.to_string()));
        }
    }
    Ok(())
}

/// The ONNX name of an element type code.
fn onnx_type_name(code: i32) -> String {
    const NAMES: &[&str] = &[
        "undefined",
        "float",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "int32",
        "int64",
        "string",
        "bool",
        "float16",
        "double",
        "uint32",
        "uint64",
        "complex64",
        "complex128",
        "bfloat16",
        "float8e4m3fn",
        "float8e4m3fnuz",
        "float8e5m2",
        "float8e5m2fnuz",
        "uint4",
        "int4",
        "float4e2m1",
        "float8e8m0",
        "uint2",
        "int2",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("code {code}"), |s| s.to_string())
}

/// Runs one in-scope test on one backend and compares with the expected outputs.
fn run_on(path: &Path, model: &[u8], name: &str, backend: Backend) -> Outcome {
    let graph = match crate::onnx::import_with_base(model, Some(path.to_path_buf())) {
        Ok(g) => g,
        Err(e) => return Outcome::Fail(format!("import: {e}")),
    };
    let (rtol, atol) = tolerance(name);
    let mut sets: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Fail("the test has no data set".into());
    }
    let target = match backend {
        Backend::Cpu => Some(Target::host()),
        Backend::Ptx | Backend::Cuda => Some(Target::Cuda { sm: 90 }),
        Backend::Interpreter => None,
    };
    let exe = match target {
        Some(target) => {
            let cfg = CompileConfig {
                threads: 1,
                poison: true,
                ..Default::default()
            };
            match Compiler::new(target).with_config(cfg).compile(&graph) {
                Ok(e) => Some(e),
                Err(e) => return Outcome::Fail(format!("compile: {e}")),
            }
        }
        None => None,
    };
    for set in sets {
        let (inputs, expected) = match read_data_set(&set) {
            Ok(x) => x,
            Err(e) => return Outcome::Fail(format!("test data: {e}")),
        };
        let got = match (&exe, backend) {
            (Some(exe), Backend::Ptx) => gpu_offline(exe, &inputs),
            (Some(exe), _) => exe.run(&inputs).map_err(|e| format!("run: {e}")),
            (None, _) => {
                tessera_ir::interp::run_graph(&graph, &inputs).map_err(|e| format!("run: {e}"))
            }
        };
        let got = match got {
            Ok(g) => g,
            Err(e) => return Outcome::Fail(e),
        };
        if let Err(e) = compare_outputs(&got, &expected, rtol, atol) {
            return Outcome::Fail(e);
        }
    }
    Outcome::Pass
}

/// The `ptx` backend's run: the GPU-scheduled kernels for `inputs` on the loop interpreter,
/// after their PTX passed `ptxas` for each of [`PTX_CHECK_SMS`].
fn gpu_offline(exe: &crate::Executable, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let stages = exe
        .stages_for(inputs)
        .map_err(|e| format!("compile: {e}"))?;
    let progs: Vec<_> = stages.kernels.iter().map(|k| &k.program).collect();
    for sm in PTX_CHECK_SMS {
        let module =
            tessera_codegen::ptx::compile_ptx(&progs, sm).map_err(|e| format!("PTX: {e}"))?;
        tessera_codegen::ptx::check_with_ptxas(&module.text, sm).map_err(|e| e.to_string())?;
    }
    crate::pipeline::interpret_kernels(&stages, inputs).map_err(|e| format!("run: {e}"))
}

/// The tolerances of a test: the default, or its entry in [`TOLERANCE_OVERRIDES`].
pub fn tolerance(name: &str) -> (f64, f64) {
    TOLERANCE_OVERRIDES
        .iter()
        .find(|(n, ..)| *n == name)
        .map_or((DEFAULT_RTOL, DEFAULT_ATOL), |&(_, r, a, _)| (r, a))
}

/// Reads `input_<i>.pb` and `output_<i>.pb` of one data set, in index order.
fn read_data_set(dir: &Path) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    let read = |prefix: &str| -> Result<Vec<Tensor>, String> {
        let mut out = Vec::new();
        for i in 0.. {
            let p = dir.join(format!("{prefix}_{i}.pb"));
            if !p.exists() {
                break;
            }
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let t = TensorProto::decode(bytes.as_slice())
                .map_err(|e| format!("{}: {e}", p.display()))?;
            out.push(
                crate::onnx::tensor_from_proto(&t, Some(dir))
                    .map_err(|e| format!("{}: {e}", p.display()))?,
            );
        }
        Ok(out)
    };
    Ok((read("input")?, read("output")?))
}

/// Compares outputs as onnx's backend runner does (see the module doc).
pub fn compare_outputs(
    got: &[Tensor],
    expected: &[Tensor],
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            got.len(),
            expected.len()
        ));
    }
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        if g.dtype() != e.dtype() {
            return Err(format!(
                "output {i}: dtype {}, expected {}",
                g.dtype(),
                e.dtype()
            ));
        }
        if g.shape() != e.shape() {
            return Err(format!(
                "output {i}: shape {:?}, expected {:?}",
                g.shape(),
                e.shape()
            ));
        }
        let exact = !g.dtype().is_float();
        let (gv, ev) = (g.to_f64_vec(), e.to_f64_vec());
        // Integers compare as integers: i64 values past 2^53 are not exact in f64.
        let (gi, ei) = if exact {
            (g.to_i64_vec(), e.to_i64_vec())
        } else {
            (Vec::new(), Vec::new())
        };
        let mut worst: Option<(usize, f64, f64)> = None;
        let mut bad = 0usize;
        for (k, (&a, &b)) in gv.iter().zip(&ev).enumerate() {
            let ok = if exact {
                gi[k] == ei[k]
            } else if a.is_nan() || b.is_nan() {
                a.is_nan() && b.is_nan()
            } else if a.is_infinite() || b.is_infinite() {
                a == b
            } else {
                (a - b).abs() <= atol + rtol * b.abs()
            };
            if !ok {
                bad += 1;
                if worst.is_none() {
                    worst = Some((k, a, b));
                }
            }
        }
        if let Some((k, a, b)) = worst {
            return Err(format!(
                "output {i}: {bad} of {} elements differ; first at flat index {k}: got {a}, expected {b}",
                gv.len()
            ));
        }
    }
    Ok(())
}
