"""A bar chart of where a model's time goes: the time of each kernel over all the steps that run it.

``kernel_chart(rows, kernels, path)`` takes ``Model.profile`` rows (step, kernel, median_ms) and the report's
``kernels`` (name -> the ops it runs) and draws the slowest kernels as horizontal bars labelled by their ops, with
how many steps run each. Needs matplotlib (imported here only).
"""

from __future__ import annotations


def kernel_totals(rows: list[dict], kernels: list[dict]) -> list[dict]:
    """[{kernel, ops, steps, total_ms, share}] summed over the steps of each kernel, slowest first."""
    ops = {k["name"]: k.get("ops") or [k.get("op", "?")] for k in kernels}
    out: dict[str, dict] = {}
    for r in rows:
        k = out.setdefault(r["kernel"], {"kernel": r["kernel"], "ops": ops.get(r["kernel"], []), "steps": 0,
                                         "total_ms": 0.0})
        k["steps"] += 1
        k["total_ms"] += r["median_ms"]
    total = sum(k["total_ms"] for k in out.values()) or 1.0
    for k in out.values():
        k["share"] = k["total_ms"] / total
    return sorted(out.values(), key=lambda k: -k["total_ms"])


def kernel_chart(rows: list[dict], kernels: list[dict], path: str, title: str = "time per kernel",
                 top: int = 20) -> list[dict]:
    """Save the chart to ``path`` (PNG, or any format matplotlib writes); returns the totals it drew."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("drawing the kernel chart needs matplotlib: pip install matplotlib") from None
    totals = kernel_totals(rows, kernels)
    shown, rest = totals[:top], totals[top:]
    labels = [_label(k) for k in shown]
    values = [k["total_ms"] for k in shown]
    if rest:
        labels.append(f"{len(rest)} other kernels")
        values.append(sum(k["total_ms"] for k in rest))
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.32 * len(labels)))
    y = list(range(len(labels)))[::-1]
    bars = ax.barh(y, values, color=[plt.cm.tab10(i % 10) for i in range(len(labels))])
    ax.set_yticks(y, labels, fontsize=8)
    total = sum(values) or 1.0
    for b, v in zip(bars, values):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.3f} ms ({100 * v / total:.0f}%)",
                va="center", fontsize=7)
    ax.set_xlabel("milliseconds (sum of the per-step medians)")
    ax.set_xlim(0, max(values) * 1.25 if values else 1)
    ax.set_title(f"{title}: {total:.3f} ms in {sum(k['steps'] for k in totals)} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return totals


def _label(k: dict) -> str:
    ops = "+".join(k["ops"]) or k["kernel"]
    if len(ops) > 48:
        ops = ops[:47] + "…"
    return f"{ops} (x{k['steps']})" if k["steps"] > 1 else ops
