"""Random, seeded mutations of an artifact's JSON (plan, manifest) and of a flat plan.txt, for the fuzz tests.

Each mutator returns a mutated deep copy and a short description of what it did (for failure messages). The
JSON mutations mix generic ones (any node replaced by junk of another type, deleted, duplicated, swapped, numbers
nudged) with plan-aware ones that keep the schema valid so the deeper checks are reached (offsets moved onto other
tensors, views re-pointed, kinds and dtypes changed, arguments and steps swapped, lifetimes and in-place pairs
forged)."""

from __future__ import annotations

import copy
import random

NUMBERS = [-4096, -64, -1, 0, 1, 2, 3, 7, 8, 16, 32, 63, 64, 128, 256, 4096, 2**31, 2**32, 2**40, 2**53,
           2**63 - 1, -(2**63), 10**19, 2**70]
JUNK = [True, False, None, 0.5, -0.0, 1e300, [], {}, [[]], [[[[1]]]], {"a": 1}, [1, 2], "", "x y", "nope", "\u00e9"]
DTYPES = ["f32", "f16", "f64", "i8", "u8", "i16", "i32", "i64", "bool", "f33", "F32"]
KINDS = ["input", "const", "buffer", "view", "scratch"]


def junk(rng: random.Random, vocab: list, old=None):
    """A replacement for ``old``: a number near it or from ``NUMBERS``, a name from ``vocab``, or junk of any type."""
    r = rng.random()
    if r < 0.3 and type(old) is int:
        return rng.choice([old + d for d in (-64, -1, 1, 64, 4096)] + [old * 2, -old, 0])
    if r < 0.5:
        return rng.choice(NUMBERS)
    if r < 0.75 and vocab:
        return rng.choice(vocab)
    return copy.deepcopy(rng.choice(JUNK))


def paths(tree, skip: tuple = ()) -> list[tuple]:
    """Every node's path below the root, except those under a top-level key in ``skip``."""
    out, stack = [], [((), tree)]
    while stack:
        path, node = stack.pop()
        if path:
            out.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if not (path == () and k in skip):
                stack.append(((*path, k), v))
    return out


def _parent(tree, path):
    for k in path[:-1]:
        tree = tree[k]
    return tree


def generic(tree, rng: random.Random, vocab: list, skip: tuple = ()) -> tuple[object, str]:
    """One generic mutation anywhere in ``tree`` (in place); returns (tree, description)."""
    ps = paths(tree, skip)
    if not ps:
        return junk(rng, vocab), "root replaced"
    path = rng.choice(ps)
    parent, key = _parent(tree, path), path[-1]
    op = rng.choice(["replace", "replace", "delete", "duplicate", "swap", "subtree"])
    if op == "replace":
        parent[key] = junk(rng, vocab, parent[key])
    elif op == "delete":
        del parent[key]
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif op == "duplicate":
        parent[rng.choice(vocab) if vocab else "extra"] = copy.deepcopy(parent[key])
    elif op == "swap" and isinstance(parent, list) and len(parent) > 1:
        j = rng.randrange(len(parent))
        parent[key], parent[j] = parent[j], parent[key]
    elif op == "swap" and isinstance(parent, dict) and len(parent) > 1:
        other = rng.choice(list(parent))
        parent[key], parent[other] = parent[other], parent[key]
    else:  # another node's subtree in its place: right types in the wrong place
        other = rng.choice(ps)
        parent[key] = copy.deepcopy(_parent(tree, other)[other[-1]])
        op = "subtree"
    return tree, f"{op} at {list(path)}"


