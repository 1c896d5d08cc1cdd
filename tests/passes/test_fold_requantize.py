"""fold_requantize: an integer kernel's dequantize -> bias -> ReLU/clamp -> quantize chain as one requantize."""

from __future__ import annotations

import numpy as np
import torch

import edgeopt
from edgeopt.ir import Graph, TensorType, interpret, verify
from edgeopt.pipeline import get_pass

RNG = np.random.default_rng(3)


def _chain(act: str | None = "clamp", extra_reader: bool = False) -> Graph:
    """conv2d on u8 x i8 -> i32, then the float epilogue fold_quantized leaves (per-channel scale, zero point)."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 6, 6), "u8"))
    w = g.add_const(RNG.integers(-127, 128, (8, 4, 3, 3)).astype(np.int8), "w")
    acc = g.add("conv2d", [x, w], {"padding": [1, 1, 1, 1]}, name="acc")
    s = g.add_const(RNG.uniform(2e-4, 6e-4, (1, 8, 1, 1)).astype(np.float32), "s")
    zp = g.add_const(RNG.integers(-2000, 2000, (1, 8, 1, 1)).astype(np.int32), "zp")
    y = g.add("dequantize", [acc, s, zp], name="dq")
    y = g.add("add", [y, g.add_const(RNG.uniform(-1, 1, (1, 8, 1, 1)).astype(np.float32), "b")], name="biased")
    if act == "clamp":
        y = g.add("clamp", [y], {"min": 0.0, "max": 6.0}, name="act")
    elif act == "relu":
        y = g.add("relu", [y], name="act")
    q = g.add("quantize", [y, g.add_const(np.float32(0.03), "so"), g.add_const(np.int32(0), "zo")],
              {"dtype": "u8"}, name="act_q")
    g.set_outputs([q, y] if extra_reader else [q])
    verify(g)
    return g


def g_zero_point(g: Graph):
    return g.const_values["zp"]


def _fold(g: Graph) -> tuple[Graph, dict]:
    after = g.clone()
    stats = get_pass("fold_requantize").run(after)
    verify(after)
    return after, stats


def _data():
    return [RNG.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)]


def test_the_chain_becomes_one_requantize_with_the_activation_as_integer_bounds():
    g = _chain("clamp")
    after, stats = _fold(g)
    assert stats == {"folded": 1}
    assert [n.op for n in after.nodes] == ["conv2d", "requantize"]
    rq = after.nodes[-1]
    assert rq.attrs["min"] == 0 and rq.attrs["max"] == int(np.rint(6.0 / np.float32(0.03)))  # ReLU6 -> [0, 200]
    assert rq.attrs["scale"] == np.float32(0.03) and rq.attrs["zero_point"] == 0
    assert rq.outputs[0].name == "act_q"  # compare() reads "<name>_q" back as <name>
    x = _data()
    before, got = interpret(g, x)[0], interpret(after, x)[0]
    diff = np.abs(before.astype(int) - got.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.995, (diff.max(), (diff == 0).mean())
    assert rq.inputs[3] is g_zero_point(after)  # the zero point stays an i32 subtracted from the sums
    assert got.max() <= 200 and (got == 0).any()


def test_relu_and_no_activation_fold_too():
    for act in ("relu", None):
        g = _chain(act)
        after, stats = _fold(g)
        assert stats == {"folded": 1}, act
        x = _data()
        assert np.abs(interpret(g, x)[0].astype(int) - interpret(after, x)[0].astype(int)).max() <= 1


def test_a_value_read_elsewhere_keeps_its_chain():
    after, stats = _fold(_chain("clamp", extra_reader=True))
    assert stats == {"folded": 0}
    assert "requantize" not in [n.op for n in after.nodes]


def test_compiled_int8_cnn_uses_requantize_and_matches_interpreter_and_torch():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU6(),
                            torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16), torch.nn.ReLU6(),
                            torch.nn.Conv2d(16, 32, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 8, 1)).eval()
    x = torch.randn(1, 3, 32, 32)
    c = edgeopt.compile(m, (x,), quantize="int8", calibration_data=[torch.randn(1, 3, 32, 32) for _ in range(4)])
    assert c.report["pass_stats"]["fold_requantize"]["folded"] == 2  # the depthwise and the 1x1 layers' outputs
    assert sum("requantize" in k["ops"] for k in c.report["kernels"]) == 2
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref = m(x).numpy()
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.995, cos
    rows = c.compare(m, [x])
    assert len([r for r in rows if r["op"] == "conv2d"]) == 4 and min(r["cosine"] for r in rows) > 0.995
    # ``edgeopt compare`` reads the kernels' u8 outputs back as the float values they stand for
    from edgeopt.commands.compare_cmd import quantized_outputs

    outs = quantized_outputs(c._artifact, c.ir)
    assert {k: v[2] for k, v in outs.items()} == {"clamp_q": "clamp", "clamp_1_q": "clamp_1", "relu_q": "relu"}
    assert all((np.asarray(v[0]) > 0).all() for v in outs.values())
    assert np.asarray(outs["clamp_q"][0]).size == 16  # the depthwise conv's input: a scale per channel
