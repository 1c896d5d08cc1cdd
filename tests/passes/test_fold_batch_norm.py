"""fold_batch_norm: Before/Expected IR, folded weights, hit counts, numerics (interpreter before vs after, and a
compiled torch model against torch), verify."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgeopt.ir import parse_graph, print_graph, verify
from edgeopt.testing import assert_close, assert_same_numerics, run_pass, structure

NAME = "fold_batch_norm"
EPS = 1e-3


def bn_stats(c: int, seed: int) -> dict[str, np.ndarray]:
    """Non-trivial statistics: mean off zero, variances small enough that eps matters, negative gammas."""
    rng = np.random.default_rng(seed)
    return {
        "mean": rng.uniform(-1, 1, c).astype(np.float32),
        "var": rng.uniform(0.005, 2, c).astype(np.float32),
        "gamma": rng.uniform(-1.5, 1.5, c).astype(np.float32),
        "beta": rng.uniform(-1, 1, c).astype(np.float32),
    }


def bn_scale_shift(stats: dict, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    m, v, g, b = (stats[k].astype(np.float64) for k in ("mean", "var", "gamma", "beta"))
    s = g / np.sqrt(v + eps)
    return s, b - m * s


def conv_attrs(stride=(1, 1), padding=(0, 0, 0, 0), groups=1) -> str:
    return (f'{{"stride": {list(stride)}, "padding": {list(padding)}, "dilation": [1, 1], '
            f'"groups": {groups}, "weight_layout": "OIHW", "layout": "NCHW"}}')


def conv_t_attrs(stride=(1, 1), groups=1) -> str:
    return (f'{{"stride": {list(stride)}, "padding": [0, 0], "output_padding": [0, 0], "dilation": [1, 1], '
            f'"groups": {groups}}}')


def t(shape) -> str:
    return f"f32[{','.join(map(str, shape))}]"


# name -> (op, x shape, w shape, has bias, attrs, y shape)
LAYERS = {
    "conv2d": ("conv2d", (1, 4, 5, 5), (6, 4, 3, 3), True, conv_attrs(padding=(1, 1, 1, 1)), (1, 6, 5, 5)),
    "conv2d_no_bias": ("conv2d", (2, 4, 5, 5), (6, 4, 3, 3), False, conv_attrs(), (2, 6, 3, 3)),
    "conv2d_grouped": ("conv2d", (1, 4, 6, 6), (6, 2, 3, 3), True, conv_attrs((2, 2), (1, 1, 1, 1), 2), (1, 6, 3, 3)),
    "conv2d_depthwise": ("conv2d", (1, 4, 5, 5), (4, 1, 3, 3), True, conv_attrs(padding=(1, 1, 1, 1), groups=4),
                         (1, 4, 5, 5)),
    "conv_transpose2d": ("conv_transpose2d", (1, 4, 3, 3), (4, 3, 3, 3), True, conv_t_attrs((2, 2)), (1, 3, 7, 7)),
    "conv_transpose2d_no_bias": ("conv_transpose2d", (1, 4, 3, 3), (4, 3, 2, 2), False, conv_t_attrs(),
                                 (1, 3, 4, 4)),
    "conv_transpose2d_groups2": ("conv_transpose2d", (1, 4, 3, 3), (4, 3, 3, 3), True, conv_t_attrs((2, 2), 2),
                                 (1, 6, 7, 7)),
    "linear_oi": ("linear", (3, 6), (5, 6), True, '{"weight_layout": "oi"}', (3, 5)),
    "linear_io": ("linear", (3, 6), (6, 5), True, '{"weight_layout": "io"}', (3, 5)),
    "linear_io_no_bias": ("linear", (3, 6), (6, 5), False, '{"weight_layout": "io"}', (3, 5)),
}


def layer_case(name: str, seed: int = 0):
    """(Before text, constants, expected folded weight, expected folded bias, Expected text)."""
    op, xs, ws, has_bias, attrs, ys = LAYERS[name]
    c = ys[1]
    rng = np.random.default_rng(seed + 100)
    consts = {"w": rng.standard_normal(ws).astype(np.float32), **bn_stats(c, seed)}
    if has_bias:
        consts["b"] = rng.standard_normal(c).astype(np.float32)
    bias_decl = f"\n      const %b: {t((c,))}" if has_bias else ""
    before = f"""
    graph main(%x: {t(xs)}) {{
      const %w: {t(ws)}{bias_decl}
      const %mean: {t((c,))}
      const %var: {t((c,))}
      const %gamma: {t((c,))}
      const %beta: {t((c,))}
      %y: {t(ys)} = {op}(%x, %w{", %b" if has_bias else ""}) {attrs}
      %bn: {t(ys)} = batch_norm(%y, %mean, %var, %gamma, %beta) {{"eps": {EPS}}}
      %z: {t(ys)} = relu(%bn)
      return %z
    }}"""
    expected = f"""
    graph main(%x: {t(xs)}) {{
      const %w_folded: {t(ws)}
      const %bn_bias: {t((c,))}
      %bn_1: {t(ys)} = {op}(%x, %w_folded, %bn_bias) {attrs}
      %z: {t(ys)} = relu(%bn_1)
      return %z
    }}"""
    s, shift = bn_scale_shift(consts)
    w = consts["w"].astype(np.float64)
    w_folded = w * s[out_channel_of_weight(name, ws)]
    bias = consts["b"].astype(np.float64) if has_bias else np.zeros(c)
    b_folded = bias * s + shift
    return before, consts, w_folded.astype(np.float32), b_folded.astype(np.float32), expected


def out_channel_of_weight(name: str, ws) -> np.ndarray:
    """For every weight element (broadcastable to the weight's shape), the output channel it contributes to."""
    op, _, _, _, attrs, _ = LAYERS[name]
    if op == "conv2d":
        return np.arange(ws[0]).reshape(-1, 1, 1, 1)
    if op == "conv_transpose2d":
        groups = 2 if "groups2" in name else 1
        cin, opg = ws[0], ws[1]
        ci, j = np.arange(cin).reshape(-1, 1), np.arange(opg).reshape(1, -1)
        return ((ci // (cin // groups)) * opg + j).reshape(cin, opg, 1, 1)
    if "io" in attrs:
        return np.arange(ws[1]).reshape(1, -1)
    return np.arange(ws[0]).reshape(-1, 1)


# -- the docstring example -------------------------------------------------------------------------------------

def test_docstring_example():
    w = np.random.default_rng(1).standard_normal((8, 3, 1, 1)).astype(np.float32)
    before = """
    graph main(%x: f32[1,3,4,4]) {
      const %w: f32[8,3,1,1]
      const %mean: f32[8] = [0.5, -0.5, 1.0, 0.0, 0.25, -1.0, 2.0, 0.1]
      const %var: f32[8] = [1.0, 2.0, 0.5, 4.0, 0.25, 1.5, 3.0, 0.01]
      const %gamma: f32[8] = [1.0, -1.0, 2.0, 0.5, 0.0, 1.5, -0.25, 1.0]
      const %beta: f32[8] = [0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 0.0, 3.0]
      %c: f32[1,8,4,4] = conv2d(%x, %w) {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW", "layout": "NCHW"}
      %y: f32[1,8,4,4] = batch_norm(%c, %mean, %var, %gamma, %beta) {"eps": 1e-05}
      return %y
    }"""  # noqa: E501
    expected = """
    graph main(%x: f32[1,3,4,4]) {
      const %w_folded: f32[8,3,1,1]
      const %y_bias: f32[8]
      %y_1: f32[1,8,4,4] = conv2d(%x, %w_folded, %y_bias) {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW", "layout": "NCHW"}
      return %y_1
    }"""  # noqa: E501
    g = parse_graph(before, {"w": w})
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 1}
    s, shift = bn_scale_shift({k: g.constants[k] for k in ("mean", "var", "gamma", "beta")}, eps=1e-5)
    w_folded = (w.astype(np.float64) * s[:, None, None, None]).astype(np.float32)
    shift = shift.astype(np.float32)
    assert structure(after, values=False) == \
        structure(parse_graph(expected, {"w_folded": w_folded, "y_bias": shift}), values=False)
    assert_close(after.constants["w_folded"], w_folded, rtol=1e-6)
    assert_close(after.constants["y_bias"], shift, rtol=1e-6)
    assert np.all(after.constants["w_folded"][4] == 0)  # gamma 0: that output channel is the constant beta
    assert_same_numerics(g, after)


# -- every foldable layer ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LAYERS))
def test_batch_norm_folds_into_the_layer(name):
    before, consts, w_folded, b_folded, expected = layer_case(name)
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 1}
    assert structure(after, values=False) == \
        structure(parse_graph(expected, {"w_folded": w_folded, "bn_bias": b_folded}), values=False)
    assert_close(after.constants["w_folded"], w_folded, rtol=1e-6)
    assert_close(after.constants["bn_bias"], b_folded, rtol=1e-6)
    assert after.constants["w_folded"].flags.c_contiguous
    assert_same_numerics(g, after)


@pytest.mark.parametrize("name", ["conv2d_grouped", "conv_transpose2d_groups2", "linear_io"])
@pytest.mark.parametrize("seed", [1, 2])
def test_numerics_on_random_inputs_and_statistics(name, seed):
    before, consts, _, _, _ = layer_case(name, seed)
    g = parse_graph(before, consts)
    after = g.clone()
    run_pass(NAME, after)
    assert "batch_norm" not in [n.op for n in after.nodes]
    assert_same_numerics(g, after, seed)


def test_two_layers_sharing_a_weight_get_their_own_folded_weights():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    st1, st2 = bn_stats(4, 1), bn_stats(4, 2)
    consts = {"w": w, **{f"{k}1": v for k, v in st1.items()}, **{f"{k}2": v for k, v in st2.items()}}
    attrs = conv_attrs()
    before = f"""
    graph main(%x: f32[1,4,3,3]) {{
      const %w: f32[4,4,1,1]
      const %mean1: f32[4]
      const %var1: f32[4]
      const %gamma1: f32[4]
      const %beta1: f32[4]
      const %mean2: f32[4]
      const %var2: f32[4]
      const %gamma2: f32[4]
      const %beta2: f32[4]
      %c1: f32[1,4,3,3] = conv2d(%x, %w) {attrs}
      %bn1: f32[1,4,3,3] = batch_norm(%c1, %mean1, %var1, %gamma1, %beta1) {{"eps": {EPS}}}
      %c2: f32[1,4,3,3] = conv2d(%bn1, %w) {attrs}
      %bn2: f32[1,4,3,3] = batch_norm(%c2, %mean2, %var2, %gamma2, %beta2) {{"eps": {EPS}}}
      return %bn2
    }}"""
    expected = f"""
    graph main(%x: f32[1,4,3,3]) {{
      const %w_folded: f32[4,4,1,1]
      const %bn1_bias: f32[4]
      const %w_folded_1: f32[4,4,1,1]
      const %bn2_bias: f32[4]
      %bn1_1: f32[1,4,3,3] = conv2d(%x, %w_folded, %bn1_bias) {attrs}
      %bn2_1: f32[1,4,3,3] = conv2d(%bn1_1, %w_folded_1, %bn2_bias) {attrs}
      return %bn2_1
    }}"""
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 2}
    (s1, sh1), (s2, sh2) = bn_scale_shift(st1), bn_scale_shift(st2)
    want = {"w_folded": w * s1[:, None, None, None], "bn1_bias": sh1,
            "w_folded_1": w * s2[:, None, None, None], "bn2_bias": sh2}
    want = {k: v.astype(np.float32) for k, v in want.items()}
    assert structure(after, values=False) == structure(parse_graph(expected, want), values=False)
    for k, v in want.items():
        assert_close(after.constants[k], v, rtol=1e-6)
    assert_same_numerics(g, after)


