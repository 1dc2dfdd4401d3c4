//! Shared helpers of the integration tests: named tolerances, comparisons, graph builders,
//! and the paths of generated test data.

use std::path::PathBuf;
use tessera_ir::{Attrs, DType, Graph, OpKind, Tensor, ValueType};

pub use tessera_ir::compare::{Tolerance, compare};

/// Float ops that round the same way as the interpreter (which rounds each op to f32).
pub const ARITH: Tolerance = Tolerance::Close {
    rtol: 1e-6,
    atol: 1e-6,
};
/// Ops whose compiled version reassociates sums or uses libm transcendental functions.
pub const REDUCTION: Tolerance = Tolerance::Close {
    rtol: 1e-4,
    atol: 1e-5,
};
/// Half-precision graphs: every operation's result is rounded to f16 (bf16), so compiled
/// code and the interpreter may differ by a few of its units (2^-10 relative).
pub const HALF: Tolerance = Tolerance::Close {
    rtol: 1e-2,
    atol: 1e-3,
};
/// Whole models against onnxruntime (the spine issue's 1e-4 relative).
pub const MODEL: Tolerance = Tolerance::Close {
    rtol: 1e-4,
    atol: 1e-5,
};

/// Builds a one-node graph `op(inputs) -> y` with runtime and constant inputs.
pub struct OneOp {
    g: Graph,
    op: OpKind,
    attrs: Attrs,
    inputs: Vec<Option<tessera_ir::ValueId>>,
}

impl OneOp {
    pub fn new(op: OpKind, attrs: Attrs) -> OneOp {
        OneOp {
            g: Graph::new(format!("{}_test", op.name().to_lowercase())),
            op,
            attrs,
            inputs: vec![],
        }
    }
    /// A runtime input.
    pub fn input(mut self, dtype: DType, shape: &[usize]) -> Self {
        let name = format!("in{}", self.inputs.len());
        let v = self.g.add_input(&name, ValueType::new(dtype, shape));
        self.inputs.push(Some(v));
        self
    }
    /// A constant input (an initializer).
    pub fn constant(mut self, t: Tensor) -> Self {
        let name = format!("c{}", self.inputs.len());
        let v = self.g.add_initializer(&name, t);
        self.inputs.push(Some(v));
        self
    }
    pub fn ints(self, v: &[i64]) -> Self {
        self.constant(Tensor::from_i64(DType::I64, vec![v.len()], v))
    }
    /// An omitted optional input.
    pub fn none(mut self) -> Self {
        self.inputs.push(None);
        self
    }
    pub fn build(mut self) -> Graph {
        let y = self.g.value("y");
        self.g.add_node(tessera_ir::Node {
            name: "n0".into(),
            op: self.op,
            attrs: self.attrs,
            inputs: self.inputs,
            outputs: vec![y],
        });
        self.g.outputs.push(y);
        self.g
    }
}

/// A tensor of `shape` with values spread over [-1, 1] (no two neighbours alike), starting
/// `salt` steps into the sequence (so that two constants of one graph differ).
pub fn spread_values(shape: &[usize], salt: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| (((i + salt) * 37 % 101) as f64) / 50.0 - 1.0)
        .collect();
    Tensor::from_f64(DType::F32, shape.to_vec(), &v)
}

/// Attributes from `(name, value)` pairs.
pub fn attrs(pairs: &[(&str, tessera_ir::Attr)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the set-up script writes generated test data (reference outputs, models).
pub fn generated_dir() -> PathBuf {
    repo_root().join("tests/data/generated")
}

/// Reads a `.npy` file.
pub fn read_npy(path: &std::path::Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tessera::npy::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs prepared, lowered kernels on the loop-IR interpreter, value by value — the reference
/// for "lowering and scheduling preserve meaning". Outputs are poisoned before each kernel.
pub fn run_loops(stages: &tessera::Stages, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    tessera::pipeline::interpret_kernels(stages, inputs)
}

/// Checks one graph on one set of inputs: the graph interpreter is the reference; the loop
/// interpreter (lowered, and lowered + scheduled) and the JIT-compiled code (with poisoned
/// outputs) must match it within `tol`.
pub fn check_graph(name: &str, g: &Graph, inputs: &[Tensor], tol: Tolerance) {
    let want = tessera_ir::interp::run_graph(g, inputs)
        .unwrap_or_else(|e| panic!("{name}: interpreter: {e}"));
    let target = tessera::Target::host();
    for schedule in [false, true] {
        let cfg = tessera::CompileConfig {
            schedule,
            poison: true,
            threads: 2,
            ..Default::default()
        };
        let compiler = tessera::Compiler::new(target.clone()).with_config(cfg);
        let bindings = std::collections::BTreeMap::new();
        let stages = compiler
            .stages(g, &bindings)
            .unwrap_or_else(|e| panic!("{name}: pipeline: {e}"));
        let got = run_loops(&stages, inputs)
            .unwrap_or_else(|e| panic!("{name}: loop interpreter (schedule={schedule}): {e}"));
        for (i, (a, w)) in got.iter().zip(&want).enumerate() {
            compare(a, w, tol).unwrap_or_else(|e| {
                panic!("{name}: loop interpreter (schedule={schedule}) output {i}: {e}")
            });
        }
        let exe = compiler
            .compile(g)
            .unwrap_or_else(|e| panic!("{name}: compile (schedule={schedule}): {e}"));
        let got = exe
            .run(inputs)
            .unwrap_or_else(|e| panic!("{name}: run: {e}"));
        for (i, (a, w)) in got.iter().zip(&want).enumerate() {
            compare(a, w, tol).unwrap_or_else(|e| {
                panic!("{name}: compiled (schedule={schedule}) output {i}: {e}")
            });
        }
    }
}

/// [`check_graph`] on random inputs (seed 7).
pub fn check_random(name: &str, g: Graph, tol: Tolerance) {
    let inputs = random_inputs(&g, 7);
    check_graph(name, &g, &inputs, tol);
}

/// Random inputs for a graph's inputs (from their static types; the same values as the
/// fuzzers' oracle draws for that seed).
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    for &v in &g.inputs {
        let ty = g.ty(v).expect("typed input");
        ty.static_shape().expect("static input");
    }
    tessera::fuzzgen::graph_inputs(g, seed)
}

/// `ptxas`, or `None` with a loud skip (a failure under CI, where set-up installs it).
pub fn ptxas_or_skip(test: &str) -> Option<PathBuf> {
    match tessera_codegen::ptx::find_ptxas() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: ptxas not found under CI (scripts/setup.sh installs it)")
        }
        None => {
            eprintln!("SKIPPED {test}: ptxas not found (install nvidia-cuda-nvcc-cu12)");
            None
        }
    }
}
