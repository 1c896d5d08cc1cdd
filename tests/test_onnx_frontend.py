"""The ONNX frontend (``edgeopt.compile("model.onnx", ...)``): the test zoo exported by torch's ONNX exporter compiles
and matches PyTorch and ONNX Runtime; hand-built graphs cover older opsets' attribute forms; unsupported ops are
listed all at once; input shapes come from the file or from example inputs; the model cache keys on the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.errors import UnsupportedModelError
from tests.conftest import rel_err

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ZOO = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3", "efficientnet_lite0", "unet", "minilm", "minilm_sdpa",
       "gpt2_handwritten", "vit", "digits_int8"]


def export(model, inputs, path, **kwargs):
    torch.onnx.export(model, tuple(inputs), str(path), dynamo=False, opset_version=17, **kwargs)
    return path


def onnxruntime_outputs(path, inputs):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: np.asarray(x) for i, x in zip(sess.get_inputs(), inputs)})


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_exported_to_onnx_matches_pytorch_and_onnxruntime(name, tmp_path):
    from tests.models.zoo import build

    model, inputs = build(name)
    path = export(model, inputs, tmp_path / "m.onnx")
    arrays = [x.numpy() for x in inputs]
    compiled = edgeopt.compile(str(path), arrays)
    with torch.no_grad():
        ref = model(*inputs)
    ref = getattr(ref, "last_hidden_state", ref)
    ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
    got = compiled(*arrays)
    got = got[0] if isinstance(got, tuple) else got
    assert rel_err(ref, got) < 1e-4, name
    assert rel_err(onnxruntime_outputs(path, arrays)[0], got) < 1e-4, name
    assert compiled.report["num_kernels"] > 0 and compiled.report["fused_groups"]


def _model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def test_older_opset_attribute_forms_match_onnxruntime(tmp_path):
    """Opset 11: Squeeze/Unsqueeze/ReduceMean axes and Split sizes as attributes, Clip bounds as inputs, Pad pads as
    an input, Gemm with transB and alpha/beta, Resize nearest (asymmetric, floor)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((6,)).astype(np.float32), "b")
    lo = numpy_helper.from_array(np.array(-0.5, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(0.7, np.float32), "hi")
    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), "pads")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    roi = numpy_helper.from_array(np.array([], np.float32), "roi")
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["x4"], axes=[2]),                        # [2, 8] -> [2, 8, 1]
        helper.make_node("Unsqueeze", ["x4"], ["x5"], axes=[3]),                       # -> [2, 8, 1, 1]
        helper.make_node("Pad", ["x5", "pads"], ["p"]),                                 # -> [2, 8, 3, 3]
        helper.make_node("Resize", ["p", "roi", "scales"], ["r"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),  # -> [2, 8, 6, 6]
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2, 3], keepdims=0),          # -> [2, 8]
        helper.make_node("Gemm", ["m", "w", "b"], ["y"], transB=1, alpha=0.5, beta=2.0),  # -> [2, 6]
        helper.make_node("Clip", ["y", "lo", "hi"], ["c"]),
        helper.make_node("Split", ["c"], ["s0", "s1"], axis=1, split=[2, 4]),
        helper.make_node("Unsqueeze", ["s0"], ["u"], axes=[0]),                        # [2, 2] -> [1, 2, 2]
        helper.make_node("Squeeze", ["u"], ["q"], axes=[0]),
        helper.make_node("Concat", ["s1", "q"], ["out"], axis=1),
    ]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 6])], [w, b, lo, hi, pads, scales, roi],
               opset=11)
    path = tmp_path / "old.onnx"
    onnx.save(m, path)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    got = edgeopt.compile(str(path))(x)  # every shape is in the file: no example inputs needed
    np.testing.assert_allclose(got, onnxruntime_outputs(path, [x])[0], rtol=1e-5, atol=1e-6)


def test_every_unsupported_op_is_listed_with_its_node(tmp_path):
    nodes = [helper.make_node("Hardmax", ["x"], ["h"], name="first_hardmax"),
             helper.make_node("Relu", ["h"], ["r"], name="after"),
             helper.make_node("Det", ["r"], ["d"], name="det_of_unsupported"),       # reads an unsupported op's output
             helper.make_node("Hardmax", ["x"], ["h2"], name="second_hardmax"),
             helper.make_node("Add", ["h2", "x"], ["y"], name="add")]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3]),
                helper.make_tensor_value_info("d", TensorProto.FLOAT, [])])
    with pytest.raises(UnsupportedModelError) as e:
        edgeopt.compile(m)
    ops = {u.op: u for u in e.value.ops}
    assert set(ops) == {"onnx::Hardmax", "onnx::Det"} and ops["onnx::Hardmax"].count == 2
    text = str(e.value)
    assert "'first_hardmax'" in text and "'second_hardmax'" in text and "'det_of_unsupported'" in text


def test_dynamic_dimensions_need_example_inputs(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)).eval()
    path = export(model, (torch.randn(2, 4),), tmp_path / "dyn.onnx", input_names=["x"],
                  dynamic_axes={"x": {0: "batch"}})
    with pytest.raises(UnsupportedModelError, match=r"'x' has dimensions that are not fixed .*give example inputs"):
        edgeopt.compile(str(path))
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    got = edgeopt.compile(str(path), [x])(x)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(UnsupportedModelError, match="is float64; the ONNX model takes float32"):
        edgeopt.compile(str(path), [x.astype(np.float64)])