def _plan_aware(plan: dict, rng: random.Random) -> str:
    """One mutation that keeps the plan's schema (mostly) valid; returns its description."""
    values, steps = plan["values"], plan["steps"]
    names = list(values)
    storage = [n for n in names if "offset" in values[n]]
    v = rng.choice(names)
    op = rng.randrange(16)
    if op == 0 and storage:
        a, b = rng.choice(storage), rng.choice(storage)
        values[a]["offset"] = values[b]["offset"]
        return f"offset of {a} := that of {b}"
    if op == 1 and storage:
        a = rng.choice(storage)
        values[a]["offset"] = rng.choice([0, 64, 128, 192, 256, -64, 32, plan["arena_bytes"]])
        return f"offset of {a} := {values[a]['offset']}"
    if op == 2:
        values[v]["kind"] = rng.choice(KINDS)
        return f"kind of {v} := {values[v]['kind']}"
    if op == 3:
        values[v]["dtype"] = rng.choice(DTYPES)
        return f"dtype of {v} := {values[v]['dtype']}"
    if op == 4 and values[v]["shape"]:
        i = rng.randrange(len(values[v]["shape"]))
        values[v]["shape"][i] = rng.choice([0, 1, 2, 4, 8, 16, 32, 64, 2**40])
        return f"shape of {v} := {values[v]['shape']}"
    if op == 5:
        values[v]["shape"] = rng.choice([[16], [2, 8], [8, 2], [4, 4], [1, 16], [64], [8, 8], []])
        return f"shape of {v} := {values[v]['shape']}"
    if op == 6:
        values[v]["kind"], values[v]["of"] = "view", rng.choice(names)
        return f"{v} := a view of {values[v]['of']}"
    if op == 7 and storage:
        a = rng.choice(storage)
        n = len(steps)
        values[a]["live"] = sorted([rng.randint(0, n + 1), rng.randint(0, n + 1)])
        return f"live of {a} := {values[a]['live']}"
    if op == 8 and steps:
        s = rng.choice(steps)
        i, j = rng.randrange(len(s["args"])), rng.randrange(len(s["args"]))
        s["args"][i], s["args"][j] = s["args"][j], s["args"][i]
        return f"args {i}, {j} of {s['kernel']} swapped"
    if op == 9 and steps:
        s = rng.choice(steps)
        i = rng.randrange(len(s["args"]))
        s["args"][i] = rng.choice(names)
        return f"arg {i} of {s['kernel']} := {s['args'][i]}"
    if op == 10 and len(steps) > 1:
        i, j = rng.sample(range(len(steps)), 2)
        steps[i], steps[j] = steps[j], steps[i]
        return f"steps {i}, {j} swapped"
    if op == 11 and steps:
        i = rng.randrange(len(steps))
        if rng.random() < 0.5:
            del steps[i]
            return f"step {i} deleted"
        steps.insert(i, copy.deepcopy(steps[i]))
        return f"step {i} duplicated"
    if op == 12 and steps:
        s = rng.choice(steps)
        n = s["num_outputs"]
        s["inplace"] = [[rng.choice(s["args"][:-n] or s["args"]), rng.choice(s["args"][-n:])]]
        return f"inplace of {s['kernel']} := {s['inplace']}"
    if op == 13 and steps:
        s, t = rng.choice(steps), rng.choice(steps)
        s["kernel"] = t["kernel"]
        return f"kernel of a step := {t['kernel']}"
    if op == 14 and steps:
        s = rng.choice(steps)
        s["num_outputs"] = rng.randint(0, len(s["args"]) + 1)
        return f"num_outputs of {s['kernel']} := {s['num_outputs']}"
    spec = rng.choice(plan["inputs"] + plan["outputs"])
    spec["name"] = rng.choice(names)
    return f"io {spec} renamed"


def mutate_plan(plan: dict, rng: random.Random) -> tuple[object, str]:
    """1 to 3 mutations of a deep copy of ``plan``: plan-aware ones two times in three, else generic."""
    tree = copy.deepcopy(plan)
    vocab = [*plan["values"], *(s["kernel"] for s in plan["steps"]), *DTYPES, *KINDS]
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        if isinstance(tree, dict) and rng.random() < 2 / 3:
            try:
                done.append(_plan_aware(tree, rng))
                continue
            except (KeyError, TypeError, IndexError, ValueError, AttributeError):  # an earlier mutation broke its shape
                pass
        tree, what = generic(tree, rng, vocab)
        done.append(what)
    return tree, "; ".join(done)


def mutate_manifest(manifest: dict, rng: random.Random) -> tuple[object, str]:
    """1 or 2 generic mutations of a deep copy of ``manifest``, outside its ``report`` nine times in ten."""
    tree = copy.deepcopy(manifest)
    vocab = [k for k in paths(manifest) if isinstance(k[-1], str)]
    vocab = sorted({k[-1] for k in vocab}) + ["host", "cpu", "cuda", "vulkan", "x86_64", "aarch64", "0.27", "1"]
    done = []
    for _ in range(rng.choice([1, 1, 2])):
        skip = ("report",) if rng.random() < 0.9 else ()
        tree, what = generic(tree, rng, vocab, skip)
        done.append(what)
    return tree, "; ".join(done)


FLAT_TOKENS = ["-1", "0", "1", "2", "3", "9", "32", "64", "65", "4096", "1099511627776", "18446744073709551615",
               "99999999999999999999999", "+1", "0x40", "nan", "f33", "bool", "i16", "nope", "value", "view", "step",
               "input", "output", "arena", "const", "buffer"]


def mutate_flat(text: str, rng: random.Random) -> tuple[str, str]:
    """1 to 3 mutations of a plan.txt: tokens replaced, nudged, deleted, added or swapped; lines deleted, duplicated,
    swapped or added."""
    lines = [ln.split() for ln in text.splitlines()]
    names = sorted({t for f in lines[1:] for t in f[1:3] if not t.lstrip("-").isdigit()})
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        i = rng.randrange(len(lines))
        f = lines[i]
        op = rng.randrange(9)
        if op <= 2 and f:
            k = rng.randrange(len(f))
            f[k] = rng.choice(FLAT_TOKENS + names) if op < 2 or not f[k].isdigit() else str(int(f[k]) + rng.choice(
                [-64, -1, 1, 64]))
            done.append(f"line {i} token {k} := {f[k]}")
        elif op == 3 and f:
            done.append(f"line {i} token {f.pop(rng.randrange(len(f)))} deleted")
        elif op == 4:
            f.insert(rng.randrange(len(f) + 1), rng.choice(FLAT_TOKENS + names))
            done.append(f"line {i} token added")
        elif op == 5 and len(f) > 1:
            a, b = rng.sample(range(len(f)), 2)
            f[a], f[b] = f[b], f[a]
            done.append(f"line {i} tokens {a}, {b} swapped")
        elif op == 6:
            del lines[i]
            done.append(f"line {i} deleted")
        elif op == 7:
            lines.insert(rng.randrange(len(lines) + 1), list(f))
            done.append(f"line {i} duplicated")
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            done.append(f"lines {i}, {j} swapped")
        if not lines:
            lines = [[]]
    return "\n".join(" ".join(f) for f in lines) + "\n", "; ".join(done)
