"""``edgeopt.explore``: compile a model under a small grid of compression settings, measure accuracy, latency and
size of each, and show the Pareto front (the settings no other setting beats on all three).

    result = edgeopt.explore(model, example_inputs, data, metric="agreement")
    print(result)                       # a table, best accuracy first, the front marked
    result.plot("pareto.png")           # accuracy vs latency, marker area = artifact size, the front joined

Each setting is one ``edgeopt.compile`` (quantization modes, structured pruning ratios, low rank, and their
combinations) with no retraining; fine-tune the winners with ``edgeopt.compress.prune`` / ``distill``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from ..progress import progress_bar
from .config import Compress


def default_grid() -> list[dict]:
    """The settings ``explore`` tries by default."""
    return [{"name": "fp32"},
            {"name": "int8-weight", "quantize": "int8-weight"},
            {"name": "int8-dynamic", "quantize": "int8-dynamic"},
            {"name": "int8", "quantize": "int8"},
            {"name": "prune 25%", "compress": Compress(prune=0.25)},
            {"name": "prune 50%", "compress": Compress(prune=0.5)},
            {"name": "low rank 90% energy", "compress": Compress(rank_energy=0.9)},
            {"name": "prune 25% + int8", "compress": Compress(prune=0.25), "quantize": "int8"}]


@dataclass
class ExploreResult:
    rows: list[dict] = field(default_factory=list)  # name, accuracy, latency_ms, size_bytes, pareto, error

    def front(self) -> list[dict]:
        return [r for r in self.rows if r.get("pareto")]

    def __str__(self) -> str:
        lines = [f"{'setting':28} {'accuracy':>9} {'latency ms':>11} {'size MB':>8}  front"]
        for r in sorted(self.rows, key=lambda r: -(r.get("accuracy") if r.get("accuracy") is not None else -1e9)):
            if r.get("error"):
                lines.append(f"{r['name']:28} failed: {r['error']}")
                continue
            lines.append(f"{r['name']:28} {r['accuracy']:9.4f} {r['latency_ms']:11.3f} {r['size_bytes'] / 1e6:8.2f}"
                         f"  {'*' if r['pareto'] else ''}")
        return "\n".join(lines)

    def plot(self, path: str) -> str:
        """Two panels, accuracy against latency and against artifact size, each with its two-way Pareto front as a
        staircase; the settings on the three-way front in red. Saved as ``path`` (PNG)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("ExploreResult.plot needs matplotlib: pip install matplotlib") from None
        ok = [r for r in self.rows if not r.get("error")]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
        for ax, key, label, scale in ((axes[0], "latency_ms", "latency (ms, median)", 1.0),
                                      (axes[1], "size_bytes", "artifact size (MB)", 1e-6)):
            xs = [r[key] * scale for r in ok]
            ax.scatter(xs, [r["accuracy"] for r in ok], s=60, zorder=3,
                       c=["tab:red" if r["pareto"] else "tab:blue" for r in ok])
            for i, r in enumerate(ok):
                ax.annotate(r["name"], (r[key] * scale, r["accuracy"]), fontsize=7,
                            xytext=(4, 4 if i % 2 else -10), textcoords="offset points")
            best, stair = -np.inf, []
            for r in sorted(ok, key=lambda r: (r[key], -r["accuracy"])):  # the two-way front, cheapest first
                if r["accuracy"] > best:
                    best = r["accuracy"]
                    stair.append((r[key] * scale, r["accuracy"]))
            ax.step([p[0] for p in stair], [p[1] for p in stair], "r--", where="post", lw=1)
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy")
        fig.suptitle("edgeopt.explore: red = on the accuracy / latency / size Pareto front")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def explore(model, example_inputs, data, metric="agreement", *, target="host", configs: list[dict] | None = None,
            calibration_data=None, runs: int = 20, progress: bool | None = None, **options) -> ExploreResult:
    """Compile ``model`` once per setting of ``configs`` (default: ``default_grid()``; each a dict with a ``name``
    and ``compile`` options such as ``quantize`` and ``compress``) and measure each on ``data`` (input batches like
    ``example_inputs``).

    ``metric``: "agreement" (top-1 agreement of the first output with the float model's), "cosine" (mean cosine
    of the first output to the float model's), or a function ``(run, data) -> score`` (higher is better; ``data``:
    the batches as tuples of numpy arrays, ``run(*batch)`` returns the compiled model's outputs). Static int8
    calibrates on ``calibration_data`` (default: the first 64 batches of ``data``). Latency: the median of ``runs``
    calls on the example inputs; size: the artifact's bytes. A setting that fails to compile is reported with its
    error."""
    import edgeopt

    data = [tuple(b) if isinstance(b, (tuple, list)) else (b,) for b in data]
    data = [tuple(_np(a) for a in b) for b in data]
    example = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    calibration = calibration_data if calibration_data is not None else data[:64]
    configs = configs if configs is not None else default_grid()
    reference = _reference(model, data) if isinstance(metric, str) else None  # the float model's outputs
    result = ExploreResult()
    bar = progress_bar(len(configs), progress, "explore")
    for cfg in configs:
        opts = {k: v for k, v in cfg.items() if k != "name"}
        if opts.get("quantize") == "int8" or getattr(opts.get("quantize"), "static", False):
            opts.setdefault("calibration_data", calibration)
        row = {"name": cfg.get("name") or _describe(opts)}
        try:
            compiled = edgeopt.compile(model, example, target, **options, **opts)
        except Exception as e:  # one failed setting does not end the exploration
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            result.rows.append(row)
            if bar is not None:
                bar.update(1)
            continue
        outs = [_first(compiled(*b)) for b in data] if reference is not None else None
        row["accuracy"] = round(float(_score(metric, compiled, data, outs, reference)), 5)
        xs = [_np(a) for a in example]
        row["latency_ms"] = round(_median_ms(compiled, xs, runs), 4)
        row["size_bytes"] = len(compiled._artifact)
        row["weight_bytes"] = compiled.report["weight_bytes"]
        result.rows.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(row["name"])
    if bar is not None:
        bar.close()
    _mark_front(result.rows)
    return result


def _mark_front(rows: list[dict]) -> None:
    ok = [r for r in rows if not r.get("error")]
    for r in ok:
        r["pareto"] = not any(_dominates(o, r) for o in ok if o is not r)


def _dominates(a: dict, b: dict) -> bool:
    """``a`` is at least as good as ``b`` on accuracy, latency and size, and better on one."""
    keys = (("accuracy", 1), ("latency_ms", -1), ("size_bytes", -1))
    return all(a[k] * s >= b[k] * s for k, s in keys) and any(a[k] * s > b[k] * s for k, s in keys)


def _score(metric, compiled, data, outs, reference) -> float:
    if callable(metric):
        return metric(lambda *a: compiled(*[_np(x) for x in a]), data)
    if metric == "agreement":
        return float(np.mean([np.mean(o.reshape(o.shape[0], -1).argmax(-1) == r.reshape(r.shape[0], -1).argmax(-1))
                              for o, r in zip(outs, reference)]))
    if metric == "cosine":
        from ..quant.compare import cosine

        return float(np.mean([cosine(r, o) for o, r in zip(outs, reference)]))
    raise ValueError(f"explore(metric=...) is 'agreement', 'cosine' or a function, got {metric!r}")


def _reference(model, data) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [_first(model(*[torch.from_numpy(a) for a in b])) for b in data]


def _first(out) -> np.ndarray:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    return _np(out)


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _median_ms(fn, args, runs: int) -> float:
    for _ in range(3):
        fn(*args)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _describe(opts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in opts.items() if k != "calibration_data") or "fp32"
