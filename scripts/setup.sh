#!/usr/bin/env bash
# Installs everything tessera needs on a fresh Debian 12 machine, idempotently:
# the Debian packages (LLVM/MLIR 22 and friends), a Python venv with onnx/onnxruntime/numpy
# (reference outputs and test-model generation), ptxas (nvidia-cuda-nvcc-cu12) for PTX validation,
# and cargo-fuzz (the fuzz targets in fuzz/).
# Safe to run again: each step checks whether it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${TESSERA_VENV:-$ROOT/.venv}"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES="llvm-22-dev libmlir-22-dev mlir-22-tools clang-22 zlib1g-dev libzstd-dev libxml2-dev \
libpolly-22-dev libz3-dev libffi-dev libncurses-dev build-essential cmake libclang1-14 libclang-common-14-dev python3-venv"

missing=""
for p in $APT_PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -n "$missing" ]; then
  echo "[setup] installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
else
  echo "[setup] Debian packages present"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating Python venv at $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import onnx, onnxruntime, numpy; assert tuple(map(int, onnx.__version__.split('.')[:2])) >= (1, 23)" 2>/dev/null; then
  echo "[setup] installing onnx, onnxruntime, numpy"
  "$VENV/bin/pip" install -q --disable-pip-version-check "onnx>=1.23" onnxruntime numpy
fi
if ! ls "$VENV"/lib/python3.*/site-packages/nvidia/cuda_nvcc/bin/ptxas >/dev/null 2>&1; then
  echo "[setup] installing ptxas (nvidia-cuda-nvcc-cu12)"
  "$VENV/bin/pip" install -q --disable-pip-version-check nvidia-cuda-nvcc-cu12
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[setup] installing cargo-fuzz (coverage-guided fuzzing of the compiler's passes)"
  cargo install -q cargo-fuzz --locked
fi
echo "[setup] done"
