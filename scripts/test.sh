#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, generate test data (reference outputs from
# onnxruntime), check formatting and lints, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
VENV="${TESSERA_VENV:-$(pwd)/.venv}"
echo "== generating test data"
"$VENV/bin/python" scripts/gen_test_data.py tests/data/generated
"$VENV/bin/python" scripts/gen_node_suite.py tests/data/generated/node
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy -q --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace 2>&1 | tee /tmp/tessera-test.log
echo "== done in $(( $(date +%s) - start )) s"
