"""Unstructured magnitude pruning: the pass zeroes the smallest weights, the artifact stores them sparse (and
loads them back exactly), and linear layers run as sparse kernels only where that was measured to be faster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.errors import ArtifactError
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.runtime import sparse_weights


def _mlp(hidden=256, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 64)).eval()


def test_prune_magnitude_zeroes_the_smallest():
    model = _mlp()
    g = from_torch(model, (torch.randn(4, 64),))
    before = {k: v.copy() for k, v in g.constants.items()}
    stats = get_pass("prune_magnitude", 0.75, ("0",)).run(g)
    assert stats["layers"] == ["0"] and stats["sparsity"] == pytest.approx(0.75, abs=1e-3)
    w0 = next(k for k, v in g.param_names.items() if v == "0.weight")
    w2 = next(k for k, v in g.param_names.items() if v == "2.weight")
    kept = g.constants[w0] != 0
    assert np.abs(before[w0][~kept]).max() <= np.abs(before[w0][kept]).min()  # the smallest went
    np.testing.assert_array_equal(g.constants[w0][kept], before[w0][kept])
    np.testing.assert_array_equal(g.constants[w2], before[w2])  # not matched by the layer globs


def test_sparse_weights_roundtrip_and_refusals():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 128)).astype(np.float32) * (rng.random((64, 128)) < 0.2)
    q = (w * 10).astype(np.int8)
    small = rng.standard_normal((8, 8)).astype(np.float32) * 0
    dense, tensors, spec = sparse_weights.encode({"w": w, "q": q, "small": small, "full": w + 1})
    assert set(spec) == {"w", "q"} and set(dense) == {"small", "full"}
    stored = sum(a.nbytes for a in tensors.values())
    assert stored < 0.3 * (w.nbytes + q.nbytes) + 2048
    out = sparse_weights.decode(dense, tensors, spec, np.empty, "test")
    np.testing.assert_array_equal(out["w"], w)
    np.testing.assert_array_equal(out["q"], q)
    bad = dict(tensors, **{"w.values": tensors["w.values"][:-1]})
    with pytest.raises(ArtifactError, match="values for"):
        sparse_weights.decode(dense, bad, spec, np.empty, "test")
    with pytest.raises(ArtifactError, match="missing"):
        sparse_weights.decode(dense, {}, spec, np.empty, "test")
    huge = {"w": {"dtype": "f32", "shape": [2 ** 40, 2 ** 40]}}  # a tiny member asking for a vast weight
    with pytest.raises(ArtifactError, match="more than"):
        sparse_weights.decode({}, {"w.mask": tensors["w.mask"], "w.values": tensors["w.values"]}, huge, np.empty, "t")


def test_compiled_artifact_is_smaller_and_loads_the_same(tmp_path):
    model = _mlp(hidden=512)
    x = torch.randn(4, 64)
    plain = edgeopt.compile(model, (x,))
    sparse = edgeopt.compile(model, (x,), compress=edgeopt.Compress(sparsity=0.8))
    assert sparse.report["sparse_weights"]["count"] == 2
    assert sparse.report["sparse_weights"]["stored_bytes"] < 0.3 * sparse.report["sparse_weights"]["dense_bytes"]
    plain.save(tmp_path / "plain.edgeopt")
    sparse.save(tmp_path / "sparse.edgeopt")
    size = (tmp_path / "sparse.edgeopt").stat().st_size
    assert size < 0.4 * (tmp_path / "plain.edgeopt").stat().st_size
    loaded = edgeopt.load(str(tmp_path / "sparse.edgeopt"))
    np.testing.assert_array_equal(loaded(x.numpy()), sparse(x.numpy()))
    # the same numbers as the dense model with the same zeroed weights
    g = from_torch(model, (x,))
    get_pass("prune_magnitude", 0.8).run(g)
    np.testing.assert_allclose(sparse(x.numpy()), interpret(g, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    # the C++ runner's flat export makes the weights dense again
    from edgeopt.cxx import export_flat

    out = export_flat(tmp_path / "sparse.edgeopt", tmp_path / "flat")
    assert (out / "weights.bin").stat().st_size >= 0.9 * sparse.report["weight_bytes"]


def test_tampered_sparse_member_is_refused(tmp_path):
    """Rehashed (so the hashes pass), a sparse weight with a value too few, or the member missing, is refused."""
    from edgeopt.runtime import safetensors_io
    from tests.zip_craft import artifact, manifest_of, members_of

    model = _mlp(hidden=512)
    blob = edgeopt.compile(model, (torch.randn(4, 64),), compress=edgeopt.Compress(sparsity=0.8))._artifact
    members = members_of(blob)
    tensors = safetensors_io.loads(members[sparse_weights.MEMBER])
    name = next(k for k in tensors if k.endswith(".values"))
    short = dict(tensors, **{name: tensors[name][:-1]})
    bad = artifact({**members, sparse_weights.MEMBER: safetensors_io.dumps(short)}, manifest_of(members))
    with pytest.raises(ArtifactError, match="values for"):
        edgeopt.runtime.Model(bad)
    gone = {k: v for k, v in members.items() if k != sparse_weights.MEMBER}
    manifest = manifest_of(members)
    with pytest.raises(ArtifactError, match="sparse_weights"):
        edgeopt.runtime.Model(artifact(gone, {**manifest, "members": {
            k: v for k, v in manifest["members"].items() if k != sparse_weights.MEMBER}}))


def test_sparse_kernel_only_where_measured_faster():
    rng = np.random.default_rng(0)
    model = _mlp(hidden=512)
    with torch.no_grad():
        for lin, keep in ((model[0], 0.02), (model[2], 0.3)):
            lin.weight.mul_(torch.from_numpy((rng.random(tuple(lin.weight.shape)) < keep).astype(np.float32)))
    for rows, want in ((32, {"0"}), (1, {"0"})):
        x = torch.randn(rows, 64)
        g = from_torch(model, (x,))
        ref = interpret(g, [x.numpy()])[0]
        stats = get_pass("sparse_linear").run(g)
        verify(g)
        assert {r["layer"] for r in stats["sparse_layers"]} == want  # 98% zeros: yes; 70%: dense
        assert {r["layer"] for r in stats["dense_layers"]} == {"2"}
        assert g.op_counts()["sparse_linear"] == 1
        np.testing.assert_allclose(interpret(g, [x.numpy()])[0], ref, rtol=1e-5, atol=1e-5)
    x = torch.randn(8, 64)
    compiled = edgeopt.compile(model, (x,), compress=edgeopt.Compress(sparsity=0.0001))
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x.numpy()), model(x).numpy(), rtol=1e-4, atol=1e-4)
    assert compiled.graph.op_counts().get("sparse_linear") == 1


def test_sparse_kernel_not_on_gpu_targets():
    from edgeopt.targets import get_target

    model = _mlp()
    with torch.no_grad():
        model[0].weight.mul_(0)
    g = from_torch(model, (torch.randn(8, 64),))
    p = get_pass("sparse_linear")
    p.target = get_target("vulkan")
    assert p.run(g)["sparse_layers"] == [] and "sparse_linear" not in g.op_counts()
