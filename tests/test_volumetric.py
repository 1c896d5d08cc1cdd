"""3-d convolutions, pools and resizes (video and volumetric models), which the frontend writes with the 2-d ops
(``edgeopt/frontend/volumetric.py``): each compiled and run against PyTorch on strides, padding, dilation, groups,
ceil mode, torch's divisor rules, unbatched inputs and odd sizes; a small video network end to end, float and
int8; and what is still missing refused by name."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import edgeopt
from edgeopt.errors import UnsupportedModelError
from tests.test_op_breadth import compiled_matches_torch

torch.manual_seed(0)
V = torch.randn(2, 3, 5, 6, 7)  # [N, C, D, H, W]
W = torch.randn(4, 3, 3, 3, 3) / 5
WG = torch.randn(6, 1, 2, 3, 1) / 3  # groups=3 on 3 channels... 6 outputs, 1 input channel each


CASES = {
    "conv3d": (lambda x: F.conv3d(x, W), [V]),
    "conv3d_bias_padding": (lambda x: F.conv3d(x, W, torch.arange(4.0), padding=1), [V]),
    "conv3d_stride_dilation": (lambda x: F.conv3d(x, W, stride=(2, 1, 2), padding=(2, 1, 0), dilation=(2, 1, 2)),
                               [V]),
    "conv3d_padding_past_window": (lambda x: F.conv3d(x, W, torch.ones(4), stride=(3, 1, 1), padding=(3, 0, 0)),
                                   [V[:, :, :1]]),
    "conv3d_groups": (lambda x: F.conv3d(x, WG, padding=(1, 1, 0), groups=3), [V]),
    "conv3d_temporal_1x1": (lambda x: F.conv3d(x, W[:, :, :, :1, :1], padding=(1, 0, 0)), [V]),
    "conv3d_spatial_only": (lambda x: F.conv3d(x, W[:, :, :1], padding=(0, 1, 1)), [V]),
    "conv3d_padding_same": (lambda x: F.conv3d(x, W, padding="same"), [V]),
    "conv3d_unbatched": (lambda x: F.conv3d(x, W, padding=1), [V[0]]),
    "conv_transpose3d": (lambda x: F.conv_transpose3d(x, W.transpose(0, 1)[:3]), [V]),
    "conv_transpose3d_stride_bias": (lambda x: F.conv_transpose3d(x, W.transpose(0, 1)[:3], torch.arange(4.0),
                                                                  stride=2, padding=1, output_padding=1), [V]),
    "conv_transpose3d_stride_dilation": (
        lambda x: F.conv_transpose3d(x, W.transpose(0, 1)[:3], stride=(3, 1, 2), padding=(2, 0, 1),
                                     output_padding=(1, 0, 0), dilation=(2, 2, 1)), [V]),
    "conv_transpose3d_padding_crops_taps": (
        lambda x: F.conv_transpose3d(x, W.transpose(0, 1)[:3], padding=(1, 1, 1)), [V[:, :, :1]]),
    "conv_transpose3d_every_tap_cropped": (lambda x: F.conv_transpose3d(
        x[:, :2, :1], torch.ones(2, 3, 2, 1, 1), torch.tensor([1.0, -2.0, 0.5]), padding=(1, 0, 0), dilation=(3, 1, 1)),
        [V]),
    "conv_transpose3d_groups": (lambda x: F.conv_transpose3d(x, WG[:3].transpose(0, 1).reshape(3, 1, 2, 3, 1),
                                                             stride=2, groups=3), [V]),
    "max_pool3d": (lambda x: F.max_pool3d(x, 2), [V]),
    "max_pool3d_stride_padding": (lambda x: F.max_pool3d(x, 3, stride=(2, 1, 2), padding=1), [V]),
    "max_pool3d_dilation": (lambda x: F.max_pool3d(x, 2, stride=1, dilation=(2, 1, 2)), [V]),
    "max_pool3d_ceil": (lambda x: F.max_pool3d(x, 2, ceil_mode=True), [V]),
    "max_pool3d_ceil_padding": (lambda x: F.max_pool3d(x, 3, stride=2, padding=1, ceil_mode=True), [V]),
    "max_pool3d_negative": (lambda x: F.max_pool3d(-x.abs() - 1, 3, stride=2, padding=1), [V]),
    "max_pool3d_nan": (lambda x: F.max_pool3d(torch.where(x > 1.5, float("nan"), x), 2), [V]),
    "max_pool3d_unbatched": (lambda x: F.max_pool3d(x, (1, 2, 2)), [V[0]]),
    "max_pool3d_with_indices_values": (lambda x: F.max_pool3d(x, 2, return_indices=True)[0], [V]),
    "avg_pool3d": (lambda x: F.avg_pool3d(x, 2), [V]),
    "avg_pool3d_padding": (lambda x: F.avg_pool3d(x, 3, stride=2, padding=1), [V]),
    "avg_pool3d_exclude_pad": (lambda x: F.avg_pool3d(x, 3, stride=2, padding=1, count_include_pad=False), [V]),
    "avg_pool3d_ceil": (lambda x: F.avg_pool3d(x, 2, ceil_mode=True), [V]),
    "avg_pool3d_ceil_padding_exclude": (
        lambda x: F.avg_pool3d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), [V]),
    "avg_pool3d_ceil_padding_include": (lambda x: F.avg_pool3d(x, 3, stride=2, padding=1, ceil_mode=True), [V]),
    "avg_pool3d_divisor": (lambda x: F.avg_pool3d(x, (2, 3, 2), padding=1, divisor_override=5), [V]),
    "avg_pool3d_unbatched": (lambda x: F.avg_pool3d(x, (2, 1, 2)), [V[0]]),
    "adaptive_avg_pool3d_1": (lambda x: F.adaptive_avg_pool3d(x, 1), [V]),
    "adaptive_avg_pool3d_depth_only": (lambda x: F.adaptive_avg_pool3d(x, (1, None, None)), [V]),
    "adaptive_avg_pool3d_uneven": (lambda x: F.adaptive_avg_pool3d(x, (3, 4, 2)), [V]),
    "adaptive_avg_pool3d_even": (lambda x: F.adaptive_avg_pool3d(x, (5, 3, 7)), [V]),
    "adaptive_avg_pool3d_split": (lambda x: F.adaptive_avg_pool3d(torch.cat([x, x], 2), (2, 1, 1)), [V]),
    "adaptive_avg_pool3d_unbatched": (lambda x: F.adaptive_avg_pool3d(x, (2, 2, 3)), [V[0]]),
    "trilinear_scale": (lambda x: F.interpolate(x, scale_factor=2, mode="trilinear"), [V]),
    "trilinear_size_align": (lambda x: F.interpolate(x, size=(7, 4, 9), mode="trilinear", align_corners=True), [V]),
    "trilinear_size": (lambda x: F.interpolate(x, size=(3, 11, 5), mode="trilinear"), [V]),
    "trilinear_scale_1.7": (lambda x: F.interpolate(x, scale_factor=(1.7, 1.3, 0.6), mode="trilinear"), [V]),
    "trilinear_keeps_depth": (lambda x: F.interpolate(x, size=(5, 12, 14), mode="trilinear"), [V]),
    "nearest3d_scale": (lambda x: F.interpolate(x, scale_factor=2), [V]),
    "nearest3d_size": (lambda x: F.interpolate(x, size=(3, 11, 4)), [V]),
    "nearest3d_depth_only": (lambda x: F.interpolate(x, size=(9, 6, 7)), [V]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_3d_op_matches_torch(name):
    compiled_matches_torch(*CASES[name], atol=2e-5)


# -- a small video network on real photos ---------------------------------------------------------------------------
def _images(pkg: str, *names: str) -> list[str]:
    pytest.importorskip(pkg)  # scikit-image and scikit-learn ship the photos (the "models" extra)
    root = importlib.util.find_spec(pkg).submodule_search_locations[0]
    return [os.path.join(root, *name.split("/")) for name in names]


def train_photos() -> list[str]:
    return _images("skimage", "data/chelsea.png", "data/coffee.png", "data/astronaut.png", "data/rocket.jpg")


def held_out_photos() -> list[str]:
    return _images("skimage", "data/motorcycle_left.png") + _images(
        "sklearn", "datasets/images/china.jpg", "datasets/images/flower.jpg")


#: the camera's move per frame (rows, columns): still, right, left, down, up
MOVES = [(0, 0), (0, 2), (0, -2), (2, 0), (-2, 0)]
FRAMES, SIDE = 8, 24


def camera_clips(paths: list[str], n: int, seed: int):
    """``n`` clips [3, FRAMES, SIDE, SIDE] of a window panning over real photos, labelled by the pan's direction."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(p).convert("RGB").resize((160, 120)), np.float32) / 255 for p in paths]
    xs, ys = [], []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        label = int(rng.integers(len(MOVES)))
        dy, dx = MOVES[label]
        r0, c0 = rng.integers(20, img.shape[0] - SIDE - 20), rng.integers(20, img.shape[1] - SIDE - 20)
        frames = [img[r0 + t * dy:r0 + t * dy + SIDE, c0 + t * dx:c0 + t * dx + SIDE] for t in range(FRAMES)]
        xs.append(np.stack(frames).transpose(3, 0, 1, 2))
        ys.append(label)
    return torch.from_numpy((np.stack(xs) - 0.45) / 0.25), torch.tensor(ys)