def test_onnx_compiles_are_cached_by_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    path = export(model, (torch.randn(1, 3, 8, 8),), tmp_path / "m.onnx")
    first, again = edgeopt.compile(str(path)), edgeopt.compile(str(path))
    assert (first.report["cache"]["model"], again.report["cache"]["model"]) == ("miss", "hit")
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1
    export(model, (torch.randn(1, 3, 8, 8),), path)
    changed = edgeopt.compile(str(path))
    assert changed.report["cache"]["model"] == "miss"
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(changed(x), model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_torch_models_still_need_example_inputs():
    with pytest.raises(TypeError, match="needs example inputs"):
        edgeopt.compile(torch.nn.ReLU())


def test_what_counts_as_an_onnx_model():
    assert edgeopt.api.is_onnx("m.onnx") and not edgeopt.api.is_onnx("m.pt2")
    assert edgeopt.api.is_onnx(helper.make_model(helper.make_graph([], "g", [], [])))
    assert not edgeopt.api.is_onnx(torch.nn.ReLU())


@pytest.mark.parametrize("scales, shape", [([1, 1, 2.1, 1.3], [1, 2, 3, 4]), ([1, 1, 2.0, 2.0], [1, 1, 4, 5]),
                                           ([1, 1, 0.6, 1.5], [1, 1, 10, 7]), ([1, 1, 1.4, 1.0], [1, 1, 2, 3]),
                                           ([1, 1, 1.4, 2.0], [1, 1, 2, 3])])
def test_resize_nearest_picks_as_onnxruntime(scales, shape, tmp_path):
    """ONNX's nearest Resize (asymmetric, floor) reads pixel floor(dst / scale), with none of torch's shortcuts (x2.1
    is not x2); ONNX Runtime copies an input whose shape it keeps (2 x 1.4 -> 2, 3 x 1.0 -> 3)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.array(scales, np.float32), "scales"),
             numpy_helper.from_array(np.array([], np.float32), "roi")]
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    xs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (ref,) = onnxruntime_outputs(tmp_path / "m.onnx", [xs])
    np.testing.assert_array_equal(edgeopt.compile(str(tmp_path / "m.onnx"), [xs])(xs), ref)


CONV_PADDINGS = [
    ("Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}), ("Conv", {"auto_pad": "SAME_LOWER", "strides": [2, 1]}),
    ("Conv", {"auto_pad": "VALID"}), ("Conv", {"pads": [0, 2, 1, 1]}),
    ("MaxPool", {"auto_pad": "SAME_LOWER", "strides": [2, 2]}), ("AveragePool", {"pads": [1, 0, 0, 1]}),
    ("ConvTranspose", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("ConvTranspose", {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ("ConvTranspose", {"pads": [1, 0, 0, 2], "strides": [2, 2]}),
]


@pytest.mark.parametrize("rank", [4, 5])
@pytest.mark.parametrize("op, attrs", CONV_PADDINGS, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}{v}" for k, v in v.items()))
def test_conv_and_pool_paddings_match_onnxruntime(op, attrs, rank, tmp_path):
    """auto_pad (SAME_UPPER / SAME_LOWER / VALID) and asymmetric pads, in 2-d and 3-d (the 3-d forms: a depth axis
    of stride 1 and no padding in front)."""
    rng = np.random.default_rng(0)
    spatial = [5, 6, 7][3 - (rank - 2):]
    extra = rank - 4  # 3-d: one more axis, first
    attrs = {k: ([1] * extra + v if k == "strides" else [0] * extra + v[:2] + [0] * extra + v[2:] if k == "pads"
                 else v) for k, v in attrs.items()}
    kernel = [3] * (rank - 2)
    ins, inits = ["x"], []
    if op in ("Conv", "ConvTranspose"):
        w = rng.standard_normal([3, 4] + kernel if op == "ConvTranspose" else [4, 3] + kernel).astype(np.float32)
        inits = [numpy_helper.from_array(w, "w")]
        ins.append("w")
    else:
        attrs["kernel_shape"] = kernel
    m = _model([helper.make_node(op, ins, ["y"], **attrs)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3] + spatial)],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(rank)])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    x = rng.standard_normal([1, 3] + spatial).astype(np.float32)
    want = onnxruntime_outputs(path, [x])[0]
    got = edgeopt.compile(str(path))(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode, coord, scales, sizes", [
    ("linear", "half_pixel", [1, 1, 2.0, 2.0, 2.0], None), ("linear", "align_corners", None, [1, 2, 7, 4, 9]),
    ("linear", "pytorch_half_pixel", [1, 1, 1.5, 0.5, 2.0], None),
    ("nearest", "asymmetric", [1, 1, 2.0, 1.3, 0.6], None), ("linear", "pytorch_half_pixel", None, [1, 2, 1, 6, 1]),
    ("linear", "pytorch_half_pixel", [1, 1, 0.3, 1.5, 2.0], None)])
def test_5d_resize_matches_onnxruntime(mode, coord, scales, sizes, tmp_path):
    """Resize of [N, C, D, H, W] (a 3-d U-Net's upsampling): trilinear, or nearest (asymmetric, floor)."""
    shape = [1, 2, 4, 5, 6]
    inits = [numpy_helper.from_array(np.array([], np.float32), "roi"),
             numpy_helper.from_array(np.array(scales or [], np.float32), "scales")]
    ins = ["x", "roi", "scales"]
    if sizes:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        ins.append("sizes")
    node = helper.make_node("Resize", ins, ["y"], mode=mode, coordinate_transformation_mode=coord,
                            nearest_mode="floor")
    m = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(5)])], inits)
    onnx.save(m, tmp_path / "m.onnx")
    xs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (ref,) = onnxruntime_outputs(tmp_path / "m.onnx", [xs])
    got = edgeopt.compile(str(tmp_path / "m.onnx"), [xs])(xs)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
