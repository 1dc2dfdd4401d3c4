#!/usr/bin/env bash
# Tuned latency against onnxruntime: tune MODEL for at most BUDGET seconds (a fresh
# database), then time the default schedules, the tuned ones and onnxruntime in the same
# script on the same threads. Prints the tuner's summary (JSON, incl. its own interleaved
# default-vs-tuned median) and one JSON line per peer.
#
#   scripts/bench_tuned.sh MODEL [BUDGET_SECS] [THREADS] [RUNS]    (defaults 600, 2, 30)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$1"
BUDGET="${2:-600}"
THREADS="${3:-2}"
RUNS="${4:-30}"
source scripts/bench_env.sh
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$BIN" tune "$MODEL" --trials 1000000 --budget-secs "$BUDGET" --threads "$THREADS" \
  --db "$DIR/db.jsonl" --curve "${CURVE:-$DIR/curve.png}" --bench-runs "$RUNS" --json
"$BIN" bench "$MODEL" --threads "$THREADS" --runs "$RUNS" --json
"$BIN" bench "$MODEL" --threads "$THREADS" --runs "$RUNS" --json --tuning-db "$DIR/db.jsonl"
"$VENV/bin/python" scripts/bench_ort.py "$MODEL" --threads "$THREADS" --runs "$RUNS"
