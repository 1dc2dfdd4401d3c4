//! Compiles the vendored `onnx.proto` into Rust types with prost, using protox (pure Rust, no `protoc`).
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("onnx.proto must compile");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost code generation for onnx.proto");
}
