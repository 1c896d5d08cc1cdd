"""How ``QuantConfig.keep_float`` / ``keep_int8`` name layers (``edgeopt.quant.config.named_layers``): by module name
(a module names every layer in it), op, IR value name or else source-line fragment; a string is one name; a name that
matches no layer gets a warning that lists the model's module names, in every mode; and ``edgeopt compare`` gives
each kernel output its layer's module name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from edgeopt.frontend import from_torch
from edgeopt.pipeline import get_pass
from edgeopt.quant import QuantConfig


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 32)
        self.features = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
        self.head = torch.nn.Linear(32, 32)

    def forward(self, ids):
        return self.head(self.features(self.emb(ids)))


def graph():
    return from_torch(Net().eval(), (torch.zeros(1, 6, dtype=torch.long),))


def run(mode: str, **kw) -> tuple[set, list[str]]:
    """(names of the layers kept float, the warnings about names) after the mode's pass on Net's graph."""
    g = graph()
    cfg = QuantConfig(mode=mode, **kw)
    if mode == "int8":
        cal = [[np.random.default_rng(i).integers(0, 50, (1, 6))] for i in range(4)]
        p = get_pass("quantize_static").__class__(cfg, cal)
    else:
        p = get_pass("quantize_dynamic" if mode == "int8-dynamic" else "quantize_weights").__class__(cfg)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        stats = p.run(g)
    names = {n.outputs[0].name: g.layer_name(n) for n in g.nodes if n.op in ("linear", "take")}
    kept = {names.get(k.split(" ")[0], k.split(" ")[0]) for k in stats["kept_float"] if "keep_float" in k}
    return kept, [str(w.message) for w in seen if "names no layer" in str(w.message)]


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "int8-weight"])
def test_a_module_names_the_layers_in_it(mode):
    kept, warned = run(mode, keep_float=["features"])
    assert kept == {"features.0", "features.2"} and not warned
    kept, warned = run(mode, keep_float="head")  # a string is one name, not its letters
    assert kept == {"head"} and not warned
    kept, _ = run(mode, keep_float=["features.2", "linear"])  # a module, and an op: every linear layer
    assert kept == {"features.0", "features.2", "head"}


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "int8-weight"])
def test_a_name_that_matches_no_layer_is_reported(mode):
    kept, warned = run(mode, keep_float=["head", "featurs.0", "features.1"])  # a typo, and a ReLU: no layer
    assert kept == {"head"} and len(warned) == 1
    assert f"keep_float names no layer that quantize={mode!r} quantizes: ['featurs.0', 'features.1']" in warned[0]
    assert "'features.0'" in warned[0] and "'head'" in warned[0]  # the model's module names, to pick from


def test_int4_keep_int8_names_are_checked_too():
    _, warned = run("int4-weight", keep_int8=["hed"])
    assert len(warned) == 1 and "QuantConfig.keep_int8 names no layer" in warned[0]
    g = graph()
    stats = get_pass("quantize_weights").__class__(QuantConfig(mode="int4-weight", keep_int8=["head", "emb"])).run(g)
    eight = [n for n in g.nodes if n.op == "dequantize" and n.attrs.get("bits") != 4]
    assert stats["quantized"] == 4 and len(eight) == 2  # the head and the embedding table at 8 bits


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "int8-weight"])
def test_an_embedding_table_kept_float_by_its_module_name(mode):
    g = graph()
    cfg = QuantConfig(mode=mode, keep_float=["emb"])
    if mode == "int8":
        cal = [[np.random.default_rng(i).integers(0, 50, (1, 6))] for i in range(4)]
        get_pass("quantize_static").__class__(cfg, cal).run(g)
    else:
        get_pass("quantize_dynamic" if mode == "int8-dynamic" else "quantize_weights").__class__(cfg).run(g)
    take = next(n for n in g.nodes if n.op == "take")
    assert g.is_const(take.inputs[0]) and g.const(take.inputs[0]).dtype == np.float32  # the float table itself
    assert sum(n.op == "dequantize" and g.is_const(n.inputs[0]) and g.const(n.inputs[0]).dtype == np.int8
               for n in g.nodes) == 3  # the three linear layers' weights are int8


class WithALinearModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear, self.out = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)

    def forward(self, x):
        return self.out(self.linear(x))


def test_a_module_named_like_an_op_is_that_module_else_the_op_names_every_layer():
    g = from_torch(WithALinearModule().eval(), (torch.zeros(1, 64),))
    stats = get_pass("quantize_weights").__class__(QuantConfig(mode="int8-weight", keep_float=["linear"])).run(g)
    assert [k.split(" ")[0] for k in stats["kept_float"]] == ["linear"] and stats["quantized"] == 1  # self.linear
    g = graph()  # no module named "linear": the op, every linear layer (its first layer's value is "linear" too)
    assert next(n for n in g.nodes if n.op == "linear").outputs[0].name == "linear"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        stats = get_pass("quantize_weights").__class__(QuantConfig(mode="int8-weight", keep_float=["linear"])).run(g)
    assert len([k for k in stats["kept_float"] if "keep_float" in k]) == 3 and not seen


def test_empty_or_non_string_names_are_refused():
    from edgeopt.quant import QuantizationError

    for bad in ([""], ["fc", 3], [None]):
        with pytest.raises(QuantizationError, match="takes layer names"):
            QuantConfig(keep_float=bad)


def test_static_reports_an_embedding_table_kept_float():
    g = graph()
    cal = [[np.random.default_rng(i).integers(0, 50, (1, 6))] for i in range(4)]
    stats = get_pass("quantize_static").__class__(QuantConfig(keep_float=["emb"]), cal).run(g)
    take = next(n for n in g.nodes if n.op == "take")
    assert any(k.startswith(f"{take.outputs[0].name} (take: QuantConfig.keep_float)") for k in stats["kept_float"])


class SkipFirst(torch.nn.Module):
    """Residual blocks written skip first (``x + self.conv(x)``, as torchvision's MobileNetV2 does)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(4, 8, 1)
        self.b1, self.b2 = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.b1(x)
        return torch.relu(x + self.b2(x))


def test_edgeopt_compare_names_the_layer_of_a_residual_add_whichever_operand_comes_first():
    from edgeopt.commands.compare_cmd import _layer_module

    g = from_torch(SkipFirst().eval(), (torch.zeros(1, 4, 4, 4),))
    adds = [n for n in g.nodes if n.op == "add"]
    relu = next(n for n in g.nodes if n.op == "relu")
    order = {n: i for i, n in enumerate(g.nodes)}
    assert [_layer_module(g, n, order) for n in adds + [relu]] == ["b1", "b2", "b2"]
    mean = g.add("mean", [relu.outputs[0]], {"axes": [2, 3], "keepdims": False})
    assert _layer_module(g, mean.producer, order) is None  # its own kernel: no layer's epilogue
