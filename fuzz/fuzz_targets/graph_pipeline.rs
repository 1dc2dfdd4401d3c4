//! Fuzz target: a random valid graph through the whole pipeline (e-graph optimizer,
//! lowering, scheduling, code generation, executor) against the graph interpreter.
//! A finding panics with the case printed as a ready-to-commit regression file.
#![no_main]

tessera_fuzz::tessera_target!(GraphPipeline);
