"""The command line end to end, as a new user meets it: compile a real model (pretrained EfficientNet-Lite0) from a
``file.py:factory``, see every unsupported op of a model that fails, look at the graph before and after the passes
and at the memory plan, run and benchmark the artifact, compare it with PyTorch layer by layer, compile again from
the cache, tune. Each command runs in its own process; the test checks the files it writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FACTORIES = f'''
import sys
sys.path.insert(0, {ROOT!r})
import torch


def make():
    from tests.models.zoo import efficientnet_lite0
    return efficientnet_lite0(small=True)


class Unsupported(torch.nn.Module):
    def forward(self, x):
        y = torch.erfinv(x.tanh())
        z = torch.lgamma(y + 1)
        return torch.erfinv((z * 2).tanh()) + 1


def broken():
    return Unsupported().eval(), (torch.randn(2, 8),)


def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU()).eval(), (torch.randn(4, 32),)
'''


def edgeopt(*args, cwd, env, ok=True):
    r = subprocess.run([sys.executable, "-m", "edgeopt.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    if ok:
        assert r.returncode == 0, f"edgeopt {' '.join(args)} failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    return r


def svg_root(text: str):
    """The <svg> element of an SVG file or of the HTML page around one (parsed as XML: well formed)."""
    start, end = text.index("<svg"), text.rindex("</svg>") + len("</svg>")
    return ET.fromstring(text[start:end])


def png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "model.py").write_text(FACTORIES)
    env = {**os.environ, "EDGEOPT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": ROOT}
    return tmp_path, env


@pytest.mark.slow
def test_compile_look_run_bench_compare_from_the_command_line(workdir):
    import torch

    d, env = workdir
    # a model edgeopt cannot compile: ONE error naming every unsupported op and the lines that use them
    r = edgeopt("compile", "model.py:broken", "-o", "broken.edgeopt", cwd=d, env=env, ok=False)
    assert r.returncode == 1 and not (d / "broken.edgeopt").exists()
    assert "erfinv" in r.stderr and "lgamma" in r.stderr and "(x2)" in r.stderr
    assert re.search(r"model\.py:\d+\s+y = torch\.erfinv", r.stderr) and "Traceback" not in r.stderr

    r = edgeopt("compile", "model.py:make", "-o", "m.edgeopt", "--graphs", "graphs", "--report", "report.json",
                cwd=d, env=env)
    assert "wrote m.edgeopt" in r.stdout and "fused" in r.stdout
    report = json.loads((d / "report.json").read_text())
    assert report["num_kernels"] > 10 and report["cache"]["kernels_compiled"] > 0
    before, after = (svg_root((d / "graphs" / f"{w}.html").read_text()) for w in ("before", "after"))
    nodes = {w: [g for g in r.iter("{http://www.w3.org/2000/svg}g") if "node" in g.get("class", "")]
             for w, r in (("before", before), ("after", after))}
    assert len(nodes["before"]) > len(nodes["after"]) > 10  # fusion made fewer, bigger nodes
    fused = [g for g in nodes["after"] if "fused" in g.get("class")]
    assert len(fused) == sum(g["count"] for g in report["fused_groups"]) > 5  # one colored box per fused kernel
    assert not [g for g in nodes["before"] if "fused" in g.get("class")]

    model_mod = _import(d / "model.py")
    model, (x,) = model_mod.make()
    np.save(d / "x.npy", x.numpy())
    r = edgeopt("run", "m.edgeopt", "--input", "x.npy", "-o", "out", cwd=d, env=env)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(np.load(d / "out" / "output_0.npy"), ref, rtol=1e-4, atol=1e-4)

    r = edgeopt("inspect", "m.edgeopt", "--memory", "--png", "arena.png", "--graph", "g.svg", cwd=d, env=env)
    assert "activations: arena" in r.stdout and "alive" in r.stdout
    assert "fused kernels: " in r.stdout and "distinct kernels by anchor op: conv2d" in r.stdout
    assert "kernels.so" in r.stdout  # the members and their sizes
    assert min(png_size(d / "arena.png")) > 100
    assert len([g for g in svg_root((d / "g.svg").read_text()).iter("{http://www.w3.org/2000/svg}g")
                if "node" in g.get("class", "")]) == len(nodes["after"])

    r = edgeopt("bench", "m.edgeopt", "--input", "x.npy", "--repeat", "5", "--kernels", "--png", "k.png", "--json",
                "b.json", cwd=d, env=env)
    b = json.loads((d / "b.json").read_text())
    assert b["median_ms"] > 0 and b["calls"] == 5 and b["weight_bytes"] == report["weight_bytes"]
    assert len(b["kernels"]) == report["num_kernels"] and "slowest kernels" in r.stdout
    assert min(png_size(d / "k.png")) > 100

    r = edgeopt("compare", "m.edgeopt", "model.py:make", "--json", "c.json", cwd=d, env=env)
    c = json.loads((d / "c.json").read_text())
    assert c["outputs"][0]["top1_agreement"] == 1.0 and c["outputs"][0]["cosine"] > 0.9999
    assert len(c["layers"]) > 10 and min(row["sqnr_db"] for row in c["layers"]) > 60  # fp32: no lossy layer
    assert "every matched layer is above" in r.stdout

    # again: every kernel from the cache (--graphs compiled past the whole-model cache), then the whole model
    r = edgeopt("compile", "model.py:make", "-o", "m2.edgeopt", cwd=d, env=env)
    assert re.search(r"cache: model miss, kernels reused \d+, compiled 0", r.stdout)
    r = edgeopt("compile", "model.py:make", "-o", "m3.edgeopt", cwd=d, env=env)
    assert "cache: model hit" in r.stdout
    assert (d / "m3.edgeopt").read_bytes() == (d / "m2.edgeopt").read_bytes()
    r = edgeopt("cache", "info", cwd=d, env=env)
    assert re.search(r"kernels: \d+ entries", r.stdout) and re.search(r"models: 1 entries", r.stdout)


@pytest.mark.slow
def test_quantized_compile_and_compare_name_the_lossy_layers(workdir):
    d, env = workdir
    model_mod = _import(d / "model.py")
    _, (x,) = model_mod.make()
    rng = np.random.default_rng(0)
    np.savez(d / "cal.npz", images=np.concatenate([x.numpy() + 0.05 * rng.standard_normal(x.shape, np.float32)
                                                   for _ in range(4)]))
    edgeopt("compile", "model.py:make", "-o", "q.edgeopt", "--quantize", "int8", "--calibration", "cal.npz",
            cwd=d, env=env)
    r = edgeopt("compare", "q.edgeopt", "model.py:make", "--json", "c.json", cwd=d, env=env)
    c = json.loads((d / "c.json").read_text())
    assert len(c["layers"]) > 10 and max(row["sqnr_db"] for row in c["layers"]) < 80  # int8: every layer has error
    assert c["outputs"][0]["cosine"] > 0.9  # and the output is still close
    worst = min(c["layers"], key=lambda row: row["sqnr_db"])
    op = f"{worst['op']}, {worst['module']}" if worst["module"] else worst["op"]
    assert f"{worst['value']} ({op})" in r.stdout.split("layers (")[1].splitlines()[2]  # listed first
    epilogues = [row for row in c["layers"] if row["op"] in ("clamp", "add")]  # conv kernels' outputs
    assert epilogues and all(row["module"] for row in epilogues)  # their conv's module: what keep_float takes


@pytest.mark.slow
def test_tune_from_the_command_line(workdir):
    d, env = workdir
    r = edgeopt("tune", "model.py:tiny", "--db", "t.json", "--trials", "2", "--cost-model", "random", "--strategy",
                "replay-trace", "--min-speedup", "0", "--seed", "0", cwd=d, env=env)
    assert "t.json: 1 kernels" in r.stdout and json.loads((d / "t.json").read_text())
    r = edgeopt("compile", "model.py:tiny", "-o", "t.edgeopt", "--tuning-db", "t.json", "--report", "r.json",
                cwd=d, env=env)
    assert json.loads((d / "r.json").read_text())["tuned_kernels"] == 1


def test_every_command_has_help():
    from edgeopt.cli import main

    for cmd in ("compile", "run", "bench", "compare", "tune", "cache", "inspect", "tune-info", "keygen", "sign",
                "verify", "generate"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    from edgeopt.cli import main

    assert main(["compile", "nowhere.py:make", "-o", str(tmp_path / "m.edgeopt")]) == 1
    assert "no such file: nowhere.py" in capsys.readouterr().err
    assert main(["compile", "model", "-o", str(tmp_path / "m.edgeopt")]) == 1
    assert "'file.py:factory'" in capsys.readouterr().err
    (tmp_path / "f.py").write_text("def make():\n    return 1\n")
    assert main(["compile", f"{tmp_path}/f.py:other", "-o", str(tmp_path / "m.edgeopt")]) == 1
    assert "has no function 'other'" in capsys.readouterr().err


def _import(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
