"""The no-Python C++ runner (``edgeopt.cxx``): built for this x86-64 host and run here, and cross-built for aarch64
and run under ``qemu-aarch64 -cpu cortex-a72``, each beside only libtvm_runtime.so and libtvm_ffi.so; its outputs
against PyTorch and the Python runtime, and its refusals (wrong input size, damaged plan)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt import cxx, emulate
from edgeopt.ir_dtypes import NP_DTYPES
from tests.conftest import compile_zoo, rel_err, torch_outputs
from tests.targets import needs

TOL = 1e-4
needs_gxx = needs("arm", bool(shutil.which("aarch64-linux-gnu-g++") and shutil.which(emulate.QEMU)),
                  "aarch64-linux-gnu-g++ or qemu-aarch64 is not installed "
                  "(apt-get install g++-aarch64-linux-gnu qemu-user)")


def device_dir(tmp: Path, target: str) -> Path:
    """A folder like a board's: the runner and the two TVM runtime libraries beside it (its rpath is $ORIGIN)."""
    d = tmp / f"device-{target}"
    d.mkdir()
    cxx.build_runner(d / "edgeopt_run", target=target)
    _, libs = cxx._runtime_files(target)
    for name in ("libtvm_runtime.so", "libtvm_ffi.so"):
        shutil.copy(next(p / name for p in libs if (p / name).exists()), d)
    return d


def run_runner(d: Path, flat: Path, inputs: list[np.ndarray], prefix: list[str] = (), extra: list[str] = ()):
    files = []
    for i, x in enumerate(inputs):
        files.append(str(flat.parent / f"in{i}.bin"))
        np.ascontiguousarray(x).tofile(files[-1])
    cmd = [*prefix, str(d / "edgeopt_run"), str(flat), str(flat.parent / "out_"), *extra, *files]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def outputs(flat: Path, compiled) -> list[np.ndarray]:
    """The runner's output files, read as the plan's output types."""
    return [np.fromfile(flat.parent / f"out_{i}.bin", NP_DTYPES[o["dtype"]]).reshape(o["shape"])
            for i, o in enumerate(compiled.plan["outputs"])]


@pytest.fixture(scope="module")
def host_device(tmp_path_factory):
    return device_dir(tmp_path_factory.mktemp("cxx"), "host")


@pytest.mark.parametrize("name", ["resnet18", "minilm"])
def test_host_runner_matches_torch_and_the_python_runtime(name, host_device, tmp_path):
    model, inputs, compiled = compile_zoo(name)
    compiled.save(tmp_path / "m.edgeopt")
    flat = cxx.export_flat(tmp_path / "m.edgeopt", tmp_path / "m.flat")
    xs = [x.numpy() for x in inputs]
    proc = run_runner(host_device, flat, xs, extra=["--repeat", "3"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("median_ms ") and float(proc.stdout.split()[1]) > 0
    got = outputs(flat, compiled)
    python_runtime = compiled(*xs)
    python_runtime = list(python_runtime) if isinstance(python_runtime, tuple) else [python_runtime]
    for g, p, r in zip(got, python_runtime, torch_outputs(model, inputs)):
        np.testing.assert_array_equal(g, p)  # the same kernels on the same arena layout
        assert rel_err(r, g) < TOL


def test_runner_refuses_a_wrong_input_size_and_a_damaged_plan(host_device, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    compiled = edgeopt.compile(net, [torch.randn(2, 8)])
    compiled.save(tmp_path / "m.edgeopt")
    flat = cxx.export_flat(tmp_path / "m.edgeopt", tmp_path / "m.flat")
    proc = run_runner(host_device, flat, [np.zeros((3, 8), np.float32)])
    assert proc.returncode == 2 and "96 bytes, but input 'input' needs 64" in proc.stderr, proc.stderr
    proc = run_runner(host_device, flat, [])
    assert proc.returncode == 2 and "takes 1 input file(s), got 0" in proc.stderr
    plan = flat / "plan.txt"  # every buffer moved past the end of the arena
    lines = [ln.split() for ln in plan.read_text().splitlines()]
    plan.write_text("\n".join(" ".join(f[:4] + ["4096000"] + f[5:] if f[:1] == ["value"] and f[2] == "buffer" else f)
                              for f in lines) + "\n")
    proc = run_runner(host_device, flat, [np.zeros((2, 8), np.float32)])
    assert proc.returncode == 2 and "outside its buffer" in proc.stderr, proc.stderr


def test_export_refuses_a_tampered_artifact(tmp_path):
    import zipfile

    net = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    edgeopt.compile(net, [torch.randn(2, 8)]).save(tmp_path / "m.edgeopt")
    with zipfile.ZipFile(tmp_path / "m.edgeopt") as zin, zipfile.ZipFile(tmp_path / "bad.edgeopt", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data + b" " if item.filename == "plan.json" else data)
    with pytest.raises(edgeopt.ArtifactError, match="sha256|size"):
        cxx.export_flat(tmp_path / "bad.edgeopt", tmp_path / "flat")


@pytest.mark.arm
@needs_gxx
def test_arm_runner_under_qemu_matches_torch(sysroot, tmp_path):
    model, inputs, compiled = compile_zoo("resnet18", target="arm")
    compiled.save(tmp_path / "m.edgeopt")
    flat = cxx.export_flat(tmp_path / "m.edgeopt", tmp_path / "m.flat")
    d = device_dir(tmp_path, "arm")
    proc = run_runner(d, flat, [x.numpy() for x in inputs], prefix=[emulate.QEMU, "-cpu", "cortex-a72", "-L",
                                                                   str(sysroot / "sysroot")])
    assert proc.returncode == 0, proc.stderr
    (got,) = outputs(flat, compiled)
    assert rel_err(torch_outputs(model, inputs)[0], got) < TOL
