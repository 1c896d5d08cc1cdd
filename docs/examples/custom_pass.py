"""A custom pass, registered and run through ``edgeopt.compile(..., passes=...)`` (see docs/passes.md).

    .venv/bin/python docs/examples/custom_pass.py
"""

import numpy as np
import torch

import edgeopt
from edgeopt.pattern import Any, FusionRule, Op, fuse, rewrite
from edgeopt.pipeline import Pass, Pipeline, register_pass

# 1. A rewrite: x * sigmoid(x) is SiLU (one op instead of two, and a kernel that knows it).
X = Any("x")
SWISH = Op("mul", X, Op("sigmoid", X), commutative=True)


@register_pass
class RecognizeSilu(Pass):
    """recognize_silu: ``mul(x, sigmoid(x))`` -> ``silu(x)``. Requires ``unfused`` (plain nodes: before the fusion
    passes, or it warns); guarantees ``silu_recognized``."""

    name = "recognize_silu"
    requires = ("unfused",)
    guarantees = ("silu_recognized",)

    def run(self, g):
        return {"rewritten": rewrite(g, SWISH, lambda m, b: b.add("silu", [m["x"]]))}


# 2. A fusion: a global average pool and the flatten (reshape) after it become one kernel. On a CPU the pool reads
# the conv's blocked NCHW<b>c map, and its pooled vector goes back to NCHW (a layout_transform) before the flatten.
POOL_FLATTEN = FusionRule("pool_flatten", anchor=Op("mean"), epilogue=Op(("layout_transform", "reshape")))


@register_pass
class FusePoolFlatten(Pass):
    """fuse_pool_flatten: ``mean`` + the ``reshape`` reading it -> one kernel. Invalidates ``unfused``; guarantees
    ``pool_flatten_fused``."""

    name = "fuse_pool_flatten"
    invalidates = ("unfused",)
    guarantees = ("pool_flatten_fused",)

    def run(self, g):
        return {"fused_groups": len(fuse(g, POOL_FLATTEN))}


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = self.conv(x)
        y = y * torch.sigmoid(y)
        return self.fc(y.mean(dim=(2, 3), keepdim=True).flatten(1))


def main():
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(1, 3, 16, 16)
    # our passes go before the built-in fusions (which would otherwise claim these ops first)
    passes = Pipeline.default(opt_level=2, target="host")
    passes.insert("recognize_silu", before="fuse_epilogue").insert("fuse_pool_flatten", after="recognize_silu")
    compiled = edgeopt.compile(model, (x,), passes=passes)
    print(compiled.ir)
    print("stats:", compiled.report["pass_stats"]["recognize_silu"], compiled.report["pass_stats"]["fuse_pool_flatten"])
    print("fused groups:", [g["ops"] for g in compiled.report["fused_groups"]])
    with torch.no_grad():
        ref = model(x).numpy()
    err = float(np.abs(compiled(x.numpy()) - ref).max())
    print(f"max |edgeopt - torch| = {err:.2e}")
    return compiled, err


if __name__ == "__main__":
    main()
