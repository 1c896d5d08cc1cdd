"""Every IR op's compiled TVM kernel against the reference interpreter (``edgeopt.ir.interpret``).

Each ``Case`` is a tiny one-op (or few-op) subgraph with its own inputs. Cases are merged into a few
multi-input, multi-output graphs ("groups") so the passing cases compile only about a dozen libraries.
A graph is lowered with ``edgeopt.lower.lower``, packed into an artifact exactly as ``edgeopt/api.py``
does, and run with the torch-free runtime ``Model``. A known bug goes in ``KNOWN_BUGS`` (case id -> why): its
case leaves its group and runs on its own as a strict xfail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from edgeopt.api import compile_graph
from edgeopt.ir import Graph, TensorType, Value, all_ops, interpret
from edgeopt.ir.ops.elementwise import BINARY, UNARY
from edgeopt.ir.ops.linalg import pack_linear_weight_groups
from edgeopt.ir.ops.nn import pack_conv_weight
from edgeopt.ir.ops.winograd import transform_weight
from edgeopt.ir.types import dtype_from_numpy
from tests.conftest import host_has_depthwise_int8_dot

RNG = np.random.default_rng(1234)
RTOL = 1e-5


@pytest.fixture(scope="module")
def target():
    from edgeopt.targets import get_target

    return get_target("host")


# -- compile + run -------------------------------------------------------------------------------------------


def compile_and_run(g: Graph, target, inputs):
    """Compile ``g`` with ``edgeopt.api.compile_graph`` (no passes) and run it through the runtime.

    Returns (outputs, compiled) where ``compiled`` has ``kernels`` (one per distinct kernel) and ``plan``.
    """
    compiled = compile_graph(g.clone(), target, opt_level=0)
    out = compiled(*inputs)
    info = SimpleNamespace(kernels=compiled.report["kernels"], plan=compiled.plan)
    return (list(out) if isinstance(out, tuple) else [out]), info


def mismatch(expected: np.ndarray, got: np.ndarray, rtol: float) -> str | None:
    """None if ``got`` matches; else a description. Floats: |got-exp| <= rtol*(|exp| + max(1, max|exp|))."""
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return f"got {got.dtype}{list(got.shape)}, expected {expected.dtype}{list(expected.shape)}"
    if expected.dtype.kind != "f":
        if np.array_equal(got, expected):
            return None
        bad = np.argwhere(got != expected)
        i = tuple(int(j) for j in bad[0])
        return (f"{len(bad)} of {expected.size} elements differ, e.g. at {i}: "
                f"got {got[i]}, expected {expected[i]}")
    if expected.size == 0:
        return None
    e, o = expected.astype(np.float64), got.astype(np.float64)
    if not np.array_equal(np.isnan(e), np.isnan(o)):
        return "NaN positions differ"
    e, o = np.nan_to_num(e), np.nan_to_num(o)
    scale = max(1.0, float(np.abs(e).max()))
    err = np.abs(o - e)
    if (err <= rtol * (np.abs(e) + scale)).all():
        return None
    i = tuple(int(j) for j in np.unravel_index(int(np.argmax(err / (np.abs(e) + scale))), e.shape))
    return f"max abs error {err.max():.3g} (scale {scale:.3g}); at {i}: got {o[i]:.7g}, expected {e[i]:.7g}"


# -- cases ---------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """A subgraph: ``build(g, values)`` adds nodes and returns its output value(s).

    ``values`` maps the short names of ``inputs`` (graph inputs) and ``consts`` (weights) to IR values.
    """

    id: str
    build: Callable
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    rtol: float = RTOL


def add_case(g: Graph, c: Case) -> tuple[list[np.ndarray], list[Value]]:
    vals: dict[str, Value] = {}
    arrays = []
    for name, arr in c.inputs.items():
        arr = np.asarray(arr)
        vals[name] = g.add_input(f"{c.id}_{name}", TensorType(arr.shape, dtype_from_numpy(arr.dtype)))
        arrays.append(arr)
    for name, arr in c.consts.items():
        vals[name] = g.add_const(arr, f"{c.id}_{name}")
    outs = c.build(g, vals)
    return arrays, list(outs) if isinstance(outs, (list, tuple)) else [outs]


def build_group(cases: list[Case]):
    """One graph with every case's inputs and outputs; returns (graph, inputs, [(case, first, count)])."""
    g = Graph("group")
    inputs, spans, outputs = [], [], []
    for c in cases:
        arrays, outs = add_case(g, c)
        inputs += arrays
        spans.append((c, len(outputs), len(outs)))
        outputs += outs
    g.set_outputs(outputs)
    return g, inputs, spans


def check_cases(cases: list[Case], target):
    """Compile ``cases`` as one graph and compare every output with the interpreter.

    Returns (lowered, graph, spans) with spans as in ``build_group``.
    """
    g, inputs, spans = build_group(cases)
    expected = interpret(g, inputs)
    got, lowered = compile_and_run(g, target, inputs)
    assert len(got) == len(expected)
    failures = []
    for c, first, count in spans:
        for k in range(first, first + count):
            v = g.outputs[k]
            problem = mismatch(expected[k], got[k], c.rtol)
            if problem:
                op = v.producer.op if v.producer else "input"
                failures.append(f"[{c.id}] output {k - first} ({op}): {problem}")
    assert not failures, "\n".join(failures)
    return lowered, g, spans


def f32(shape, lo=-2.0, hi=2.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def ints(shape, lo, hi, dtype=np.int32):
    return RNG.integers(lo, hi, size=shape).astype(dtype)


def nonzero_ints(shape, lo, hi, dtype=np.int32):
    x = ints(shape, lo, hi, dtype)
    x[x == 0] = 1
    return x


def bools(shape):
    return RNG.random(shape) > 0.5


def _one_rounding_apart(n: int = 64) -> tuple[dict, dict]:
    """Inputs and consts of a requantize whose ``a * m + c`` lands on the other side of a rounding boundary when the
    product is rounded to float32 before the add: the kernels' fused multiply-add rounds once, and so must the
    interpreter (a pretrained MobileNetV2's int8 build had 1 such element in 451584 in its second layer)."""
    rng = np.random.default_rng(7)
    a = rng.integers(-2**16, 2**16, 2**20).astype(np.int32)
    m = rng.uniform(1e-3, 4e-3, a.size).astype(np.float32)
    c = (rng.integers(90, 130, a.size) + 0.5 - a * m.astype(np.float64)).astype(np.float32)  # near x.5 levels
    twice = np.rint(a.astype(np.float32) * m + c)
    once = np.rint((a.astype(np.float64) * m + c).astype(np.float32))
    pick = np.nonzero(twice != once)[0][:n]
    assert len(pick) == n
    return {"a": a[pick]}, {"m": m[pick], "c": c[pick]}


def op1(op, name="x", attrs=None):
    """build() of a single-input one-op case."""
    return lambda g, v: g.add(op, [v[name]], attrs)


def opn(op, names, attrs=None):
    return lambda g, v: g.add(op, [v[n] for n in names], attrs)


# unary ------------------------------------------------------------------------------------------------------

_POSITIVE_DOMAIN = {"log", "log2", "log10", "sqrt", "rsqrt", "reciprocal"}
_X_UNARY = f32((3, 4, 5), -3.0, 3.0)
_X_UNARY.flat[:14] = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -2.0, 0.0, 3.0, -3.0, 1.0, -0.25,
                      0.49999997, -0.50000006]


def unary_cases() -> list[Case]:
    cases = []
    for op in UNARY:
        src = f32((2, 3, 7), 0.05, 4.0) if op in _POSITIVE_DOMAIN else _X_UNARY
        cases.append(Case(op, op1(op), {"x": src}))
    cases += [
        Case("gelu_tanh", op1("gelu", attrs={"approximate": "tanh"}), {"x": _X_UNARY}),
        Case("leaky_relu_0.2", op1("leaky_relu", attrs={"alpha": 0.2}), {"x": _X_UNARY}),
        Case("exp_wide", op1("exp"), {"x": f32((17,), -20.0, 20.0)}),
        Case("tanh_wide", op1("tanh"), {"x": f32((17,), -12.0, 12.0)}),
        Case("sigmoid_wide", op1("sigmoid"), {"x": f32((17,), -30.0, 30.0)}),
        Case("unary_rank0", op1("tanh"), {"x": np.array(0.7, np.float32)}),
    ]
    for dt in (np.int32, np.int64):  # the unary ops that accept integers
        x = ints((3, 5), -50, 50, dt)
        cases += [Case(f"{op}_{np.dtype(dt).name}", op1(op), {"x": x}) for op in ("neg", "abs", "relu")]
    return cases


# binary -----------------------------------------------------------------------------------------------------

_ARITH = ("add", "sub", "mul", "div", "maximum", "minimum")
_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
assert set(BINARY) == set(_ARITH) | set(_COMPARE) | {"pow", "logical_and", "logical_or", "fmod", "atan2"} | {
    "bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right"}  # (bitwise_cases)


def _signed_away_from_zero(shape, lo=0.5, hi=2.0):
    return (f32(shape, lo, hi) * np.where(RNG.random(shape) > 0.5, 1, -1)).astype(np.float32)


