"""7-bit weights for AVX2 (``QuantConfig.reduce_range``): on a CPU without VNNI the integer kernels run on
``vpmaddubsw`` (exact only for |w| <= 64), chosen layer by layer from the weights actually stored.

The builds target ``x86-64-v3`` (AVX2 + FMA, no VNNI), which every x86 machine CI runs on can execute.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

import edgeopt
from edgeopt.ir import interpret
from edgeopt.quant import QuantConfig
from edgeopt.quant.config import QuantizationError
from edgeopt.quant.weights import REDUCED_QMAX, symmetric_int8, weight_qmax

AVX2 = "x86-64-v3"
needs_avx2 = pytest.mark.skipif("avx2" not in get_target("host").features, reason="the host CPU has no AVX2")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 1, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 1, 1),
                               torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 1), torch.nn.Flatten(),
                               torch.nn.Linear(32 * 8 * 8, 24)).eval()


def _compile(target: str = AVX2, **cfg):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 8, 8)
    cal = [torch.randn(1, 3, 8, 8) for _ in range(4)]
    c = edgeopt.compile(_net(), (x,), target=target, quantize=QuantConfig(mode="int8", **cfg), calibration_data=cal)
    return c, x


def _int8_weights(c) -> list[np.ndarray]:
    """The compiled graph's int8 constants: the integer layers' weights, packed in the dot product's tiles."""
    return [a for a in c.graph.constants.values() if a.dtype == np.int8]


def _instructions(c) -> list[str]:
    """The int8 dot product each integer kernel's schedule names (``int8-tile(...,avx2-ubsw,epilogue)``)."""
    return [re.search(r",(vnni512|vnni256|avx512-ubsw|avx2-ubsw|avx2|sdot)[,)]", k["schedule"]).group(1)
            for k in c.report["kernels"] if k["schedule"].startswith("int8-tile(")]


def _cosine(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_weight_levels_follow_the_target():
    assert weight_qmax("auto", get_target(AVX2)) == REDUCED_QMAX == 64  # AVX2, no VNNI: vpmaddubsw
    assert weight_qmax("auto", get_target("x86", cpu="znver4")) == 127  # VNNI: exact for any int8 weight
    assert weight_qmax("auto", get_target("x86", cpu="alderlake")) == 127  # AVX-VNNI
    assert weight_qmax("auto", get_target("arm", cpu="cortex-a76")) == 127  # SDOT
    assert weight_qmax("auto", None) == 127
    assert weight_qmax(True, get_target("x86", cpu="znver4")) == 64
    assert weight_qmax(False, get_target(AVX2)) == 127


def test_symmetric_int8_on_seven_bits():
    w = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    q, s = symmetric_int8(w, (1,), qmax=64)
    assert np.abs(q).max() == 64 and np.all(np.abs(q).max(axis=1) == 64)  # each channel's max on the top level
    np.testing.assert_allclose(q * s, w, atol=float(s.max()) / 2 + 1e-7)


def test_reduce_range_is_validated_and_reported():
    with pytest.raises(QuantizationError, match="reduce_range"):
        QuantConfig(reduce_range="yes")
    assert "reduce_range" not in QuantConfig().describe()
    assert QuantConfig(reduce_range=False).describe()["reduce_range"] is False


@needs_avx2
def test_avx2_build_uses_vpmaddubsw_on_seven_bit_weights():
    c, x = _compile()
    weights = _int8_weights(c)
    assert weights and all(np.abs(w.astype(np.int16)).max() <= 64 for w in weights)
    assert any(np.abs(w.astype(np.int16)).max() == 64 for w in weights)
    tiles = _instructions(c)
    assert tiles and set(tiles) == {"avx2-ubsw"}, tiles
    q = c.report["quantization"]
    assert q["weight_levels"] == 64 and set(q["int8_instructions"]) == {"avx2-ubsw"}
    assert q["gptq_layers"] == 3  # weight_rounding="auto": 7-bit levels -> GPTQ
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)  # the kernel is exact
    with torch.no_grad():
        assert _cosine(_net()(x).numpy(), got) > 0.99


