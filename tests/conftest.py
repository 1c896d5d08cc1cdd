"""Shared fixtures: compiled zoo models are built once per test process (compiles are the slow part)."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    """One compile cache for the run (shared by the xdist workers, which inherit the variable), removed after it:
    kernels compiled by one test are reused by the others, and every run starts cold."""
    if "EDGEOPT_CACHE_DIR" not in os.environ and not hasattr(config, "workerinput"):
        config._edgeopt_cache = os.environ["EDGEOPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgeopt-test-cache-")


def pytest_unconfigure(config):
    if getattr(config, "_edgeopt_cache", None):
        shutil.rmtree(config._edgeopt_cache, ignore_errors=True)

_COMPILED: dict = {}


def host_has_depthwise_int8_dot() -> bool:
    """Whether the host runs integer depthwise convs on a dot product over window taps (``depthwise_int8_taps``:
    AVX512-VNNI with VBMI, or ARM's sdot)."""
    from edgeopt.targets import get_target

    from edgeopt.lower.int8_dot import is_depthwise

    return any(is_depthwise(name) for name, _, _ in get_target("host").int8_dots())


def compile_zoo(name: str, small: bool = True, **options):
    """(model, inputs, compiled) for a zoo model, cached for the whole test process."""
    import edgeopt
    from tests.models.zoo import build

    key = (name, small, tuple(sorted(options.items())))
    if key not in _COMPILED:
        model, inputs = build(name, small=small)
        _COMPILED[key] = (model, inputs, edgeopt.compile(model, inputs, **options))
    return _COMPILED[key]


def torch_outputs(model, inputs) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(*inputs)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().numpy() for o in out]


def as_list(y) -> list[np.ndarray]:
    return list(y) if isinstance(y, tuple) else [y]


def rel_err(ref: np.ndarray, got: np.ndarray) -> float:
    """max |ref - got| relative to the output's scale (max |ref|, at least 1e-6)."""
    return float(np.abs(ref.astype(np.float64) - got).max() / max(float(np.abs(ref).max()), 1e-6))


@pytest.fixture(scope="session")
def host_target():
    from edgeopt.targets import get_target

    return get_target("host")
