//! Fuzz target: arbitrary bytes into the ONNX importer. The importer must return a typed
//! error or a graph that passes the verifier — never panic, hang or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = tessera::onnx::import(data) {
        g.verify().expect("an imported graph passes the verifier");
    }
});
