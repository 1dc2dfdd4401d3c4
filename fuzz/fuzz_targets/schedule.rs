//! Fuzz target: random knobs of the autotuner's search space applied to a random graph's
//! kernel; verifier, interpreter and native code against the unscheduled kernel; the kernel's
//! GPU schedules (default, a random product tiling) on the interpreter, races checked.
//! A finding panics with the case printed as a ready-to-commit regression file.
#![no_main]

tessera_fuzz::tessera_target!(Schedule);
