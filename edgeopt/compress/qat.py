"""Quantization-aware training: fake-quantize a model the way edgeopt's static int8 will run it, train it (on its
float teacher: ``distill``), and compile it with the learned scales.

    qat = edgeopt.compress.prepare_qat(model, example_inputs, calibration_batches)
    edgeopt.compress.distill(model, qat, train_batches, labels=True, epochs=5)   # or any training loop
    float_model, config = qat.export()
    compiled = edgeopt.compile(float_model, example_inputs, quantize=config, calibration_data=calibration_batches)

``prepare_qat`` folds each BatchNorm into the conv before it (as the compiler does before quantizing) and wraps
every conv and linear that static int8 quantizes (not a dense conv on fewer than 4 input channels: an image's
first layer stays float there too) in a ``QATLayer``: its input goes through an asymmetric u8 fake quantizer and
its weight through a symmetric int8 one per output channel, both with learned scales (LSQ: the rounding passes
gradients straight through, the scales get theirs scaled by 1/sqrt(elements * levels)). Input ranges start at
the calibration data's min/max, weight scales at max|w| / levels.

The weight levels are the ones the compiler gives each layer on ``target`` (default "host", as for
``edgeopt.compile``; ``reduce_range`` as in ``QuantConfig``): 127, or 7-bit (-64..64) for a layer that an x86 CPU
without VNNI (AVX2, or AVX-512 without VNNI) runs on ``vpmaddubsw``, exact only for such weights
(``int8_weight_layout.weight_levels``, the rule static int8 follows). Training on the grid the kernel needs keeps
those layers on the fast instruction; a model trained on 8-bit grids and compiled for such a CPU runs them on the
exact ``vpmaddwd`` path, at about half the speed.

``export`` gives the float model whose weights are the fake-quantized ones (exactly on the int8 grid of the
learned scales) and a ``QuantConfig`` carrying those scales and the learned input ranges, by layer name, with
bias correction off: the compiler's int8 model is then the trained one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..quant.config import QuantConfig


def _round_ste(x):
    return x + (x.round() - x).detach()


def _grad_scale(x, factor: float):
    """``x`` in the forward pass, its gradient times ``factor`` in the backward one."""
    return (x - x * factor).detach() + x * factor


def fake_quant(x, scale, zero_point, qmin: int, qmax: int, grad_factor: float):
    s = _grad_scale(scale, grad_factor).abs().clamp(min=1e-12)
    z = (torch.clamp(_round_ste(_grad_scale(zero_point, grad_factor)), qmin, qmax)
         if zero_point is not None else 0.0)
    q = torch.clamp(_round_ste(x * (1.0 / s)) + z, qmin, qmax)  # times the reciprocal, as the quantize op rounds
    return (q - z) * s


class QATLayer(torch.nn.Module):
    """A conv or linear with fake-quantized input (u8, learned scale and zero point) and weight (int8 per output
    channel on levels -``levels``..``levels``, learned scales)."""

    def __init__(self, layer, lo: float, hi: float, levels: int = 127):
        super().__init__()
        self.layer, self.levels = layer, levels
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        self.in_scale = torch.nn.Parameter(torch.tensor(scale))
        self.in_zero_point = torch.nn.Parameter(torch.tensor(float(np.clip(round(-lo / scale), 0, 255))))
        w = layer.weight.detach()
        amax = w.abs().reshape(w.shape[0], -1).amax(1).clamp(min=1e-8)
        self.w_scale = torch.nn.Parameter(amax / float(levels))

    def quantized_weight(self):
        w = self.layer.weight
        shape = (-1,) + (1,) * (w.dim() - 1)
        q = self.levels
        return fake_quant(w, self.w_scale.reshape(shape), None, -q, q, 1.0 / (w[0].numel() * q) ** 0.5)

    def forward(self, x):
        x = fake_quant(x, self.in_scale, self.in_zero_point, 0, 255, 1.0 / (x[0].numel() * 255) ** 0.5)
        w, m = self.quantized_weight(), self.layer
        if isinstance(m, torch.nn.Linear):
            return torch.nn.functional.linear(x, w, m.bias)
        return torch.nn.functional.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)

    def input_range(self) -> tuple[float, float]:
        s = max(abs(float(self.in_scale.detach())), 1e-12)
        z = float(min(max(round(float(self.in_zero_point.detach())), 0), 255))  # as fake_quant clamps it
        return -z * s, (255 - z) * s


class QATModel(torch.nn.Module):
    """The model with fake quantizers; train it like the model, then ``export()``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def qat_layers(self) -> dict:
        return {name: m for name, m in self.model.named_modules() if isinstance(m, QATLayer)}

    def export(self):
        """(a plain float model with the fake-quantized weights, the ``QuantConfig`` with the learned scales)."""
        model = copy.deepcopy(self.model).eval()
        ranges, scales = {}, {}
        for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, QATLayer)]:
            with torch.no_grad():
                m.layer.weight.copy_(m.quantized_weight())
            ranges[name] = m.input_range()
            scales[name] = np.abs(m.w_scale.detach().numpy()).astype(np.float32).clip(1e-12)
            _set_module(model, name, m.layer)
        # the other readers of a quantized activation (a residual add) read the float value, as in training; the
        # image's conv stays as training had it (float), not quantized after training by ``int8_image_convs="auto"``
        return model, QuantConfig(mode="int8", input_ranges=ranges, weight_scales=scales, bias_correction=False,
                                  quantized_residuals=False, int8_image_convs=False)