def bitwise_cases() -> list[Case]:
    """Bit operations on integers and bools; shifts by amounts in and out of [0, width), as torch."""
    i64 = np.array([[5, -7, 0, 123456789012, -1, 9]], np.int64)
    by = np.array([[0], [1], [63], [64], [-1]], np.int64)
    u8, i16 = ints((3, 4), 0, 255, np.uint8), ints((3, 4), -300, 300, np.int16)
    bools = {"a": RNG.random((3, 4)) > 0.5, "b": RNG.random((1, 4)) > 0.5}
    cases = [Case(f"{op}_{name}", opn(op, "ab"), v) for op in ("bitwise_and", "bitwise_or", "bitwise_xor")
             for name, v in (("i64", {"a": i64, "b": by}), ("u8", {"a": u8, "b": u8[::-1].copy()}),
                             ("bool", bools))]
    cases += [Case(f"{op}_{name}", opn(op, "ab"), v) for op in ("shift_left", "shift_right")
              for name, v in (("i64", {"a": i64, "b": by}), ("i16", {"a": i16, "b": ints((1, 4), -2, 18, np.int16)}),
                              ("u8", {"a": u8, "b": ints((3, 1), 0, 9, np.uint8)}))]
    cases += [Case(f"bitwise_not_{name}", op1("bitwise_not"), {"x": v})
              for name, v in (("i64", i64), ("u8", u8), ("bool", bools["a"]))]
    return cases


def binary_cases() -> list[Case]:
    cases = []
    a, b = f32((2, 1, 5)), _signed_away_from_zero((3, 1))
    cases += [Case(f"{op}_bcast", opn(op, "ab"), {"a": a, "b": b}) for op in _ARITH]
    a2, b2 = f32((2, 3, 5)), _signed_away_from_zero((2, 3, 5))
    cases += [Case(f"{op}_same", opn(op, "ab"), {"a": a2, "b": b2}) for op in _ARITH]
    cases += [Case(f"{op}_rank0", opn(op, "ab"), {"a": a2, "b": np.array(-1.25, np.float32)})
              for op in ("add", "div")]
    cases += [Case("mul_vec_bcast", opn("mul", "ba"), {"a": f32((5,)), "b": f32((4, 1, 5))})]
    cases += [Case("pow_bcast", opn("pow", "ab"),
                   {"a": f32((2, 1, 5), 0.2, 3.0), "b": f32((3, 1), -2.0, 2.0)}),
              Case("pow_int_exponent", opn("pow", "ab"),
                   {"a": f32((2, 5)), "b": np.array([[2.0], [3.0]], np.float32)}),
              Case("pow_i32", opn("pow", "ab"),
                   {"a": ints((2, 5), -3, 4), "b": np.array([[2], [3]], np.int32)}),
              # negative exponents (1, +-1 or 0, as torch), overflow wrapping, i64 past float64's 2**53, u8
              Case("pow_i32_negative_and_wrapping", opn("pow", "ab"),
                   {"a": np.array([[1, -1, -1, 2, -3, 0, 7, -2]], np.int32),
                    "b": np.array([[-5], [-2], [31], [40]], np.int32)}),
              Case("pow_i64_exact", opn("pow", "ab"),
                   {"a": np.array([3, -3, 7, 5], np.int64), "b": np.array([39, 39, 22, 27], np.int64)}),
              Case("pow_i64_exponent_64_and_up", opn("pow", "ab"),
                   {"a": np.array([[-1, 0, 1, 2, 3]], np.int64), "b": np.array([[64], [101], [63]], np.int64)}),
              Case("pow_u8", opn("pow", "ab"),
                   {"a": np.array([2, 3, 255, 7, 6], np.uint8), "b": np.array([7, 5, 2, 100, 200], np.uint8)}),
              Case("pow_i8_big_exponents", opn("pow", "ab"),
                   {"a": np.array([[-7, 3, -2, 5, -1]], np.int8), "b": np.array([[100], [64], [127], [-3]], np.int8)})]
    # comparisons: integer-valued floats so that equal elements occur
    ca = RNG.integers(-2, 3, (2, 1, 5)).astype(np.float32)
    cb = RNG.integers(-2, 3, (3, 1)).astype(np.float32)
    cases += [Case(f"{op}_f32", opn(op, "ab"), {"a": ca, "b": cb}) for op in _COMPARE]
    for dt in (np.int32, np.int64):
        name = np.dtype(dt).name
        ia, ib = ints((2, 1, 5), -20, 21, dt), nonzero_ints((3, 1), -7, 8, dt)
        cases += [Case(f"{op}_{name}", opn(op, "ab"), {"a": ia, "b": ib}) for op in _ARITH + _COMPARE]
    # truncating integer division of every sign combination
    num = np.array([7, -7, 7, -7, 6, -6, 1, -1, 0, 13], np.int32)
    den = np.array([2, 2, -2, -2, 3, 3, 4, 4, 5, -4], np.int32)
    cases.append(Case("div_i32_signs", opn("div", "ab"), {"a": num, "b": den}))
    # C's fmod: the dividend's sign, for floats and integers (an integer remainder by 0 is 0, as numpy's)
    cases += [Case("fmod_f32", opn("fmod", "ab"),
                   {"a": f32((2, 1, 5), -9.0, 9.0), "b": _signed_away_from_zero((3, 1))}),
              Case("fmod_i32_signs", opn("fmod", "ab"), {"a": num, "b": np.where(np.arange(10) == 9, 0, den)
                                                           .astype(np.int32)})]
    # atan2: every quadrant, the axes, zeros of both signs
    cases.append(Case("atan2_f32", opn("atan2", "ab"), {"a": f32((2, 1, 5), -3.0, 3.0),
                                                        "b": np.array([[0.0], [-0.0], [-2.0]], np.float32)}))
    # comparisons with NaN and infinities: != is True and == False where either side is NaN, also for x vs x
    special = np.array([np.nan, 1.0, np.inf, -np.inf, 0.0, -0.0, np.nan, 2.0], np.float32)
    cases += [Case(f"{op}_nan", opn(op, "ab"), {"a": special, "b": special[::-1].copy()}) for op in _COMPARE]
    cases += [Case(f"{op}_self_nan", opn(op, "aa"), {"a": special}) for op in ("eq", "ne")]
    pa, pb = bools((2, 1, 5)), bools((3, 1))
    cases += [Case(f"{op}_bool", opn(op, "ab"), {"a": pa, "b": pb})
              for op in ("logical_and", "logical_or", "eq", "ne", "mul", "add", "maximum", "minimum")]
    cases.append(Case("logical_not", op1("logical_not"), {"x": bools((3, 4))}))
    return cases


# where / cast / clamp / copy / scalar constants -------------------------------------------------------------


_NAN_X = np.array([np.nan, 1.0, -1.0, 2.0, -3.0, 0.5], np.float32)


def misc_elementwise_cases() -> list[Case]:
    cases = [
        Case("where_bcast", opn("where", "cxy"), {"c": bools((3, 1)), "x": f32((2, 1, 5)), "y": f32((5,))}),
        Case("where_i64", opn("where", "cxy"),
             {"c": bools((2, 4)), "x": ints((2, 4), -9, 9, np.int64), "y": ints((1, 4), -9, 9, np.int64)}),
        Case("where_of_compare", lambda g, v: g.add("where", [g.add("gt", [v["x"], v["y"]]), v["x"], v["y"]]),
             {"x": f32((3, 4)), "y": f32((4,))}),
    ]
    fx = np.array([-2.7, -1.5, -1.0, -0.5, -0.2, -0.0, 0.0, 0.3, 0.999, 1.9, 2.5, 100.75], np.float32)
    big = np.array([0, 1, -1, 2**31 + 5, -(2**40) - 3, 2**53 + 1, 12345, -77], np.int64)
    i32 = np.array([0, 1, -1, 127, 128, 300, -200, 65537], np.int32)
    cases += [
        Case("cast_f32_i32", op1("cast", attrs={"dtype": "i32"}), {"x": fx}),
        Case("cast_f32_i64", op1("cast", attrs={"dtype": "i64"}), {"x": fx}),
        Case("cast_f32_bool", op1("cast", attrs={"dtype": "bool"}), {"x": fx}),
        Case("cast_f32_f64", op1("cast", attrs={"dtype": "f64"}), {"x": fx}),
        Case("cast_i64_f32", op1("cast", attrs={"dtype": "f32"}), {"x": big}),
        Case("cast_i64_i32", op1("cast", attrs={"dtype": "i32"}), {"x": big[[0, 1, 2, 6, 7]]}),
        Case("cast_i32_i64", op1("cast", attrs={"dtype": "i64"}), {"x": i32}),
        Case("cast_i32_bool", op1("cast", attrs={"dtype": "bool"}), {"x": i32}),
        Case("cast_i32_i8_wraps", op1("cast", attrs={"dtype": "i8"}), {"x": i32}),
        Case("cast_bool_f32", op1("cast", attrs={"dtype": "f32"}), {"x": bools((9,))}),
        Case("cast_bool_i32", op1("cast", attrs={"dtype": "i32"}), {"x": bools((9,))}),
        Case("clamp_min", op1("clamp", attrs={"min": -0.5}), {"x": f32((3, 7))}),
        Case("clamp_max", op1("clamp", attrs={"max": 0.25}), {"x": f32((3, 7))}),
        Case("clamp_relu6", op1("clamp", attrs={"min": 0, "max": 6}), {"x": f32((3, 7), -9, 9)}),
        Case("clamp_i32", op1("clamp", attrs={"min": -3, "max": 4}), {"x": ints((3, 7), -9, 9)}),
        Case("copy_f32", op1("copy"), {"x": f32((2, 3, 5))}),
        Case("copy_i64", op1("copy"), {"x": ints((4,), -9, 9, np.int64)}),
        Case("copy_bool", op1("copy"), {"x": bools((3, 3))}),
        # scalar constants become immediates in the kernel
        Case("add_scalar_const", opn("add", ["x", "c"]), {"x": f32((3, 5))},
             {"c": np.array(2.5, np.float32)}),
        Case("mul_scalar_const_i32", opn("mul", ["c", "x"]), {"x": ints((3, 5), -9, 9)},
             {"c": np.array([[-3]], np.int32)}),
        Case("where_scalar_const", opn("where", ["m", "x", "c"]), {"m": bools((2, 5)), "x": f32((2, 5))},
             {"c": np.array([-1.0], np.float32)}),
        # NaN must propagate as in numpy and torch (relu(nan) = nan, max over a row with a NaN = nan)
        Case("relu_nan", op1("relu"), {"x": _NAN_X}),
        Case("maximum_nan", opn("maximum", "xy"), {"x": _NAN_X, "y": _NAN_X[::-1].copy()}),
        Case("max_reduce_nan", op1("max", attrs={"axes": [0]}), {"x": _NAN_X}),
        Case("batch_norm_4d", opn("batch_norm", ["x", "mean", "var", "w", "b"]), {"x": f32((2, 3, 4, 5))},
             {"mean": f32((3,)), "var": f32((3,), 0.1, 2.0), "w": f32((3,)), "b": f32((3,))}),
        Case("batch_norm_2d_eps", opn("batch_norm", ["x", "mean", "var", "w", "b"], {"eps": 1e-2}),
             {"x": f32((4, 6))},
             {"mean": f32((6,)), "var": f32((6,), 0.1, 2.0), "w": f32((6,)), "b": f32((6,))}),
    ]
    return cases


