"""Error paths a user hits: unsupported ops, untraceable models, bad inputs, damaged artifacts, targets."""

from __future__ import annotations

import inspect
import io
import json
import zipfile

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.errors import ArtifactError, InputError, TargetError, UnsupportedModelError
from tests.conftest import compile_zoo


class TwoUnsupported(torch.nn.Module):
    def forward(self, x):
        a = torch.lgamma(x + 1)
        b = torch.erfinv(x.tanh())
        c = torch.lgamma(x + 2)
        return torch.relu(a + b + c)


def _line_of(cls, text: str) -> int:
    src, start = inspect.getsourcelines(cls)
    return start + next(i for i, ln in enumerate(src) if text in ln)


def test_unsupported_ops_listed_once_with_source_lines():
    with pytest.raises(UnsupportedModelError) as e:
        edgeopt.compile(TwoUnsupported().eval(), (torch.randn(2, 3),))
    err = e.value
    ops = {u.op: u for u in err.ops}
    assert any("lgamma" in k for k in ops) and any("erfinv" in k for k in ops)
    lgamma = next(u for k, u in ops.items() if "lgamma" in k)
    assert lgamma.count == 2
    msg = str(err)
    for text in ("torch.lgamma(x + 1)", "torch.erfinv(x.tanh())", "torch.lgamma(x + 2)"):
        assert f"test_errors.py:{_line_of(TwoUnsupported, text)}" in msg, msg
    assert "relu" not in [u.op for u in err.ops]


class ChainedUnsupported(torch.nn.Module):
    def forward(self, x):
        y = torch.erfinv(x.tanh())
        z = torch.lgamma(torch.relu(y) + 1)  # reads only what an unsupported op made
        return torch.erfinv((z * 2).tanh()) + 1


def test_unsupported_ops_after_an_unsupported_op_are_listed_too():
    with pytest.raises(UnsupportedModelError) as e:
        edgeopt.compile(ChainedUnsupported().eval(), (torch.randn(2, 8),))
    ops = {u.op: u for u in e.value.ops}
    assert set(ops) == {"aten::erfinv", "aten::lgamma"} and ops["aten::erfinv"].count == 2
    assert f"test_errors.py:{_line_of(ChainedUnsupported, 'torch.lgamma(')}" in str(e.value)


class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


def test_data_dependent_control_flow():
    with pytest.raises(UnsupportedModelError, match="data-dependent control flow.*torch.where"):
        edgeopt.compile(Branchy().eval(), (torch.randn(4),))


class WritesAtTensorPosition(torch.nn.Module):
    def forward(self, x, p):
        y = x.clone()
        y[:, p] = x[:, 0] * 2  # p a 0-d tensor: torch.export reads its value as a Python int
        return y


class WritesAtTensorPositions(torch.nn.Module):
    def forward(self, x, p):
        y = x.clone()
        y[:, p.reshape(1)] = (x[:, 0] * 2).unsqueeze(1)  # the rewrite the error suggests
        return y


def test_write_at_a_tensor_position_names_the_rewrite_that_compiles():
    x, p = torch.randn(3, 5, 2), torch.tensor(3)
    with pytest.raises(UnsupportedModelError, match=r"data-dependent.*y\[:, p.reshape\(1\)\] = v.unsqueeze\(1\)"):
        edgeopt.compile(WritesAtTensorPosition().eval(), (x, p))
    compiled = edgeopt.compile(WritesAtTensorPositions().eval(), (x, p))
    for at in (3, 0, -1):
        want = WritesAtTensorPosition()(x, torch.tensor(at)).numpy()
        np.testing.assert_array_equal(compiled(x.numpy(), np.array(at)), want)


class SlicesAtTensorPosition(torch.nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x, p):
        if self.how == "narrow":
            return x.narrow(1, p, 2) * 2
        return x[:, p:p + 2] * 2


@pytest.mark.parametrize("how, message", [
    ("narrow", r"a view at a position read from a tensor .*x.index_select\(dim, p \+ torch.arange\(n\)\)"),
    ("slice", r"aten::slice.Tensor \(with bounds read from a tensor at run time.*index_select"),
])
def test_slice_at_a_tensor_position_names_index_select(how, message):
    with pytest.raises(UnsupportedModelError, match=message):
        edgeopt.compile(SlicesAtTensorPosition(how).eval(), (torch.randn(3, 5), torch.tensor(1)))


