"""The no-Python C++ runner (``edgeopt.cxx``): built for this x86-64 host and run here, and cross-built for aarch64
and run under ``qemu-aarch64 -cpu cortex-a72``, each beside only libtvm_runtime.so and libtvm_ffi.so; its outputs
against PyTorch and the Python runtime, and its refusals (wrong input size; a damaged or hand-edited plan.txt is
refused with a message and exit status 2, never a crash)."""

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
from tests.artifact_tools import tiny_model
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
    assert proc.returncode == 2 and "lies outside the arena" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def tiny_flat(tmp_path_factory):
    """(flat folder, input, the Python runtime's output) of ``tests.artifact_tools.tiny_model``: 3 kernels, weights,
    an in-place pair, a view output."""
    model, inputs = tiny_model()
    compiled = edgeopt.compile(model, inputs)
    d = tmp_path_factory.mktemp("tiny")
    compiled.save(d / "m.edgeopt")
    x = inputs[0].numpy()
    return cxx.export_flat(d / "m.edgeopt", d / "m.flat"), x, compiled(x)


def _line(lines: list[list[str]], record: str, name: str | None = None) -> list[str]:
    return next(f for f in lines if f[0] == record and (name is None or f[1] == name))


def _steps(lines):
    return [f for f in lines if f[0] == "step"]


def _set(record: str, index: int, value: str, name: str | None = None):
    def edit(lines):
        _line(lines, record, name)[index] = value
    return edit


def _step_output(value: str | None):
    """Make the first step's output ``value`` (None: the plan's first constant, whose name follows the CPU's layout:
    ``p_fc1_weight_io`` with AVX-512, ``p_fc1_weight_oi8o`` with AVX2)."""
    def edit(lines):
        step = _steps(lines)[0]
        name = value or next(f[1] for f in lines if f[0] == "value" and f[2] == "const")
        step[3 + int(step[3])] = name  # step <kernel> <outputs> <argc> <args...>: the last argument
    return edit


def _same_offset(name: str, as_name: str):
    def edit(lines):
        _line(lines, "value", name)[4] = _line(lines, "value", as_name)[4]
    return edit


def _drop_steps(lines):
    lines[:] = [f for f in lines if f[0] != "step"]


def _swap_first_steps(lines):
    i, j = [k for k, f in enumerate(lines) if f[0] == "step"][:2]
    lines[i], lines[j] = lines[j], lines[i]


def _same_kernel(lines):
    _steps(lines)[2][1] = _steps(lines)[0][1]


def _far_buffer(lines):  # inside an arena of 32 TiB: the runner tried to allocate it
    _line(lines, "value", "linear")[4] = str(1 << 45)
    _line(lines, "arena")[1] = str((1 << 45) + 64)