def test_batch_norm_of_batch_norm_folds_twice():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    st1, st2 = bn_stats(5, 3), bn_stats(5, 4)
    consts = {"w": w, **{f"{k}1": v for k, v in st1.items()}, **{f"{k}2": v for k, v in st2.items()}}
    before = f"""
    graph main(%x: f32[4,6]) {{
      const %w: f32[5,6]
      const %mean1: f32[5]
      const %var1: f32[5]
      const %gamma1: f32[5]
      const %beta1: f32[5]
      const %mean2: f32[5]
      const %var2: f32[5]
      const %gamma2: f32[5]
      const %beta2: f32[5]
      %y: f32[4,5] = linear(%x, %w) {{"weight_layout": "oi"}}
      %bn1: f32[4,5] = batch_norm(%y, %mean1, %var1, %gamma1, %beta1) {{"eps": {EPS}}}
      %bn2: f32[4,5] = batch_norm(%bn1, %mean2, %var2, %gamma2, %beta2) {{"eps": {EPS}}}
      return %bn2
    }}"""
    g = parse_graph(before, consts)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 2}
    assert [n.op for n in after.nodes] == ["linear"]
    (s1, sh1), (s2, sh2) = bn_scale_shift(st1), bn_scale_shift(st2)
    want_w = (w.astype(np.float64) * (s1 * s2)[:, None]).astype(np.float32)
    want_b = (sh1 * s2 + sh2).astype(np.float32)
    lin = after.nodes[0]
    assert_close(after.const(lin.inputs[1]), want_w)
    assert_close(after.const(lin.inputs[2]), want_b)
    assert_same_numerics(g, after)