def video_net() -> torch.nn.Sequential:
    """A C3D-style network: 3x3x3 convs with BatchNorm, pools over space then space and time, a temporal-only
    window, global pooling and a classifier."""
    nn = torch.nn
    return nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                         nn.Conv3d(8, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(), nn.MaxPool3d(2),
                         nn.Conv3d(16, 32, 3, padding=(0, 1, 1)), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(32, len(MOVES)))


@pytest.fixture(scope="module")
def trained_video_net():
    """The network trained (seconds) to tell the pan's direction on clips of four photos; tested on three others."""
    torch.manual_seed(0)
    x_train, y_train = camera_clips(train_photos(), 512, seed=0)
    model = video_net()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(8):
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), 32):
            batch = order[i:i + 32]
            opt.zero_grad()
            F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            opt.step()
    return model.eval(), x_train, camera_clips(held_out_photos(), 200, seed=1)


def test_video_net_float_and_int8_on_real_clips(trained_video_net):
    model, x_train, (x_test, y_test) = trained_video_net
    with torch.no_grad():
        want = model(x_test).numpy()
    accuracy = (want.argmax(1) == y_test.numpy()).mean()
    assert accuracy >= 0.7, accuracy  # it learned the task (5 classes: chance is 0.2)
    clip = x_test[:1]
    compiled = edgeopt.compile(model, (clip,))
    got = np.concatenate([compiled(x_test[i:i + 1].numpy()) for i in range(len(x_test))])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    int8 = edgeopt.compile(model, (clip,), quantize="int8", calibration_data=[(x_train[i:i + 1],) for i in range(32)])
    assert int8.report["quantization"]["kernels_by_precision"].get("int8", 0) >= 3  # the 3 convs' 2-d layers
    got8 = np.concatenate([int8(x_test[i:i + 1].numpy()) for i in range(len(x_test))])
    agreement = (got8.argmax(1) == want.argmax(1)).mean()
    accuracy8 = (got8.argmax(1) == y_test.numpy()).mean()
    assert agreement >= 0.95 and accuracy8 >= accuracy - 0.03, (agreement, accuracy8, accuracy)


