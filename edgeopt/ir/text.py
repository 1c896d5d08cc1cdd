"""The IR's text form: ``print_graph`` and its inverse ``parse_graph`` (print -> parse -> print is exact).

    graph main(%x: f32[1,8]) {
      const %w: f32[4,8]
      const %half: f32[] = 0.5
      %y: f32[1,4] = linear(%x, %w) {"weight_layout": "oi"} @"model.py:12  return self.fc(x)"
      %z: f32[1,4] = mul(%y, %half)
      return %z
    }

State (``Graph.states``) is declared after the inputs with the word ``state`` and its new value, when a call
changes it, by a line ``state %k <- %k_new`` before ``return``.

Constants with at most ``INLINE_MAX`` elements are printed inline (JSON); bigger ones are named only and
their arrays are passed to ``parse_graph`` separately (the artifact stores them as safetensors).
"""

from __future__ import annotations

import json
import re

import numpy as np

from .graph import Graph, Node, Value
from .types import parse_type

INLINE_MAX = 16
_HEADER = re.compile(r"^graph ([\w.]+)\((.*)\) \{$")
_TYPE = r"\w+\[[\d,]*\](?:\{[^}]*\})?"
_VALUE_DECL = re.compile(rf"%([\w.]+): ({_TYPE})")
_PARAM = re.compile(rf"(state )?%([\w.]+): ({_TYPE})")
_STATE_UPDATE = re.compile(r"^state %([\w.]+) <- %([\w.]+)$")
_CONST = re.compile(rf"^const %([\w.]+): ({_TYPE})(?: = (.*))?$")
_NODE = re.compile(r"^(.*?) = ([a-z_0-9]+)\(([^)]*)\)(.*)$")


