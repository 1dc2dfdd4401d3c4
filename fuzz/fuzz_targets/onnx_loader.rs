//! Fuzz target: arbitrary bytes into the ONNX importer: a typed error or a graph that
//! passes the verifier — never a panic, hang or exhausted memory.
//! A finding panics with the case printed as a ready-to-commit regression file.
#![no_main]

tessera_fuzz::tessera_target!(OnnxLoader);
