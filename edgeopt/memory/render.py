"""The arena over time, from an execution plan: which tensor occupies which bytes at each step.

``arena_text`` draws one row per piece of storage (values that share it in place are listed together),
sorted by offset, with its lifetime over the steps; ``arena_png`` draws the same as rectangles (bytes
against steps) with matplotlib. Both read only the plan (``values[v]["offset"]`` and ``["live"]``), so
they work on a saved artifact without the compiler.
"""

from __future__ import annotations

from .liveness import aligned, nbytes


def arena_rows(plan: dict) -> list[dict]:
    """[{offset, size, start, end, values}] for every piece of storage in the plan's arena, by offset."""
    rows: dict[tuple, dict] = {}
    for name, info in plan["values"].items():
        if "offset" not in info:
            continue
        start, end = info.get("live", [0, len(plan["steps"])])  # plans without lifetimes: drawn alive throughout
        key = (info["offset"], start) if "live" in info else (info["offset"], name)
        row = rows.setdefault(key, {"offset": info["offset"], "size": 0, "start": start, "end": end, "values": []})
        row["size"] = max(row["size"], aligned(nbytes(info)))
        row["end"] = max(row["end"], end)
        row["values"].append(name)
    return sorted(rows.values(), key=lambda r: (r["offset"], r["start"]))


def arena_text(plan: dict, width: int = 60) -> str:
    rows = arena_rows(plan)
    if not rows:
        return "(no activations)"
    horizon = len(plan["steps"]) + 1
    scale = min(1.0, width / horizon)
    cols = int((horizon - 1) * scale) + 1
    lines = [f"arena {plan.get('arena_bytes', 0)} bytes, {len(rows)} tensors over {len(plan['steps'])} steps "
             f"(# = alive)", f"{'bytes':>21} {'size':>9}  steps 0..{horizon - 1}"]
    for r in rows:
        a, b = int(r["start"] * scale), int(r["end"] * scale)
        bar = (" " * a + "#" * (b - a + 1)).ljust(cols)
        lines.append(f"{r['offset']:>10}..{r['offset'] + r['size']:<10} {r['size']:>9} |{bar}| "
                     + ", ".join(r["values"]))
    return "\n".join(lines)


def arena_png(plan: dict, path: str) -> None:
    """Save a picture of the arena (x: step, y: byte offset; one rectangle per tensor) to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("drawing the arena needs matplotlib: pip install matplotlib") from None
    rows = arena_rows(plan)
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, r in enumerate(rows):
        ax.add_patch(plt.Rectangle((r["start"] - 0.4, r["offset"]), r["end"] - r["start"] + 0.8, r["size"],
                                   facecolor=plt.cm.tab20(i % 20), edgecolor="black", linewidth=0.3))
    ax.set_xlim(-1, len(plan["steps"]) + 1)
    ax.set_ylim(0, max(1, plan.get("arena_bytes", 0)))
    ax.set_xlabel("step (kernel)")
    ax.set_ylabel("arena byte offset")
    ax.set_title(f"activation arena: {plan.get('arena_bytes', 0)} bytes, {len(rows)} tensors")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