def print_graph(g: Graph) -> str:
    params = [f"%{v.name}: {v.type}" for v in g.inputs] + [f"state %{v.name}: {v.type}" for v in g.states]
    lines = [f"graph {g.name}({', '.join(params)}) {{"]
    for name, arr in g.constants.items():
        v = g.const_values[name]
        inline = f" = {json.dumps(arr.tolist())}" if arr.size <= INLINE_MAX else ""
        lines.append(f"  const %{name}: {v.type}{inline}")
    for n in g.nodes:
        lines.append("  " + print_node(n))
        if n.body is not None:  # a fused kernel: its subgraph follows, indented
            lines.extend("    " + ln for ln in print_graph(n.body).splitlines())
    lines.extend(f"  state %{k} <- %{v.name}" for k, v in g.state_updates.items())
    lines.append(f"  return {', '.join('%' + v.name for v in g.outputs)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def print_node(n: Node) -> str:
    outs = ", ".join(f"%{o.name}: {o.type}" for o in n.outputs)
    args = ", ".join("%" + v.name for v in n.inputs)
    text = f"{outs} = {n.op}({args})"
    if n.attrs:
        text += " " + json.dumps(n.attrs)
    if n.source:
        text += " @" + json.dumps(n.source)
    return text


class ParseError(ValueError):
    pass


def parse_graph(text: str, constants: dict[str, np.ndarray] | None = None, placeholders: bool = False) -> Graph:
    """Parse the text form. Constants not printed inline must be given in ``constants`` by name; with
    ``placeholders``, a missing one becomes a read-only zero of its type that takes no memory (for tools that read
    the graph's structure only: drawing an artifact's IR)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return _parse_lines(lines, _Placeholders(constants or {}) if placeholders else (constants or {}), 1)


class _Placeholders(dict):
    """Constants that make up a zero-strided zero array for any name they lack."""

    def __contains__(self, name) -> bool:
        return True

    def placeholder(self, name: str, t) -> np.ndarray:
        if dict.__contains__(self, name):
            return np.asarray(self[name])
        return np.broadcast_to(np.zeros((), t.np_dtype), t.shape)


def _parse_lines(lines: list[str], constants: dict, first_lineno: int) -> Graph:
    m = _HEADER.match(lines[0]) if lines else None
    if not m or lines[-1] != "}":
        raise ParseError("expected 'graph NAME(...) {' ... '}'")
    g = Graph(m.group(1))
    env: dict[str, Value] = {}
    for state, name, ty in _PARAM.findall(m.group(2)):
        add = g.add_state if state else g.add_input
        try:
            env[name] = _define(g, add(name, parse_type(ty)), name)
        except ValueError as e:
            raise ParseError(f"line {first_lineno}: {e}") from None
    i = 1
    while i < len(lines) - 1:
        line, lineno = lines[i], first_lineno + i
        try:
            if line.startswith("const "):
                _parse_const(g, env, line, constants)
            elif line.startswith("state "):
                u = _STATE_UPDATE.match(line)
                if not u or u.group(1) not in {v.name for v in g.states}:
                    raise ParseError("expected 'state %NAME <- %VALUE' naming a declared state")
                g.state_updates[u.group(1)] = _lookup(env, u.group(2))
            elif line.startswith("return"):
                g.set_outputs([_lookup(env, a) for a in _args(line[len("return"):])])
            else:
                node = _parse_node(g, env, line)
                if node.op == "fused":  # the body follows: 'graph NAME(...) {' ... matching '}'
                    end = _block_end(lines, i + 1)
                    if end >= len(lines) - 1:  # it took the enclosing graph's '}'
                        raise ParseError("unterminated fused body")
                    node.body = _parse_lines(lines[i + 1:end + 1], constants, lineno + 1)
                    i = end
        except (ValueError, TypeError, KeyError, OverflowError) as e:  # ParseError; a type's or inline data's errors
            if isinstance(e, ParseError) and str(e).startswith("line "):
                raise
            raise ParseError(f"line {lineno}: {e}: {line!r}") from None
        i += 1
    return g


def _block_end(lines: list[str], start: int) -> int:
    """Index of the '}' closing the nested graph that opens at ``lines[start]``."""
    if start >= len(lines) or not _HEADER.match(lines[start]):
        raise ParseError("a fused node must be followed by its body ('graph NAME(...) {')")
    depth = 0
    for j in range(start, len(lines)):
        if _HEADER.match(lines[j]):
            depth += 1
        elif lines[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ParseError("unterminated fused body")


def _define(g: Graph, v: Value, name: str) -> Value:
    if v.name != name:
        raise ParseError(f"duplicate value name %{name}")
    return v


def _lookup(env, ref: str) -> Value:
    name = ref.strip().lstrip("%")
    if name not in env:
        raise ParseError(f"undefined value %{name}")
    return env[name]


def _args(s: str) -> list[str]:
    return [a for a in (x.strip() for x in s.split(",")) if a]


def _parse_const(g, env, line, constants):
    m = _CONST.match(line)
    if not m:
        raise ParseError("bad const")
    name, ty, inline = m.groups()
    t = parse_type(ty)
    if inline is not None:
        arr = np.array(json.loads(inline), dtype=t.np_dtype)
        if arr.size != t.numel:
            raise ParseError(f"constant %{name} has {arr.size} inline values, declared {t}")
        arr = arr.reshape(t.shape)
    elif isinstance(constants, _Placeholders):
        arr = constants.placeholder(name, t)
    elif name in constants:
        arr = np.asarray(constants[name])
    else:
        raise ParseError(f"no data for constant %{name}")
    if arr.shape != t.shape or arr.dtype != t.np_dtype:
        raise ParseError(f"constant %{name} data is {arr.dtype}{list(arr.shape)}, declared {t}")
    if isinstance(constants, _Placeholders) and not arr.flags.c_contiguous:  # add_const would copy it: do not
        v = Value(g.fresh_name(name), t)
        g.constants[v.name], g.const_values[v.name] = arr, v
    else:
        v = g.add_const(arr, name)
    v.type = t  # a quantized constant keeps its scales (add_const types the array alone)
    env[name] = _define(g, v, name)


def _parse_node(g, env, line):
    m = _NODE.match(line)
    if not m:
        raise ParseError("bad node")
    outs, op, args, rest = m.groups()
    decls = _VALUE_DECL.findall(outs)
    attrs, source = {}, None
    rest = rest.strip()
    dec = json.JSONDecoder()
    if rest.startswith("{"):
        attrs, end = dec.raw_decode(rest)
        rest = rest[end:].strip()
    if rest.startswith("@"):
        source, _ = dec.raw_decode(rest[1:])
    inputs = [_lookup(env, a) for a in _args(args)]
    node = Node(op, inputs, attrs, source)
    for name, ty in decls:
        if name in env:
            raise ParseError(f"duplicate value name %{name}")
        g._names.add(name)
        v = Value(name, parse_type(ty), node)
        node.outputs.append(v)
        env[name] = v
    g.nodes.append(node)
    return node
