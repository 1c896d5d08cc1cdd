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
    assert store.get("kernels", key) == b"x" * 100 and store.meta("kernels", key) == {"name": "k"}
    data_path = next(tmp_path.rglob(f"{key}.bin"))
    data_path.write_bytes(b"y" * 100)  # damaged: a miss, and the entry goes
    with caplog.at_level(logging.WARNING, logger="edgeopt.cache"):
        assert store.get("kernels", key) is None
    assert "damaged" in caplog.text and not data_path.exists()
    keys = [digest(i) for i in range(5)]
    for k in keys:  # 5 x 4000 bytes over a 10000-byte limit: the least recently used go
        store.put("models", k, bytes(4000))
        store.get("models", keys[0])  # keeps the first one recently used
    left = {k for k in keys if store.get("models", k) is not None}
    assert keys[0] in left and keys[-1] in left and len(left) == 2
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


@pytest.mark.parametrize("change", ["weight", "option", "target_option", "input_shape", "quantize"])
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
    (entry,) = (cache_dir / "v1" / "models").rglob("*.bin")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    c = edgeopt.compile(model, x)
    assert c.report["cache"]["model"] == "miss"
    np.testing.assert_allclose(c(x[0].numpy()), model(*x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_exported_program_compiles_and_hits_like_the_module(cache_dir, tmp_path):
    model, x = small_cnn()
    ep = torch.export.export(model, x)
    torch.export.save(ep, tmp_path / "m.pt2")
    first = edgeopt.compile(model, x)
    loaded = edgeopt.compile(torch.export.load(tmp_path / "m.pt2"), x)
    assert loaded.report["cache"]["model"] in ("hit", "miss")
    np.testing.assert_array_equal(loaded(x[0].numpy()), first(x[0].numpy()))


def test_custom_pass_objects_key_by_their_source_and_settings(cache_dir):
    from edgeopt.cache.fingerprint import pass_fingerprint
    from edgeopt.pipeline import get_pass

    p = get_pass("dead_code_elimination")
    fp = pass_fingerprint(p)
    assert fp[2] == "dead_code_elimination" and len(fp[3]) == 64
    p.target = object()  # set by run_passes: not a setting
    assert pass_fingerprint(p) == fp
    p.helper = object()  # a setting with no stable text: not cacheable
    assert pass_fingerprint(p) is None
    model, x = small_cnn()
    c = edgeopt.compile(model, x, passes=[p])
    assert c.report["cache"]["model"] == "not cached"


def test_cache_entries_are_json_and_bytes_only(cache_dir):
    model, x = small_cnn()
    edgeopt.compile(model, x)
    records = list(cache_dir.rglob("*.json"))
    assert records and all(isinstance(json.loads(r.read_text()), dict) for r in records)
    assert {p.suffix for p in cache_dir.rglob("*") if p.is_file()} == {".json", ".bin"}
