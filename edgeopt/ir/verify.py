"""The IR verifier: run after every pass. It re-derives every type from the op schemas."""

from __future__ import annotations

from .graph import Graph
from .registry import OpError, get_op


class VerificationError(ValueError):
    """The IR breaks an invariant; the message lists every problem found."""


def verify(g: Graph) -> None:
    """Check SSA, ordering, schemas, types and constants; raise ``VerificationError`` listing all problems."""
    problems: list[str] = []
    defined: set[int] = set()
    names: set[str] = set()

    def define(v, what):
        if v.name in names:
            problems.append(f"{what}: value name %{v.name} defined twice")
        names.add(v.name)
        defined.add(id(v))

    for v in g.inputs:
        if v.producer is not None:
            problems.append(f"input %{v.name} has a producer")
        define(v, "input")
    for v in g.states:
        if v.producer is not None:
            problems.append(f"state %{v.name} has a producer")
        define(v, "state")
    for name, arr in g.constants.items():
        v = g.const_values.get(name)
        if v is None or v.name != name:
            problems.append(f"constant {name} has no value")
            continue
        if tuple(arr.shape) != v.type.shape or arr.dtype != v.type.np_dtype:
            problems.append(f"constant %{name}: data {arr.dtype}{list(arr.shape)} != type {v.type}")
        define(v, "constant")
    for i, n in enumerate(g.nodes):
        where = f"node {i} ({n.op})"
        for v in n.inputs:
            if id(v) not in defined:
                problems.append(f"{where}: input %{v.name} is used before it is defined (or not in the graph)")
        if n.op == "fused" or n.body is not None:
            _check_fused(n, where, problems)
        _check_int8_weights(g, n, where, problems)
        try:
            opdef = get_op(n.op)
            attrs = opdef.normalize_attrs(n.attrs)
            if attrs != n.attrs:
                problems.append(f"{where}: attributes {n.attrs} are not in normal form")
            types = ([r.type for r in n.body.outputs] if n.op == "fused" and n.body is not None
                     else opdef.infer([v.type for v in n.inputs], attrs))
        except OpError as e:
            problems.append(f"{where}: {e}")
            types = None
        except Exception as e:  # a schema that crashes on malformed input is still a verification failure
            problems.append(f"{where}: type inference failed: {type(e).__name__}: {e}")
            types = None
        if types is not None:
            if len(types) != len(n.outputs):
                problems.append(f"{where}: {len(n.outputs)} outputs, schema gives {len(types)}")
            for o, t in zip(n.outputs, types):
                if o.type != t:
                    problems.append(f"{where}: output %{o.name} typed {o.type}, schema infers {t}")
        for o in n.outputs:
            if o.producer is not n:
                problems.append(f"{where}: output %{o.name} does not point back to its node")
            define(o, where)
    if not g.outputs:
        problems.append("graph has no outputs")
    for v in g.outputs:
        if id(v) not in defined:
            problems.append(f"graph output %{v.name} is not defined")
    _check_state_updates(g, defined, problems)
    if problems:
        raise VerificationError("IR verification failed:\n  " + "\n  ".join(problems))


def _check_int8_weights(g: Graph, n, where: str, problems: list[str]) -> None:
    """A conv / linear that names an int8 dot product (``int8_dot``) with a constant weight: every weight within
    the range the instruction is exact for (AVX2's vpmaddubsw saturates past |w| = 64). In a fused node, its body's
    layers whose weight is a constant outside."""
    from .ops._common import INT8_DOTS, largest_magnitude

    if n.body is not None:
        outer = dict(zip(n.body.inputs, n.inputs))
        layers = [(m, outer.get(m.inputs[1])) for m in n.body.nodes if m.attrs.get("int8_dot") and len(m.inputs) > 1]
    else:
        layers = [(n, n.inputs[1])] if n.attrs.get("int8_dot") and len(n.inputs) > 1 else []
    for m, w in layers:
        if w is None or not g.is_const(w) or m.attrs["int8_dot"] not in INT8_DOTS:
            continue
        limit = INT8_DOTS[m.attrs["int8_dot"]][3]
        worst = largest_magnitude(g.const(w))
        if worst > limit:
            problems.append(f"{where}: int8_dot {m.attrs['int8_dot']!r} is exact for weights within +-{limit}; "
                            f"%{w.name} holds {worst}")


def _check_fused(n, where: str, problems: list[str]) -> None:
    from .fused import body_problems

    if n.op != "fused":
        problems.append(f"{where}: only fused nodes have a body")
        return
    problems.extend(f"{where}: {p}" for p in body_problems(n))
    if n.body is not None:
        try:
            verify(n.body)
        except VerificationError as e:
            problems.extend(f"{where} body: {line.strip()}" for line in str(e).splitlines()[1:])


def _check_state_updates(g: Graph, defined: set[int], problems: list[str]) -> None:
    """A state's new value is an ``index_copy`` of that state (written in place), and nothing else reads the state:
    a later reader would see the new rows."""
    states = {v.name: v for v in g.states}
    readers: dict[str, int] = {}
    for n in g.nodes:
        for v in n.inputs:
            if v.name in states and v is states[v.name]:
                readers[v.name] = readers.get(v.name, 0) + 1
    for name, v in g.state_updates.items():
        s = states.get(name)
        if s is None:
            problems.append(f"state update of %{name}, which is not a state of the graph")
            continue
        if id(v) not in defined:
            problems.append(f"state %{name}: its new value %{v.name} is not defined")
        elif v.type != s.type:
            problems.append(f"state %{name}: new value %{v.name} typed {v.type}, the state is {s.type}")
        elif v.producer is None or v.producer.op != "index_copy" or v.producer.inputs[0] is not s:
            problems.append(f"state %{name}: its new value %{v.name} must be an index_copy of the state (written in "
                            "place)")
        elif any(o is s for o in g.outputs):
            problems.append(f"state %{name} is a graph output and updated in place: return its new value instead")
        elif readers.get(name, 0) != 1:
            problems.append(f"state %{name} is read by {readers.get(name, 0)} nodes; updated in place, it may be read "
                            "only by the index_copy that updates it (read the new value instead)")