#: edits of the tiny model's plan.txt (its buffers: linear, relu, sigmoid; the view: reshape of sigmoid) and what the
#: runner says; before the checks, the first wrote past the end of the arena (exit 139)
FLAT_ATTACKS = {
    "view larger than its base": (_set("view", 5, "1048576"), "is not a reshape"),
    "negative offset": (_set("value", 4, "-4096", "linear"), "offset '-4096' is not an integer"),
    "misaligned offset": (_set("value", 4, "32", "linear"), "misaligned"),
    "offset past the arena": (_set("value", 4, "4096", "linear"), "lies outside the arena"),
    "weight past weights.bin": (_set("value", 4, "1048576", "p_fc1_bias"), "lies outside weights.bin"),
    "live tensors overlap": (_same_offset("linear", "x"), "share arena bytes"),
    "in-place pair whose input lives on": (_same_offset("relu", "linear"), "share arena bytes"),
    "output is a weight": (_step_output(None), "which is not a buffer"),
    "output is the input": (_step_output("x"), "which is not a buffer"),
    "no steps, buffer output": (_drop_steps, "written by no step"),
    "read before written": (_swap_first_steps, "before it is written"),
    "live range misses a read": (_set("value", 6, "0", "linear"), "outside its declared live range"),
    "one kernel, two signatures": (_same_kernel, "differ from another step of that kernel"),
    "unknown argument": (lambda lines: _steps(lines)[1].__setitem__(4, "nope"), "'nope', which is not a value"),
    "argument count past the line": (lambda lines: _steps(lines)[0].__setitem__(3, "9"), "argument count"),
    "no outputs": (lambda lines: _steps(lines)[0].__setitem__(2, "0"), "outputs are not among the arguments"),
    "overflowing shape": (_set("value", 7, "3 1099511627776 1099511627776", "linear"), "more than 2^40 elements"),
    "view of an unknown value": (_set("view", 2, "nope"), "not defined above"),
    "a value twice": (lambda lines: lines.insert(3, list(_line(lines, "value", "linear"))), "defined twice"),
    "arena far too large": (_set("arena", 1, str(1 << 45)), "larger than its tensors need"),
    "far buffer, arena to match": (_far_buffer, "35184372088896 bytes, more than all 4 of them side by side"),
    "unknown record": (lambda lines: lines.append(["rm", "-rf", "/"]), "unknown record rm"),
    "trailing field": (lambda lines: _line(lines, "input").append("extra"), "unexpected 'extra'"),
    "old format": (lambda lines: lines.__setitem__(0, ["edgeopt-flat", "1"]), "not a flat plan of version 2"),
}


def test_the_tiny_flat_plan_runs(host_device, tiny_flat):
    flat, x, want = tiny_flat
    proc = run_runner(host_device, flat, [x])
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.fromfile(flat.parent / "out_0.bin", np.float32), want)


@pytest.mark.parametrize("attack", list(FLAT_ATTACKS))
def test_runner_refuses_a_hand_edited_plan_with_a_message(attack, host_device, tiny_flat, tmp_path):
    flat, x, _ = tiny_flat
    edited = tmp_path / "m.flat"
    shutil.copytree(flat, edited)
    lines = [ln.split() for ln in (flat / "plan.txt").read_text().splitlines()]
    edit, message = FLAT_ATTACKS[attack]
    edit(lines)
    (edited / "plan.txt").write_text("\n".join(" ".join(f) for f in lines) + "\n")
    proc = run_runner(host_device, edited, [x])
    assert proc.returncode == 2, (proc.returncode, proc.stderr)  # not 139 (SIGSEGV) or 134 (abort)
    assert proc.stderr.startswith("edgeopt_run: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out_0.bin").exists()  # refused before it ran


def test_export_refuses_a_tampered_artifact(tmp_path):
    import zipfile

    net = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    edgeopt.compile(net, [torch.randn(2, 8)]).save(tmp_path / "m.edgeopt")
    with zipfile.ZipFile(tmp_path / "m.edgeopt") as zin, zipfile.ZipFile(tmp_path / "bad.edgeopt", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data + b" " if item.filename == "plan.json" else data)
    with pytest.raises(edgeopt.ArtifactError, match="sha256|size|in the manifest"):
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


