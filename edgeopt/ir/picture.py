"""A picture of an IR graph: SVG, or a self-contained HTML page around it (no script, no network).

    svg = graph_svg(g)                       # one box per node, top to bottom in dependency layers
    write_picture(g, "graph.html", title=)   # .svg or .html by the file name

Each node is a box with its op and output type; a fused kernel's box is colored (one color per distinct kernel
body, so repeated blocks share a color) and lists the ops it runs. Graph inputs are rounded boxes; outputs are
marked. Hovering a box shows its value names, attributes, weights and the source line (an SVG ``<title>``). The
HTML page adds a summary and a legend of the fused kernels. Works on any Graph, also one parsed from an artifact's
``ir.txt`` with ``parse_graph(..., placeholders=True)`` (no weights needed).
"""

from __future__ import annotations

import hashlib
import json
from html import escape

from .graph import Graph, Node

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 46, 24, 34, 20
#: fill colors of fused kernels (a kernel body picks one by the hash of its ops), and of plain nodes
PALETTE = ["#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5", "#bc80bd",
           "#ccebc5", "#ffed6f", "#a6cee3"]
PLAIN, INPUT, VIEW = "#f4f4f4", "#dfe9f5", "#ffffff"


def _ops(n: Node) -> list[str]:
    return [m.op for m in n.body.nodes] if n.body is not None else [n.op]


def _fused_color(n: Node) -> str:
    return PALETTE[int(hashlib.sha1("+".join(_ops(n)).encode()).hexdigest(), 16) % len(PALETTE)]


def _label(n: Node) -> str:
    if n.op != "fused":
        return n.op
    ops = _ops(n)
    text = "+".join(ops)
    return text if len(text) <= 26 else f"{ops[0]}+…+{ops[-1]} ({len(ops)})"


def _layers(g: Graph) -> dict:
    """Each node's and input's layer: 0 for inputs, else one more than its deepest producer (constants ignored)."""
    layer = {v: 0 for v in g.inputs + list(g.states)}
    depth = {}
    for n in g.nodes:
        d = 1 + max((layer[v] for v in n.inputs if v in layer), default=0)
        depth[n] = d
        for o in n.outputs:
            layer[o] = d
    return depth


def layout(g: Graph) -> tuple[dict, int, int]:
    """(item -> (x, y) of its box's top-left corner, width, height); items are graph inputs and nodes."""
    depth = _layers(g)
    rows: dict[int, list] = {0: list(g.inputs) + list(g.states)}
    for n in g.nodes:
        rows.setdefault(depth[n], []).append(n)
    producer = {o: n for n in g.nodes for o in n.outputs}
    pos: dict = {}
    width = max(len(r) for r in rows.values()) * (BOX_W + GAP_X) + BOX_W // 2  # room for skip edges on the right
    for d in sorted(rows):
        items = rows[d]
        if d > 0:  # barycenter: each node near the mean x of what it reads (fewer crossings)
            def center(n):
                xs = [pos[p][0] for v in n.inputs for p in [producer.get(v, v)] if p in pos]
                return sum(xs) / len(xs) if xs else 0.0

            items.sort(key=center)
        row_w = len(items) * (BOX_W + GAP_X) - GAP_X
        x0 = MARGIN + (width - row_w) / 2
        for i, item in enumerate(items):
            pos[item] = (x0 + i * (BOX_W + GAP_X), MARGIN + d * (BOX_H + GAP_Y))
    height = MARGIN * 2 + (max(rows) + 1) * (BOX_H + GAP_Y)
    return pos, int(width + 2 * MARGIN), int(height)


