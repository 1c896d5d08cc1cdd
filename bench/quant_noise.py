"""Where a pretrained CNN's int8 error comes from (EfficientNet-Lite0, MobileNetV2): a fake-quantized PyTorch copy,
one source of error at a time.

    .venv/bin/python bench/quant_noise.py                  # Lite0: 64 calibration crops, 160 evaluation crops (~2 min)
    .venv/bin/python bench/quant_noise.py mobilenet_v2     # torchvision's pretrained MobileNetV2
    .venv/bin/python bench/quant_noise.py --small          # a smoke run (CI's bench test)

The copy mimics edgeopt's static int8 (``docs/quantization.md``): weights symmetric int8 per output channel after
BatchNorm folding (quantized folded, then unfolded, so BatchNorm stays a module), with bias correction (each
layer's mean output error over the calibration crops, on float inputs, taken off its BatchNorm); every conv /
linear input but the stem's quantized per tensor to u8 (asymmetric, the min-max of the calibration crops). Each
row turns some of that on (a layer kind is ``expand``, ``depthwise``, ``project``, ``head`` or ``fc``) and prints
top-1 agreement with fp32 and the logits' mean 1 - cosine: the error budget the 98% agreement target has to fit
in. A last row quantizes every input per channel instead (float weights): what finer activation scales give (a
channel quiet on the calibration crops clips on others), which an integer kernel can only use for a dense layer by
moving them into its weights. It also prints how many evaluation crops have their top two fp32 logits within 0.05
(the near-ties that any error flips). Writes bench/results/quant_noise-<time>.json.
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
    """The model with switchable int8 weights and u8 inputs, per layer kind (``layers``: ``Lite0Layers`` or
    ``MobileNetV2Layers``)."""

    def __init__(self, model, calib: np.ndarray, layers=Lite0Layers):
        import torch

        self.model, self.torch = model, torch
        mods = dict(model.named_modules())
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        self.kinds = {n: layers.kind(n, mods) for n, _ in self.layers}
        self.bn = {n: mods[layers.batch_norm(n)] for n, _ in self.layers if layers.batch_norm(n)}
        self.float_w = {n: m.weight.detach().clone() for n, m in self.layers}
        self.int8_w = {n: self._int8(n) for n, _ in self.layers if self.kinds[n] != "stem"}
        self.running_mean = {n: bn.running_mean.clone() for n, bn in self.bn.items()}
        self.ranges = self._observe(calib)
        self.shift = self._bias_shifts(calib)

    def _int8(self, n: str):
        """The int8 weight of layer ``n`` (quantized with its BatchNorm folded, then unfolded), as floats."""
        from edgeopt.quant.weights import symmetric_int8

        w = self.float_w[n]
        g = None
        if n in self.bn:
            bn = self.bn[n]
            g = (bn.weight / self.torch.sqrt(bn.running_var + bn.eps)).detach().reshape((-1,) + (1,) * (w.dim() - 1))
            w = w * g
        q, s = symmetric_int8(w.numpy(), tuple(range(1, w.dim())))  # edgeopt's own per-channel int8
        q = self.torch.from_numpy(q.astype(np.float32) * s)
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

    def _bias_shifts(self, calib) -> dict:
        """Each BatchNorm'd layer's mean output error (per channel) from its int8 weight, on float inputs."""
        sums, counts = {}, {}

        def hook(n):
            def h(m, a, out):
                w = m.weight.data
                m.weight.data = self.int8_w[n]
                with self.torch.no_grad():
                    err = type(m).forward(m, a[0]) - out
                m.weight.data = w
                sums[n] = sums.get(n, 0) + err.mean((0, 2, 3))
                counts[n] = counts.get(n, 0) + 1
            return h

        self._run(calib, post={n: hook(n) for n, _ in self.layers if n in self.bn and n in self.int8_w})
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

    def run(self, x, weights=(), inputs=(), input_bits: dict | None = None, per_channel: bool = False) -> np.ndarray:
        """Logits with the int8 weights of the kinds in ``weights`` and u8 inputs for the kinds in ``inputs``
        (``input_bits``: another width for some kinds; ``per_channel``: each input channel its own range)."""
        bits = {k: 8 for k in inputs} | (input_bits or {})
        for n, m in self.layers:
            on = self.kinds[n] in weights and n in self.int8_w
            m.weight.data = (self.int8_w[n] if on else self.float_w[n]).clone()
            if n in self.running_mean:
                self.bn[n].running_mean.data = self.running_mean[n] + (self.shift[n] if on and n in self.shift else 0)

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
    rows = [("int8 weights and u8 inputs (the compiled model's scheme)", KINDS, KINDS, None),
            ("int8 weights only", KINDS, (), None), ("u8 inputs only", (), KINDS, None)]
    rows += [(f"int8 {k} weights only", (k,), (), None) for k in KINDS]
    rows += [(f"u8 {k} inputs only", (), (k,), None) for k in KINDS]
    rows += [("all, depthwise weights float and inputs 16-bit", tuple(k for k in KINDS if k != "depthwise"), KINDS,
              {"depthwise": 16})]
    rows += [("u8 inputs only, each channel its own range", (), KINDS, "per-channel")]
    results = []
    print(f"{args.model}: {len(ev)} crops, {near_ties} with their top two fp32 logits within 0.05")
    for name, weights, inputs, bits in rows:
        per_channel = bits == "per-channel"
        out = fq.run(ev, weights, inputs, None if per_channel else bits, per_channel)
        cos = float(np.mean(np.sum(out * ref, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)))
        agree = qd.top1_agreement(out, ref)
        results.append({"variant": name, "top1_agreement": agree, "one_minus_cosine": 1 - cos,
                        "logit_error_std_median": float(np.median(np.std(out - ref, axis=1)))})
        print(f"{name:55s} agreement {agree:.4f}  1 - cosine {1 - cos:.6f}", flush=True)
    return save_results("quant_noise", {"model": args.model, "rows": results, "n_calib": len(calib), "n_eval": len(ev),
                                        "near_ties_0.05": near_ties}, args=vars(args))


if __name__ == "__main__":
    print(main())