@pytest.mark.skipif("avx512bw" not in get_target("host").features, reason="the host CPU has no AVX-512 BW")
def test_avx512_without_vnni_uses_vpmaddubsw_on_zmm():
    """x86-64-v4 (AVX-512 without VNNI, Skylake-SP): the layers with 16-lane tiles run vpmaddubsw on zmm registers, the
    24-output head its ymm form (8 lanes divide 24, 16 do not); the same 7-bit weights, exactly the interpreter's."""
    c, x = _compile("x86-64-v4")
    assert sorted(_instructions(c)) == ["avx2-ubsw", "avx512-ubsw", "avx512-ubsw"], _instructions(c)
    q = c.report["quantization"]
    assert q["weight_levels"] == 64 and q["int8_instructions"] == {"avx512-ubsw": 2, "avx2-ubsw": 1}
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        assert _cosine(_net()(x).numpy(), got) > 0.99


@needs_avx2
def test_reduce_range_false_keeps_eight_bits_on_vpmaddwd():
    c, x = _compile(reduce_range=False)
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in _int8_weights(c)) == 127
    assert set(_instructions(c)) == {"avx2"}
    assert c.report["quantization"]["weight_levels"] == 127
    assert c.report["quantization"]["gptq_layers"] == 0  # 8 bits: the nearest levels
    np.testing.assert_allclose(c(x.numpy()), interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)


@needs_avx2
def test_a_layer_with_eight_bit_weights_falls_back_to_vpmaddwd():
    """A QAT-learned weight grid keeps its 127 levels: that one layer runs on the exact vpmaddwd path, the others
    on vpmaddubsw (the layout pass checks each layer's stored weights)."""
    w = _net()[2].weight.detach().numpy()
    learned = np.abs(w).max(axis=(1, 2, 3)) / 127
    c, x = _compile(weight_scales={"2": learned})
    assert sorted(_instructions(c)) == ["avx2", "avx2-ubsw", "avx2-ubsw"], _instructions(c)
    assert c.report["quantization"]["int8_instructions"] == {"avx2-ubsw": 2, "avx2": 1}
    np.testing.assert_allclose(c(x.numpy()), interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)


@needs_avx2
def test_dynamic_int8_on_avx2():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 32)).eval()
    x = torch.randn(6, 64)
    c = edgeopt.compile(m, (x,), target=AVX2, quantize="int8-dynamic")
    assert c.report["quantization"]["weight_levels"] == 64
    assert set(_instructions(c)) == {"avx2-ubsw"}, _instructions(c)
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        assert _cosine(m(x).numpy(), got) > 0.995


