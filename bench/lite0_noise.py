"""Where EfficientNet-Lite0's int8 error comes from: a fake-quantized PyTorch copy, one source of error at a time.

    .venv/bin/python bench/lite0_noise.py            # 64 calibration crops, 160 evaluation crops (~2 min)
    .venv/bin/python bench/lite0_noise.py --small    # a smoke run (CI's bench test)

The copy mimics edgeopt's static int8 (``docs/quantization.md``): weights symmetric int8 per output channel after
BatchNorm folding (quantized folded, then unfolded, so BatchNorm stays a module), with bias correction (each
layer's mean output error over the calibration crops, on float inputs, taken off its BatchNorm); every conv /
linear input but the stem's quantized per tensor to u8 (asymmetric, the min-max of the calibration crops). Each
row turns some of that on (a layer kind is ``expand``, ``depthwise``, ``project``, ``head`` or ``fc``) and prints
top-1 agreement with fp32 and the logits' mean 1 - cosine: the error budget the 98% agreement target has to fit
in. It also prints how many evaluation crops have their top two fp32 logits within 0.05 (the near-ties that any
error flips). Writes bench/results/lite0_noise-<time>.json.
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


def kind(name: str) -> str:
    """A layer's kind from its module name (``_blocks.3._depthwise_conv`` -> ``depthwise``)."""
    return {"_conv_stem": "stem", "_fc": "fc", "_conv_head": "head"}.get(name) or \
        name.split(".")[-1].replace("_conv", "").strip("_")


class FakeQuant:
    """The model with switchable int8 weights and u8 inputs, per layer kind."""

    def __init__(self, model, calib: np.ndarray):
        import torch

        self.model, self.torch = model, torch
        mods = dict(model.named_modules())
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        bn_names = {"_conv_stem": "_bn0", "_conv_head": "_bn1", "_expand_conv": "_bn0", "_depthwise_conv": "_bn1",
                    "_project_conv": "_bn2"}
        self.bn = {}
        for n, _ in self.layers:
            last = n.split(".")[-1]
            if last in bn_names:
                self.bn[n] = mods[n[:len(n) - len(last)] + bn_names[last] if "." in n else bn_names[last]]
        self.float_w = {n: m.weight.detach().clone() for n, m in self.layers}
        self.int8_w = {n: self._int8(n) for n, _ in self.layers if n != "_conv_stem"}
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
        ranges = {}

        def hook(n):
            def h(m, a):
                lo, hi = ranges.get(n, (np.inf, -np.inf))
                ranges[n] = (min(lo, a[0].min().item()), max(hi, a[0].max().item()))
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

        self._run(calib, post={n: hook(n) for n, _ in self.layers if n in self.bn and n != "_conv_stem"})
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

    def run(self, x, weights=(), inputs=(), input_bits: dict | None = None) -> np.ndarray:
        """Logits with the int8 weights of the kinds in ``weights`` and u8 inputs for the kinds in ``inputs``
        (``input_bits``: another width for some kinds)."""
        bits = {k: 8 for k in inputs} | (input_bits or {})
        for n, m in self.layers:
            on = kind(n) in weights and n in self.int8_w
            m.weight.data = (self.int8_w[n] if on else self.float_w[n]).clone()
            if n in self.running_mean:
                self.bn[n].running_mean.data = self.running_mean[n] + (self.shift[n] if on and n in self.shift else 0)

        def hook(n, b):
            def h(m, a):
                lo, hi = min(self.ranges[n][0], 0.0), max(self.ranges[n][1], 0.0)
                top = 2 ** b - 1
                s = max(hi - lo, 1e-12) / top
                z = round(-lo / s)
                return ((self.torch.clamp(self.torch.round(a[0] / s) + z, 0, top) - z) * s,)
            return h

        try:
            return self._run(x, pre={n: hook(n, bits[kind(n)]) for n, _ in self.layers if kind(n) in bits})
        finally:
            self.restore_float()

    def restore_float(self) -> None:
        for n, m in self.layers:
            m.weight.data = self.float_w[n].clone()
        for n, rm in self.running_mean.items():
            self.bn[n].running_mean.data = rm.clone()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=160)
    ap.add_argument("--small", action="store_true", help="64x64 crops, 8 + 16 of them")
    args = ap.parse_args(argv)
    import torch

    from tests.models.zoo import efficientnet_lite0

    torch.set_num_threads(2)
    n_calib, n_eval, size = (8, 16, 64) if args.small else (args.n_calib, args.n_eval, 224)
    model, _ = efficientnet_lite0(small=args.small)
    calib, ev = qd.calibration_and_eval(n_calib, n_eval, norm="lite0", size=size)
    fq = FakeQuant(model, calib)
    ref = fq.run(ev)
    top2 = np.sort(ref, 1)[:, -2:]
    near_ties = int((top2[:, 1] - top2[:, 0] < 0.05).sum())
    rows = [("int8 weights and u8 inputs (the compiled model's scheme)", KINDS, KINDS, None),
            ("int8 weights only", KINDS, (), None), ("u8 inputs only", (), KINDS, None)]
    rows += [(f"int8 {k} weights only", (k,), (), None) for k in KINDS]
    rows += [(f"u8 {k} inputs only", (), (k,), None) for k in KINDS]
    rows += [("all, depthwise weights float and inputs 16-bit", tuple(k for k in KINDS if k != "depthwise"), KINDS,
              {"depthwise": 16})]
    results = []
    print(f"{len(ev)} crops, {near_ties} with their top two fp32 logits within 0.05")
    for name, weights, inputs, bits in rows:
        out = fq.run(ev, weights, inputs, bits)
        cos = float(np.mean(np.sum(out * ref, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)))
        agree = qd.top1_agreement(out, ref)
        results.append({"variant": name, "top1_agreement": agree, "one_minus_cosine": 1 - cos,
                        "logit_error_std_median": float(np.median(np.std(out - ref, axis=1)))})
        print(f"{name:55s} agreement {agree:.4f}  1 - cosine {1 - cos:.6f}", flush=True)
    return save_results("lite0_noise", {"rows": results, "n_calib": len(calib), "n_eval": len(ev),
                                        "near_ties_0.05": near_ties}, args=vars(args))


if __name__ == "__main__":
    print(main())
