"""The runtime dispatches through its backend registry only: a new device kind is a registered Backend."""

from __future__ import annotations

import numpy as np
import pytest

import edgeopt
from edgeopt.errors import ArtifactError
from edgeopt.runtime import backends
from edgeopt.runtime.backends import CpuBackend, get_backend, register_backend
from tests.artifact_tools import members_of, repack, tiny_model


@pytest.fixture(scope="module")
def artifact():
    model, inputs = tiny_model()
    compiled = edgeopt.compile(model, inputs)
    return compiled._artifact, [x.numpy() for x in inputs], compiled


def test_the_builtin_backends():
    assert backends.backends() == ["cpu", "cuda", "vulkan"]
    assert get_backend("cpu").profiles and not get_backend("cuda").profiles
    assert not get_backend("vulkan").uses_tvm and get_backend("vulkan").reads("webgpu/kernel_0.wgsl")
    assert get_backend("cuda").reads("kernels.so") and not get_backend("cpu").reads("kernels.so")


def test_an_unknown_runtime_is_one_clear_error(artifact):
    data, _, _ = artifact
    manifest, _ = members_of(data)
    manifest["target"]["runtime"] = "npu"
    with pytest.raises(ArtifactError, match=r"runtime backend 'npu', which this edgeopt runtime cannot run "
                                            r"\(it runs: cpu, cuda, vulkan\)"):
        edgeopt.runtime.model.Model(repack(data, manifest=manifest))


def test_a_registered_backend_runs_an_artifact_without_changes_to_model(artifact):
    """A backend registered under a new runtime name loads and runs: Model holds no list of device kinds."""
    data, xs, compiled = artifact
    calls = []

    class Traced(CpuBackend):
        name = "test_traced_cpu"

        def pick_level(self, target, level, what):  # tvm_cpu checks that the manifest says "cpu"
            return super().pick_level({**target, "runtime": "cpu"}, level, what)

        def context(self, model):
            ctx = super().context(model)
            run = ctx.run

            def traced(arrays):
                calls.append(len(arrays))
                return run(arrays)

            ctx.run = traced
            return ctx

    register_backend(Traced())
    try:
        manifest, _ = members_of(data)
        manifest["target"]["runtime"] = "test_traced_cpu"
        m = edgeopt.runtime.model.Model(repack(data, manifest=manifest))
        np.testing.assert_array_equal(m(*xs), compiled(*xs))
        assert calls == [1] and m.profile(*xs, repeat=1)
    finally:
        backends._BACKENDS.pop("test_traced_cpu")
    with pytest.raises(ArtifactError, match="test_traced_cpu"):
        edgeopt.runtime.model.Model(repack(data, manifest=manifest))
    with pytest.raises(ValueError, match="registered twice"):
        register_backend(CpuBackend())
