"""Offset assignment: place every token in one arena so that tokens alive at the same time never share a byte.

All strategies share one placement rule (``place``): among the tokens already placed that overlap the new
one in time, take the smallest gap that fits it (best fit), else put it after the highest of them. They
differ in the order they place tokens:

* ``greedy_by_size``: largest first (TFLite's "greedy by size" offset calculation);
* ``greedy_by_breadth``: steps by how many bytes are alive at them, widest first; at each, its unplaced
  tokens largest first (TFLite's "greedy by breadth");
* ``best_fit_by_start``: in order of birth, largest first among equals (a linear-scan allocator);
* ``longest_first``: longest lifetime first, then largest (long-lived tensors settle at the bottom).

Each returns {token name: offset}; the arena's size is max(offset + size).
"""

from __future__ import annotations

import bisect

from .liveness import Token


def place(tok: Token, placed: list[tuple[int, Token]]) -> int:
    """Best-fit offset for ``tok`` given ``placed`` (sorted by offset) tokens."""
    best, best_gap, cursor = None, None, 0
    for off, other in placed:
        if not tok.overlaps_in_time(other):
            continue
        gap = off - cursor
        if gap >= tok.size and (best_gap is None or gap < best_gap):
            best, best_gap = cursor, gap
        cursor = max(cursor, off + other.size)
    return best if best is not None else cursor


def assign(order: list[Token]) -> dict[str, int]:
    placed: list[tuple[int, Token]] = []
    offsets = {}
    for tok in order:
        off = place(tok, placed)
        offsets[tok.name] = off
        bisect.insort(placed, (off, tok), key=lambda p: p[0])
    return offsets


def greedy_by_size(tokens: list[Token]) -> dict[str, int]:
    return assign(sorted(tokens, key=lambda t: (-t.size, t.start)))


def greedy_by_breadth(tokens: list[Token]) -> dict[str, int]:
    if not tokens:
        return {}
    horizon = max(t.end for t in tokens) + 1
    alive = [[] for _ in range(horizon)]
    for t in tokens:
        for step in range(t.start, t.end + 1):
            alive[step].append(t)
    breadth = [sum(t.size for t in a) for a in alive]
    order, seen = [], set()
    for step in sorted(range(horizon), key=lambda s: -breadth[s]):
        for t in sorted(alive[step], key=lambda t: -t.size):
            if t.name not in seen:
                seen.add(t.name)
                order.append(t)
    return assign(order)


def best_fit_by_start(tokens: list[Token]) -> dict[str, int]:
    return assign(sorted(tokens, key=lambda t: (t.start, -t.size)))


def longest_first(tokens: list[Token]) -> dict[str, int]:
    return assign(sorted(tokens, key=lambda t: (-(t.end - t.start), -t.size)))


ALGORITHMS = {"greedy_by_size": greedy_by_size, "greedy_by_breadth": greedy_by_breadth,
              "best_fit_by_start": best_fit_by_start, "longest_first": longest_first}