def test_multi_level_artifact_exports_each_level(host_device, tmp_path):
    """``export_flat`` takes the least demanding level by default (the device is elsewhere), or the one named; both
    run in the runner here (when this CPU has the level) and agree with the Python runtime."""
    model, inputs = tiny_model()
    compiled = edgeopt.compile(model, inputs, target="x86-64", levels=["v3", "v4"])
    path = tmp_path / "levels.edgeopt"
    compiled.save(path)
    x = inputs[0].numpy()
    want = edgeopt.load(str(path), level="v3")(x)
    for level, lib in [(None, "kernels.so"), ("v3", "kernels.so"), ("v4", "levels/v4/kernels.so")]:
        flat = cxx.export_flat(path, tmp_path / f"flat-{level}" / "m.flat", level=level)
        assert (flat / "kernels.so").read_bytes() == edgeopt.runtime.artifact.read_artifact(str(path))[1][lib]
        if level == "v4" and "avx512f" not in edgeopt.runtime.cpu_features.host_flags():
            continue  # built for AVX-512: exported, not run on this CPU
        proc = run_runner(host_device, flat, [x])
        assert proc.returncode == 0, proc.stderr
        np.testing.assert_allclose(outputs(flat, compiled)[0], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(edgeopt.ArtifactError, match="no CPU level 'v9'"):
        cxx.export_flat(path, tmp_path / "flat-v9", level="v9")


def _write_flat(d: Path, plan: dict) -> Path:
    lines, blob = cxx.flat_plan(plan, {})
    d.mkdir()
    (d / "plan.txt").write_text("\n".join(lines) + "\n")
    (d / "weights.bin").write_bytes(bytes(blob))
    return d


@pytest.mark.parametrize("kind", ["live buffers", "in-place pairs"])
def test_runner_checks_a_large_crafted_plan_in_n_log_n_time(kind, host_device, tmp_path):
    """As ``tests/test_plan_check.py``: the runner's own check of a crafted plan of 20k tensors in use together (or
    20k in-place pairs of one step) took 97 s; 4x the tensors may now take at most 8x the time (quadratic: 16x).
    Run without input files, so a plan that passes ends at the input count, before anything is loaded."""
    import time

    from tests.test_plan_check import CRAFTED

    seconds = {}
    for n in (5_000, 20_000):
        flat = _write_flat(tmp_path / f"flat{n}", CRAFTED[kind](n))
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            proc = run_runner(host_device, flat, [])
            best = min(best, time.perf_counter() - t0)
            assert proc.returncode == 2 and f"takes {1 if kind == 'live buffers' else n} input file(s), got 0" in \
                proc.stderr, proc.stderr
        seconds[n] = best
    assert seconds[20_000] < 8 * seconds[5_000] + 0.05 and seconds[20_000] < 10, seconds
    bad = CRAFTED[kind](20_000)  # and the sweep still finds an overlap among them: the last one over the first
    last = max(bad["values"], key=lambda n: bad["values"][n]["offset"])
    bad["values"][last]["offset"] = 64 if kind == "live buffers" else 128
    proc = run_runner(host_device, _write_flat(tmp_path / "bad", bad), [])
    assert proc.returncode == 2 and "share arena bytes" in proc.stderr, proc.stderr


def test_runner_caps_the_arguments_of_a_step(host_device, tmp_path):
    from tests.test_plan_check import many_live_plan

    flat = _write_flat(tmp_path / "flat", many_live_plan(1))
    lines = (flat / "plan.txt").read_text().splitlines()
    n = (1 << 20) + 1
    lines = [" ".join(["step", "k", "1", str(n), *["x"] * n, "0"]) if ln.startswith("step ") else ln for ln in lines]
    (flat / "plan.txt").write_text("\n".join(lines) + "\n")
    proc = run_runner(host_device, flat, [])
    assert proc.returncode == 2 and "more than 1048576 arguments" in proc.stderr, proc.stderr


def test_host_runner_runs_a_static_int8_model(host_device, tmp_path):
    """A static int8 CNN (u8 activations, packed i8 weights, integer kernels with fused requantization, a residual
    that reads the int8 copy) runs in the C++ runner with the Python runtime's outputs, bit for bit."""
    from tests.passes.test_quantize_passes import TinyCNN

    torch.manual_seed(0)
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    cal = [torch.randn(1, 3, 12, 12) for _ in range(6)]
    compiled = edgeopt.compile(model, [x], quantize="int8", calibration_data=cal)
    assert compiled.report["quantization"]["kernels_by_precision"]["int8"] >= 2
    compiled.save(tmp_path / "q.edgeopt")
    flat = cxx.export_flat(tmp_path / "q.edgeopt", tmp_path / "q.flat")
    proc = run_runner(host_device, flat, [x.numpy()])
    assert proc.returncode == 0, proc.stderr
    (got,) = outputs(flat, compiled)
    np.testing.assert_array_equal(got, compiled(x.numpy()))
    assert rel_err(model(x).detach().numpy(), got) < 0.1
