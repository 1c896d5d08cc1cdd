"""to_fp16: Before/Expected IR, kept-f32 ops, saturated weights, the f32 boundary, numerics against the f32 graph,
its place in the pipeline, and the f32 accumulation and f32 math of the f16 lowering rules."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgeopt.errors import PassError
from edgeopt.ir import Graph, interpret, parse_graph, print_graph
from edgeopt.pipeline import PassOrderWarning, default_pipeline, get_pass
from edgeopt.testing import run_pass

NAME = "to_fp16"
_INLINE = re.compile(r"^(\s*const %\S+: \S+) = .*$", re.MULTILINE)  # inline constant values: compared as arrays
F16_TOL = 2e-3  # max error relative to the output's scale: f16 has an 11-bit significand (4.9e-4 per rounding)


BEFORE = """graph main(%x: f32[2,4]) {
  const %w: f32[8,4]
  const %b: f32[8]
  const %fill: f32[] = -3.4028234663852886e+38
  %y: f32[2,8] = linear(%x, %w, %b) {"weight_layout": "oi"}
  %m: f32[2,8] = maximum(%y, %fill)
  %z: f32[2,8] = softmax(%m) {"axis": -1}
  %g: f32[2,8] = gelu(%z) {"approximate": "none"}
  return %g, %y
}
"""
EXPECTED = """graph main(%x: f32[2,4]) {
  const %w: f16[8,4]
  const %b: f16[8]
  const %fill: f16[] = -65504.0
  %x_f16: f16[2,4] = cast(%x) {"dtype": "f16"}
  %y: f16[2,8] = linear(%x_f16, %w, %b) {"weight_layout": "oi"}
  %m: f16[2,8] = maximum(%y, %fill)
  %m_f32: f32[2,8] = cast(%m) {"dtype": "f32"}
  %z: f32[2,8] = softmax(%m_f32) {"axis": -1}
  %z_f16: f16[2,8] = cast(%z) {"dtype": "f16"}
  %g: f16[2,8] = gelu(%z_f16) {"approximate": "none"}
  %g_f32: f32[2,8] = cast(%g) {"dtype": "f32"}
  %y_f32: f32[2,8] = cast(%y) {"dtype": "f32"}
  return %g_f32, %y_f32
}
"""


def _graph() -> Graph:
    rng = np.random.default_rng(0)
    return parse_graph(BEFORE, {"w": rng.standard_normal((8, 4)).astype(np.float32),
                                "b": rng.standard_normal(8).astype(np.float32)})


def test_before_expected():
    g = _graph()
    stats = run_pass(NAME, g)
    assert _INLINE.sub(r"\1", print_graph(g)) == _INLINE.sub(r"\1", EXPECTED)
    assert float(g.constants["fill"]) == -65504.0
    assert stats == {"weights": 3, "saturated": 1, "kept_f32": 1}
    assert all(a.dtype == np.float16 for a in g.constants.values())


def test_numerics_against_the_f32_graph():
    g = _graph()
    before = g.clone()
    run_pass(NAME, g)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    for want, got in zip(interpret(before, [x]), interpret(g, [x])):
        assert got.dtype == np.float32  # the boundary stays f32
        assert np.abs(got - want).max() / np.abs(want).max() < F16_TOL


def test_integer_paths_and_int_to_float_casts():
    g = parse_graph("""graph main(%ids: i64[1,3], %mask: i64[1,3]) {
  const %table: f32[5,2]
  %e: f32[1,3,2] = take(%table, %ids) {"axis": 0}
  %mf: f32[1,3] = cast(%mask) {"dtype": "f32"}
  %s: f32[1,3] = sum(%e) {"axes": [2], "keepdims": false}
  %y: f32[1,3] = mul(%s, %mf)
  return %y, %ids
}
""", {"table": np.arange(10, dtype=np.float32).reshape(5, 2)})
    run_pass(NAME, g)
    types = {o.name: o.type.text() for n in g.nodes for o in n.outputs}
    assert types["e"] == "f16[1,3,2]" and types["mf"] == "f16[1,3]"  # the cast to f32 became a cast to f16
    assert types["s"] == "f32[1,3]" and "e_f32" in types  # sum is kept in f32
    assert [v.type.text() for v in g.outputs] == ["f32[1,3]", "i64[1,3]"]


def test_refuses_fused_nodes():
    g = parse_graph("""graph main(%x: f32[4]) {
  %a: f32[4] = relu(%x)
  %b: f32[4] = neg(%a)
  return %b
}
""")
    get_pass("fuse_elementwise").run(g)
    assert any(n.body is not None for n in g.nodes)
    with pytest.raises(PassError, match="before fuse_epilogue"), pytest.warns(PassOrderWarning, match="unfused"):
        run_pass(NAME, g)


def test_place_in_the_pipeline():
    names = default_pipeline(2, "vulkan", "fp16")
    assert names.index("fuse_attention") < names.index(NAME) < names.index("fuse_epilogue")
    assert names.index("fold_batch_norm") < names.index(NAME)
    assert NAME not in default_pipeline(2, "vulkan") and default_pipeline(1, "cuda", "fp16")[-1] == NAME


def test_minilm_keeps_its_attention_ops():
    """The casts must not hide the attention pattern: fuse_attention runs first."""
    from edgeopt.targets import get_target

    from edgeopt.api import optimize_graph
    from edgeopt.frontend import from_torch
    from tests.models.zoo import build

    model, inputs = build("minilm", small=True)
    g = from_torch(model, inputs)
    records = optimize_graph(g, get_target("vulkan", precision="fp16"))
    stats = {r["name"]: r["stats"] for r in records}
    assert stats[NAME]["kept_f32"] == 6 * 3 + 1  # per layer: attention and two layer norms; the embeddings' norm
    assert stats["fuse_attention"]["fused"] == 6


def test_f16_rules_accumulate_and_do_math_in_f32():
    import tvm  # noqa: F401
    from tvm import te

    from edgeopt.ir.types import TensorType
    from edgeopt.lower.rules import get_rule

    x, w = te.placeholder((2, 64), "float16", "x"), te.placeholder((8, 64), "float16", "w")
    y = get_rule("linear")([x, w], {"weight_layout": "oi"}, TensorType((2, 8), "f16"), "linear")
    assert y.dtype == "float16" and y.op.input_tensors[0].dtype == "float32"  # an f32 sum, stored as f16
    body = str(y.op.input_tensors[0].op.body[0])
    assert body.count('T.Cast("float32"') == 2  # both factors widened: the product is exact
    g = get_rule("gelu")([x], {"approximate": "none"}, TensorType((2, 64), "f16"), "gelu")
    script = te.create_prim_func([x, g]).script()
    assert g.dtype == "float16" and 'T.Cast("float32"' in script


def test_inputs_and_weights_returned_as_outputs():
    g = parse_graph("""graph main(%x: f32[2]) {
  const %c: f32[2] = [1.0001, 2.0]
  %y: f32[2] = add(%x, %c)
  return %y, %x, %c
}
""")
    run_pass(NAME, g)
    y, x, c = g.outputs
    assert x is g.inputs[0]  # untouched: no f16 round trip
    assert [v.type.dtype for v in g.outputs] == ["f32", "f32", "f32"]
    out = interpret(g, [np.array([1.0001, 3.0], np.float32)])
    assert out[1][0] == np.float32(1.0001) and out[2].dtype == np.float32


def test_precision_pass_cannot_be_left_out():
    from edgeopt.pipeline import resolve

    names = [p.name for p in resolve(["constant_folding", "fuse_epilogue"], (), 2, "cuda", (), "fp16")]
    assert names == ["constant_folding", NAME, "fuse_epilogue"]
    for fusion in (["fuse_elementwise"], ["fuse_reductions", "fuse_epilogue"]):  # before the first grouping pass
        assert [p.name for p in resolve(fusion, (), 2, "cuda", (), "fp16")] == [NAME, *fusion]
    assert [p.name for p in resolve(["constant_folding"], (), 2, "cuda", (), "fp16")] == ["constant_folding", NAME]
    with pytest.raises(PassError, match="cannot be disabled: precision='fp16'"):
        resolve(None, (NAME,), 2, "cuda", (), "fp16")


def test_a_kept_op_output_is_not_rounded_to_f16():
    g = parse_graph("""graph main(%x: f32[2,4]) {
  %y: f32[2,4] = softmax(%x) {"axis": -1}
  return %y
}
""")
    run_pass(NAME, g)
    (y,) = g.outputs
    assert y.producer.op == "softmax"  # its f32 result, not a cast back from f16


QUANTIZED = """graph main(%x: f32[2,16]) {
  const %w_q: i8[8,16]
  const %w_scale: f32[8,1]
  const %x_scale: f32[] = 0.05
  const %x_zero: i32[] = 128
  const %levels: f32[] = 127.0
  %x_q: u8[2,16] = quantize(%x, %x_scale, %x_zero) {"dtype": "u8"}
  %x_dq: f32[2,16] = dequantize(%x_q, %x_scale, %x_zero)
  %w: f32[8,16] = dequantize(%w_q, %w_scale)
  %y: f32[2,8] = linear(%x_dq, %w)
  %a: f32[2,1] = max(%y) {"axes": [-1], "keepdims": true}
  %s: f32[2,1] = div(%a, %levels)
  %r: u8[2,8] = quantize(%y, %s, %x_zero) {"dtype": "u8"}
  return %y, %r
}
"""


def test_quantized_graph_computes_in_f16_on_int8_weights():
    """quantize= with precision="fp16": the int8 weights stay int8, a dequantize gives f16, and the quantization
    parameters stay f32: constant scales as they are, a computed one (here a row max) cast back to f32."""
    from edgeopt.ir.registry import get_op

    rng = np.random.default_rng(0)
    g = parse_graph(QUANTIZED, {"w_q": rng.integers(-127, 128, (8, 16)).astype(np.int8),
                                "w_scale": rng.uniform(0.01, 0.02, (8, 1)).astype(np.float32)})
    for n in g.nodes:
        n.attrs = get_op(n.op).normalize_attrs(n.attrs)
    before = g.clone()
    run_pass(NAME, g)
    types = {k: str(v.type) for k, v in g.const_values.items()}
    assert types == {"w_q": "i8[8,16]", "w_scale": "f32[8,1]", "x_scale": "f32[]", "x_zero": "i32[]",
                     "levels": "f16[]"}
    nodes = {n.outputs[0].name: n for n in g.nodes}
    assert [str(nodes[k].outputs[0].type) for k in ("x_dq", "w", "y")] == ["f16[2,16]", "f16[8,16]", "f16[2,8]"]
    assert nodes["x_q"].inputs[0].type.dtype == "f16" and nodes["r"].inputs[1].type.dtype == "f32"
    x = rng.standard_normal((2, 16)).astype(np.float32)
    want, got = interpret(before, [x]), interpret(g, [x])
    assert got[0].dtype == np.float32 and np.abs(got[0] - want[0]).max() / np.abs(want[0]).max() < F16_TOL
    assert np.abs(got[1].astype(int) - want[1].astype(int)).max() <= 1  # a level at most, from f16 rounding
