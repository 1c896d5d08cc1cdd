"""fast_math: float32 exp/erf/tanh/sigmoid as vectorizable arithmetic. Accuracy over the whole useful range
against float64 references, special values (NaN, +-inf, +-0, overflow, underflow), and no libm call left in
the vectorized machine code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir import Schedule

from edgeopt.lower import fast_math

N = 1 << 15
F32_MAX = float(np.finfo(np.float32).max)


def _erf64(a):
    return np.vectorize(math.erf)(a)


#: name -> (function, float64 reference, range checked, max abs error, max relative error)
CASES = {
    "exp": (fast_math.exp, np.exp, (-86.5, 88.7), None, 2e-7),
    "erf": (fast_math.erf, _erf64, (-6.0, 6.0), 3e-7, None),
    "tanh": (fast_math.tanh, np.tanh, (-12.0, 12.0), 1e-7, 3e-7),
    "sigmoid": (fast_math.sigmoid, lambda a: 1 / (1 + np.exp(-a)), (-40.0, 40.0), 1e-7, None),
}
LIBM = {"exp": "expf", "erf": "erff", "tanh": "tanhf", "sigmoid": "expf"}


def _elementwise(fn, x):
    return lambda i: fn(x[i])


@pytest.fixture(scope="module")
def kernels():
    """One vectorized (8 lanes) kernel per function, compiled for the host."""
    from edgeopt.targets import get_target

    target = get_target("host").tvm_target()
    out = {}
    for name, (fn, *_) in CASES.items():
        x = te.placeholder((N,), "float32", name="x")
        y = te.compute((N,), _elementwise(fn, x), name="y")
        sch = Schedule(tvm.IRModule({"main": te.create_prim_func([x, y])}))
        (i,) = sch.get_loops(sch.get_sblock("y", func_name="main"))
        sch.vectorize(sch.split(i, [None, 8])[1])
        out[name] = tvm.compile(sch.mod, target=target)
    return out


def run(lib, a: np.ndarray) -> np.ndarray:
    a = np.concatenate([a.astype(np.float32), np.zeros(N - len(a), np.float32)])
    y = tvm.runtime.tensor(np.empty_like(a))
    lib["main"](tvm.runtime.tensor(a), y)
    return y.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_accuracy_over_the_range(kernels, name):
    _, ref, (lo, hi), max_abs, max_rel = CASES[name]
    a = np.linspace(lo, hi, N).astype(np.float32)
    got, want = run(kernels[name], a).astype(np.float64), ref(a.astype(np.float64))
    err = np.abs(got - want)
    if max_abs is not None:
        assert err.max() <= max_abs, f"{name}: max abs error {err.max():.3g}"
    if max_rel is not None:
        rel = err / np.abs(want)
        assert rel.max() <= max_rel, f"{name}: max relative error {rel.max():.3g} at {a[rel.argmax()]}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_special_values(kernels, name):
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-8, -1e-8, 200.0, -200.0], np.float32)
    got = run(kernels[name], special)[: len(special)]
    assert np.isnan(got[0])
    with np.errstate(over="ignore"):
        want = {"exp": np.exp(special), "erf": _erf64(special), "tanh": np.tanh(special),
                "sigmoid": 1 / (1 + np.exp(-special.astype(np.float64)))}[name]
    np.testing.assert_allclose(got[1:], np.asarray(want, np.float64)[1:].astype(np.float32), rtol=1e-6, atol=1e-12)


def test_exp_overflows_to_inf_and_underflows_to_zero(kernels):
    got = run(kernels["exp"], np.array([88.72, 88.73, 100.0, -87.5, -100.0, -F32_MAX], np.float32))[:6]
    assert np.isfinite(got[0]) and np.isinf(got[1:3]).all() and (got[3:6] == 0).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_libm_call_in_the_vectorized_code(kernels, name):
    asm = kernels[name].mod.inspect_source("asm") if hasattr(kernels[name], "mod") else \
        kernels[name].inspect_source("asm")
    assert f"{LIBM[name]}@" not in asm and "ymm" in asm  # AVX registers: it vectorized


def test_other_dtypes_keep_tvms_intrinsics():
    x = te.placeholder((4,), "float64", name="x")
    for fn, intrinsic in ((fast_math.exp, te.exp), (fast_math.erf, te.erf), (fast_math.tanh, te.tanh)):
        assert str(fn(x[0])) == str(intrinsic(x[0]))
