"""Every zoo model compiles for the host and matches PyTorch: compiled, saved+loaded, and interpreted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgeopt
from edgeopt.ir import interpret, parse_graph, verify
from edgeopt.pipeline import default_pipeline
from tests.conftest import as_list, compile_zoo, rel_err, torch_outputs
from tests.models.zoo import ZOO

pytestmark = pytest.mark.models
TOL = 1e-4  # max abs error relative to the output's scale, fp32


@pytest.mark.parametrize("name", sorted(ZOO))
def test_compiled_matches_torch(name, tmp_path):
    model, inputs, compiled = compile_zoo(name)
    ref = torch_outputs(model, inputs)
    got = as_list(compiled(*inputs))
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert g.shape == r.shape and g.dtype == r.dtype
        assert rel_err(r, g) <= TOL, f"{name}: compiled vs torch {rel_err(r, g):.2e}"
    path = tmp_path / f"{name}.edgeopt"
    compiled.save(path)
    loaded = edgeopt.load(str(path))
    again = as_list(loaded(*[x.numpy() for x in inputs]))
    for g, a in zip(got, again):
        np.testing.assert_array_equal(g, a)  # the saved artifact runs the very same kernels


@pytest.mark.parametrize("name", sorted(ZOO))
def test_ir_roundtrip_verify_interpret(name):
    model, inputs, compiled = compile_zoo(name)
    g = compiled.graph
    verify(g)
    text = compiled.ir
    big = {k: v for k, v in g.constants.items()}
    again = parse_graph(text, big)
    verify(again)
    assert str(again) == text
    ref = torch_outputs(model, inputs)
    out = interpret(again, [x.numpy() for x in inputs])
    for r, o in zip(ref, out):
        assert rel_err(r, o) <= TOL, f"{name}: interpreter vs torch {rel_err(r, o):.2e}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_report(name):
    _, _, compiled = compile_zoo(name)
    r = compiled.report
    assert r["target"] == "host"
    assert 0 < r["num_unique_kernels"] <= r["num_kernels"] <= r["traced_ops"]
    assert r["weight_bytes"] > 0 and r["compile_seconds"] > 0
    assert [p["name"] for p in r["passes"]] == default_pipeline(2)
    assert r["fused_groups"] and all(len(f["ops"]) > 1 and f["count"] >= 1 for f in r["fused_groups"])
    fused_steps = sum(f["count"] for f in r["fused_groups"])
    assert fused_steps == sum(n.op == "fused" for n in compiled.graph.nodes)
    assert all(p["seconds"] >= 0 for p in r["passes"])
    assert not [k for k in r["kernels"] if k["schedule"].startswith(("fallback", "unscheduled"))]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_memory_plan_is_near_the_lower_bound(name):
    """The arena is within 5% of the most bytes alive at one step, below the naive plan, and every
    activation of the plan sits aligned inside it (the planner verifies each plan as it makes it)."""
    _, _, compiled = compile_zoo(name)
    r, plan = compiled.report, compiled.plan
    assert 0 < r["lower_bound_bytes"] <= r["arena_bytes"] <= 1.05 * r["lower_bound_bytes"]
    assert r["arena_bytes"] < r["naive_bytes"] and r["plan_algorithm"] in r["plan_candidates"]
    assert plan["arena_bytes"] == r["arena_bytes"]
    for v in plan["values"].values():
        if v["kind"] in ("input", "buffer"):
            assert v["offset"] % 64 == 0 and v["offset"] < r["arena_bytes"]


@pytest.mark.slow
def test_efficientnet_lite0_full_size_real_images():
    """Pretrained EfficientNet-Lite0 at 224 on real photos: same top-1 as torch, close logits."""
    from tests.models.zoo import real_image

    model, inputs, compiled = compile_zoo("efficientnet_lite0", small=False)
    for size_img in (inputs[0], real_image(224)):
        ref = torch_outputs(model, (size_img,))[0]
        got = compiled(size_img)
        assert rel_err(ref, got) <= TOL
        assert ref.argmax() == got.argmax()


@pytest.mark.slow
def test_mobilenet_v2_full_size_pretrained():
    """Pretrained MobileNetV2 (torchvision's ImageNet weights) at 224 on a real photo: the compiled model gives
    PyTorch's logits, and both see a cat (ImageNet classes 281-285) in scikit-image's chelsea."""
    model, inputs, compiled = compile_zoo("mobilenet_v2", small=False)
    ref = torch_outputs(model, inputs)[0]
    got = compiled(*inputs)
    assert rel_err(ref, got) <= TOL
    assert ref.argmax() == got.argmax() and 281 <= int(ref.argmax()) <= 285


def test_pretrained_mobilenet_v2_refuses_other_weights(tmp_path, monkeypatch):
    """The weights file is checked by sha256 before torch reads it."""
    from tests.models import zoo

    (tmp_path / "w.pth").write_bytes(b"not the weights")
    monkeypatch.setattr(zoo, "MOBILENET_V2_WEIGHTS", (str(tmp_path), "w.pth", zoo.MOBILENET_V2_WEIGHTS[2]))
    monkeypatch.setattr(zoo, "_package_file", lambda package, name: Path(package) / name)
    with pytest.raises(RuntimeError, match="sha256"):
        zoo.pretrained_mobilenet_v2()


@pytest.mark.slow
def test_minilm_full_size_embeddings():
    """Pretrained all-MiniLM-L6-v2 at sequence 128: sentence embeddings match torch."""
    model, inputs, compiled = compile_zoo("minilm", small=False)
    ref = torch_outputs(model, inputs)[0]
    got = compiled(*inputs)
    assert rel_err(ref, got) <= TOL
    mask = inputs[1].numpy()[..., None].astype(np.float32)

    def embed(h):
        e = (h * mask).sum(1) / mask.sum(1)
        return e / np.linalg.norm(e, axis=-1, keepdims=True)

    cos = float((embed(ref) * embed(got)).sum())
    assert cos > 0.99999


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "minilm"])
def test_fusion_at_least_halves_the_kernel_count(name):
    """Issue 3: after clean-up and fusion, at most half as many kernels as traced ops."""
    r = compile_zoo(name)[2].report
    assert 2 * r["num_kernels"] <= r["traced_ops"], (r["num_kernels"], r["traced_ops"])
    assert r["pass_stats"]["fuse_epilogue"]["fused_groups"] > 0
