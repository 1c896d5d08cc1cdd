"""The ``edgeopt`` command line: ``inspect`` on a saved artifact (summary, memory figures, the arena drawn
over time, the IR) and a clear error for a damaged file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeopt.cli import main
from tests.conftest import compile_zoo


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    _, _, compiled = compile_zoo("resnet18")
    path = tmp_path_factory.mktemp("cli") / "resnet18.edgeopt"
    compiled.save(path)
    return path, compiled


def test_inspect_prints_the_summary_and_the_memory_figures(artifact, capsys):
    path, compiled = artifact
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    r = compiled.report
    assert f"arena {r['arena_bytes']} bytes, lower bound {r['lower_bound_bytes']}, naive {r['naive_bytes']}" in out
    assert f"{r['num_kernels']} steps" in out
    for io in compiled.plan["inputs"] + compiled.plan["outputs"]:
        assert io["name"] in out


def test_inspect_memory_draws_every_activation_at_its_offset(artifact, capsys):
    path, compiled = artifact
    assert main(["inspect", str(path), "--memory"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if "|" in ln]
    placed = {n: v for n, v in compiled.plan["values"].items() if "offset" in v}
    assert placed and len(rows) <= len(placed)
    for name, info in placed.items():
        row = next(ln for ln in rows if name in ln.rsplit("| ", 1)[1].split(", "))
        assert row.split("..")[0].strip() == str(info["offset"])
        start, end = info["live"]
        bar = row.split("|")[1]
        assert "#" in bar and bar.index("#") <= start + 1 and bar.rindex("#") >= min(end, len(bar) - 1) - 1


def test_inspect_ir(artifact, capsys):
    path, compiled = artifact
    assert main(["inspect", str(path), "--ir"]) == 0
    assert compiled.ir.strip().splitlines()[0] in capsys.readouterr().out


def test_inspect_refuses_a_tampered_artifact(artifact, tmp_path, capsys):
    path, _ = artifact
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the file
    bad = tmp_path / "bad.edgeopt"
    bad.write_bytes(bytes(data))
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgeopt: ") and "Traceback" not in err


def test_the_command_runs_as_a_module(artifact):
    path, _ = artifact
    r = subprocess.run([sys.executable, "-m", "edgeopt.cli", "inspect", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "activations: arena" in r.stdout


def test_inspect_png_draws_the_arena(artifact, tmp_path, capsys):
    path, compiled = artifact
    png = tmp_path / "arena.png"
    assert main(["inspect", str(path), "--png", str(png)]) == 0
    assert f"arena picture: {png}" in capsys.readouterr().out
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert len({tuple(p) for p in img.reshape(-1, img.shape[-1])[:: 97].round(2)}) > 5  # rectangles, not blank


def test_compile_calibration_file_is_split_by_the_traced_batch(tmp_path, capsys):
    """``--calibration``: one array per input, samples along the first axis, split into batches of the size the
    model was traced with (2 here); a count that is no multiple of it is one clear error."""
    import json

    import numpy as np

    (tmp_path / "two.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    m = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU()).eval()\n"
        "    return m, (torch.randn(2, 4, 8, 8),)\n")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "six.npy", rng.standard_normal((6, 4, 8, 8)).astype(np.float32))
    np.save(tmp_path / "five.npy", rng.standard_normal((5, 4, 8, 8)).astype(np.float32))
    out, report = str(tmp_path / "m.edgeopt"), tmp_path / "r.json"
    assert main(["compile", f"{tmp_path / 'two.py'}:make", "-o", out, "--quantize", "int8", "--calibration",
                 str(tmp_path / "six.npy"), "--report", str(report), "--no-cache"]) == 0
    assert json.loads(report.read_text())["pass_stats"]["quantize_static"]["calibration_batches"] == 3
    assert main(["compile", f"{tmp_path / 'two.py'}:make", "-o", out, "--quantize", "int8", "--calibration",
                 str(tmp_path / "five.npy"), "--no-cache"]) == 1
    assert "traced with f32[2,4,8,8]" in capsys.readouterr().err
