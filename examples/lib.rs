//! Example host programs for tessera: `jit.rs` (JIT in a Rust host) and `aot_c/` (a C host
//! for an ahead-of-time compiled shared library). Built and run by the test suite.
