#!/usr/bin/env bash
# Builds every fuzz target (cargo-fuzz, coverage instrumentation, no sanitizer: the code is
# Rust and the oracle runs the loop interpreter, which checks every index, before native code)
# with the planted bugs compiled in but inert (TESSERA_PLANT unset), and prints the folder of
# the binaries. One build serves scripts/fuzz.sh, scripts/planted_bugs.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTC_BOOTSTRAP=1 cargo fuzz build -s none --features planted-bugs >&2
echo "${CARGO_TARGET_DIR:-$(pwd)/target}/$triple/release"
