"""Calibrators: the ranges each picks on known distributions, and the u8 parameters of a range."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, TensorType
from edgeopt.quant.calibrate import Stats, affine_params, choose_range, observe_ranges
from edgeopt.quant.config import QuantConfig, QuantizationError, as_config


def _stats(x: np.ndarray) -> Stats:
    st, rng = Stats(), np.random.default_rng(0)
    for chunk in np.array_split(x, 8):
        st.add(chunk, rng)
    return st


def _heavy_tail() -> np.ndarray:
    """Mostly N(0, 1), plus a handful of huge outliers (a real activation's shape)."""
    x = np.random.default_rng(1).standard_normal(200_000).astype(np.float32)
    x[:5], x[5:10] = 60.0, -60.0
    return x


def test_minmax_is_the_observed_range_and_contains_zero():
    st = _stats(np.linspace(0.5, 3.0, 1000, dtype=np.float32))
    assert choose_range(st, "minmax") == (0.0, 3.0)


@pytest.mark.parametrize("calibrator", ["percentile", "entropy"])
def test_clipping_calibrators_cut_outliers_but_keep_the_bulk(calibrator):
    lo, hi = choose_range(_stats(_heavy_tail()), calibrator)
    assert 2.5 < hi < 60.0 and -60.0 < lo < -2.5  # clipped well below the outliers, above most of the data
    assert lo == -hi  # a two-sided range is clipped symmetrically


def test_one_sided_data_is_clipped_only_at_the_top():
    x = np.abs(_heavy_tail())
    lo, hi = choose_range(_stats(x), "percentile", percentile=99.9)
    assert lo == 0.0 and 2.5 < hi < 60.0


def test_mse_beats_minmax_on_its_own_objective():
    """On a Laplace distribution the least-error 8-bit clip is about 9.9 scales (Banner et al. 2019), inside the
    observed range (about 12): the mse calibrator finds it, and its error is clearly lower than minmax's."""
    x = np.random.default_rng(2).laplace(0.0, 1.0, 200_000).astype(np.float32)

    def err(lo, hi):
        s, z = affine_params(lo, hi)
        q = np.clip(np.rint(x / s) + z, 0, 255)
        return float(np.mean(((q - z) * s - x) ** 2))

    st = _stats(x)
    (lo, hi), (lo0, hi0) = choose_range(st, "mse"), choose_range(st, "minmax")
    assert 8.5 < hi < 0.9 * hi0 and lo == -hi
    assert err(lo, hi) < 0.85 * err(lo0, hi0)


def test_affine_params_map_the_range_onto_u8_with_exact_zero():
    s, z = affine_params(-1.0, 3.0)
    assert s == pytest.approx(4 / 255) and z == 64
    assert affine_params(0.0, 2.55) == (pytest.approx(0.01), 0)


def test_observe_ranges_sees_every_batch():
    g = Graph()
    x = g.add_input("x", TensorType((4,), "f32"))
    y = g.add("relu", [x])
    g.set_outputs([y])
    batches = [[np.array([-1, 0, 1, 2], np.float32)], [np.array([5, -7, 0, 0], np.float32)]]
    st = observe_ranges(g, [x, y], batches)
    assert (st[x].lo, st[x].hi) == (-7.0, 5.0) and (st[y].lo, st[y].hi) == (0.0, 5.0)
    with pytest.raises(QuantizationError, match="empty"):
        observe_ranges(g, [x], [])


def test_config_rejects_what_it_cannot_do():
    with pytest.raises(QuantizationError, match="not one of"):
        as_config("int3")
    with pytest.raises(QuantizationError, match="calibrator"):
        QuantConfig(calibrator="magic")
    with pytest.raises(QuantizationError, match="group_size"):
        QuantConfig(mode="int4-weight", group_size=7)
    assert as_config(None) is None and as_config("int8-weight").weight_only
