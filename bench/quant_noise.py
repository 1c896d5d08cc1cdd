"""Where a pretrained CNN's int8 error comes from (EfficientNet-Lite0, MobileNetV2): a fake-quantized PyTorch copy,
one source of error at a time.

    .venv/bin/python bench/quant_noise.py                  # Lite0: 64 calibration crops, 160 evaluation crops (~3 min)
    .venv/bin/python bench/quant_noise.py mobilenet_v2     # torchvision's pretrained MobileNetV2
    .venv/bin/python bench/quant_noise.py --small          # a smoke run (CI's bench test)

The copy mimics edgeopt's static int8 (``docs/quantization.md``): weights symmetric int8 per output channel after
BatchNorm folding (quantized folded, then unfolded, so BatchNorm stays a module), with bias correction (each
layer's mean output error over the calibration crops, on float inputs, taken off its BatchNorm); every conv /
linear input but the stem's quantized per tensor to u8 (asymmetric, the min-max of the calibration crops). Each
row turns some of that on (a layer kind is ``expand``, ``depthwise``, ``project``, ``head`` or ``fc``; the last
rows' weights are every layer's, the stem's too) and prints
top-1 agreement with fp32 and the logits' mean 1 - cosine: the error budget the 98% agreement target has to fit
in. A row quantizes every input per channel instead (float weights): what finer activation scales give (a
channel quiet on the calibration crops clips on others), which an integer kernel can only use for a dense layer by
moving them into its weights. The last rows measure the measure: how far weight errors that are not int8's move it
(every weight rounded to bfloat16, or times 1 + 0.001 N(0, 1)), with and without bias correction. It also prints
how many evaluation crops have their top two fp32 logits within 0.05 (the near-ties that any error flips). Writes
bench/results/quant_noise-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from bench import quant_data as qd  # noqa: E402
from bench.common import save_results  # noqa: E402

KINDS = ("expand", "depthwise", "project", "head", "fc")
ALL_KINDS = ("stem",) + KINDS


class Lite0Layers:
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch``): ``_blocks.3._depthwise_conv`` is a ``depthwise`` layer and
    ``_blocks.3._bn1`` its BatchNorm."""

    _bn = {"_conv_stem": "_bn0", "_conv_head": "_bn1", "_expand_conv": "_bn0", "_depthwise_conv": "_bn1",
           "_project_conv": "_bn2"}

    @staticmethod
    def kind(name: str, modules: dict) -> str:
        return {"_conv_stem": "stem", "_fc": "fc", "_conv_head": "head"}.get(name) or \
            name.split(".")[-1].replace("_conv", "").strip("_")

    @classmethod
    def batch_norm(cls, name: str) -> str | None:
        last = name.split(".")[-1]
        return None if last not in cls._bn else name[:len(name) - len(last)] + cls._bn[last]


class MobileNetV2Layers:
    """The zoo's MobileNetV2 (torchvision's modules): ``features.4.conv.1.0`` is a conv, ``features.4.conv.1.1`` its
    BatchNorm; a block's last conv projects, a grouped one is depthwise, the others expand."""

    @staticmethod
    def kind(name: str, modules: dict) -> str:
        if name == "features.0.0":
            return "stem"
        if name.startswith("classifier"):
            return "fc"
        if ".conv." not in name:
            return "head"
        if modules[name].groups > 1:
            return "depthwise"
        block, index, _ = name.rsplit(".", 2)  # features.4.conv.1.0 -> features.4.conv, 1
        return "project" if int(index) == len(modules[block]) - 1 else "expand"

    @staticmethod
    def batch_norm(name: str) -> str | None:
        return name[:-2] + ".1" if name.endswith(".0") else None


MODELS = {"efficientnet_lite0": Lite0Layers, "mobilenet_v2": MobileNetV2Layers}