def prepare_qat(model, example_inputs, calibration_data, target="host", reduce_range="auto",
                **target_options) -> QATModel:
    """A copy of ``model`` ready for quantization-aware training (see the module docstring). ``calibration_data``:
    batches of inputs that set the initial input ranges, as ``edgeopt.compile`` takes them (a tensor, a tuple of
    tensors or a dict by input name per batch, or several batches stacked); ``target`` (a name with
    ``target_options``, as for ``edgeopt.compile``, or an ``edgeopt.targets`` target) and ``reduce_range``: what each
    layer's weight levels are made for. (The target's toolchain need not be on the training machine.)"""
    from ..quant.setup import calibration_batches
    from ..targets import get_target

    QuantConfig(reduce_range=reduce_range)  # its checks
    target = get_target(target, check_toolchain=False, **target_options)
    model = copy.deepcopy(model).eval()
    graph = _trace(model, example_inputs)  # once: the BatchNorms to fold and each layer's weight shape
    model = fold_batch_norms(model, example_inputs, graph)
    targets = {name: m for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) or isinstance(m, torch.nn.Conv2d) and m.padding_mode == "zeros"
               and not (m.groups == 1 and m.in_channels < 4)}
    levels = weight_levels_for(graph, set(targets), target, reduce_range)
    lo = dict.fromkeys(targets, np.inf)
    hi = dict.fromkeys(targets, -np.inf)

    def observe(name):
        def hook(module, args):
            lo[name] = min(lo[name], float(args[0].min()))
            hi[name] = max(hi[name], float(args[0].max()))
        return hook

    handles = [m.register_forward_pre_hook(observe(name)) for name, m in targets.items()]
    with torch.no_grad():  # the batches as edgeopt.compile takes them (stacks, dicts by input name), checked
        for batch in calibration_batches(calibration_data, graph):
            model(*[torch.from_numpy(a) for a in batch])
    for h in handles:
        h.remove()
    for name, m in targets.items():
        if np.isfinite(lo[name]):
            _set_module(model, name, QATLayer(m, lo[name], hi[name], levels.get(name, 127)))
    return QATModel(model)


def weight_levels_for(g, names: set, target, reduce_range) -> dict[str, int]:
    """The largest weight level the compiler gives each layer of ``names`` (of the model traced as graph ``g``) on
    ``target`` (an ``edgeopt.targets`` target), by the rule static int8 follows (``int8_weight_layout.weight_levels``).
    A multi-level target (``"x86-64"``) builds each level on the same weights: each layer gets the fewest levels any of
    them needs (7-bit weights are exact on every dot product)."""
    from edgeopt.passes.int8_weight_layout import target_activation_dtype, weight_levels

    out = {}
    for _, tgt in getattr(target, "levels", None) or [(None, target)]:
        for n in g.nodes:
            name = g.layer_name(n) if n.op in ("conv2d", "linear") and g.is_const(n.inputs[1]) else None
            if name in names:
                q = weight_levels(n, g.const(n.inputs[1]).shape, tgt, target_activation_dtype(tgt), reduce_range)
                out[name] = min(q, out.get(name, 127))
    return out


def fold_batch_norms(model, example_inputs, graph=None):
    """``model`` (changed in place) with each BatchNorm that follows a conv (its only reader, in the traced graph:
    ``graph`` if given, ``model`` traced on ``example_inputs``) folded into that conv's weight and bias and replaced
    by ``nn.Identity``."""
    g = graph if graph is not None else _trace(model, example_inputs)
    users = g.users()
    for n in g.nodes:
        x = n.inputs[0]
        if n.op != "batch_norm" or x.producer is None or x.producer.op != "conv2d" or len(users[x]) != 1 \
                or len(users[x.producer.inputs[1]]) != 1:  # a conv called from several places keeps its BNs
            continue
        conv_name = g.layer_name(x.producer)
        bn_name = g.param_names.get(n.inputs[1].name, "").rpartition(".")[0]
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if bn.running_mean is None:  # batch statistics at inference: nothing to fold
            continue
        with torch.no_grad():
            gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_mean)
            beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
            k = gamma / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(k.reshape(-1, 1, 1, 1))
            b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias = torch.nn.Parameter((b - bn.running_mean) * k + beta)
        _set_module(model, bn_name, torch.nn.Identity())
    return model


def _trace(model, example_inputs):
    from ..frontend import from_torch

    return from_torch(model, tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,))


def _set_module(model, name: str, new) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
