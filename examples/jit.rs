//! JIT inside a host program: import an ONNX model, compile it for this CPU, run it.
//!
//!     cargo run -p tessera-examples --example jit [model.onnx]

use tessera::{Compiler, Target, Tensor};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/models/mlp.onnx").to_string());
    let graph = tessera::onnx::import_file(std::path::Path::new(&path))?;
    let exe = Compiler::new(Target::host()).compile(&graph)?;

    // A batch of 4 rows of 64 features; the model's batch dimension is symbolic.
    let x = Tensor::from_f64(
        tessera::DType::F32,
        vec![4, 64],
        &(0..256).map(|i| (i as f64 * 0.1).sin()).collect::<Vec<_>>(),
    );
    let y = exe.run(&[x])?;
    println!(
        "{}: output {:?} = {:?}",
        path,
        y[0].shape(),
        &y[0].to_f64_vec()[..10]
    );
    Ok(())
}
