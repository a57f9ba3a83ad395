"""Order statistics on sorted arrays: numpy's results, bit for bit."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stoic.predict.order import median, sorted_median, sorted_quantile

values_st = st.lists(
    st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(values_st, st.floats(min_value=0.0, max_value=1.0))
def test_median_and_quantile_are_numpys_bit_for_bit(xs: list[float], q: float) -> None:
    x = np.array(xs)
    s = np.sort(x)
    assert median(x) == float(np.median(x))
    assert sorted_median(s) == float(np.median(x))
    assert sorted_quantile(s, q) == float(np.quantile(x, q))


def test_random_draws_match_numpy() -> None:
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 10, 99, 100, 200):
        for _ in range(50):
            x = rng.lognormal(3.0, 1.0, n)
            s = np.sort(x)
            assert sorted_median(s) == float(np.median(x))
            for q in (0.0, 0.5, 0.9, 0.95, 0.9 / 0.97, 1.0, rng.random()):
                assert sorted_quantile(s, q) == float(np.quantile(x, q))


def test_nan_gives_nan_as_numpy() -> None:
    x = np.array([1.0, np.nan, 3.0])
    s = np.sort(x)
    assert math.isnan(sorted_median(s)) and math.isnan(float(np.median(x)))
    assert math.isnan(sorted_quantile(s, 0.5)) and math.isnan(float(np.quantile(x, 0.5)))
    assert math.isnan(median(np.array([])))
