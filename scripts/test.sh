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
echo "== fuzzing: every target for ${TESSERA_CI_FUZZ_SECS:-30} s from the checked-in corpus"
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz check -s none --features planted-bugs)
corpus_root=$(mktemp -d)
for t in onnx_loader graph_pipeline loop_passes schedule; do
  cp -r "fuzz/corpus/$t" "$corpus_root/$t" 2>/dev/null || mkdir -p "$corpus_root/$t"
  TESSERA_FUZZ_CORPUS="$corpus_root/$t" bash scripts/fuzz.sh "$t" "${TESSERA_CI_FUZZ_SECS:-30}"
done
rm -rf "$corpus_root"
echo "== done in $(( $(date +%s) - start )) s"
