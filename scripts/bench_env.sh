# Sourced by the bench scripts from the repository root: the Python environment (set up by
# scripts/setup.sh) and a release build of the CLI.
VENV="${TESSERA_VENV:-$(pwd)/.venv}"
PY="$VENV/bin/python"
cargo build -q --release -p tessera
BIN="${CARGO_TARGET_DIR:-target}/release/tessera"
