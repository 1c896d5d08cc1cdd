"""prune_channels: structured pruning. Removes the least important fraction of the channels of every prunable
layer (``Compress(prune=0.5)``), with every layer coupled to them, so the graph really shrinks.

Which channels go together is ``edgeopt.compress.channels.analyze``: a conv's filter ``i`` goes with the batch
norm's entry ``i``, the next conv's input slice ``[:, i]``, the depthwise filter ``i`` after it, the other
convs feeding the same residual add; a concat offsets its inputs' channels; a reshape that splits the channels
into heads prunes whole heads. Channels that reach a graph input or output, a layer norm or an op the analysis
does not know are kept. In each group of alternatives (a layer, a residual stream) the ``ratio`` with the
smallest filter norms (``score`` "l1" or "l2") go, keeping a multiple of ``round_to`` (16: vector width) in a
group of at least that many.

Requires: ``unfused`` (plain OIHW / "oi" weights: it runs first). Guarantees: nothing new; the outputs keep
their shapes, their values change (the removed channels contributed to them). Runs without data: fine-tune
with ``edgeopt.compress.prune`` + ``distill`` to recover accuracy.

Before (prune=0.5):
    const %w1: f32[4,3,3,3]
    const %w2: f32[8,4,1,1]
    %a: f32[1,4,8,8] = conv2d(%x, %w1) {"padding": [1, 1, 1, 1]}
    %r: f32[1,4,8,8] = relu(%a)
    %y: f32[1,8,8,8] = conv2d(%r, %w2)
After (the two filters of %w1 with the smallest L1 norms gone, and the matching input slices of %w2):
    const %w1: f32[2,3,3,3]
    const %w2: f32[8,2,1,1]
    %a: f32[1,2,8,8] = conv2d(%x, %w1) {"padding": [1, 1, 1, 1]}
    %r: f32[1,2,8,8] = relu(%a)
    %y: f32[1,8,8,8] = conv2d(%r, %w2)
"""

from __future__ import annotations

from edgeopt.compress.channels import analyze, choose, prune_graph
from edgeopt.compress.cost import graph_macs, graph_params
from edgeopt.ir import Graph
from edgeopt.pipeline import Pass, register_pass


@register_pass
class PruneChannels(Pass):
    name = "prune_channels"
    requires = ("unfused",)

    def __init__(self, ratio: float = 0.5, score: str = "l1", round_to: int = 16):
        self.ratio, self.score, self.round_to = ratio, score, round_to

    def run(self, g: Graph) -> dict:
        before = graph_macs(g), graph_params(g)
        ch = analyze(g)
        drop = choose(ch, g, self.ratio, self.score, self.round_to)
        if drop:
            g.adopt(prune_graph(g, ch, drop)[0])
        return {"channels_removed": len(drop), "groups": len(ch.spaces()), "macs_before": before[0],
                "macs_after": graph_macs(g), "params_before": before[1], "params_after": graph_params(g)}
