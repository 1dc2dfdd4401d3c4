//! Shared glue of the fuzz targets: [`tessera_target!`] expands to a libFuzzer target that
//! hands the bytes to `tessera::fuzzgen::run_target` and panics with the finding (the case
//! printed as a ready-to-commit regression file), plus the process's `main`.
//!
//! Why a `main` of our own: the targets link MLIR statically, and one of its archives
//! (`libMLIRMlirOptMain.a`, mlir-opt's driver) defines `main` too. With `#![no_main]` the
//! linker takes the first archive that defines it — mlir-opt's, which parses the command line
//! as MLIR options and refuses libFuzzer's flags. A `main` in the target's own object always
//! wins, and it simply starts libFuzzer's driver.

pub use libfuzzer_sys;
pub use tessera;

#[macro_export]
macro_rules! tessera_target {
    ($target:ident) => {
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            if let Err(finding) = $crate::tessera::fuzzgen::run_target(
                $crate::tessera::fuzzgen::FuzzTarget::$target,
                data,
            ) {
                panic!("{finding}");
            }
        });

        unsafe extern "C" {
            fn LLVMFuzzerRunDriver(
                argc: *mut std::ffi::c_int,
                argv: *mut *mut *mut std::ffi::c_char,
                callback: unsafe extern "C" fn(*const u8, usize) -> std::ffi::c_int,
            ) -> std::ffi::c_int;
            fn LLVMFuzzerTestOneInput(data: *const u8, size: usize) -> std::ffi::c_int;
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn main(
            mut argc: std::ffi::c_int,
            mut argv: *mut *mut std::ffi::c_char,
        ) -> std::ffi::c_int {
            // SAFETY: argc/argv come from the C runtime unchanged; the callback is the entry
            // point `fuzz_target!` defines above, with libFuzzer's signature.
            unsafe { LLVMFuzzerRunDriver(&mut argc, &mut argv, LLVMFuzzerTestOneInput) }
        }
    };
}
