"""Storage tokens and their lifetimes over the kernel order of an execution plan.

Time is the step index: a model input is written at time 0 (copied in before the first kernel), a
kernel's outputs at its step, and a token lives until its last reader's step; graph outputs live to the
end (``len(steps)``, when they are copied out). Two tokens conflict when their closed intervals meet:
a kernel's inputs and outputs are alive together, unless the kernel works in place.

States (a KV cache) live outside the arena, like weights: a kernel that updates one writes through a view of it.
Views (reshapes) are no storage of their own: a read of a view is a read of its base. An in-place
candidate ``(input, output)`` of a step merges the output into the input's token when that step is
the input's last reader, no other argument of the step reads the same storage (the same value twice, or
a view of it), the bytes match, and the input is not a graph output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir_dtypes import NP_DTYPES

#: every offset and every size is a multiple of this by default (TVM's CPU kernels assume 64-byte-aligned data;
#: a target may ask for more: WebGPU binds storage at multiples of 256)
ALIGN = 64


def aligned(nbytes: int, align: int = ALIGN) -> int:
    return max(align, -(-nbytes // align) * align)


@dataclass
class Token:
    """One piece of storage: the values that live in it, its aligned size and its lifetime [start, end]."""

    name: str
    size: int
    start: int
    end: int
    values: list[str] = field(default_factory=list)

    def overlaps_in_time(self, other: Token) -> bool:
        return self.start <= other.end and other.start <= self.end


def nbytes(info: dict) -> int:
    return int(np.prod(info["shape"], dtype=np.int64)) * np.dtype(NP_DTYPES[info["dtype"]]).itemsize


def base_of(name: str, values: dict) -> str:
    while values[name]["kind"] == "view":
        name = values[name]["of"]
    return name


def split_args(step: dict) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of a plan step (destination-passing: outputs come last)."""
    n = step.get("num_outputs", 1)
    return step["args"][: len(step["args"]) - n], step["args"][len(step["args"]) - n :]


def build_tokens(plan: dict, inplace: bool = True, align: int = ALIGN) -> list[Token]:
    """The arena's tokens for ``plan``: model inputs and kernel outputs (weights and their views are not
    activations), each ``align``-rounded. ``plan["steps"][i]["inplace"]`` lists ``[input, output]`` pairs the
    kernel may share."""
    values, steps = plan["values"], plan["steps"]
    last_read: dict[str, int] = {}
    for i, s in enumerate(steps):
        for a in split_args(s)[0]:
            last_read[base_of(a, values)] = i
    outputs = {base_of(o["name"], values) for o in plan["outputs"]}
    tokens: dict[str, Token] = {}
    owner: dict[str, str] = {}  # base value -> its token

    def new_token(name: str, start: int) -> None:
        tokens[name] = Token(name, aligned(nbytes(values[name]), align), start, start, [name])
        owner[name] = name

    for io in plan["inputs"]:
        new_token(io["name"], 0)
    for i, s in enumerate(steps):
        ins, outs = split_args(s)
        read = [owner.get(base_of(a, values)) for a in ins]  # the token each argument reads (None: a weight)
        for t in read:
            if t is not None:
                tokens[t].end = max(tokens[t].end, i)
        shared: dict[str, str] = {}
        for src, dst in s.get("inplace", []) if inplace else []:
            t = owner.get(base_of(src, values))
            if t is None or dst in shared or t in shared.values() or nbytes(values[dst]) != nbytes(values[t]):
                continue
            if read.count(t) > 1:  # the kernel also reads this storage through another argument (or a view)
                continue
            holders = tokens[t].values
            if any(v in outputs for v in holders) or max(last_read.get(v, -1) for v in holders) != i:
                continue
            shared[dst] = t
        for o in outs:
            if values[base_of(o, values)]["kind"] == "state":  # written in place into the runtime's state
                continue
            if o in shared:
                owner[o] = shared[o]
                tokens[shared[o]].values.append(o)
            else:
                new_token(o, i)
    end = len(steps)
    for o in outputs:
        if o in owner:
            tokens[owner[o]].end = end
    return list(tokens.values())


def lower_bound(tokens: list[Token]) -> int:
    """max over steps of the bytes alive at that step: no placement can use less."""
    if not tokens:
        return 0
    horizon = max(t.end for t in tokens) + 1
    live = np.zeros(horizon + 1, np.int64)
    for t in tokens:
        live[t.start] += t.size
        live[t.end + 1] -= t.size
    return int(np.cumsum(live).max())