class MutatesInput(torch.nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


def test_in_place_input_mutation():
    with pytest.raises(UnsupportedModelError, match="in place") as e:
        edgeopt.compile(MutatesInput().eval(), (torch.randn(4),))
    assert "out-of-place" in str(e.value)


def test_training_mode_batchnorm():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(UnsupportedModelError, match=r"model\.eval\(\)"):
        edgeopt.compile(m.train(), (torch.randn(1, 3, 8, 8),))


def test_dynamic_shapes_refused():
    with pytest.raises(UnsupportedModelError, match="static shape"):
        edgeopt.compile(torch.nn.ReLU(), (torch.randn(2, 3),), dynamic_shapes={"x": {0: "batch"}})


def test_unknown_target():
    with pytest.raises(TargetError, match="unknown target 'tpu'.*host"):
        edgeopt.compile(torch.nn.ReLU(), (torch.randn(2),), target="tpu")


def test_missing_toolchain_is_named_unless_only_the_description_is_wanted(monkeypatch):
    """A target whose compiler is missing is refused with what to install; ``check_toolchain=False`` (what
    ``prepare_qat`` asks for: only which instructions the target has) builds it anyway."""
    from edgeopt.targets import get_target

    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(TargetError, match="aarch64-linux-gnu-gcc"):
        get_target("arm", cpu="cortex-a76")
    assert get_target("arm", cpu="cortex-a76", check_toolchain=False).int8_dots()


@pytest.fixture(scope="module")
def small_cnn():
    return compile_zoo("resnet18")


def test_wrong_input_shape_dtype_count(small_cnn):
    _, inputs, compiled = small_cnn
    x = inputs[0].numpy()
    with pytest.raises(InputError, match=r"expected shape \(1, 3, 64, 64\), got \(1, 3, 32, 32\)"):
        compiled(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match="expected dtype float32, got float64"):
        compiled(x.astype(np.float64))
    with pytest.raises(InputError, match="takes 1 input"):
        compiled(x, x)
    with pytest.raises(InputError, match="missing input"):
        compiled()
    with pytest.raises(InputError, match="unknown input 'y'"):
        compiled(y=x)


def _rewrite(blob: bytes, change) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(blob))
    members = {n: src.read(n) for n in src.namelist()}
    change(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return out.getvalue()


def _manifest_edit(edit):
    def change(members):
        m = json.loads(members["manifest.json"])
        edit(m)
        members["manifest.json"] = json.dumps(m).encode()

    return change


def _flip_weight_byte(members):
    w = bytearray(members["weights.safetensors"])
    w[-1] ^= 0xFF
    members["weights.safetensors"] = bytes(w)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a zip file, or truncated"),
    (lambda b: b"hello", "not a zip file"),
    (lambda b: _rewrite(b, _flip_weight_byte), "sha256 of member 'weights.safetensors' does not match"),
    (lambda b: _rewrite(b, lambda m: m.pop("plan.json")), "missing member 'plan.json'"),
    (lambda b: _rewrite(b, lambda m: m.update({"evil.pkl": b"x"})), "does not list"),
    (lambda b: _rewrite(b, _manifest_edit(lambda m: m.update(format_version=99))), "format version 99"),
    (lambda b: _rewrite(b, _manifest_edit(lambda m: m.update(tvm_version="0.19.0"))), "compiled with TVM 0.19"),
    (lambda b: _rewrite(b, _manifest_edit(lambda m: m["target"].update(cpu_features=["avx512f", "amx-fp8"]))),
     "which this CPU lacks"),
    (lambda b: _rewrite(b, _manifest_edit(lambda m: m["target"].update(arch="aarch64"))), "compiled for aarch64"),
])
def test_damaged_artifacts_refused(small_cnn, tmp_path, damage, message):
    _, _, compiled = small_cnn
    path = tmp_path / "m.edgeopt"
    compiled.save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(").replace(")", r"\)")):
        edgeopt.load(str(path))


def test_missing_artifact_file(tmp_path):
    with pytest.raises(ArtifactError, match="cannot open"):
        edgeopt.load(str(tmp_path / "nope.edgeopt"))
