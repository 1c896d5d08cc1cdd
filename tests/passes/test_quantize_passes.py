"""The quantization passes: structure (what they insert, how weights are stored) and numerics (interpreter before
vs after, compiled kernels vs interpreter, and PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.api import compile_graph
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.quant import QuantConfig

torch.manual_seed(0)


class TinyEncoder(torch.nn.Module):
    """An embedding, two linear layers with a GELU, and a matmul against a constant: the weight-only and dynamic
    targets."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(64, 32)
        self.up, self.down = torch.nn.Linear(32, 96), torch.nn.Linear(96, 32)
        self.proj = torch.nn.Parameter(torch.randn(32, 48) * 0.2)

    def forward(self, ids):
        h = self.emb(ids)
        return (h + self.down(torch.nn.functional.gelu(self.up(h)))) @ self.proj


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c3, self.fc = torch.nn.Conv2d(16, 32, 1), torch.nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c3(torch.relu(self.c2(y)) + y))
        return self.fc(y.mean((2, 3)))


def _graph(model, *args):
    return from_torch(model.eval(), args)


def _encoder():
    m, ids = TinyEncoder().eval(), torch.randint(0, 64, (2, 8))
    return m, ids, _graph(m, ids)


def _relative_error(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("mode, ops, bound", [("int8-weight", {"dequantize": 4}, 0.02),
                                              ("int4-weight", {"dequantize": 4}, 0.15)])
def test_weight_only_stores_narrow_weights_and_stays_close(mode, ops, bound):
    m, ids, g = _encoder()
    before = interpret(g, [ids.numpy()])[0]
    float_bytes = g.weight_bytes()
    stats = get_pass("quantize_weights").__class__(QuantConfig(mode=mode)).run(g)
    verify(g)
    assert stats["quantized"] == 4 and {k: g.op_counts().get(k) for k in ops} == ops
    narrow = {a.dtype for a in g.constants.values() if a.size >= 1024}
    assert narrow == ({np.dtype(np.int8)} if mode == "int8-weight" else {np.dtype(np.uint8)})
    assert g.weight_bytes() < (0.3 if mode == "int8-weight" else 0.2) * float_bytes
    after = interpret(g, [ids.numpy()])[0]
    assert 0 < _relative_error(after, before) < bound  # changed (it quantized), but not by much
    np.testing.assert_allclose(before, m(ids).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_keep_float_leaves_named_layers_alone():
    _, _, g = _encoder()
    stats = get_pass("quantize_weights").__class__(QuantConfig(mode="int8-weight", keep_float=["linear"])).run(g)
    assert stats["quantized"] == 2 and len(stats["kept_float"]) == 2  # the matmul and the embedding table


def test_dynamic_quantizes_rows_at_run_time():
    m, ids, g = _encoder()
    before = interpret(g, [ids.numpy()])[0]
    stats = get_pass("quantize_dynamic").__class__().run(g)
    verify(g)
    assert stats["dynamic_activations"] == 3  # the embedding output, the GELU output, the residual sum
    qs = [n for n in g.nodes if n.op == "quantize"]
    assert all(n.attrs["dtype"] == "i8" and n.inputs[1].producer is not None for n in qs)  # run-time scales
    assert 0 < _relative_error(interpret(g, [ids.numpy()])[0], before) < 0.03


@pytest.mark.parametrize("mode", ["int8-weight", "int4-weight", "int8-dynamic"])
def test_compiled_weight_modes_match_the_interpreter(mode):
    """The kernels compute the quantized graph (dequantize inside the matrix products) like the interpreter."""
    m, ids, g = _encoder()
    compiled = compile_graph(g, "host", quantize=mode)
    expected = interpret(compiled.graph, [ids.numpy()])[0]
    got = compiled(ids.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    fused = [k for k in compiled.report["kernels"] if "dequantize" in k["ops"] and "linear" in k["ops"]]
    # weight-only: int weights widened in the register tile; dynamic: integer kernels (on dot products if any)
    assert fused and all(k["schedule"].startswith(("tile(", "int8-tile(")) for k in fused), fused
    if mode == "int8-dynamic" and compiled_target_has_int8_dot():
        assert all(k["schedule"].startswith("int8-tile(") for k in fused)


def _folded_graph(model, x, batches=6):
    """The model's graph after BatchNorm folding (where quantize_static runs) and calibration batches for it."""
    g = _graph(model, x)
    for name in ("fold_batch_norm", "dead_code_elimination"):
        get_pass(name).run(g)
    cal = [[np.random.default_rng(i).standard_normal(tuple(x.shape)).astype(np.float32)] for i in range(batches)]
    return g, cal


def test_static_inserts_quantize_dequantize_around_every_layer():
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    g, cal = _folded_graph(model, x)
    before = interpret(g, cal[0])[0]
    stats = get_pass("quantize_static").__class__(QuantConfig(), cal).run(g)
    verify(g)
    # the first conv reads 3 channels: too few for int8 dot products (groups of 4), it stays float
    assert stats["quantized"] == 3 and stats["bias_corrected"] == 3
    assert len(stats["kept_float"]) == 1 and stats["kept_float"][0].endswith(
        "(conv2d: 3 input channels, no int8 dot product on the target)")
    first, *layers = [n for n in g.nodes if n.op in ("conv2d", "linear")]
    assert first.inputs[0].producer is None and g.is_const(first.inputs[1])
    for n in layers:
        x_dq, w_dq = n.inputs[0].producer, n.inputs[1].producer
        assert x_dq.op == "dequantize" and x_dq.inputs[0].producer.op == "quantize"
        assert x_dq.inputs[0].type.dtype == "u8" and w_dq.op == "dequantize" and w_dq.inputs[0].type.dtype == "i8"
        assert g.const(w_dq.inputs[1]).shape[0] == n.outputs[0].type.shape[1 if n.op == "conv2d" else -1]
    assert 0 < _relative_error(interpret(g, cal[0])[0], before) < 0.1


@pytest.mark.parametrize("shared", [True, False])
def test_residual_reads_the_int8_copy_unless_asked_not_to(shared):
    """TinyCNN's ``relu(c2(y)) + y``: y is quantized for c2; the residual add reads that int8 copy (so no float y is
    stored) or, with ``quantized_residuals=False``, the float y. Compiled, every quantize then sits in the epilogue
    of the kernel that makes its value (the pooled features' in the mean's); with float residuals y's quantize is
    a kernel of its own."""
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    g, cal = _folded_graph(model, x)
    before = interpret(g, cal[0])[0]
    get_pass("quantize_static", QuantConfig(quantized_residuals=shared), cal).run(g)
    verify(g)
    dw = next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] == 16)
    after_dw = next(n for n in g.nodes if n.op == "relu" and n.inputs[0] is dw.outputs[0]).outputs[0]
    add = next(n for n in g.nodes if n.op == "add" and after_dw in n.inputs)
    residual = next(v for v in add.inputs if v is not after_dw)
    assert (residual is dw.inputs[0]) == shared  # the very dequantized value the depthwise conv reads
    assert (residual.producer.op == "dequantize") == shared
    assert 0 < _relative_error(interpret(g, cal[0])[0], before) < 0.1
    compiled = compile_graph(_graph(model, x), "host", quantize=QuantConfig(quantized_residuals=shared),
                             calibration_data=[torch.from_numpy(c[0]) for c in cal])
    alone = [k for k in compiled.report["kernels"] if k["ops"] == ["quantize"]]
    assert len(alone) == (0 if shared else 1), alone
    got, want = compiled(x.numpy()), interpret(compiled.graph, [x.numpy()])[0]
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


class TinyConcat(torch.nn.Module):
    """Two branches joined by a channel concat before a 1x1 conv; branch a is also read by a conv of its own."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.a, self.b = torch.nn.Conv2d(16, 16, 1), torch.nn.Conv2d(16, 16, 3, padding=1)
        self.head, self.side = torch.nn.Conv2d(32, 16, 1), torch.nn.Conv2d(16, 16, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        a, b = torch.relu(self.a(y)), torch.relu(self.b(y)) * 3.0
        return self.head(torch.cat([a, b], 1)) + self.side(a)


def test_a_concat_joins_int8_parts_quantized_with_its_scale():
    """quantize(concat(a, b)) == concat(quantize(a), quantize(b)) with the concat's scale: b is quantized where it
    is made; a, which the side conv reads with a range of its own, is rescaled from that int8 copy. No float concat
    is left, and the compiled model's convs all store u8 (no float part is written for the concat)."""
    model, x = TinyConcat().eval(), torch.randn(1, 3, 12, 12)
    g, cal = _folded_graph(model, x)
    before = interpret(g, cal[0])[0]
    get_pass("quantize_static", QuantConfig(), cal).run(g)
    verify(g)
    (cat,) = [n for n in g.nodes if n.op == "concat"]
    assert cat.outputs[0].type.dtype == "u8"
    parts = [v.producer for v in cat.inputs]
    assert [p.op for p in parts] == ["quantize", "quantize"]
    dq = next(n for n in g.nodes if n.op == "dequantize" and n.inputs[0] is cat.outputs[0])
    assert all(p.inputs[1:] == dq.inputs[1:] for p in parts)  # the concat's own scale and zero point
    rescaled, fresh = parts
    assert rescaled.inputs[0].producer.op == "dequantize" and rescaled.inputs[0].producer.inputs[0].type.dtype == "u8"
    assert fresh.inputs[0].producer.op == "mul"  # relu(b(y)) * 3, quantized where it is made
    assert 0 < _relative_error(interpret(g, cal[0])[0], before) < 0.1
    compiled = compile_graph(_graph(model, x), "host", quantize="int8",
                             calibration_data=[torch.from_numpy(c[0]) for c in cal])
    steps = compiled.graph.nodes
    joins = [n for n in steps if n.op == "concat" or (n.op == "fused" and "concat" in n.attrs["name"])]
    assert len(joins) == 1 and all(v.type.dtype == "u8" for v in joins[0].inputs)
    assert joins[0].outputs[0].type.dtype == "u8"
    got, want = compiled(x.numpy()), interpret(compiled.graph, [x.numpy()])[0]
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
    ref = model(x).detach().numpy()
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()


def test_static_needs_calibration_data_and_checks_it():
    from edgeopt.quant import QuantizationError

    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    g = _graph(model, x)
    with pytest.raises(QuantizationError, match="needs calibration_data"):
        compile_graph(g.clone(), "host", quantize="int8")
    with pytest.raises(QuantizationError, match=r"calibration batch 0: input %\w+ is float32\[1, 3, 8, 8\]"):
        compile_graph(g.clone(), "host", quantize="int8", calibration_data=[torch.randn(1, 3, 8, 8)])
    with pytest.raises(QuantizationError, match="needs no calibration_data"):
        compile_graph(g.clone(), "host", quantize="int8-weight", calibration_data=[x])


def compiled_target_has_int8_dot() -> bool:
    from edgeopt.targets import get_target

    return get_target("host").int8_dot() is not None


def _static_graph(model, x, batches=6):
    g, cal = _folded_graph(model, x, batches)
    get_pass("quantize_static").__class__(QuantConfig(), cal).run(g)
    return g, cal


def test_fold_quantized_makes_integer_layers_with_the_same_numbers():
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    g, cal = _static_graph(model, x)
    before = interpret(g, cal[1])[0]
    stats = get_pass("fold_quantized").run(g)
    verify(g)
    assert stats == {"integer_layers": 3}
    layers = [n for n in g.nodes if n.op in ("conv2d", "linear") and n.outputs[0].type.dtype == "i32"]
    assert len(layers) == 3
    for n in layers:  # u8 x i8 -> i32, requantized by a dequantize with per-channel scales
        assert (n.inputs[0].type.dtype, n.inputs[1].type.dtype, n.outputs[0].type.dtype) == ("u8", "i8", "i32")
        assert len(n.inputs) == 2 and g.is_const(n.inputs[1])
    pads = [n for n in g.nodes if n.op == "pad"]
    assert all(n.inputs[0].type.dtype == "u8" for n in pads)  # padded with the zero point, in u8
    after = interpret(g, cal[1])[0]
    # the same arithmetic up to float rounding (which may flip a later quantize by one step)
    assert np.abs(after - before).max() <= 0.02 * np.abs(before).max()


def test_compiled_static_int8_matches_interpreter_and_torch():
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    cal = [torch.randn(1, 3, 12, 12) for _ in range(8)]
    cfg = QuantConfig(int8_image_convs=True)  # the first conv too, where the CPU has int8 dot products
    compiled = compile_graph(_graph(model, x), "host", quantize=cfg, calibration_data=cal)
    assert compiled.report["pass_stats"]["fold_quantized"] == {"integer_layers": 4 if compiled_target_has_int8_dot()
                                                                               else 3}
    convs = [k for k in compiled.report["kernels"] if "conv2d" in k["ops"]]
    integer = [k for k in convs if {"dequantize", "requantize"} & set(k["ops"])]  # requantization in the epilogue
    if compiled_target_has_int8_dot():
        # the first conv's 3 channels padded to 4 and the 1x1 conv on dot products; the depthwise on window taps
        # where the CPU has AVX512-VNNI and VBMI (depthwise_int8_taps), else on plain vectors
        from tests.conftest import host_has_depthwise_int8_dot

        taps = host_has_depthwise_int8_dot()
        assert len(convs) == 3 and [k["schedule"].startswith("int8-tile(") for k in integer] == [True, taps, True]
        assert "pad" in integer[0]["ops"], integer[0]
    else:  # the first conv (3 input channels) stays float
        assert len(convs) == 3 and len(integer) == 2
    expected = interpret(compiled.graph, [x.numpy()])[0]
    got = compiled(x.numpy())
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()
    ref = model(x).detach().numpy()
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()


def test_accuracy_budget_keeps_the_noisiest_layers_float():
    """A metric no int8 model can meet (cosine within 1e-9 of float) keeps layers float until it holds: all of them,
    most error-adding first; a loose one keeps none. Both report the scores they reached."""
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    cal = [[np.random.default_rng(i).standard_normal((1, 3, 12, 12)).astype(np.float32)] for i in range(6)]
    g = _graph(model, x)
    for name in ("fold_batch_norm", "dead_code_elimination"):
        get_pass(name).run(g)
    tight = get_pass("quantize_static").__class__(QuantConfig(max_drop=1e-9, metric="cosine"), cal)
    stats = tight.run(g.clone())
    assert stats["metric"] == "cosine" and len(stats["kept_for_budget"]) == 3 and stats["quantized"] == 0
    assert stats["score"] >= stats["score_float"] - 1e-9
    loose = get_pass("quantize_static").__class__(QuantConfig(max_drop=0.5, metric="cosine"), cal).run(g.clone())
    assert "kept_for_budget" not in loose and loose["quantized"] == 3 and loose["score"] > 0.5


def test_compare_reports_layers_worst_first_and_the_output():
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    cal = [torch.randn(1, 3, 12, 12) for _ in range(4)]
    compiled = compile_graph(_graph(model, x), "host", quantize="int8", calibration_data=cal)
    rows = compiled.compare(model, [x])
    layers, out = rows[:-1], rows[-1]
    assert [r["op"] for r in layers].count("conv2d") == 3 and len(layers) == 4
    assert [r["sqnr_db"] for r in layers] == sorted(r["sqnr_db"] for r in layers)
    assert layers[0]["sqnr_db"] < 60 and all(r["added_noise"] >= 0 for r in layers)
    if not compiled_target_has_int8_dot():  # the first conv stays float there: exact
        assert layers[-1]["sqnr_db"] == float("inf")
    assert out["layer"] == "output" and 0.9 < out["cosine"] <= 1.0