# reductions -------------------------------------------------------------------------------------------------


def _untied(shape):
    """float32 values with no ties anywhere (argmax must not depend on tie breaking)."""
    return (RNG.permutation(int(np.prod(shape))).reshape(shape) * 0.25 - 3.0).astype(np.float32)


def reduction_cases() -> list[Case]:
    x = f32((3, 5, 7))
    cases = []
    for op in ("sum", "mean", "max", "min"):
        for axes, kd in (([1], False), ([0, 2], True), (None, False), ([-1], True), ([0, 1, 2], True),
                         ([2, 0], False)):
            cases.append(Case(f"{op}_{axes}_{kd}", op1(op, attrs={"axes": axes, "keepdims": kd}), {"x": x}))
    xa = _untied((3, 5, 7))
    for axes, kd in (([0], False), ([1], True), ([-1], False), ([2], True)):
        cases.append(Case(f"argmax_{axes}_{kd}", op1("argmax", attrs={"axes": axes, "keepdims": kd}),
                          {"x": xa}))
    cases += [
        Case("argmax_rank1", op1("argmax", attrs={"axes": [0]}), {"x": _untied((11,))}),
        Case("argmax_i32", op1("argmax", attrs={"axes": [1]}),
             {"x": RNG.permutation(24).reshape(4, 6).astype(np.int32)}),
        Case("sum_i32", op1("sum", attrs={"axes": [1]}), {"x": ints((4, 6), -50, 50)}),
        Case("max_i64", op1("max", attrs={"axes": None}), {"x": ints((4, 6), -50, 50, np.int64)}),
        Case("min_i32_keep", op1("min", attrs={"axes": [0], "keepdims": True}), {"x": ints((4, 6), -50, 50)}),
        Case("prod_axis1", op1("prod", attrs={"axes": [1]}), {"x": f32((3, 7, 2), 0.5, 1.5)}),
        Case("prod_i64_all_keep", op1("prod", attrs={"axes": None, "keepdims": True}),
             {"x": ints((2, 5), -3, 4, np.int64)}),
        Case("cumsum_axis1", op1("cumsum", attrs={"axis": 1}), {"x": f32((3, 9, 2))}),
        Case("cumsum_i64_last", op1("cumsum", attrs={"axis": -1}), {"x": ints((4, 6), -50, 50, np.int64)}),
        # the CPU's running sums: a long row (summed in float64, as the reference), blocks of an inner axis, f16,
        # and u8 wrapping as the reference's cast
        Case("cumsum_long_row", op1("cumsum", attrs={"axis": 0}), {"x": f32((6000,), 0.0, 1.0)}),
        Case("cumsum_inner_blocks", op1("cumsum", attrs={"axis": 1}), {"x": f32((2, 7, 96))}),
        Case("cumsum_inner_partial_block", op1("cumsum", attrs={"axis": 0}), {"x": f32((5, 67))}),
        # exactly the reference's float64 sums: 1e8 + 1 is 1e8 in float32, a float32 running sum would end at 0
        Case("cumsum_float64_sums", op1("cumsum", attrs={"axis": 0}),
             {"x": np.array([1e8] + [1.0] * 20 + [-1e8, 0.5], np.float32)}, rtol=0.0),
        Case("cumsum_f16", op1("cumsum", attrs={"axis": -1}), {"x": f32((3, 40), 0.0, 1.0).astype(np.float16)}),
        Case("cumsum_u8_wraps", op1("cumsum", attrs={"axis": 1}), {"x": ints((2, 30), 0, 256, np.uint8)}),
    ]
    cases += sort_cases()
    xs = f32((3, 5, 7), -8.0, 8.0)
    for op in ("softmax", "log_softmax"):
        cases += [Case(f"{op}_axis{ax}", op1(op, attrs={"axis": ax}), {"x": xs}) for ax in (0, 1, 2, -1)]
        cases.append(Case(f"{op}_shifted", op1(op, attrs={"axis": -1}), {"x": f32((4, 9), 90.0, 110.0)}))
    xl = f32((3, 5, 7), 8.0, 12.0)  # a mean that is large against the spread
    cases += [
        Case("layer_norm_nd1", op1("layer_norm"), {"x": xl}),
        Case("layer_norm_nd1_w", opn("layer_norm", "xw"), {"x": xl}, {"w": f32((7,))}),
        Case("layer_norm_nd1_wb", opn("layer_norm", "xwb"), {"x": xl}, {"w": f32((7,)), "b": f32((7,))}),
        Case("layer_norm_nd2_wb", opn("layer_norm", "xwb", {"normalized_ndim": 2}), {"x": xl},
             {"w": f32((5, 7)), "b": f32((5, 7))}),
        Case("layer_norm_nd2", opn("layer_norm", "x", {"normalized_ndim": 2, "eps": 1e-3}), {"x": xl}),
        Case("layer_norm_rank2", opn("layer_norm", "xwb"), {"x": f32((4, 16))},
             {"w": f32((16,)), "b": f32((16,))}),
    ]
    return cases


def _sortable(shape, dtype=np.float32):
    """Values with ties, and for floats NaNs, signed zeros and infinities: every rule of torch's order is used."""
    x = (RNG.integers(-6, 7, size=shape) * 0.5).astype(dtype)
    if x.dtype.kind == "f":
        flat = x.reshape(-1)
        flat[1::7], flat[2::11], flat[3::13] = np.nan, -0.0, np.inf
        flat[5::17] = -np.inf
    return x


def sort_cases() -> list[Case]:
    """argtopk: merge sort on CPUs (runs cut at k), pairwise ranks on GPUs (and below, on the CPU)."""
    return [
        Case("argtopk_desc_k3", op1("argtopk", attrs={"k": 3}), {"x": _sortable((4, 2, 19))}),
        Case("argtopk_asc_all", op1("argtopk", attrs={"k": 19, "largest": False}), {"x": _sortable((3, 19))}),
        Case("argtopk_long_row", op1("argtopk", attrs={"k": 40}), {"x": _sortable((2, 3001))}),
        Case("argtopk_one", op1("argtopk", attrs={"k": 1, "largest": False}), {"x": _sortable((5, 1))}),
        Case("argtopk_f16_i32", op1("argtopk", attrs={"k": 6, "dtype": "i32"}), {"x": _sortable((3, 33), np.float16)}),
        Case("argtopk_f64", op1("argtopk", attrs={"k": 9, "largest": False}), {"x": _sortable((2, 9), np.float64)}),
        Case("argtopk_i64", op1("argtopk", attrs={"k": 5}),
             {"x": np.array([[3, -2**63, 2**63 - 1, 3, 0, -1, 2**63 - 1]], np.int64)}),
        Case("argtopk_u8", op1("argtopk", attrs={"k": 8, "largest": False}), {"x": ints((2, 8), 0, 256, np.uint8)}),
        Case("argtopk_bool", op1("argtopk", attrs={"k": 7}), {"x": bools((3, 7))}),
        # a small k of a long row (merge_sort.selects): the k-th key is found digit by digit first, ties at it taken
        # in order
        Case("argtopk_select_i64_ties", op1("argtopk", attrs={"k": 30, "largest": False}),
             {"x": ints((3, 2000), -3, 4, np.int64)}),
        Case("argtopk_select_f64", op1("argtopk", attrs={"k": 40}), {"x": _sortable((2, 2000), np.float64)}),
        Case("argtopk_select_bool", op1("argtopk", attrs={"k": 16}), {"x": bools((2, 1200))}),
        Case("argtopk_select_zeros", op1("argtopk", attrs={"k": 10}),
             {"x": np.where(bools((2, 1200)), np.float32(0.0), np.float32(-0.0))}),
    ]