# -- what is not folded ---------------------------------------------------------------------------------------------

NOT_FOLDED_SECOND_READER = """
graph main(%x: f32[1,4,5,5]) {{
  const %w: f32[6,4,3,3]
  const %b: f32[6]
  const %mean: f32[6]
  const %var: f32[6]
  const %gamma: f32[6]
  const %beta: f32[6]
  %y: f32[1,6,5,5] = conv2d(%x, %w, %b) {attrs}
  %bn: f32[1,6,5,5] = batch_norm(%y, %mean, %var, %gamma, %beta) {{"eps": 0.001}}
  {extra}
  return {outputs}
}}"""


@pytest.mark.parametrize("extra,outputs", [
    ("%e: f32[1,6,5,5] = exp(%y)\n  %s: f32[1,6,5,5] = add(%bn, %e)", "%s"),  # another node reads the conv
    ("", "%bn, %y"),                                                           # the conv is a graph output
])
def test_not_folded_when_the_conv_output_has_a_second_reader(extra, outputs):
    _, consts, _, _, _ = layer_case("conv2d")
    before = NOT_FOLDED_SECOND_READER.format(attrs=LAYERS["conv2d"][4], extra=extra, outputs=outputs)
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0}
    assert print_graph(after) == print_graph(g)
    assert_same_numerics(g, after)