class FakeQuant:
    """The model with switchable weight formats (``weights_in``: int8, bf16, noise) and u8 inputs, per layer kind
    (``layers``: ``Lite0Layers`` or ``MobileNetV2Layers``)."""

    def __init__(self, model, calib: np.ndarray, layers=Lite0Layers):
        import torch

        self.model, self.torch = model, torch
        mods = dict(model.named_modules())
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        self.kinds = {n: layers.kind(n, mods) for n, _ in self.layers}
        self.bn = {n: mods[layers.batch_norm(n)] for n, _ in self.layers if layers.batch_norm(n)}
        self.float_w = {n: m.weight.detach().clone() for n, m in self.layers}
        self.running_mean = {n: bn.running_mean.clone() for n, bn in self.bn.items()}
        self.calib, self.ranges = calib, self._observe(calib)
        self.formats = {}  # weight format -> (its weights by layer, their bias shifts): see ``weights_in``

    def weights_in(self, fmt: str) -> tuple[dict, dict]:
        """Each layer's weight stored in ``fmt`` (with its BatchNorm folded, then unfolded), and the bias shifts
        that correct it: ``int8`` (edgeopt's symmetric levels per output channel; the stem stays float),
        ``bf16`` (each weight rounded to bfloat16) or ``noise`` (each weight times 1 + 0.001 N(0, 1), seed 0)."""
        if fmt not in self.formats:
            from edgeopt.quant.weights import symmetric_int8

            torch, gen = self.torch, self.torch.Generator().manual_seed(0)

            def int8(w):  # edgeopt's own levels and scales, as floats
                q, scale = symmetric_int8(w.numpy(), tuple(range(1, w.dim())))
                return torch.from_numpy(q.astype(np.float32) * scale)

            store = {"int8": int8, "bf16": lambda w: w.to(torch.bfloat16).float(),
                     "noise": lambda w: w * (1 + 0.001 * torch.randn(w.shape, generator=gen))}[fmt]
            weights = {n: self._stored(n, store) for n, _ in self.layers if fmt != "int8" or self.kinds[n] != "stem"}
            self.formats[fmt] = weights, self._bias_shifts(weights)
        return self.formats[fmt]

    def _stored(self, n: str, store):
        """Layer ``n``'s weight as ``store`` keeps it once its BatchNorm is folded in, unfolded again."""
        w = self.float_w[n]
        g = None
        if n in self.bn:
            bn = self.bn[n]
            g = (bn.weight / self.torch.sqrt(bn.running_var + bn.eps)).detach().reshape((-1,) + (1,) * (w.dim() - 1))
            w = w * g
        q = store(w)
        return q / g if g is not None else q

    def _observe(self, calib) -> dict:
        """Each layer's input range per channel over ``calib``: (lows, highs)."""
        ranges = {}

        def hook(n):
            def h(m, a):
                x = a[0].transpose(0, 1).reshape(a[0].shape[1], -1)
                lo, hi = x.min(1).values.double().numpy(), x.max(1).values.double().numpy()
                ranges[n] = (np.minimum(ranges[n][0], lo), np.maximum(ranges[n][1], hi)) if n in ranges else (lo, hi)
            return h

        self._run(calib, pre={n: hook(n) for n, _ in self.layers})
        return ranges

    def _bias_shifts(self, weights: dict) -> dict:
        """Each BatchNorm'd layer's mean output error (per channel) from its weight in ``weights``, on float
        calibration inputs."""
        sums, counts = {}, {}

        def hook(n):
            def h(m, a, out):
                w = m.weight.data
                m.weight.data = weights[n]
                with self.torch.no_grad():
                    err = type(m).forward(m, a[0]) - out
                m.weight.data = w
                sums[n] = sums.get(n, 0) + err.mean((0, 2, 3))
                counts[n] = counts.get(n, 0) + 1
            return h

        self._run(self.calib, post={n: hook(n) for n, _ in self.layers if n in self.bn and n in weights})
        return {n: sums[n] / counts[n] for n in sums}

    def _run(self, x, pre=None, post=None) -> np.ndarray:
        hs = [m.register_forward_pre_hook(pre[n]) for n, m in self.layers if pre and n in pre]
        hs += [m.register_forward_hook(post[n]) for n, m in self.layers if post and n in post]
        try:
            with self.torch.inference_mode():
                return np.concatenate([self.model(self.torch.from_numpy(x[i:i + 16])).numpy()
                                       for i in range(0, len(x), 16)])
        finally:
            for h in hs:
                h.remove()

    def run(self, x, weights=(), inputs=(), input_bits: dict | None = None, per_channel: bool = False,
            fmt: str = "int8", corrected: bool = True) -> np.ndarray:
        """Logits with the weights of the kinds in ``weights`` stored in ``fmt`` (``weights_in``; ``corrected``:
        with their bias shifts) and u8 inputs for the kinds in ``inputs`` (``input_bits``: another width for some
        kinds; ``per_channel``: each input channel its own range)."""
        bits = {k: 8 for k in inputs} | (input_bits or {})
        stored, shift = self.weights_in(fmt)
        for n, m in self.layers:
            on = self.kinds[n] in weights and n in stored
            m.weight.data = (stored[n] if on else self.float_w[n]).clone()
            if n in self.running_mean:
                fix = shift[n] if on and corrected and n in shift else 0
                self.bn[n].running_mean.data = self.running_mean[n] + fix

        def hook(n, m, b):
            lo, hi = self.ranges[n]
            lo, hi = (lo, hi) if per_channel else (lo.min(), hi.max())
            lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            top = 2 ** b - 1
            s = np.maximum(hi - lo, 1e-12) / top
            z = np.round(-lo / s)
            shape = (-1,) if isinstance(m, self.torch.nn.Linear) else (-1, 1, 1)  # the channel axis of its input
            sc, zc = (self.torch.tensor(np.reshape(v, shape), dtype=self.torch.float32) for v in (s, z))

            def h(m, a):
                return ((self.torch.clamp(self.torch.round(a[0] / sc) + zc, 0, top) - zc) * sc,)
            return h

        try:
            return self._run(x, pre={n: hook(n, m, bits[self.kinds[n]]) for n, m in self.layers
                                     if self.kinds[n] in bits})
        finally:
            self.restore_float()

    def restore_float(self) -> None:
        for n, m in self.layers:
            m.weight.data = self.float_w[n].clone()
        for n, rm in self.running_mean.items():
            self.bn[n].running_mean.data = rm.clone()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="efficientnet_lite0", choices=sorted(MODELS))
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=160)
    ap.add_argument("--small", action="store_true", help="64x64 crops, 8 + 16 of them (Lite0; MobileNetV2 at 224)")
    args = ap.parse_args(argv)
    import torch

    from tests.models.zoo import build

    torch.set_num_threads(2)
    layers = MODELS[args.model]
    small = args.small and args.model == "efficientnet_lite0"  # the zoo's small MobileNetV2 is not pretrained
    n_calib, n_eval = (8, 16) if args.small else (args.n_calib, args.n_eval)
    model, _ = build(args.model, small=small)
    calib, ev = qd.calibration_and_eval(n_calib, n_eval, norm=qd.MODEL_NORMS[args.model], size=64 if small else 224)
    fq = FakeQuant(model, calib, layers)
    ref = fq.run(ev)
    top2 = np.sort(ref, 1)[:, -2:]
    near_ties = int((top2[:, 1] - top2[:, 0] < 0.05).sum())
    rows = [("int8 weights and u8 inputs (the compiled model's scheme)", dict(weights=KINDS, inputs=KINDS)),
            ("int8 weights only", dict(weights=KINDS)), ("u8 inputs only", dict(inputs=KINDS))]
    rows += [(f"int8 {k} weights only", dict(weights=(k,))) for k in KINDS]
    rows += [(f"u8 {k} inputs only", dict(inputs=(k,))) for k in KINDS]
    rows += [("all, depthwise weights float and inputs 16-bit",
              dict(weights=tuple(k for k in KINDS if k != "depthwise"), inputs=KINDS, input_bits={"depthwise": 16}))]
    rows += [("u8 inputs only, each channel its own range", dict(inputs=KINDS, per_channel=True))]
    # how far any small weight error moves the metric: other formats, with and without bias correction
    rows += [("int8 weights only, no bias correction", dict(weights=KINDS, corrected=False))]
    rows += [(f"every weight {how}{'' if corrected else ', no bias correction'}",
              dict(weights=ALL_KINDS, fmt=fmt, corrected=corrected))
             for fmt, how in (("bf16", "rounded to bfloat16"), ("noise", "x (1 + 0.001 N(0, 1))"))
             for corrected in (False, True)]
    results = []
    print(f"{args.model}: {len(ev)} crops, {near_ties} with their top two fp32 logits within 0.05")
    for name, kw in rows:
        out = fq.run(ev, **kw)
        cos = float(np.mean(np.sum(out * ref, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)))
        agree = qd.top1_agreement(out, ref)
        results.append({"variant": name, "top1_agreement": agree, "one_minus_cosine": 1 - cos,
                        "logit_error_std_median": float(np.median(np.std(out - ref, axis=1)))})
        print(f"{name:55s} agreement {agree:.4f}  1 - cosine {1 - cos:.6f}", flush=True)
    return save_results("quant_noise", {"model": args.model, "rows": results, "n_calib": len(calib), "n_eval": len(ev),
                                        "near_ties_0.05": near_ties}, args=vars(args))


if __name__ == "__main__":
    print(main())