def test_sort_cases_take_both_paths_of_the_merge_sort(target):
    """The small k of long rows go through the radix select of the k-th key, the others straight to the merge."""
    lowered, g, spans = check_cases(sort_cases(), target)
    kernel_of = {s["node"]: s["kernel"] for s in lowered.plan["steps"]}
    schedule = {k["name"]: k["schedule"] for k in lowered.kernels}
    took = {c.id: schedule[kernel_of[g.outputs[first].name]] for c, first, _ in spans}
    selected = {cid for cid, desc in took.items() if desc.startswith("tir(radix select")}
    assert selected == {"argtopk_long_row"} | {cid for cid in took if cid.startswith("argtopk_select")}, took
    assert all(took[cid].startswith("tir(merge sort") for cid in set(took) - selected), took


# contractions -----------------------------------------------------------------------------------------------


def linalg_cases() -> list[Case]:
    mm = [((2, 1, 7, 13), (3, 13, 5)), ((1, 13), (13, 5)), ((4, 1, 6), (6, 9)), ((7, 13), (2, 13, 5)),
          ((3, 64), (64, 17)), ((2, 3, 1, 8), (2, 3, 8, 16)), ((5, 4), (4, 1))]
    cases = [Case(f"matmul_{a}x{b}", opn("matmul", "ab"), {"a": f32(a), "b": f32(b)}) for a, b in mm]
    cases.append(Case("matmul_const_rhs", opn("matmul", "ab"), {"a": f32((3, 7, 13))}, {"b": f32((13, 5))}))
    for layout in ("oi", "io"):
        for xshape, fin, fout, bias in (((2, 3, 16), 16, 24, True), ((1, 16), 16, 24, False),
                                        ((5, 13), 13, 7, True), ((2, 2, 3, 13), 13, 7, False)):
            w = f32((fout, fin) if layout == "oi" else (fin, fout))
            consts = {"w": w, **({"b": f32((fout,))} if bias else {})}
            cases.append(Case(f"linear_{layout}_{xshape}_{'b' if bias else 'nob'}",
                              opn("linear", "xwb" if bias else "xw", {"weight_layout": layout}),
                              {"x": f32(xshape)}, consts))
    return cases


# convolutions -----------------------------------------------------------------------------------------------

CONV2D = [  # id, x shape, w shape, attrs, bias
    ("3x3_s1_p1_w13", (1, 4, 9, 13), (8, 4, 3, 3), {"padding": [1, 1, 1, 1]}, True),
    ("3x3_s2_p1_w7", (1, 4, 13, 13), (8, 4, 3, 3), {"stride": [2, 2], "padding": [1, 1, 1, 1]}, False),
    ("3x3_s2_asym_pad", (1, 4, 11, 11), (8, 4, 3, 3), {"stride": [2, 2], "padding": [0, 1, 2, 1]}, True),
    ("3x3_dilation2", (1, 3, 10, 12), (5, 3, 3, 3), {"dilation": [2, 2], "padding": [2, 2, 2, 2]}, False),
    ("groups2_dilation", (1, 4, 10, 10), (6, 2, 3, 3),
     {"groups": 2, "dilation": [2, 1], "padding": [2, 1, 2, 1]}, True),
    ("depthwise_3x3", (1, 8, 14, 14), (8, 1, 3, 3), {"groups": 8, "padding": [1, 1, 1, 1]}, True),
    ("depthwise_s2_mult2", (2, 4, 9, 9), (8, 1, 3, 3),
     {"groups": 4, "stride": [2, 2], "padding": [1, 1, 1, 1]}, False),
    ("1x1", (1, 16, 7, 7), (32, 16, 1, 1), {}, False),
    ("1x1_s2", (2, 6, 8, 8), (4, 6, 1, 1), {"stride": [2, 2]}, True),
    ("7x7_s2_odd", (1, 3, 23, 25), (8, 3, 7, 7), {"stride": [2, 2], "padding": [3, 3, 3, 3]}, True),
    ("rect_3x1_s1x2", (1, 2, 8, 11), (3, 2, 3, 1), {"stride": [1, 2], "padding": [1, 0, 1, 0]}, False),
]

CONV_T = [  # id, x shape, w shape, attrs, bias
    ("k2_s2", (1, 4, 5, 6), (4, 3, 2, 2), {"stride": [2, 2]}, False),
    ("k3_s2_p1_op1", (1, 4, 5, 6), (4, 3, 3, 3),
     {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}, True),
    ("groups2", (1, 4, 5, 5), (4, 3, 3, 3),
     {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1], "groups": 2}, True),
    ("k4_s2_p1", (2, 3, 4, 7), (3, 2, 4, 4), {"stride": [2, 2], "padding": [1, 1]}, False),
    ("k3_s1_dilation2", (1, 2, 5, 5), (2, 3, 3, 3), {"dilation": [2, 2], "padding": [1, 0]}, True),
]


def conv_cases() -> list[Case]:
    cases = []
    for op, table in (("conv2d", CONV2D), ("conv_transpose2d", CONV_T)):
        for cid, xs, ws, attrs, bias in table:
            out_ch = ws[0] if op == "conv2d" else ws[1] * attrs.get("groups", 1)
            consts = {"w": f32(ws, -1.0, 1.0), **({"b": f32((out_ch,))} if bias else {})}
            cases.append(Case(f"{op}_{cid}", opn(op, "xwb" if bias else "xw", attrs), {"x": f32(xs)}, consts))
    return cases


# pooling / resize / pad -------------------------------------------------------------------------------------