def test_not_folded_for_linear_on_a_3d_input():
    # linear on [N, L, C]: its output channels are the last axis, batch_norm normalizes axis 1 (L)
    rng = np.random.default_rng(7)
    consts = {"w": rng.standard_normal((4, 6)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32),
              **bn_stats(4, 0)}
    before = """
    graph main(%x: f32[2,4,6]) {
      const %w: f32[4,6]
      const %b: f32[4]
      const %mean: f32[4]
      const %var: f32[4]
      const %gamma: f32[4]
      const %beta: f32[4]
      %y: f32[2,4,4] = linear(%x, %w, %b) {"weight_layout": "oi"}
      %bn: f32[2,4,4] = batch_norm(%y, %mean, %var, %gamma, %beta) {"eps": 0.001}
      return %bn
    }"""
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0}
    assert print_graph(after) == print_graph(g)
    assert_same_numerics(g, after)


@pytest.mark.parametrize("runtime", ["mean", "gamma", "w", "b"])
def test_not_folded_when_weights_or_statistics_are_not_constants(runtime):
    before, consts, _, _, _ = layer_case("conv2d")
    decl = re.search(rf"const %{runtime}: (\S+)\n\s*", before)
    header = "graph main(%x: f32[1,4,5,5]"
    before = before.replace(decl.group(0), "").replace(header, f"{header}, %{runtime}: {decl.group(1)}")
    consts.pop(runtime)
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0}
    assert print_graph(after) == print_graph(g)
    assert_same_numerics(g, after)


def test_batch_norm_after_a_non_layer_is_left_alone():
    st = bn_stats(3, 0)
    before = """
    graph main(%x: f32[1,3,4,4], %z: f32[1,3,4,4]) {
      const %mean: f32[3]
      const %var: f32[3]
      const %gamma: f32[3]
      const %beta: f32[3]
      %a: f32[1,3,4,4] = add(%x, %z)
      %bn: f32[1,3,4,4] = batch_norm(%a, %mean, %var, %gamma, %beta) {"eps": 0.001}
      %bx: f32[1,3,4,4] = batch_norm(%x, %mean, %var, %gamma, %beta) {"eps": 0.001}
      return %bn, %bx
    }"""
    g = parse_graph(before, st)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0}
    assert print_graph(after) == print_graph(g)


# -- through edgeopt.compile ------------------------------------------------------------------------------------------

def test_conv_batch_norm_relu_model_compiles_without_batch_norm_and_matches_torch():
    import torch

    import edgeopt

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(6, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.05, 2)
        bn.weight.uniform_(-1.5, 1.5)
        bn.bias.uniform_(-1, 1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), bn, torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    compiled = edgeopt.compile(model, (x,))
    assert compiled.report["pass_stats"][NAME] == {"folded": 1}
    ops = [m.op for n in compiled.graph.nodes for m in (n.body.nodes if n.body is not None else [n])]
    assert "batch_norm" not in ops and "conv2d" in ops
    with torch.no_grad():
        ref = model(x).numpy()
    got = compiled(x.numpy())
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