class PoolIndices3d(torch.nn.Module):
    def forward(self, x):
        return F.max_pool3d(x, 2, return_indices=True)[1].float()


def test_3d_ops_still_missing_are_one_clear_error():
    with pytest.raises(UnsupportedModelError, match=r"aten::max_pool3d_with_indices \(output 1\)") as info:
        edgeopt.compile(PoolIndices3d().eval(), [V])
    assert "test_volumetric.py" in str(info.value)  # with the model's source line


class Volumetric(torch.nn.Module):
    """Each 3-d op the ONNX importer maps (Conv, ConvTranspose, MaxPool, AveragePool), with padding and strides."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, 3, stride=(1, 2, 1), padding=(1, 0, 1), groups=3)
        self.up = torch.nn.ConvTranspose3d(6, 4, 2, stride=2, padding=(1, 0, 0), output_padding=(1, 0, 0))

    def forward(self, x):
        y = F.max_pool3d(self.conv(x), 3, stride=2, padding=1, ceil_mode=True)
        y = self.up(y)
        return F.avg_pool3d(y, (2, 3, 2), stride=1, padding=1, count_include_pad=False)


@pytest.mark.parametrize("build", [Volumetric, video_net])
def test_3d_onnx_models_match_pytorch_and_onnxruntime(build, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    model = build().eval()
    x = torch.randn(1, 3, FRAMES, SIDE, SIDE)
    path = str(tmp_path / "m.onnx")
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17)
    got = edgeopt.compile(path, [x.numpy()])(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    peer = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, peer, rtol=1e-4, atol=1e-5)


def test_int8_depth_taps_share_one_quantize_of_their_input():
    """A 3-d conv's depth taps read moved copies of one activation: it is quantized once (``quantize_static``'s
    ``shared_moves``), and each tap's kernel reads the u8 values in its prologue."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(8, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv3d(16, 8, 3, padding=(1, 1, 1))).eval()
    x = torch.randn(1, 8, 6, 10, 10)
    calibration = [(torch.randn(1, 8, 6, 10, 10),) for _ in range(4)]
    int8 = edgeopt.compile(model, (x,), quantize="int8", calibration_data=calibration)
    ops = [op for k in int8.report["kernels"] for op in k["ops"]]
    assert ops.count("quantize") == 2, ops  # one per conv3d (3 taps each), not one per tap
    assert int8.report["quantization"]["kernels_by_precision"]["int8"] >= 6
    with torch.no_grad():
        want = model(x).numpy()
    got = int8(x.numpy())
    assert (got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want) > 0.999


