"""The on-disk compile cache (``edgeopt.cache``): kernels' object code and whole compiled models.

Each test has its own cache directory, so what it counts is what it did."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.cache import DiskCache
from edgeopt.cache.store import digest
from edgeopt.runtime.artifact import read_artifact


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(d))
    monkeypatch.delenv("EDGEOPT_CACHE", raising=False)
    return d


def small_cnn(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    return model, (torch.randn(1, 3, 12, 12),)


def library(compiled) -> bytes:
    return read_artifact(compiled._artifact)[1]["kernels.so"]


# ------------------------------------------------------------------------------------------------ the store


def test_store_round_trip_damage_and_eviction(tmp_path, caplog):
    store = DiskCache(tmp_path, limit=10_000)
    key = digest("a")
    assert store.get("kernels", key) is None
    store.put("kernels", key, b"x" * 100, {"name": "k"})
    assert store.get("kernels", key) == (b"x" * 100, {"name": "k"})
    (path,) = tmp_path.rglob(f"{key}.entry")
    path.write_bytes(path.read_bytes()[:-1] + b"y")  # damaged: a miss, and the entry goes
    with caplog.at_level(logging.WARNING, logger="edgeopt.cache"):
        assert store.get("kernels", key) is None
    assert "damaged" in caplog.text and not path.exists()
    keys = [digest(i) for i in range(5)]
    for k in keys:  # 5 entries of 4000 bytes over a 10000-byte limit: the least recently used go
        store.put("models", k, bytes(4000))
        store.get("models", keys[0])  # keeps the first one recently used
    left = {k for k in keys if store.get("models", k) is not None}
    assert left == {keys[0], keys[-1]}
    assert store.info()["kinds"]["models"]["entries"] == 2 and store.info()["bytes"] <= 10_000
    assert store.clear() == 2 and store.info()["bytes"] == 0
    with pytest.raises(ValueError):
        store.get("kernels", "../etc")


def test_unwritable_cache_only_warns(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(blocker))
    model, x = small_cnn()
    with caplog.at_level(logging.WARNING, logger="edgeopt.cache"):
        compiled = edgeopt.compile(model, x)
    assert "cannot write" in caplog.text
    np.testing.assert_allclose(compiled(x[0].numpy()), model(*x).detach().numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- kernels


def test_kernels_are_reused_across_compiles_and_link_to_the_same_library(cache_dir):
    model, x = small_cnn()
    first = edgeopt.compile(model, x)
    c1 = first.report["cache"]
    assert c1["kernels_reused"] == 0 and c1["kernels_compiled"] == first.report["num_unique_kernels"] > 0
    # another option: the model cache misses, every kernel comes from the kernel cache
    second = edgeopt.compile(model, x, disable=["reorder_for_memory"])
    c2 = second.report["cache"]
    assert c2["model"] == "miss" and c2["kernels_compiled"] == 0
    assert c2["kernels_reused"] == second.report["num_unique_kernels"]
    assert [k["schedule"] for k in second.report["kernels"]] == [k["schedule"] for k in first.report["kernels"]]
    assert library(second) == library(first)  # the objects link to the same bytes
    np.testing.assert_array_equal(second(x[0].numpy()), first(x[0].numpy()))


def test_a_changed_kernel_or_edgeopt_code_is_compiled_again(cache_dir, monkeypatch):
    model, x = small_cnn()
    edgeopt.compile(model, x)
    wider = edgeopt.compile(model, (torch.randn(1, 3, 16, 16),))  # other shapes: other kernels
    assert wider.report["cache"]["kernels_compiled"] > 0
    from edgeopt.cache import fingerprint

    real = fingerprint.versions()
    monkeypatch.setattr("edgeopt.lower.object_cache.versions", lambda: {**real, "code": "edited"})
    again = edgeopt.compile(model, x, disable=["reorder_for_memory"])
    assert again.report["cache"]["kernels_reused"] == 0


def test_cache_off(cache_dir, monkeypatch):
    model, x = small_cnn()
    monkeypatch.setenv("EDGEOPT_CACHE", "0")
    c = edgeopt.compile(model, x)
    assert c.report["cache"] == {"model": "off", "kernels_reused": 0, "kernels_compiled": 0}
    assert not cache_dir.exists()
    monkeypatch.delenv("EDGEOPT_CACHE")
    assert edgeopt.compile(model, x, cache=False).report["cache"]["model"] == "off" and not cache_dir.exists()


# ------------------------------------------------------------------------------------------------ models


def test_a_second_compile_of_the_same_model_is_the_cached_artifact(cache_dir):
    model, x = small_cnn()
    first = edgeopt.compile(model, x)
    assert first.report["cache"]["model"] == "miss"
    hit = edgeopt.compile(model, x)
    assert hit.report["cache"]["model"] == "hit" and hit._artifact == first._artifact
    assert hit.ir == first.ir and str(hit.graph) == str(first.graph)  # the graph rebuilt from text and weights
    np.testing.assert_array_equal(hit(x[0].numpy()), first(x[0].numpy()))
    assert hit.report["num_kernels"] == first.report["num_kernels"]


@pytest.mark.parametrize("change", ["weight", "option", "target_option", "target", "input_shape", "quantize"])
def test_anything_that_changes_the_artifact_misses(cache_dir, change):
    model, x = small_cnn()
    edgeopt.compile(model, x)
    kwargs = {}
    if change == "weight":
        with torch.no_grad():
            model[0].weight[0, 0, 0, 0] += 1.0
    elif change == "option":
        kwargs = {"opt_level": 1}
    elif change == "target_option":
        kwargs = {"num_threads": 1}
    elif change == "target":
        kwargs = {"target": "x86-64-v3"}
    elif change == "input_shape":
        x = (torch.randn(2, 3, 12, 12),)
    else:
        kwargs = {"quantize": "int8-weight"}
    c = edgeopt.compile(model, x, **kwargs)
    assert c.report["cache"]["model"] == ("not cached" if change == "quantize" else "miss")
    np.testing.assert_allclose(c(x[0].numpy()), model(*x).detach().numpy(), rtol=1e-2, atol=1e-2)


def test_a_damaged_cached_model_is_compiled_again(cache_dir):
    model, x = small_cnn()
    edgeopt.compile(model, x)
    (entry,) = (cache_dir / "v1" / "models").rglob("*.entry")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    c = edgeopt.compile(model, x)
    assert c.report["cache"]["model"] == "miss"
    np.testing.assert_allclose(c(x[0].numpy()), model(*x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_exported_program_compiles_and_hits_like_the_module(cache_dir, tmp_path):
    model, x = small_cnn()
    torch.export.save(torch.export.export(model, x), tmp_path / "m.pt2")
    first = edgeopt.compile(torch.export.load(tmp_path / "m.pt2"), x)
    again = edgeopt.compile(torch.export.load(tmp_path / "m.pt2"), x)
    assert (first.report["cache"]["model"], again.report["cache"]["model"]) == ("miss", "hit")
    np.testing.assert_array_equal(again(x[0].numpy()), edgeopt.compile(model, x)(x[0].numpy()))
    # another export of the same model at other shapes is another program: another artifact
    big = (torch.randn(1, 3, 20, 20),)
    other = edgeopt.compile(torch.export.export(model, big), big)
    assert other.report["cache"]["model"] == "miss" and other.plan["inputs"][0]["shape"] == [1, 3, 20, 20]
    with pytest.raises(edgeopt.InputError, match="keeps the shapes it was exported with"):
        edgeopt.compile(torch.export.load(tmp_path / "m.pt2"), big)


def test_levels_and_target_options_are_in_the_key(cache_dir):
    from edgeopt.targets import get_target

    from edgeopt.cache.models import model_key

    model, x = small_cnn()
    ep = torch.export.export(model, x)
    opts = dict(opt_level=2, passes=None, disable=(), tuning_db=None, quantize=None, compress=None, target_options={})
    keys = {model_key(ep, x, get_target(t, **kw), **opts)
            for t, kw in [("x86-64", {"levels": ["v3", "v4"]}), ("x86-64", {"levels": ["v3", "znver4"]}),
                          ("host", {}), ("host", {"num_threads": 1})]}
    assert len(keys) == 4 and None not in keys


def test_a_users_registered_pass_is_keyed_by_its_source(tmp_path, monkeypatch):
    import importlib
    import sys

    from edgeopt.cache.fingerprint import pass_name_fingerprint
    from edgeopt.pipeline import _PASSES

    source = "from edgeopt.pipeline import Pass, register_pass\n@register_pass\nclass Mine(Pass):\n" \
             "    name = 'user_noop_pass'\n    def run(self, g):\n        return {VALUE}\n"
    (tmp_path / "user_pass_mod.py").write_text(source.replace("VALUE", "{}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("user_pass_mod")
        before = pass_name_fingerprint("user_noop_pass")
        (tmp_path / "user_pass_mod.py").write_text(source.replace("VALUE", "{'n': 1}"))
        assert pass_name_fingerprint("user_noop_pass") != before  # edited since: another key
        assert pass_name_fingerprint("dead_code_elimination") == ["dead_code_elimination"]  # edgeopt's own
        assert pass_name_fingerprint("no_such_pass") is None
    finally:
        _PASSES.pop("user_noop_pass", None)
        sys.modules.pop("user_pass_mod", None)


def test_custom_pass_objects_key_by_their_source_and_settings(cache_dir):
    from edgeopt.cache.fingerprint import pass_fingerprint
    from edgeopt.pipeline import get_pass

    p = get_pass("dead_code_elimination")
    fp = pass_fingerprint(p)
    assert fp[2] == "dead_code_elimination" and len(fp[3]) == 64
    p.target = object()  # set by run_passes: not a setting
    assert pass_fingerprint(p) == fp
    p.table = np.arange(5000.0)  # big arrays are keyed by their bytes, not a shortened repr
    fp_table = pass_fingerprint(p)
    p.table = np.arange(5000.0) + (np.arange(5000) == 2500)
    assert pass_fingerprint(p) != fp_table
    p.helper = object()  # a setting that is not plain data: not cacheable
    assert pass_fingerprint(p) is None
    model, x = small_cnn()
    c = edgeopt.compile(model, x, passes=[p])
    assert c.report["cache"]["model"] == "not cached"


def test_cache_entries_are_a_json_header_and_bytes(cache_dir):
    model, x = small_cnn()
    edgeopt.compile(model, x)
    entries = list(cache_dir.rglob("*.entry"))
    assert entries and all(isinstance(json.loads(e.read_bytes().split(b"\n", 1)[0]), dict) for e in entries)
    assert {p.suffix for p in cache_dir.rglob("*") if p.is_file()} == {".entry"}