def graph_svg(g: Graph) -> str:
    """The graph as an SVG document (text)."""
    from .registry import get_op

    pos, width, height = layout(g)
    producer = {o: n for n in g.nodes for o in n.outputs}
    for v in g.inputs + list(g.states):
        producer[v] = v
    outputs = set(g.outputs)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#777"/></marker></defs>',
             '<g class="edges" fill="none" stroke="#999" stroke-width="1.2">']
    for n in g.nodes:
        x1, y1 = pos[n]
        for v in dict.fromkeys(n.inputs):
            src = producer.get(v)
            if src is None or src not in pos:
                continue  # a constant (weights are listed in the node's tooltip)
            x0, y0 = pos[src]
            ax, ay, bx, by = x0 + BOX_W / 2, y0 + BOX_H, x1 + BOX_W / 2, y1
            if by - ay > BOX_H + GAP_Y:  # skips a layer: bulge out to the right, past the boxes in between
                ax, bx = x0 + BOX_W, x1 + BOX_W
                ay, by = y0 + BOX_H / 2, y1 + BOX_H / 2
                off = BOX_W * 0.45 + 6 * min(8, (by - ay) / (BOX_H + GAP_Y))
                path = f"M {ax:.1f} {ay:.1f} C {ax + off:.1f} {ay:.1f}, {bx + off:.1f} {by:.1f}, {bx:.1f} {by:.1f}"
            else:
                mid = (ay + by) / 2
                path = f"M {ax:.1f} {ay:.1f} C {ax:.1f} {mid:.1f}, {bx:.1f} {mid:.1f}, {bx:.1f} {by:.1f}"
            parts.append(f'<path d="{path}" marker-end="url(#arrow)"/>')
    parts.append("</g>")
    for v in list(g.inputs) + list(g.states):
        x, y = pos[v]
        kind = "state" if v in g.states else "input"
        parts.append(_box(f"{kind} %{v.name}", str(v.type), f"{kind} %{v.name}: {v.type}", x, y, INPUT, "input",
                          rx=18))
    for n in g.nodes:
        x, y = pos[n]
        weights = [f"%{v.name}: {v.type}" for v in n.inputs if g.is_const(v)]
        tip = [f"{', '.join('%' + o.name for o in n.outputs)} = {n.op}({', '.join('%' + v.name for v in n.inputs)})",
               *(f"type {o.type}" for o in n.outputs)]
        if n.attrs:
            tip.append(json.dumps({k: v for k, v in n.attrs.items() if k != "body"})[:400])
        if n.op == "fused":
            tip.append("runs: " + " -> ".join(_ops(n)))
        if weights:
            tip.append("weights: " + ", ".join(weights[:8]) + (" ..." if len(weights) > 8 else ""))
        if n.source:
            tip.append(f"source: {n.source}")
        is_view = not n.body and get_op(n.op).view
        fill = _fused_color(n) if n.op == "fused" else VIEW if is_view else PLAIN
        cls = "fused" if n.op == "fused" else "view" if is_view else "op"
        mark = " → output" if any(o in outputs for o in n.outputs) else ""
        parts.append(_box(_label(n) + mark, "; ".join(str(o.type) for o in n.outputs), "\n".join(tip), x, y, fill,
                          cls, dashed=is_view))
    parts.append("</svg>")
    return "\n".join(parts)


def _box(title: str, subtitle: str, tip: str, x: float, y: float, fill: str, cls: str, rx: int = 5,
         dashed: bool = False) -> str:
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    sub = subtitle if len(subtitle) <= 34 else subtitle[:33] + "…"
    return (f'<g class="node {cls}"><title>{escape(tip)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="{rx}" fill="{fill}" '
            f'stroke="#555"{dash}/>'
            f'<text x="{x + BOX_W / 2:.1f}" y="{y + 19:.1f}" text-anchor="middle" font-weight="bold">'
            f'{escape(title)}</text>'
            f'<text x="{x + BOX_W / 2:.1f}" y="{y + 35:.1f}" text-anchor="middle" fill="#333">{escape(sub)}</text>'
            "</g>")


def graph_html(g: Graph, title: str = "edgeopt graph") -> str:
    """A self-contained page: a summary, the legend of fused kernels, the SVG."""
    fused = [n for n in g.nodes if n.op == "fused"]
    kinds: dict[str, list] = {}
    for n in fused:
        kinds.setdefault(" → ".join(_ops(n)), []).append(n)
    legend = "".join(f'<li><span class="sw" style="background:{_fused_color(ns[0])}"></span>{escape(k)} '
                     f"<small>(x{len(ns)})</small></li>" for k, ns in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
    summary = (f"{len(g.nodes)} nodes, {len(fused)} fused kernels ({len(kinds)} distinct), {len(g.inputs)} inputs, "
               f"{len(g.outputs)} outputs, {len(g.constants)} constants ({g.weight_bytes():,} bytes)")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(title) + "</title><style>"
            "body{font-family:Helvetica,Arial,sans-serif;margin:16px;color:#222}"
            ".sw{display:inline-block;width:14px;height:14px;margin-right:6px;border:1px solid #555;"
            "vertical-align:middle}ul{columns:2;list-style:none;padding:0}"
            ".graph{overflow:auto;border:1px solid #ddd}g.node:hover rect{stroke:#d62728;stroke-width:2}"
            "</style></head><body>"
            f"<h1>{escape(title)}</h1><p>{escape(summary)}. Hover a box for its values, attributes, weights and "
            "source line; dashed boxes are views (no kernel).</p>"
            + (f"<h2>Fused kernels</h2><ul>{legend}</ul>" if legend else "")
            + f'<div class="graph">{graph_svg(g)}</div></body></html>\n')


def write_picture(g: Graph, path: str, title: str = "edgeopt graph") -> str:
    """Write ``g`` as ``path`` (an .svg or .html file); returns the path."""
    if str(path).endswith(".svg"):
        text = graph_svg(g)
    elif str(path).endswith((".html", ".htm")):
        text = graph_html(g, title)
    else:
        raise ValueError(f"a graph picture is an .svg or .html file, not {path!r}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)
