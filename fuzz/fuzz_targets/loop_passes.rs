//! Fuzz target: a random loop program and a random sequence of loop passes; the verifier
//! after each pass, the interpreter before vs after each pass, native code vs the interpreter.
//! A finding panics with the case printed as a ready-to-commit regression file.
#![no_main]

tessera_fuzz::tessera_target!(LoopPasses);