def pool_cases() -> list[Case]:
    x = f32((1, 3, 9, 11))
    x7 = f32((2, 2, 7, 7))
    mp = [
        ("k3_s2_p1", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]}),
        ("k2_s2_ceil", {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": True}),
        ("k3_s2_p1_ceil", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1], "ceil_mode": True}),
        ("k3_s1_dil2", {"kernel": [3, 3], "stride": [1, 1], "dilation": [2, 2]}),
        ("k2x3_s1x2_asym", {"kernel": [2, 3], "stride": [1, 2], "padding": [1, 0, 0, 1]}),
    ]
    cases = [Case(f"max_pool2d_{cid}", op1("max_pool2d", attrs=a), {"x": x}) for cid, a in mp]
    cases += [
        Case("max_pool2d_i32", op1("max_pool2d", attrs=mp[0][1]), {"x": ints((1, 2, 5, 6), -99, 99)}),
        Case("max_pool2d_all_negative", op1("max_pool2d", attrs=mp[2][1]), {"x": f32((1, 2, 6, 6), -9, -1)}),
    ]
    k3s2p1 = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]}
    ap = [
        ("k3_s2_p1_incl", k3s2p1),
        ("k3_s2_p1_excl", {**k3s2p1, "count_include_pad": False}),
        ("k3_s2_p1_incl_ceil", {**k3s2p1, "ceil_mode": True}),
        ("k3_s2_p1_excl_ceil", {**k3s2p1, "ceil_mode": True, "count_include_pad": False}),
        ("k2_s2_ceil", {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": True}),
        ("k2_s2_divisor3", {"kernel": [2, 2], "stride": [2, 2], "divisor_override": 3}),
        ("k3_s2_p1_divisor5_ceil", {**k3s2p1, "ceil_mode": True, "divisor_override": 5}),
        ("k3x2_asym_pad_excl", {"kernel": [3, 2], "stride": [2, 1], "padding": [1, 0, 0, 1],
                                "count_include_pad": False}),
    ]
    cases += [Case(f"avg_pool2d_{cid}", op1("avg_pool2d", attrs=a), {"x": x}) for cid, a in ap]
    cases += [
        Case("adaptive_7_to_3", op1("adaptive_avg_pool2d", attrs={"output_size": [3, 3]}), {"x": x7}),
        Case("adaptive_9x11_to_4x3", op1("adaptive_avg_pool2d", attrs={"output_size": [4, 3]}), {"x": x}),
        Case("adaptive_global", op1("adaptive_avg_pool2d", attrs={"output_size": [1, 1]}), {"x": x7}),
        Case("adaptive_identity", op1("adaptive_avg_pool2d", attrs={"output_size": [7, 7]}), {"x": x7}),
        Case("adaptive_upsample_3_to_5", op1("adaptive_avg_pool2d", attrs={"output_size": [5, 5]}),
             {"x": f32((1, 2, 3, 3))}),
    ]
    return cases


def resize_pad_cases() -> list[Case]:
    x = f32((1, 2, 9, 11))
    rs = [
        ("nearest_up2_scales", {"size": [18, 22], "mode": "nearest", "scales": [2.0, 2.0]}),
        ("nearest_up2", {"size": [18, 22], "mode": "nearest"}),
        ("nearest_down_nonint", {"size": [4, 7], "mode": "nearest"}),
        ("nearest_up_nonint", {"size": [13, 17], "mode": "nearest"}),
        ("bilinear_up2_scales", {"size": [18, 22], "mode": "bilinear", "scales": [2.0, 2.0]}),
        ("bilinear_up_nonint", {"size": [13, 17], "mode": "bilinear"}),
        ("bilinear_up_nonint_ac", {"size": [13, 17], "mode": "bilinear", "align_corners": True}),
        ("bilinear_down_nonint", {"size": [4, 7], "mode": "bilinear"}),
        ("bilinear_down_nonint_ac", {"size": [4, 7], "mode": "bilinear", "align_corners": True}),
        ("bilinear_scales_1.5", {"size": [13, 16], "mode": "bilinear", "scales": [1.5, 1.5]}),
        ("bilinear_to_1x1_ac", {"size": [1, 1], "mode": "bilinear", "align_corners": True}),
    ]
    cases = [Case(f"resize_{cid}", op1("resize2d", attrs=a), {"x": x}) for cid, a in rs]
    grid = f32((1, 4, 5, 2), -1.4, 1.4)  # some positions outside the input: each padding mode's rule
    cases += [Case(f"grid_sample_{m}_{p}_{'corners' if ac else 'centres'}",
                   opn("grid_sample", ["x", "grid"], {"mode": m, "padding_mode": p, "align_corners": ac}),
                   {"x": x, "grid": grid})
              for m in ("bilinear", "nearest") for p in ("zeros", "border", "reflection") for ac in (False, True)]
    cases += [  # torch's picks: float32 steps (26 -> 22, output 11 is x[12]), x2 by shifting, same size copied
        Case("resize_nearest_f32_step", op1("resize2d", attrs={"size": [3, 22], "mode": "nearest"}),
             {"x": f32((1, 2, 5, 26))}),
        Case("resize_nearest_doubling_scales_2.2", op1("resize2d", attrs={"size": [8, 9], "mode": "nearest",
                                                                          "scales": [2.2, 2.2]}),
             {"x": f32((1, 1, 4, 4))}),
        Case("resize_bilinear_same_width_scales_1.3", op1("resize2d", attrs={"size": [5, 2], "mode": "bilinear",
                                                                             "scales": [1.3, 1.3]}),
             {"x": f32((1, 2, 4, 2))}),
    ]
    cases += [
        Case("pad_4d_pos", op1("pad", attrs={"pads": [0, 0, 1, 0, 2, 1, 0, 3]}), {"x": x}),
        Case("pad_4d_mixed_value", op1("pad", attrs={"pads": [0, 0, 0, 1, 2, -1, -3, 2], "value": 0.5}),
             {"x": x}),
        Case("pad_2d_negative", op1("pad", attrs={"pads": [-1, -2, -3, 0]}), {"x": f32((5, 6))}),
        Case("pad_1d", op1("pad", attrs={"pads": [3, 2], "value": -1.0}), {"x": f32((4,))}),
        Case("pad_i64", op1("pad", attrs={"pads": [1, 1, 0, 2], "value": 7}),
             {"x": ints((2, 3), -9, 9, np.int64)}),
        # one value per channel: 8-bit pixels padded with each channel's level of 0 (fold_quantized)
        Case("pad_u8_per_channel", op1("pad", attrs={"pads": [0, 0, 0, 0, 1, 2, 3, 0], "value": [124, 116, 104]}),
             {"x": ints((1, 3, 4, 5), 0, 255, np.uint8)}),
    ]
    return cases


# blocked NCHW<b>c layout ----------------------------------------------------------------------------------


def blocked_layout_cases() -> list[Case]:
    """layout_transform both ways, and conv2d / window pools on blocked tensors (what nchwc_layout emits)."""
    x = f32((1, 16, 9, 11))

    def to_blocked(b):
        return op1("layout_transform", attrs={"src_layout": "NCHW", "dst_layout": f"NCHW{b}c"})

    def conv(names, attrs):
        return opn("conv2d", names, {"layout": "NCHWc", **attrs})

    cases = [
        Case("to_nchw8c", to_blocked(8), {"x": x}),
        Case("to_nchw4c", to_blocked(4), {"x": x}),
        Case("to_nchw3c_image", to_blocked(3), {"x": f32((1, 3, 7, 6))}),
        Case("from_nchw8c", op1("layout_transform", attrs={"src_layout": "NCHW8c", "dst_layout": "NCHW"}),
             {"x": f32((1, 2, 5, 6, 8))}),
    ]
    convs = [  # id, x (blocked), weight (OIHW), attrs, bias
        ("image_b3_k3_s2", (1, 1, 9, 10, 3), (16, 3, 3, 3), {"stride": [2, 2], "padding": [1, 1, 1, 1]}, True),
        ("b8_k3_s1", (1, 2, 7, 9, 8), (16, 16, 3, 3), {"padding": [1, 1, 1, 1]}, False),
        ("b8_in_b4_out_1x1", (1, 2, 5, 6, 8), (12, 16, 1, 1), {}, True),
        ("b8_k3_s2_asym_pad", (1, 2, 9, 9, 8), (8, 16, 3, 3), {"stride": [2, 2], "padding": [0, 0, 1, 1]}, True),
        ("b4_dilation2", (1, 1, 8, 8, 4), (8, 4, 3, 3), {"dilation": [2, 2], "padding": [2, 2, 2, 2]}, False),
    ]
    for cid, xs, ws, attrs, bias in convs:
        v = 8 if ws[0] % 8 == 0 else 4
        consts = {"w": pack_conv_weight(f32(ws, -1.0, 1.0), v), **({"b": f32((ws[0],))} if bias else {})}
        cases.append(Case(f"conv2d_nchwc_{cid}", conv("xwb" if bias else "xw", {**attrs,
                                                                                "weight_layout": f"OIHW{v}o"}),
                          {"x": f32(xs)}, consts))
    for cid, ch, k, attrs in (("k3_s1", 16, 3, {"padding": [1, 1, 1, 1]}),
                              ("k5_s2_asym", 8, 5, {"stride": [2, 2], "padding": [1, 1, 2, 2]})):
        consts = {"w": pack_conv_weight(f32((ch, 1, k, k), -1.0, 1.0), 8), "b": f32((ch,))}
        cases.append(Case(f"depthwise_nchwc_{cid}", conv("xwb", {**attrs, "groups": ch, "weight_layout": "OIHW8o"}),
                          {"x": f32((1, ch // 8, 9, 9, 8))}, consts))
    xb = f32((1, 2, 9, 11, 8))
    pools = [("max_pool2d", "k3_s2_p1", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]}),
             ("max_pool2d", "k2_s2_ceil", {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": True}),
             ("avg_pool2d", "k3_s2_p1_excl", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1],
                                              "count_include_pad": False}),
             ("avg_pool2d", "k2_s1", {"kernel": [2, 2], "stride": [1, 1]})]
    cases += [Case(f"{op}_nchwc_{cid}", op1(op, attrs={**a, "layout": "NCHWc"}), {"x": xb}) for op, cid, a in pools]
    for cid, tile, xs, o, pads, bias in (("f4", 4, (1, 2, 8, 8, 8), 16, [1, 1, 1, 1], True),
                                         ("f2_odd_crop", 2, (1, 2, 7, 9, 8), 8, [1, 1, 1, 1], False),
                                         ("f4_asym_pad_b4", 4, (2, 4, 6, 5, 4), 8, [0, 2, 1, 0], True),
                                         ("f4_in_b8_out_b4", 4, (1, 2, 8, 8, 8), 12, [1, 1, 1, 1], True)):
        w = transform_weight(f32((o, xs[1] * xs[4], 3, 3), -1.0, 1.0), tile, 4 if "b4" in cid else 8)
        consts = {"u": w, **({"b": f32((o,))} if bias else {})}
        cases.append(Case(f"conv2d_winograd_{cid}", opn("conv2d_winograd", "xub" if bias else "xu",
                                                        {"tile": tile, "padding": pads}), {"x": f32(xs)}, consts))
    return cases


# data movement ----------------------------------------------------------------------------------------------


def shape_cases() -> list[Case]:
    x = f32((2, 3, 4))
    cases = [
        Case("reshape_input_is_output", op1("reshape", attrs={"shape": [6, 4]}), {"x": x}),
        Case("reshape_chain", lambda g, v: (lambda r: [r, g.add("reshape", [r], {"shape": [24]})])(
            g.add("reshape", [v["x"]], {"shape": [4, 6]})), {"x": x}),
        Case("reshape_into_kernel",
             lambda g, v: g.add("neg", [g.add("reshape", [v["x"]], {"shape": [3, 8]})]), {"x": x}),
        Case("reshape_of_kernel_output",
             lambda g, v: g.add("reshape", [g.add("exp", [v["x"]])], {"shape": [24]}), {"x": x}),
        Case("reshape_i64", op1("reshape", attrs={"shape": [3, 2]}), {"x": ints((6,), -9, 9, np.int64)}),
        Case("reshape_of_const",
             lambda g, v: g.add("add", [v["x"], g.add("reshape", [v["c"]], {"shape": [3, 8]})]),
             {"x": f32((3, 8))}, {"c": f32((2, 3, 4))}),
        Case("graph_input_is_output", lambda g, v: v["x"], {"x": x}),
        Case("mul_same_input_twice", opn("mul", "xx"), {"x": x}),
    ]
    for perm in ([2, 0, 1], [1, 0, 2], [0, 2, 1]):
        cases.append(Case(f"transpose_{perm}", op1("transpose", attrs={"perm": perm}), {"x": x}))
    cases.append(Case("transpose_4d", op1("transpose", attrs={"perm": [0, 2, 3, 1]}),
                      {"x": f32((1, 3, 5, 7))}))
    sl = [
        ("a2_s1_e4_st2", {"axis": 2, "start": 1, "end": 4, "step": 2}),
        ("a0_e1", {"axis": 0, "end": 1}),
        ("a1_end_neg", {"axis": 1, "start": 0, "end": -1}),
        ("a2_end_past", {"axis": 2, "start": 1, "end": 100, "step": 2}),
        ("a-1_st3", {"axis": -1, "start": 0, "end": 4, "step": 3}),
        ("negative_start", {"axis": 2, "start": -3, "end": 4, "step": 2}),
        ("start_below_minus_dim", {"axis": 2, "start": -6, "end": 2}),
        ("empty", {"axis": 1, "start": 10, "end": 100}),
    ]
    cases += [Case(f"slice_{cid}", op1("slice", attrs=a), {"x": x}) for cid, a in sl]
    cases += [
        Case("concat_axis1_three", opn("concat", "abc", {"axis": 1}),
             {"a": x, "b": f32((2, 1, 4)), "c": f32((2, 5, 4))}),
        Case("concat_axis0", opn("concat", "ab", {"axis": 0}), {"a": x, "b": f32((1, 3, 4))}),
        Case("concat_axis_neg1", opn("concat", "ab", {"axis": -1}), {"a": x, "b": f32((2, 3, 2))}),
        Case("concat_i64", opn("concat", "ab", {"axis": 0}),
             {"a": ints((2, 3), -9, 9, np.int64), "b": ints((1, 3), -9, 9, np.int64)}),
        Case("concat_same_input_twice", opn("concat", "aa", {"axis": 2}), {"a": x}),
        Case("broadcast_to_3d", op1("broadcast_to", attrs={"shape": [2, 3, 4]}), {"x": f32((3, 1))}),
        Case("broadcast_to_prepend", op1("broadcast_to", attrs={"shape": [2, 1, 5]}), {"x": f32((5,))}),
        Case("broadcast_to_rank0", op1("broadcast_to", attrs={"shape": [3, 2]}),
             {"x": np.array(1.5, np.float32)}),
        Case("take_i64_2d_neg", opn("take", ["t", "i"]),
             {"i": np.array([[0, -1], [4, 2], [-5, 3]], np.int64)}, {"t": f32((5, 4))}),
        Case("take_i32_axis1", opn("take", ["x", "i"], {"axis": 1}),
             {"x": x, "i": np.array([2, -3, 0, -1], np.int32)}),
        Case("take_i64_axis_last", opn("take", ["x", "i"], {"axis": -1}),
             {"x": x, "i": np.array([[3, -4], [1, 1]], np.int64)}),
        Case("take_i32_scalar_index", opn("take", ["x", "i"], {"axis": 0}),
             {"x": x, "i": np.array(-1, np.int32)}),
        Case("gather_axis1_smaller", opn("gather", ["t", "i"], {"axis": 1}),
             {"i": ints((3, 6), 0, 4, np.int64)}, {"t": f32((5, 4))}),
        Case("gather_i32_axis0", opn("gather", ["t", "i"], {"axis": 0}),
             {"i": ints((2, 4), 0, 5)}, {"t": f32((5, 4))}),
        # duplicates (the last wins), out of range (nothing written); the TIR kernel copies, then writes the rows
        Case("index_copy_axis1_dup_oob", opn("index_copy", ["x", "s", "i"], {"axis": 1}),
             {"x": f32((2, 5, 3)), "s": f32((2, 4, 3)), "i": np.array([4, 0, 4, 9], np.int64)}),
        Case("index_copy_i32_axis0", opn("index_copy", ["x", "s", "i"], {"axis": 0}),
             {"x": f32((6, 4)), "s": f32((2, 4)), "i": np.array([5, 1], np.int32)}),
        # the CPU TIR kernel: tokens in vector lanes (24 rows: lanes of 8), and one row (a matrix-vector product)
        Case("sparse_linear_rows", opn("sparse_linear", ["x", "v", "i", "b"], {"in_features": 12}),
             {"x": f32((2, 12, 12))}, {"v": f32((7, 3)), "i": ints((7, 3), 0, 12), "b": f32((7,))}),
        Case("sparse_linear_vector", opn("sparse_linear", ["x", "v", "i", "b"], {"in_features": 12}),
             {"x": f32((1, 12))}, {"v": f32((5, 4)), "i": ints((5, 4), 0, 12), "b": f32((5,))}),
    ]
    return cases


# attention --------------------------------------------------------------------------------------------------


def attention_cases() -> list[Case]:
    q, k, v = f32((2, 3, 5, 8)), f32((2, 3, 6, 8)), f32((2, 3, 6, 4))
    bm = bools((5, 6))
    bm[:, 0] = True  # no fully masked row (the reference would give NaN there)
    bm4 = bools((2, 1, 5, 6))
    bm4[..., 2] = True
    qkv = {"q": q, "k": k, "v": v}
    sq = f32((2, 3, 6, 8))
    return [
        Case("attention_plain", opn("attention", "qkv"), qkv),
        Case("attention_bool_mask", opn("attention", "qkvm"), {**qkv, "m": bm}),
        Case("attention_bool_mask_batch", opn("attention", "qkvm"), {**qkv, "m": bm4}),
        Case("attention_float_mask", opn("attention", "qkvm", {"scale": 0.3}),
             {**qkv, "m": f32((1, 1, 5, 6), -3, 1)}),
        Case("attention_float_mask_row", opn("attention", "qkvm"), {**qkv, "m": f32((6,), -3, 1)}),
        Case("attention_causal", opn("attention", "qkv", {"causal": True}), {"q": sq, "k": k, "v": v}),
        Case("attention_causal_bool_mask", opn("attention", "qkvm", {"causal": True}),
             {"q": sq, "k": k, "v": v, "m": np.tril(np.ones((6, 6), bool)) | bools((6, 6))}),
        Case("attention_causal_rect", opn("attention", "qkv", {"causal": True}), qkv),
        Case("attention_broadcast_batch", opn("attention", "qkv"),
             {"q": f32((2, 1, 5, 8)), "k": f32((1, 3, 6, 8)), "v": f32((1, 1, 6, 4))}),
        Case("attention_3d", opn("attention", "qkv", {"scale": 0.5}),
             {"q": f32((2, 5, 8)), "k": f32((2, 7, 8)), "v": f32((2, 7, 3))}),
    ]


def quant_cases() -> list[Case]:
    from edgeopt.ir.ops.quant import pack_int4, pack_words

    x = f32((3, 4, 8), -3.0, 3.0)
    x.flat[:6] = [0.25, 0.75, -0.25, 1.25, -1.75, 100.0]  # ties round to even; 100 saturates
    w = ints((6, 8), -128, 128, np.int8)
    nib = ints((6, 16), 0, 16, np.uint8)
    ch_scale = RNG.uniform(0.01, 0.1, (6, 1)).astype(np.float32)
    return [
        Case("quantize_u8_tensor", opn("quantize", ["x", "s", "z"], {"dtype": "u8"}), {"x": x},
             {"s": np.float32(0.5), "z": np.int32(128)}),
        Case("quantize_i8_tensor", opn("quantize", ["x", "s"], {"dtype": "i8"}), {"x": x}, {"s": np.float32(0.5)}),
        Case("quantize_i8_rows_runtime_scale", opn("quantize", ["x", "s"], {"dtype": "i8"}),
             {"x": x, "s": f32((3, 4, 1), 0.02, 0.05)}),
        Case("dequantize_i8_per_channel", opn("dequantize", ["q", "s"]), {"q": w}, {"s": ch_scale}),
        Case("dequantize_u8_zero_point", opn("dequantize", ["q", "s", "z"]), {"q": ints((2, 5), 0, 256, np.uint8)},
             {"s": f32((5,), 0.01, 0.1), "z": ints((5,), 0, 256)}),
        Case("dequantize_int4_groups", opn("dequantize", ["q", "s", "z"], {"bits": 4, "group_size": 4}),
             {"q": pack_int4(nib)}, {"s": f32((6, 4), 0.01, 0.1), "z": np.int32(8)}),
        Case("dequantize_int4_groups_axis0", opn("dequantize", ["q", "s", "z"],
                                                 {"bits": 4, "group_size": 4, "group_axis": 0}),
             {"q": pack_int4(nib.T, 0)}, {"s": f32((4, 6), 0.01, 0.1), "z": ints((4, 6), 0, 16, np.uint8)}),
        Case("dequantize_int4_groups_min", opn("dequantize", ["q", "s", "m"], {"bits": 4, "group_size": 4}),
             {"q": pack_int4(nib)}, {"s": f32((6, 4), 0.01, 0.1), "m": f32((6, 4), -1.0, 0.5)}),
        Case("dequantize_u8_groups_min", opn("dequantize", ["q", "s", "m"], {"group_size": 4}),
             {"q": ints((6, 16), 0, 256, np.uint8)}, {"s": f32((6, 4), 0.001, 0.01), "m": f32((6, 4), -1.0, 0.5)}),
        # 8-bit values four to an i32 word (targets without 8-bit integers): i8 sign-extended, u8 not, int4 bytes
        Case("dequantize_i8_words", opn("dequantize", ["q", "s"], {"packed_axis": -1, "packed_dtype": "i8"}),
             {"q": pack_words(w)}, {"s": ch_scale}),
        Case("dequantize_i8_words_conv_inputs", opn("dequantize", ["q", "s"], {"packed_axis": -3}),
             {"q": pack_words(ints((6, 8, 3, 3), -128, 128, np.int8), 1)}, {"s": f32((6, 1, 1, 1), 0.01, 0.1)}),
        Case("dequantize_u8_words_zero_point", opn("dequantize", ["q", "s", "z"],
                                                   {"packed_axis": 0, "packed_dtype": "u8"}),
             {"q": pack_words(ints((4, 5), 0, 256, np.uint8), 0)},
             {"s": f32((5,), 0.01, 0.1), "z": ints((5,), 0, 256)}),
        Case("dequantize_int4_words_groups", opn("dequantize", ["q", "s", "m"],
                                                 {"bits": 4, "group_size": 4, "packed_axis": -1, "packed_dtype": "u8"}),
             {"q": pack_words(pack_int4(nib))}, {"s": f32((6, 4), 0.01, 0.1), "m": f32((6, 4), -1.0, 0.5)}),
        Case("dequantize_i8_to_f16", opn("dequantize", ["q", "s"], {"dtype": "f16"}), {"q": w}, {"s": ch_scale}),
        Case("dequantize_groups_axis0", opn("dequantize", ["q", "s"], {"group_size": 2, "group_axis": 0}),
             {"q": w}, {"s": f32((3, 8), 0.01, 0.1)}),
        Case("dequantize_i32_sums", opn("dequantize", ["q", "s", "z"]), {"q": ints((2, 6), -2**20, 2**20)},
             {"s": f32((6,), 1e-4, 1e-3), "z": ints((6,), -5000, 5000)}),
        Case("requantize_u8_per_channel_relu6",
             opn("requantize", ["a", "m", "c"], {"dtype": "u8", "min": 3, "max": 200}),
             {"a": ints((2, 3, 4, 6), -2**16, 2**16)},
             {"m": f32((1, 3, 1, 1), 1e-3, 4e-3), "c": f32((3, 1, 1), 90, 130)}),
        Case("requantize_u8_zero_point", opn("requantize", ["a", "m", "c", "z"], {"dtype": "u8"}),
             {"a": ints((2, 3, 4, 6), -2**20, 2**20)},
             {"m": f32((3, 1, 1), 1e-4, 4e-4), "c": f32((3, 1, 1), 100, 130), "z": ints((3, 1, 1), -2**19, 2**19)}),
        Case("requantize_i8_tensor", opn("requantize", ["a", "m", "c"], {"dtype": "i8", "min": -128, "max": 127}),
             {"a": ints((5, 8), -2**15, 2**15)}, {"m": np.float32(2.5e-3), "c": f32((8,), -3, 3)}),
        Case("requantize_rounds_the_multiply_add_once", opn("requantize", ["a", "m", "c"], {"dtype": "u8"}),
             *_one_rounding_apart()),
        # integer contractions: u8 / i8 activations x i8 weights, exact i32 sums
        Case("linear_u8_i8", opn("linear", "xw"), {"x": ints((3, 40), 0, 256, np.uint8)}, {"w": w[:, :5].repeat(8, 1)}),
        Case("matmul_i8_i8", opn("matmul", "ab"), {"a": ints((2, 3, 16), -128, 128, np.int8),
                                                   "b": ints((2, 16, 5), -128, 128, np.int8)}),
        Case("conv2d_u8_i8", opn("conv2d", "xw", {"padding": [1, 1, 1, 1], "stride": [2, 1]}),
             {"x": ints((1, 4, 7, 6), 0, 256, np.uint8)}, {"w": ints((8, 4, 3, 3), -128, 128, np.int8)}),
        Case("conv2d_depthwise_u8_i8", opn("conv2d", "xw", {"groups": 4}),
             {"x": ints((1, 4, 6, 6), 0, 256, np.uint8)}, {"w": ints((4, 1, 3, 3), -128, 128, np.int8)}),
        # packed int8 layouts: [v, g] tiles of v outputs x g inputs (what VNNI / AVX2 dot products read)
        Case("linear_u8_i8_oi8o4i", opn("linear", "xw", {"weight_layout": "oi8o4i"}),
             {"x": ints((2, 3, 12), 0, 256, np.uint8)}, {"w": pack_linear_weight_groups(wi8(16, 12), 8, 4)}),
        Case("conv2d_u8_i8_OIHW8o4i", opn("conv2d", "xw", {"weight_layout": "OIHW8o4i", "padding": [1, 0, 1, 0]}),
             {"x": ints((1, 8, 5, 5), 0, 256, np.uint8)}, {"w": pack_conv_weight(wi8(16, 8, 3, 3), 8, 4)}),
        Case("conv2d_nchwc_u8_i8_OIHW8o4i", opn("conv2d", "xw", {"weight_layout": "OIHW8o4i", "layout": "NCHWc",
                                                                 "stride": [2, 2], "padding": [1, 1, 1, 1]}),
             {"x": ints((1, 2, 7, 6, 8), 0, 256, np.uint8)}, {"w": pack_conv_weight(wi8(16, 16, 3, 3), 8, 4)}),
        # the same tiles naming AVX2's vpmaddubsw (int8_dot): 7-bit weights, tensorized on any AVX2 host
        Case("linear_u8_i7_oi8o4i_avx2_ubsw", opn("linear", "xw", {"weight_layout": "oi8o4i", "int8_dot": "avx2-ubsw"}),
             {"x": ints((2, 3, 12), 0, 256, np.uint8)}, {"w": pack_linear_weight_groups(wi7(16, 12), 8, 4)}),
        Case("conv2d_nchwc_u8_i7_OIHW8o4i_avx2_ubsw",
             opn("conv2d", "xw", {"weight_layout": "OIHW8o4i", "layout": "NCHWc", "int8_dot": "avx2-ubsw",
                                  "padding": [1, 1, 1, 1]}),
             {"x": ints((1, 2, 6, 5, 8), 0, 256, np.uint8)}, {"w": pack_conv_weight(wi7(16, 16, 3, 3), 8, 4)}),
        # and its zmm form (AVX-512 without VNNI): 16-lane tiles, tensorized where the host has AVX512BW
        Case("linear_u8_i7_oi16o4i_avx512_ubsw",
             opn("linear", "xw", {"weight_layout": "oi16o4i", "int8_dot": "avx512-ubsw"}),
             {"x": ints((2, 3, 12), 0, 256, np.uint8)}, {"w": pack_linear_weight_groups(wi7(32, 12), 16, 4)}),
        Case("conv2d_nchwc_u8_i7_OIHW16o4i_avx512_ubsw",
             opn("conv2d", "xw", {"weight_layout": "OIHW16o4i", "layout": "NCHWc", "int8_dot": "avx512-ubsw",
                                  "stride": [2, 2], "padding": [1, 1, 1, 1]}),
             {"x": ints((1, 1, 7, 6, 16), 0, 256, np.uint8)}, {"w": pack_conv_weight(wi7(32, 16, 3, 3), 16, 4)}),
        Case("conv2d_nchwc_depthwise_u8_i8", opn("conv2d", "xw", {"weight_layout": "OIHW8o", "layout": "NCHWc",
                                                                  "groups": 16, "padding": [1, 1, 1, 1]}),
             {"x": ints((1, 2, 6, 6, 8), 0, 256, np.uint8)}, {"w": pack_conv_weight(wi8(16, 1, 3, 3), 8)}),
        # a depthwise conv on window taps (depthwise_int8_taps' "vnni512-dw": 4 taps x 16 channels an instruction),
        # tensorized where the host has AVX512-VNNI and VBMI: any weights in every tap (the pass's 4th ones are 0)
        Case("conv2d_nchwc_depthwise_u8_i8_vnni512_dw",
             opn("conv2d", "xw", {"weight_layout": "OIHW16o", "layout": "NCHWc", "groups": 32,
                                  "padding": [1, 1, 1, 2], "int8_dot": "vnni512-dw"}),
             {"x": ints((1, 2, 6, 9, 16), 0, 256, np.uint8)}, {"w": pack_conv_weight(wi8(32, 1, 3, 4), 16)}),
        Case("conv2d_nchwc_depthwise_u8_i8_vnni512_dw_5x8_stride2",
             opn("conv2d", "xw", {"weight_layout": "OIHW16o", "layout": "NCHWc", "groups": 16, "stride": [2, 2],
                                  "padding": [2, 2, 2, 5], "int8_dot": "vnni512-dw"}),
             {"x": ints((1, 1, 9, 11, 16), 0, 256, np.uint8)}, {"w": pack_conv_weight(wi8(16, 1, 5, 8), 16)}),
    ]


def wi8(*shape):
    return ints(shape, -128, 128, np.int8)


def wi7(*shape):
    """7-bit weights (-64..64), with both ends present: what AVX2's vpmaddubsw is exact for."""
    w = ints(shape, -64, 65, np.int8)
    w.flat[0], w.flat[1] = -64, 64
    return w


# -- the tests -----------------------------------------------------------------------------------------------

#: case id -> why it fails today (kept as a strict xfail, each compiled on its own)
KNOWN_BUGS: dict[str, str] = {}

GROUPS = {
    "unary": unary_cases,
    "binary": binary_cases,
    "bitwise": bitwise_cases,
    "where_cast_clamp_copy_bn": misc_elementwise_cases,
    "reductions": reduction_cases,
    "linalg": linalg_cases,
    "conv": conv_cases,
    "blocked_layout": blocked_layout_cases,
    "pool": pool_cases,
    "resize_pad": resize_pad_cases,
    "shape": shape_cases,
    "attention": attention_cases,
    "quant": quant_cases,
}
ALL_CASES = {name: fn() for name, fn in GROUPS.items()}


@pytest.mark.parametrize("group", sorted(ALL_CASES))
def test_group_matches_interpreter(group, target):
    cases = [c for c in ALL_CASES[group] if c.id not in KNOWN_BUGS]
    check_cases(cases, target)


@pytest.mark.parametrize("op", ["argtopk", "cumsum"])
def test_gpu_rules_of_the_cpus_tir_kernels(op, target, monkeypatch):
    """The TE rules GPUs run for ops that CPUs run as TIR kernels (argtopk: pairwise ranks, not the merge sort;
    cumsum: masked sums, not running sums), here on the CPU: the same results."""
    from edgeopt.lower import build

    monkeypatch.delitem(build.TIR_KERNELS, op)
    monkeypatch.setattr(build, "_KERNEL_CACHE", {})
    monkeypatch.setenv("EDGEOPT_CACHE", "0")  # the disk cache holds the TIR kernels' objects under the same keys
    cases = [c for c in sort_cases() + reduction_cases()  # GPUs sum float32 in float32: not exact
             if c.id.startswith(op) and c.id != "argtopk_long_row" and c.rtol > 0]
    lowered, _, _ = check_cases(cases, target)
    assert len(cases) > 5 and not any(k["schedule"].startswith("tir(") for k in lowered.kernels), lowered.kernels


BUG_CASES = [pytest.param(c, id=c.id, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[c.id]))
             for cases in ALL_CASES.values() for c in cases if c.id in KNOWN_BUGS]


def test_known_bugs_are_cases():
    assert sorted(p.id for p in BUG_CASES) == sorted(KNOWN_BUGS)


if BUG_CASES:  # (an empty parameter list would be reported as a skipped test)
    @pytest.mark.parametrize("case", BUG_CASES)
    def test_known_bug(case, target):
        check_cases([case], target)


def test_identical_kernels_compiled_once(target):
    relu_twice = Case("relu_twice", lambda g, v: g.add("relu", [g.add("relu", [v["x"]])]), {"x": f32((4, 9))})
    lowered, _, _ = check_cases([relu_twice], target)
    assert [k["op"] for k in lowered.kernels] == ["relu"]
    steps = lowered.plan["steps"]
    assert len(steps) == 2 and steps[0]["kernel"] == steps[1]["kernel"] == lowered.kernels[0]["name"]


def test_scalar_constants_make_distinct_kernels(target):
    """Scalar constants are folded into kernels as immediates: different values must not share a kernel."""
    cases = [Case(f"add_{val}", opn("add", ["x", "c"]), {"x": f32((3, 4))}, {"c": np.array(val, np.float32)})
             for val in (1.0, 2.0, -3.5)]
    lowered, _, _ = check_cases(cases, target)
    assert len(lowered.kernels) == 3 and len({s["kernel"] for s in lowered.plan["steps"]}) == 3


STANDARD_CNN = [  # (id, op, inputs, consts, attrs)
    ("conv3x3_s1", "conv2d", (1, 16, 16, 16), {"w": (16, 16, 3, 3), "b": (16,)}, {"padding": [1, 1, 1, 1]}),
    ("conv3x3_s2", "conv2d", (1, 16, 16, 16), {"w": (32, 16, 3, 3)},
     {"stride": [2, 2], "padding": [1, 1, 1, 1]}),
    ("depthwise3x3_s1", "conv2d", (1, 16, 16, 16), {"w": (16, 1, 3, 3), "b": (16,)},
     {"groups": 16, "padding": [1, 1, 1, 1]}),
    ("depthwise3x3_s2", "conv2d", (1, 16, 16, 16), {"w": (16, 1, 3, 3)},
     {"groups": 16, "stride": [2, 2], "padding": [1, 1, 1, 1]}),
    ("conv1x1", "conv2d", (1, 16, 16, 16), {"w": (24, 16, 1, 1), "b": (24,)}, {}),
    ("linear_oi_bias", "linear", (8, 32), {"w": (24, 32), "b": (24,)}, {}),
    ("linear_io", "linear", (2, 8, 32), {"w": (32, 24)}, {"weight_layout": "io"}),
    ("matmul_const", "matmul", (8, 32), {"b": (32, 16)}, {}),
    ("max_pool3x3_s2", "max_pool2d", (1, 16, 16, 16), {}, {"kernel": [3, 3], "stride": [2, 2],
                                                           "padding": [1, 1, 1, 1]}),
    ("max_pool2x2_s2", "max_pool2d", (1, 16, 16, 16), {}, {"kernel": [2, 2], "stride": [2, 2]}),
]


def test_standard_cnn_ops_are_not_scheduled_by_fallback(target):
    cases = [Case(cid, opn(op, ["x", *consts], attrs), {"x": f32(xs, -1.0, 1.0)},
                  {k: f32(s, -1.0, 1.0) for k, s in consts.items()})
             for cid, op, xs, consts, attrs in STANDARD_CNN]
    lowered, g, spans = check_cases(cases, target)
    kernel_of = {s["node"]: s["kernel"] for s in lowered.plan["steps"]}
    schedule = {k["name"]: k["schedule"] for k in lowered.kernels}
    bad = []
    for c, first, _ in spans:
        desc = schedule[kernel_of[g.outputs[first].name]]
        if desc.startswith(("fallback", "unscheduled")) or not desc.startswith("tile("):
            bad.append(f"{c.id}: {desc}")
    assert len(lowered.kernels) == len(STANDARD_CNN)
    assert not bad, bad


def test_every_op_is_covered():
    covered = set()
    for cases in ALL_CASES.values():
        g, _, _ = build_group([c for c in cases if c.id not in KNOWN_BUGS])
        covered |= set(g.op_counts())
    assert set(all_ops()) - covered - {"fused"} == set()  # fused kernels: tests/lower/test_fused_kernels.py


def test_int8_dot_layers_are_tensorized_where_the_cpu_has_the_instruction(target):
    """The quant group's int8 tiles: a layer naming AVX2's vpmaddubsw is tensorized with it on an AVX2 host (and
    exact: the 7-bit weights include +-64); one naming nothing runs as plain vector code on full 8-bit weights; a
    depthwise conv naming "vnni512-dw" is tensorized where the host has AVX512-VNNI and VBMI, plain code elsewhere."""
    if "avx2" not in target.features:
        pytest.skip("the host CPU has no AVX2")
    cases = [c for c in ALL_CASES["quant"] if c.id in ("linear_u8_i7_oi8o4i_avx2_ubsw", "linear_u8_i8_oi8o4i",
                                                        "conv2d_nchwc_u8_i7_OIHW8o4i_avx2_ubsw",
                                                        "linear_u8_i7_oi16o4i_avx512_ubsw",
                                                        "conv2d_nchwc_u8_i7_OIHW16o4i_avx512_ubsw",
                                                        "conv2d_nchwc_depthwise_u8_i8_vnni512_dw",
                                                        "conv2d_nchwc_depthwise_u8_i8_vnni512_dw_5x8_stride2")]
    lowered, g, spans = check_cases(cases, target)
    kernel_of = {s["node"]: s["kernel"] for s in lowered.plan["steps"]}
    schedule = {k["name"]: k["schedule"] for k in lowered.kernels}
    desc = {c.id: schedule[kernel_of[g.outputs[first].name]] for c, first, _ in spans}
    assert ",avx2-ubsw" in desc["linear_u8_i7_oi8o4i_avx2_ubsw"], desc
    assert ",avx2-ubsw" in desc["conv2d_nchwc_u8_i7_OIHW8o4i_avx2_ubsw"], desc
    assert not desc["linear_u8_i8_oi8o4i"].startswith("int8-tile("), desc
    zmm = "avx512bw" in target.features  # an AVX2-only host runs the zmm form's layers as plain vector code
    for name in ("linear_u8_i7_oi16o4i_avx512_ubsw", "conv2d_nchwc_u8_i7_OIHW16o4i_avx512_ubsw"):
        assert (",avx512-ubsw" in desc[name]) == zmm, desc
    taps = host_has_depthwise_int8_dot()  # vpdpbusd on window taps, vpermb to transpose them
    for name in ("conv2d_nchwc_depthwise_u8_i8_vnni512_dw", "conv2d_nchwc_depthwise_u8_i8_vnni512_dw_5x8_stride2"):
        assert (",vnni512-dw" in desc[name]) == taps, desc