class SplitBranches(torch.nn.Module):
    """Two branches on the halves of one activation's channels (MixConv): disjoint slices, each its own range."""

    def __init__(self):
        super().__init__()
        self.pw = torch.nn.Conv2d(4, 16, 1)
        self.a = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.b = torch.nn.Conv2d(8, 8, 5, padding=2, groups=8)

    def forward(self, x):
        y = torch.relu(self.pw(x)) * torch.tensor([30.0] * 8 + [0.3] * 8).reshape(1, 16, 1, 1)
        left, right = y.split(8, dim=1)
        return torch.cat([self.a(left), self.b(right)], 1)


def test_int8_channel_branches_keep_their_own_quantize():
    torch.manual_seed(0)
    model = SplitBranches().eval()
    x = torch.randn(1, 4, 12, 12)
    int8 = edgeopt.compile(model, (x,), quantize="int8", calibration_data=[(torch.randn(1, 4, 12, 12),)
                                                                           for _ in range(4)])
    ops = [op for k in int8.report["kernels"] for op in k["ops"]]
    assert ops.count("quantize") >= 3, ops  # the input's and one per branch: the small half keeps its fine scale
    with torch.no_grad():
        want = model(x).numpy()
    small = want[:, 8:]
    err = np.abs(int8(x.numpy())[:, 8:] - small).max() / np.abs(small).max()
    assert err < 0.1, err  # 0.037; one quantize of the whole activation (its large half's scale): 0.25
