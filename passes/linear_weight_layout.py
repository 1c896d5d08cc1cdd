"""linear_weight_layout: lay constant linear weights out for the kernel, once, at compile time.

The kernel of ``linear`` computes a register tile of a few rows x ``v`` output features, streaming the
K x v panel of the weight that those features need. With torch's [out, in] layout each weight vector would
be ``v`` strided loads; with [in, out] ("io") the vector is contiguous but the panel's rows are ``out``
floats apart, which at some widths map to the same few cache sets (a 1536-wide weight ran at 2/3 the speed
of a 1152-wide one). So the weight is packed in panels, ``oi<v>o`` = [out/v, in, v]: every panel is one
contiguous stream. ``v`` is the tile the schedule uses: 3 vectors when ``out`` allows, else 2 or 1
(the target's fp32 vector width; 8 with AVX2, 16 with AVX-512, 4 with NEON). A weight whose ``out`` no
vector width divides is stored "io".

Requires: ``unfused`` (run it after BatchNorm / affine folding, which rescale [out, in] weights).
Guarantees: ``linear_weights_laid_out`` (every linear with a constant weight is "io" or packed "oi<v>o").

Before:
    const %w: f32[48,8]
    %y: f32[1,48] = linear(%x, %w) {"weight_layout": "oi"}
After (AVX2: v = 3 x 8):
    const %w_oi24o: f32[2,8,24]
    %y: f32[1,48] = linear(%x, %w_oi24o) {"weight_layout": "oi24o"}
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph
from edgeopt.ir.ops.linalg import pack_linear_weight
from edgeopt.pipeline import Pass, register_pass

DEFAULT_LANES = 8


def panel_width(out_features: int, lanes: int) -> int:
    """The output features of one register tile: 3 vectors, 2 (for wide outputs) or 1; 0 if none divides."""
    for v in (3 * lanes, 2 * lanes if out_features >= 4 * lanes else 0, lanes):
        if v >= 4 and out_features % v == 0:
            return v
    return 0


@register_pass
class LinearWeightLayout(Pass):
    name = "linear_weight_layout"
    requires = ("unfused",)
    guarantees = ("linear_weights_laid_out",)

    def run(self, g: Graph) -> dict:
        lanes = self.target.vector_lanes(32) if self.target is not None else DEFAULT_LANES
        done: dict[str, tuple[object, str]] = {}
        count = packed = 0
        for n in g.nodes:
            if n.op != "linear" or n.attrs["weight_layout"] not in ("oi", "io") or not g.is_const(n.inputs[1]):
                continue
            w = n.inputs[1]
            if w.name not in done:
                arr = g.const(w)
                w_io = np.ascontiguousarray(arr.T) if n.attrs["weight_layout"] == "oi" else arr
                v = panel_width(w_io.shape[1], lanes) if w_io.dtype == np.float32 else 0
                if v:
                    done[w.name] = (g.add_const(pack_linear_weight(w_io, v), f"{w.name}_oi{v}o"), f"oi{v}o")
                elif n.attrs["weight_layout"] == "oi":
                    done[w.name] = (g.add_const(w_io, f"{w.name}_io"), "io")
                else:
                    done[w.name] = (w, "io")
            new_w, layout = done[w.name]
            if new_w is w:
                continue
            n.inputs[1] = new_w
            n.attrs["weight_layout"] = layout
            count += 1
            packed += layout != "io"
        g.remove_unused_constants()
        return {"rewritten": count, "packed": packed}