@needs_avx2
def test_depthwise_convs_keep_eight_bit_weights():
    """A depthwise conv runs as plain vector code on any CPU, so 7 bits would cost its accuracy for no speed: its
    weights keep 127 levels while the dense convs around it get 64."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 1, 1), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 32, 1)).eval()
    x = torch.randn(1, 3, 8, 8)
    c = edgeopt.compile(m, (x,), target=AVX2, quantize="int8", calibration_data=[torch.randn(1, 3, 8, 8)] * 2)
    levels = sorted(int(np.abs(w.astype(np.int16)).max()) for w in _int8_weights(c))
    assert levels == [64, 127], levels  # the 1x1 conv on vpmaddubsw, the depthwise one on 8 bits
    assert set(_instructions(c)) == {"avx2-ubsw"}
    np.testing.assert_allclose(c(x.numpy()), interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)


@needs_avx2
def test_verifier_refuses_weights_past_the_instructions_range():
    """The IR names each integer layer's instruction (``int8_dot``); a constant weight it would saturate on is a
    verification error, wherever it came from (here: one weight of a compiled graph set to 65)."""
    from edgeopt.ir import VerificationError, verify

    c, _ = _compile()
    named = [m.attrs["int8_dot"] for n in c.graph.nodes for m in (n.body.nodes if n.body is not None else [n])
             if m.attrs.get("int8_dot")]
    assert named and set(named) == {"avx2-ubsw"}
    verify(c.graph)
    name = next(k for k, a in c.graph.constants.items() if a.dtype == np.int8)
    c.graph.constants[name] = c.graph.constants[name].copy()
    c.graph.constants[name].flat[0] = 65
    with pytest.raises(VerificationError, match="exact for weights within"):
        verify(c.graph)


def test_int8_dot_attribute_is_checked_against_the_layout():
    from edgeopt.ir.ops._common import check_int8_dot
    from edgeopt.ir.registry import OpError
    from edgeopt.ir.types import TensorType

    x, w = TensorType((2, 16), "u8"), TensorType((2, 4, 8, 4), "i8")
    check_int8_dot("linear", {"int8_dot": "avx2-ubsw"}, x, w, (8, 4))
    check_int8_dot("linear", {"int8_dot": ""}, x, w, (0, 0))
    with pytest.raises(OpError, match="unknown int8_dot"):
        check_int8_dot("linear", {"int8_dot": "avx3"}, x, w, (8, 4))
    with pytest.raises(OpError, match=r"\[8, 4\] tiles"):
        check_int8_dot("linear", {"int8_dot": "avx2-ubsw"}, x, w, (8, 2))
    with pytest.raises(OpError, match="i8 activations"):
        check_int8_dot("linear", {"int8_dot": "sdot"}, x, w, (4, 4))


@needs_avx2
def test_only_layers_an_avx2_instruction_runs_get_seven_bits():
    """A 10-class head (10 outputs: no 8-lane tile fits) stays plain vector code, so it keeps 127 levels; an
    int8-dynamic model's embedding table (gathered, never a dot product) too."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = torch.nn.Embedding(100, 32), torch.nn.Linear(32, 128)
            self.head = torch.nn.Linear(128, 10)

        def forward(self, ids):
            return self.head(torch.relu(self.fc(self.emb(ids))))

    m, ids = Net().eval(), torch.randint(0, 100, (1, 6))
    c = edgeopt.compile(m, (ids,), target=AVX2, quantize="int8-dynamic")
    by_shape = {a.size: int(np.abs(a.astype(np.int16)).max()) for a in _int8_weights(c)}
    assert by_shape == {100 * 32: 127, 32 * 128: 64, 128 * 10: 127}, by_shape
    assert c.report["quantization"]["int8_instructions"] == {"avx2-ubsw": 1}
    np.testing.assert_allclose(c(ids.numpy()), interpret(c.graph, [ids.numpy()])[0], rtol=1e-4, atol=1e-4)


@needs_avx2
def test_multi_level_artifact_reports_each_levels_weights(tmp_path):
    """One artifact for AVX2 and AVX-512 VNNI CPUs: each level is quantized for its own instructions (7-bit weights
    on vpmaddubsw, 8-bit on vpdpbusd), the report says so per level, and the loaded artifact runs whichever this CPU
    takes."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 8, 8)
    c = edgeopt.compile(_net(), (x,), target="x86-64", levels=["v3", "znver4"], quantize="int8",
                        calibration_data=[torch.randn(1, 3, 8, 8) for _ in range(4)])
    v3, zen4 = c.report["levels"]
    assert (v3["weight_levels"], v3["int8_instructions"]) == (64, {"avx2-ubsw": 3}), v3
    assert zen4["weight_levels"] == 127 and set(zen4["int8_instructions"]) <= {"vnni512", "vnni256"}, zen4
    c.save(tmp_path / "m.edgeopt")
    got = edgeopt.load(tmp_path / "m.edgeopt")(x.numpy())
    with torch.no_grad():
        assert _cosine(_net()(x).numpy(), got) > 0.99
